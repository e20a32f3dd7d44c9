"""The serving process: ``inspo-runtime [--config FILE]`` (also ``inspo serve``).

One grpc.aio server with PolicyService, ModelAdmin (separately authorized), grpc.health.v1
(NOT_SERVING until a model is loaded and while draining) and server reflection; Prometheus
metrics on their own HTTP port; the model repository polled for new versions; an optional
decision log. SIGTERM: health goes NOT_SERVING at once, the server keeps answering for ``drain_delay_s`` (so load
balancers and Kubernetes endpoints stop sending), then stops accepting calls; in-flight calls finish
(up to ``grace_period_s``), the decision log is flushed. SIGINT drains without the delay. The health
service name ``liveness`` is SERVING while the process answers, whatever the models (liveness probes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from protos.inspo.runtime.v1 import admin_pb2, policy_pb2
from runtime.args import add_arguments
from runtime.auth import TokenAuthInterceptor, disabled_service
from runtime.config import RuntimeConfig, load_config
from runtime.decision_log import DecisionLog
from runtime.deployment import Deployments, ShadowRunner
from runtime.metrics import Metrics
from runtime.repository import ModelRepository
from runtime.rpc import GRPC_LIMIT_FACTOR, Calls, add_service
from runtime.service import AdminServicer, PolicyServicer
from runtime.state import StateFile

log = logging.getLogger("inspo.runtime")
POLICY_SERVICE = policy_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name
LIVENESS = "liveness"  # health service name for liveness probes: the process answers, models or not
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["ModelAdmin"].full_name


class RuntimeServer:
    """Build with a config, ``await start()``, ``await stop()``; ``port`` is the bound gRPC port."""

    def __init__(self, config: RuntimeConfig):
        self.config = config
        self.metrics = Metrics(agent_label=config.metrics_agent_label)
        self.health = HealthServicer()
        self.repo = ModelRepository(config, self.metrics, on_change=self._on_change)
        self.decision_log = (
            DecisionLog(config.decision_log, self.metrics) if config.decision_log.enabled else None
        )
        self.deployments = Deployments(config, self.repo, self.metrics)
        self.shadow = ShadowRunner(self.metrics, config.decision_log)
        self.state = StateFile(config.state_file) if config.state_file else None
        self._restore: dict[str, str] = {}
        if self.state is not None:  # before the initial poll: serve what was served, keep roll-backs
            saved = self.state.load()
            self._restore = self.repo.restore(saved.get("models", {}))
            self.deployments.restore(saved.get("deployments", {}))
            self.repo.persist = self.deployments.persist = self._persist
        self.calls = Calls(self.metrics, self.repo.entries.__contains__)
        self.policy = PolicyServicer(
            config, self.repo, self.metrics, self.decision_log, self.deployments, self.shadow, self.calls
        )
        self.admin = AdminServicer(self.repo, self.metrics, self.deployments, self.calls)
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.metrics_port = 0
        self._metrics_http = None
        self._poll_task: asyncio.Task | None = None
        self._draining = False
        self._stopped: asyncio.Event | None = None

    # -- health --------------------------------------------------------------------------------
    def _on_change(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None:
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._update_health()))

    async def _update_health(self) -> None:
        serving = self.repo.any_loaded() and not self._draining
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", POLICY_SERVICE):
            await self.health.set(name, status)
        self.metrics.ready.set(1 if serving else 0)

    # -- lifecycle -----------------------------------------------------------------------------
    def _credentials(self) -> grpc.ServerCredentials | None:
        tls = self.config.tls
        if not tls.enabled:
            return None
        key = Path(tls.key_file).read_bytes()
        cert = Path(tls.cert_file).read_bytes()
        ca = Path(tls.client_ca_file).read_bytes() if tls.client_ca_file else None
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
        )

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        cfg = self.config
        auth = cfg.auth
        options = [
            ("grpc.max_receive_message_length", GRPC_LIMIT_FACTOR * cfg.max_message_bytes),
            ("grpc.max_send_message_length", cfg.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        any_token = bool(auth.policy_tokens or auth.admin_tokens)
        self.server = grpc.aio.server(
            interceptors=(
                [TokenAuthInterceptor(auth.policy_tokens, auth.admin_tokens, self.metrics)]
                if any_token
                else None
            ),
            options=options,
        )
        limit = cfg.max_message_bytes
        add_service(self.server, self.policy, policy_pb2.DESCRIPTOR.services_by_name["PolicyService"], limit)
        if any_token:
            add_service(self.server, self.admin, admin_pb2.DESCRIPTOR.services_by_name["ModelAdmin"], limit)
        else:  # no interceptor on the hot path; the admin service refuses every call by itself
            self.server.add_generic_rpc_handlers(
                (
                    disabled_service(
                        admin_pb2.DESCRIPTOR.services_by_name["ModelAdmin"], "admin", self.metrics
                    ),
                )
            )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [
                POLICY_SERVICE,
                ADMIN_SERVICE,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.server,
        )
        address = f"{cfg.host}:{cfg.port}"
        creds = self._credentials()
        self.port = (
            self.server.add_secure_port(address, creds) if creds else self.server.add_insecure_port(address)
        )
        if self.port == 0:
            raise OSError(f"cannot bind {address}")
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        await self._update_health()
        # Initial load: every model's newest good version (bad ones are rejected and logged).
        await asyncio.to_thread(self.repo.poll, self._restore)
        await asyncio.to_thread(self.deployments.prepare)
        await self._update_health()
        if not self.repo.any_loaded():
            reasons = "; ".join(f"{n}/{v}: {r}" for (n, v), (_, r) in sorted(self.repo.rejected.items()))
            log.error(
                "no model can be served (health NOT_SERVING until one loads): %s",
                reasons or f"no model versions in {cfg.model_repository}",
            )
        if cfg.metrics_port:
            from prometheus_client import start_http_server

            self._metrics_http, _ = start_http_server(
                cfg.metrics_port, cfg.metrics_host, registry=self.metrics.registry
            )
            self.metrics_port = self._metrics_http.server_port
        await self.server.start()
        if cfg.poll_interval_s > 0:
            self._poll_task = asyncio.create_task(self._poll_loop())
        log.info(
            "inspo-runtime listening on %s (port %d, tls=%s), metrics on %s, models %s",
            cfg.host,
            self.port,
            cfg.tls.enabled,
            f"{cfg.metrics_host}:{self.metrics_port}" if self.metrics_port else "off",
            self.repo.served(),
        )

    def _persist(self) -> None:
        try:
            self.state.save(self.repo.snapshot(), self.deployments.snapshot())
        except OSError as err:  # serving goes on; the operator sees why the state is not durable
            log.error("cannot write state_file %s: %s", self.state.path, err)

    def start_metrics_on_ephemeral_port(self) -> int:
        """Serve metrics on a free port (tests, benchmarks); returns it."""
        from prometheus_client import start_http_server

        self._metrics_http, _ = start_http_server(0, "127.0.0.1", registry=self.metrics.registry)
        self.metrics_port = self._metrics_http.server_port
        return self.metrics_port

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_interval_s)
            try:
                await asyncio.to_thread(self.repo.poll)
            except Exception:  # noqa: BLE001 - polling must never stop
                log.exception("model repository poll failed")

    async def stop(self, grace: float | None = None, drain_delay: float = 0.0) -> None:
        """Drain: NOT_SERVING, keep answering ``drain_delay`` seconds, stop accepting, finish in-flight
        calls within ``grace`` (default ``grace_period_s``), flush the decision log."""
        if self._draining:
            await self._stopped.wait()
            return
        self._draining = True
        await self._update_health()
        if drain_delay > 0:
            log.info("health NOT_SERVING; answering for %.1f s more before closing", drain_delay)
            await asyncio.sleep(drain_delay)
        if self._poll_task is not None:
            self._poll_task.cancel()
        grace = self.config.grace_period_s if grace is None else grace
        if self.server is not None:
            await self.server.stop(grace)
        await asyncio.to_thread(self.shadow.close)
        if self.decision_log is not None:
            await asyncio.to_thread(self.decision_log.close)
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
        log.info("inspo-runtime stopped")
        self._stopped.set()

    async def wait(self) -> None:
        await self._stopped.wait()


async def serve(config: RuntimeConfig, ready_file: str | None = None) -> None:
    server = RuntimeServer(config)
    await server.start()
    loop = asyncio.get_running_loop()
    for sig, delay in ((signal.SIGTERM, config.drain_delay_s), (signal.SIGINT, 0.0)):
        loop.add_signal_handler(
            sig,
            lambda s=sig, d=delay: (
                log.info("received %s, draining", signal.Signals(s).name),
                asyncio.ensure_future(server.stop(drain_delay=d)),
            ),
        )
    if ready_file:
        # atomically (write, then rename): a watcher never reads a half-written file
        target = Path(ready_file)
        partial = target.with_name(target.name + ".partial")
        partial.write_text(json.dumps({"port": server.port, "metrics_port": server.metrics_port}))
        os.replace(partial, target)
    await server.wait()


def build_parser(prog: str = "inspo-runtime") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve exported ONNX policies over gRPC, with Prometheus metrics. Secrets come from files or the "
        "environment only (INSPO_RUNTIME_POLICY_TOKENS[_FILE], INSPO_RUNTIME_ADMIN_TOKENS[_FILE]).",
    )
    add_arguments(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> RuntimeConfig:
    config = load_config(args.config)
    if args.models:
        config.model_repository = args.models
    if args.host:
        config.host = args.host
    if args.port is not None:
        config.port = args.port
    if args.metrics_port is not None:
        config.metrics_port = args.metrics_port
    return config


def run_from_args(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.print_config:
        print(json.dumps(config.describe(), indent=2))
        return 0
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(config, args.ready_file))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_from_args(args)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"inspo-runtime: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
