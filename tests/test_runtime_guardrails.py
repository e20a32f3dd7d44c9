"""Guardrails on a real server with real ONNX Runtime: under fuzzed observations, masks, current actions
and hold times, no served action violates a configured constraint (checked against the spec written out
here, not against runtime.guardrails), and interventions are counted in Prometheus."""

import numpy as np
import pytest
from deployment_helpers import sample, scrape
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_helpers import AGENTS, N_ACTIONS, OBS_DIM, ServerThread, config, export, make_run

from runtime.client import PolicyClient, build_request, parse_response
from runtime.config import GuardrailConfig, ModelConfig, load_config

FORBIDDEN = {"*": [3], "tl_0": [1]}
MIN_HOLD, MAX_HOLD = 5.0, 30.0
# "grid": the hold state comes from the request; "grid-obs": from the request when it has it, else from
# obs[0] (action) and obs[1] x 10 (elapsed), as docs/serving.md says.
GUARDS = {
    "grid": GuardrailConfig(forbidden=FORBIDDEN, min_hold=MIN_HOLD, max_hold=MAX_HOLD),
    "grid-obs": GuardrailConfig(
        forbidden=FORBIDDEN,
        min_hold=MIN_HOLD,
        max_hold=MAX_HOLD,
        current_obs_index=0,
        elapsed_obs_index=1,
        elapsed_scale=10.0,
    ),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("g")
    export(make_run(root / "run", seed=3, bounds=False), root / "models")
    import json
    import shutil

    src = root / "models" / "grid" / "1"
    dst = root / "models" / "grid-obs" / "1"
    shutil.copytree(src, dst)
    meta = json.loads((dst / "policy.json").read_text())
    meta["name"] = "grid-obs"
    (dst / "policy.json").write_text(json.dumps(meta))
    cfg = config(root / "models", models={n: ModelConfig(guardrails=g) for n, g in GUARDS.items()})
    s = ServerThread(cfg, metrics=True)
    client = PolicyClient(s.target)
    yield s, client
    client.close()
    s.stop()


def _spec_check(model, agent_ids, obs, mask, current, elapsed, action, probs):
    """The constraints as an operator reads docs/serving.md, applied to one served response."""
    for i, agent in enumerate(agent_ids):
        a = int(action[i])
        assert mask[i, a], "served an action the request's mask forbids"
        forbidden = set(FORBIDDEN["*"]) | set(FORBIDDEN.get(agent, []))
        allowed = [b for b in range(N_ACTIONS) if mask[i, b] and b not in forbidden]
        if allowed:
            assert a in allowed, f"{agent}: served forbidden action {a}"
        else:
            allowed = [b for b in range(N_ACTIONS) if mask[i, b]]
        # The request's current action / elapsed time win; "grid-obs" falls back to the observation.
        cur, el = current.get(agent), elapsed.get(agent)
        if model == "grid-obs":
            if cur is None:
                cur = int(round(float(obs[i, 0]))) if np.isfinite(obs[i, 0]) else None
            if el is None:
                el = float(obs[i, 1]) * 10.0
        if cur is None or el is None or not 0 <= cur < N_ACTIONS:
            continue
        if el < MIN_HOLD and cur in allowed:
            assert a == cur, f"{agent}: switched from {cur} after {el} < min_hold"
        if el >= MAX_HOLD and cur in allowed and len(allowed) > 1:
            assert a != cur, f"{agent}: kept {cur} for {el} >= max_hold"
        if probs is not None:  # the returned distribution lives on what may be served
            assert abs(float(probs[i].sum()) - 1.0) < 1e-4
            assert probs[i, a] > 0


agent_rows = st.lists(st.sampled_from(AGENTS), min_size=1, max_size=3, unique=True)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    model=st.sampled_from(["grid", "grid-obs"]),
    agents=agent_rows,
    data=st.data(),
    deterministic=st.booleans(),
    packed=st.booleans(),
    return_probs=st.booleans(),
)
def test_no_served_action_violates_a_constraint(
    server, model, agents, data, deterministic, packed, return_probs
):
    s, client = server
    n = len(agents)
    obs = np.array(
        data.draw(
            st.lists(
                st.lists(st.floats(-6, 6, width=32), min_size=OBS_DIM, max_size=OBS_DIM),
                min_size=n,
                max_size=n,
            )
        ),
        dtype=np.float32,
    )
    if model == "grid-obs":  # current action and elapsed/10 in obs[0], obs[1]
        obs[:, 0] = data.draw(st.lists(st.integers(-1, N_ACTIONS), min_size=n, max_size=n))
        obs[:, 1] = data.draw(
            st.lists(st.sampled_from([0.0, 0.2, 0.49, 0.5, 1.0, 2.9, 3.0, 5.0]), min_size=n, max_size=n)
        )
    mask = np.array(
        data.draw(
            st.lists(st.lists(st.booleans(), min_size=N_ACTIONS, max_size=N_ACTIONS), min_size=n, max_size=n)
        )
    )
    mask[~mask.any(axis=1), data.draw(st.integers(0, N_ACTIONS - 1))] = True
    hold = data.draw(st.booleans())
    current = {a: data.draw(st.integers(0, N_ACTIONS - 1)) for a in agents} if hold else {}
    elapsed = (
        {a: data.draw(st.sampled_from([0.0, 4.9, 5.0, 12.0, 29.9, 30.0, 100.0])) for a in agents}
        if hold
        else {}
    )
    request = build_request(
        model,
        obs,
        agents,
        mask,
        deterministic=deterministic,
        packed=packed,
        return_probs=return_probs,
        seed=data.draw(st.integers(0, 2**32)),
        current_actions=current or None,
        current_elapsed=elapsed or None,
    )
    result = parse_response(request, client.act_raw(request))
    _spec_check(model, agents, obs, mask, current, elapsed, result.actions, result.probs)
    assert ((result.probability > 0) & (result.probability <= 1.0 + 1e-6)).all()


def test_interventions_are_counted_and_marked(server):
    s, client = server
    obs = np.zeros((3, OBS_DIM), np.float32)
    mask = np.ones((3, N_ACTIONS), bool)
    before = scrape(s.server.metrics_port)
    # Everyone just switched to action 2 (elapsed 0): min_hold keeps 2 unless the policy chose it anyway.
    r = client.act(
        "grid",
        obs,
        AGENTS,
        mask,
        current_actions=dict.fromkeys(AGENTS, 2),
        current_elapsed=dict.fromkeys(AGENTS, 0.0),
    )
    assert r.actions.tolist() == [2, 2, 2]
    changed = sum(1 for g in r.guardrail if g == "min_hold")
    # Everyone has held action 0 for 100 s: max_hold moves them off it; 3 and (for tl_0) 1 stay forbidden.
    r2 = client.act(
        "grid",
        obs,
        AGENTS,
        mask,
        current_actions=dict.fromkeys(AGENTS, 0),
        current_elapsed=dict.fromkeys(AGENTS, 100.0),
    )
    assert 0 not in r2.actions.tolist() and 3 not in r2.actions.tolist() and r2.actions[0] != 1
    after = scrape(s.server.metrics_port)
    delta = sample(
        after, "inspo_runtime_guardrail_interventions_total", model="grid", rule="min_hold"
    ) - sample(before, "inspo_runtime_guardrail_interventions_total", model="grid", rule="min_hold")
    assert delta == changed
    assert sample(after, "inspo_runtime_guardrail_interventions_total", model="grid") >= changed
    # Forbidding every legal action cannot be satisfied: the mask wins, and it is counted.
    only3 = np.zeros((1, N_ACTIONS), bool)
    only3[0, 3] = True
    r3 = client.act("grid", obs[:1], AGENTS[:1], only3)
    assert r3.actions.tolist() == [3]
    final = scrape(s.server.metrics_port)
    assert sample(final, "inspo_runtime_guardrail_infeasible_total", model="grid", rule="forbidden") >= 1
    # Without hold state the hold rules are skipped and counted.
    assert sample(final, "inspo_runtime_guardrail_missing_state_total", model="grid") >= 1


def test_guardrail_config_is_validated(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[models.grid.guardrails]\nmin_hold = 10\nmax_hold = 5\n")
    with pytest.raises(ValueError, match="min_hold"):
        load_config(bad, env={})
    ok = tmp_path / "ok.toml"
    ok.write_text(
        "[models.grid.guardrails]\nmin_hold = 5\nmax_hold = 60\ncurrent_obs_index = 0\n"
        '[models.grid.guardrails.forbidden]\n"*" = [3]\ntl_0 = [1, 2]\n'
    )
    cfg = load_config(ok, env={})
    assert cfg.model("grid").guardrails.forbidden == {"*": [3], "tl_0": [1, 2]}
