"""Runtime configuration: typed dataclasses, a TOML/YAML file, then ``INSPO_RUNTIME_*`` environment variables.

Secrets (bearer tokens) never come from the config file's values or the command line: only from
files named in the config (``auth.policy_tokens_file``) or from environment variables
(``INSPO_RUNTIME_POLICY_TOKENS`` / ``INSPO_RUNTIME_ADMIN_TOKENS``, comma separated, or their
``*_FILE`` variants). They are never logged; :meth:`RuntimeConfig.describe` redacts them.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "INSPO_RUNTIME_"


@dataclass
class FallbackConfig:
    """The rule that answers when the policy cannot (inference error, deadline, invalid observation).

    ``rule``:
      * ``fixed``     -> ``action`` for every agent
      * ``per_agent`` -> ``actions[agent_id]``, else ``action``
      * ``obs_index`` -> ``int(round(obs[obs_index]))`` (e.g. the current-phase feature), else ``action``
      * ``current``   -> the request's ``current_action`` for the agent (keep doing what it does), else ``action``
    The chosen action is made legal: if the mask forbids it, the first legal action answers.
    """

    rule: str = "fixed"
    action: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    obs_index: int = 0
    # What to do with observations containing NaN/Inf: "reject" (INVALID_ARGUMENT) or "fallback".
    nonfinite_obs: str = "reject"
    # Observations outside the training bounds (policy.json obs_low/obs_high, widened by
    # bounds_tolerance * span): "serve" (count only) or "fallback".
    out_of_bounds: str = "serve"
    bounds_tolerance: float = 0.1
    # Answer with the fallback when less than this much of the client's deadline is left.
    deadline_margin_ms: float = 1.0

    def validate(self) -> None:
        if self.rule not in ("fixed", "per_agent", "obs_index", "current"):
            raise ValueError(f"fallback.rule must be fixed|per_agent|obs_index|current, got {self.rule!r}")
        if self.nonfinite_obs not in ("reject", "fallback"):
            raise ValueError(f"fallback.nonfinite_obs must be reject|fallback, got {self.nonfinite_obs!r}")
        if self.out_of_bounds not in ("serve", "fallback"):
            raise ValueError(f"fallback.out_of_bounds must be serve|fallback, got {self.out_of_bounds!r}")


@dataclass
class BatchingConfig:
    """Dynamic batching across concurrent requests of one model (off by default)."""

    enabled: bool = False
    max_batch_size: int = 256
    max_queue_delay_us: int = 500


@dataclass
class GuardrailConfig:
    """Action constraints an operator sets per model, enforced after the policy and before the response.

    * ``forbidden``: ``{agent_id = [actions]}``; the key ``"*"`` applies to every agent.
    * ``min_hold``: an agent that has executed its current action for less than this long keeps it
      (e.g. a minimum green time); ``max_hold``: one that has executed it for this long or longer must
      switch (0 = off). Time is the request's ``current_action_elapsed`` in seconds (else
      ``obs[elapsed_obs_index] * elapsed_scale``); the current action is the request's ``current_action`` (else
      ``round(obs[current_obs_index])``). Without both, the hold rules are skipped for that agent (counted).
    Precedence when they conflict: the request's action mask, then ``forbidden``, then the hold rules.
    """

    forbidden: dict[str, list[int]] = field(default_factory=dict)
    min_hold: float = 0.0
    max_hold: float = 0.0
    current_obs_index: int = -1
    elapsed_obs_index: int = -1
    elapsed_scale: float = 1.0

    @property
    def enabled(self) -> bool:
        return bool(self.forbidden) or self.min_hold > 0 or self.max_hold > 0

    def validate(self) -> None:
        if self.min_hold < 0 or self.max_hold < 0:
            raise ValueError("guardrails.min_hold / max_hold must be >= 0")
        if self.max_hold and self.min_hold >= self.max_hold:
            raise ValueError(
                f"guardrails.min_hold ({self.min_hold}) must be below max_hold ({self.max_hold})"
            )
        for agent, actions in self.forbidden.items():
            if not isinstance(actions, list) or not all(isinstance(a, int) for a in actions):
                raise ValueError(f"guardrails.forbidden.{agent}: expected a list of action indices")


@dataclass
class DeploymentConfig:
    """Shadow and canary deployment of a model (docs/deployment.md); the admin RPCs change it at run time.

    Model references are ``"name"`` (its served version) or ``"name:version"``.
    * ``incumbent``: who answers requests: ``""`` = this model; ``"rule"`` = ``rule`` (a fallback-style
      rule standing for the controller in operation today); or another model reference.
    * ``shadow``: a model computed off the response path, compared and logged beside the served action.
    * ``candidate`` + ``canary_share``: the share of agents (stable hash of ``canary_salt`` + agent id) the
      candidate answers.
    """

    incumbent: str = ""
    rule: FallbackConfig = field(default_factory=FallbackConfig)
    shadow: str = ""
    candidate: str = ""
    canary_share: float = 0.0
    canary_salt: str = ""
    # Agents the candidate answers by name, in addition to canary_share (e.g. ["tl_3", "tl_7"]).
    canary_agents: list[str] = field(default_factory=list)
    # Shadow work waiting beyond this many requests is dropped (counted), never queued without bound.
    shadow_queue: int = 1024

    def validate(self) -> None:
        if not 0.0 <= self.canary_share <= 1.0:
            raise ValueError(f"deployment.canary_share must be in [0, 1], got {self.canary_share}")
        if not isinstance(self.canary_agents, list) or not all(
            isinstance(a, str) for a in self.canary_agents
        ):
            raise ValueError("deployment.canary_agents must be a list of agent ids")
        self.rule.validate()


@dataclass
class ModelConfig:
    """Per-model settings; ``[models.<name>]`` in the file, ``[models.default]`` applies to the rest."""

    intra_op_threads: int = 1
    inter_op_threads: int = 1
    fallback: FallbackConfig = field(default_factory=FallbackConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    # Versions kept loaded (the current one plus older ones for roll-back and pinned requests).
    keep_versions: int = 3
    # Serve a newer version found on disk at once (hot reload). false: polling loads nothing new once a
    # version serves; new versions wait for LoadModel, or a shadow / canary deployment (docs/deployment.md).
    auto_serve: bool = True
    guardrails: GuardrailConfig = field(default_factory=GuardrailConfig)
    deployment: DeploymentConfig = field(default_factory=DeploymentConfig)
    # Observation rows in the drift window (docs/operations.md); 0 = one training episode's rows.
    drift_window: int = 0


@dataclass
class TLSConfig:
    cert_file: str = ""
    key_file: str = ""
    # Set to require client certificates signed by this CA (mutual TLS).
    client_ca_file: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


@dataclass
class AuthConfig:
    policy_tokens_file: str = ""
    admin_tokens_file: str = ""
    # Filled from the files / environment, never from the config file itself.
    policy_tokens: list[str] = field(default_factory=list, repr=False)
    admin_tokens: list[str] = field(default_factory=list, repr=False)


@dataclass
class DecisionLogConfig:
    dir: str = ""  # empty = off
    site: str = ""  # partition name (default: from the model's env id)
    queue_size: int = 100_000
    rows_per_file: int = 50_000
    # Decisions whose outcome has not arrived after this long are written without one.
    outcome_timeout_s: float = 300.0
    flush_interval_s: float = 10.0

    @property
    def enabled(self) -> bool:
        return bool(self.dir)


_DEFAULT_MODEL = ModelConfig()  # shared, read-only: what a model without a table gets


@dataclass
class RuntimeConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464  # 0 = off
    model_repository: str = "models"
    # Serve only these models (empty = every model in the repository).
    model_names: list[str] = field(default_factory=list)
    poll_interval_s: float = 5.0  # 0 = no polling (admin RPC only)
    max_message_bytes: int = 16 * 1024 * 1024
    max_agents_per_request: int = 4096
    # Label inspo_runtime_actions_total by agent (switch off for very large sites).
    metrics_agent_label: bool = True
    # SIGTERM: health NOT_SERVING at once, keep answering this long (load balancers stop sending), then
    # stop accepting and let in-flight calls finish within grace_period_s (docs/serving.md, "Shutdown").
    drain_delay_s: float = 1.0
    grace_period_s: float = 10.0
    # Where the deployment state (served versions, roll-backs, canary / shadow) is kept across restarts;
    # "" = in memory only (docs/deployment.md, "Durable state").
    state_file: str = ""
    log_level: str = "INFO"
    models: dict[str, ModelConfig] = field(default_factory=dict)
    tls: TLSConfig = field(default_factory=TLSConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    decision_log: DecisionLogConfig = field(default_factory=DecisionLogConfig)

    def model(self, name: str) -> ModelConfig:
        """The model's table, else ``[models.default]``, else the defaults (on the hot path: no allocation)."""
        found = self.models.get(name) or self.models.get("default")
        return found if found is not None else _DEFAULT_MODEL

    def describe(self) -> dict[str, Any]:
        """The effective configuration with secrets redacted (safe to log)."""
        d = dataclasses.asdict(self)
        d["auth"]["policy_tokens"] = f"<{len(self.auth.policy_tokens)} tokens>"
        d["auth"]["admin_tokens"] = f"<{len(self.auth.admin_tokens)} tokens>"
        return d


def _build(cls, data: dict[str, Any], where: str):
    """A dataclass from a dict, rejecting unknown keys (typos must not pass silently)."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ValueError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(fields))})")
        if key in ("policy_tokens", "admin_tokens"):
            raise ValueError(f"{where}.{key}: tokens are secrets; give a *_tokens_file or the environment")
        sub = {
            "fallback": FallbackConfig,
            "guardrails": GuardrailConfig,
            "deployment": DeploymentConfig,
            "batching": BatchingConfig,
            "tls": TLSConfig,
            "auth": AuthConfig,
            "decision_log": DecisionLogConfig,
        }.get(key)
        if key == "rule" and cls is DeploymentConfig:
            sub = FallbackConfig
        if sub is not None:
            value = _build(sub, value, f"{where}.{key}")
        elif key == "models" and cls is RuntimeConfig:
            value = {name: _build(ModelConfig, v, f"{where}.models.{name}") for name, v in value.items()}
        kwargs[key] = value
    return cls(**kwargs)


def read_file(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text) or {}
    import tomllib

    return tomllib.loads(text)


def _tokens_from_file(path: str) -> list[str]:
    return [
        line.strip()
        for line in Path(path).read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def _coerce(value: str, like: Any) -> Any:
    if isinstance(like, bool):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    if isinstance(like, list):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def load_config(path: str | os.PathLike | None = None, env: dict[str, str] | None = None) -> RuntimeConfig:
    """File (optional), then environment: ``INSPO_RUNTIME_PORT=50052``, ``INSPO_RUNTIME_TLS__CERT_FILE=...``
    (``__`` separates a section), secrets via ``INSPO_RUNTIME_{POLICY,ADMIN}_TOKENS[_FILE]``."""
    env = dict(os.environ if env is None else env)
    data = read_file(path) if path else {}
    config = _build(RuntimeConfig, data, str(path or "config"))
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name in ("policy_tokens", "admin_tokens", "policy_tokens_file", "admin_tokens_file"):
            continue  # handled below
        target, attr = config, name
        if "__" in name:
            section, attr = name.split("__", 1)
            target = getattr(config, section, None)
            if target is None or not dataclasses.is_dataclass(target):
                raise ValueError(f"{key}: unknown section {section!r}")
        if not hasattr(target, attr) or attr in ("models",):
            raise ValueError(f"{key}: unknown setting {attr!r}")
        setattr(target, attr, _coerce(value, getattr(target, attr)))
    auth = config.auth
    for kind in ("policy", "admin"):
        tokens: list[str] = []
        file_ = env.get(f"{ENV_PREFIX}{kind.upper()}_TOKENS_FILE") or getattr(auth, f"{kind}_tokens_file")
        if file_:
            tokens += _tokens_from_file(file_)
        tokens += [
            t.strip() for t in env.get(f"{ENV_PREFIX}{kind.upper()}_TOKENS", "").split(",") if t.strip()
        ]
        setattr(auth, f"{kind}_tokens", tokens)
    for name, model in config.models.items():
        try:
            model.fallback.validate()
            model.guardrails.validate()
            model.deployment.validate()
            if not isinstance(model.drift_window, int) or model.drift_window < 0:
                raise ValueError(
                    f"drift_window must be a whole number of rows >= 0, got {model.drift_window!r}"
                )
        except ValueError as err:
            raise ValueError(f"models.{name}: {err}") from None
    return config
