"""Bearer tokens (policy vs admin), TLS and mutual TLS on a real server."""

import asyncio
import shutil
import subprocess
import urllib.request

import grpc
import numpy as np
import pytest
from serving_helpers import OBS_DIM, ServerThread, config, export, make_run

from runtime.client import AdminClient, AsyncPolicyClient, PolicyClient
from runtime.config import TLSConfig, load_config

OBS = {"tl_0": np.zeros(OBS_DIM)}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth")
    export(make_run(root / "run"), root / "models")
    return root / "models"


@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    secrets = tmp_path_factory.mktemp("secrets")
    (secrets / "policy").write_text("# rotated tokens, one per line\npolicy-1\npolicy-2\n")
    cfg = load_config(
        None,
        env={
            "INSPO_RUNTIME_POLICY_TOKENS_FILE": str(secrets / "policy"),
            "INSPO_RUNTIME_ADMIN_TOKENS": "admin-1",
            "INSPO_RUNTIME_MODEL_REPOSITORY": str(repo),
            "INSPO_RUNTIME_PORT": "0",
            "INSPO_RUNTIME_METRICS_PORT": "0",
        },
    )
    assert cfg.auth.policy_tokens == ["policy-1", "policy-2"] and "admin-1" not in str(cfg.describe())
    with ServerThread(cfg) as s:
        yield s


@pytest.mark.parametrize("token", [None, "", "wrong", "policy-1x"])
def test_missing_or_wrong_token_is_unauthenticated(server, token):
    with PolicyClient(server.target, token=token or "") as c:
        with pytest.raises(grpc.RpcError) as err:
            c.act("grid", OBS)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert c.health() == "SERVING"  # probes need no token


def test_stream_without_token_is_unauthenticated(server):
    async def go():
        async with AsyncPolicyClient(server.target, token="") as c:
            stream = c.stream()
            with pytest.raises(grpc.RpcError) as err:
                await stream.act("grid", OBS)
            return err.value.code()

    assert asyncio.run(go()) == grpc.StatusCode.UNAUTHENTICATED


def test_policy_token_acts_but_cannot_administer(server):
    for token in ("policy-1", "policy-2"):
        with PolicyClient(server.target, token=token) as c:
            assert c.act("grid", OBS).model_version == "1"
    with AdminClient(server.target, token="policy-1") as admin, pytest.raises(grpc.RpcError) as err:
        admin.list()
    # the caller is known, the action is not allowed to it
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with AdminClient(server.target, token="not-a-token") as admin, pytest.raises(grpc.RpcError) as err:
        admin.list()
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with AdminClient(server.target, token="admin-1") as admin:
        assert [m.name for m in admin.list().models] == ["grid"]


def test_without_tokens_policy_is_open_and_admin_is_disabled(repo):
    """No token configured: no interceptor runs, yet ModelAdmin refuses every call (and counts it)."""
    with ServerThread(config(repo), metrics=True) as s:
        assert s.server.server is not None
        with PolicyClient(s.target) as c:
            assert c.act("grid", OBS).model_version == "1"
        for token in (None, "anything"):
            with AdminClient(s.target, token=token) as admin, pytest.raises(grpc.RpcError) as err:
                admin.list()
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "admin service is disabled" in err.value.details()
        with AdminClient(s.target) as admin, pytest.raises(grpc.RpcError) as err:
            admin.rollback("grid")
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        url = f"http://127.0.0.1:{s.server.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        assert 'inspo_runtime_auth_failures_total{service="admin"} 3.0' in text


def test_tokens_are_refused_in_the_config_file(tmp_path):
    (tmp_path / "c.toml").write_text('[auth]\npolicy_tokens = ["x"]\n')
    with pytest.raises(ValueError, match="secrets"):
        load_config(tmp_path / "c.toml", env={})


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI to make test certificates")
def test_mutual_tls(repo, tmp_path):
    d = tmp_path
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        cwd=d,
    )
    for name in ("server", "client"):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
            cwd=d,
        )
        (d / f"{name}.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext", cwd=d)  # fmt: skip
    tls = TLSConfig(
        cert_file=str(d / "server.pem"), key_file=str(d / "server.key"), client_ca_file=str(d / "ca.pem")
    )
    with ServerThread(config(repo, tls=tls)) as s:
        target = f"localhost:{s.server.port}"
        ca = str(d / "ca.pem")
        with PolicyClient(
            target, root_cert=ca, client_cert=str(d / "client.pem"), client_key=str(d / "client.key")
        ) as c:
            assert c.act("grid", OBS).model_version == "1"
        with PolicyClient(target, root_cert=ca, timeout=2) as c, pytest.raises(grpc.RpcError) as err:
            c.act("grid", OBS)  # no client certificate
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        with PolicyClient(target, timeout=2) as c, pytest.raises(grpc.RpcError):
            c.act("grid", OBS)  # plaintext against a TLS port
