"""Off-policy evaluation: a candidate's value estimated from logs before it controls anything (docs/ope.md).

:func:`evaluate_offline` runs per-decision weighted importance sampling (PDWIS, exact behaviour
probabilities from the log) and fitted-Q evaluation on one log, with bootstrap intervals over
episodes, the effective sample size, and warnings when the log cannot support the estimate. Each
estimate carries its own ``*_trustworthy`` (PDWIS: a stochastic logger and enough effective sample size;
FQE: a value the rewards allow, enough backups for the horizon, and a held-out check of the fitted Q,
trainer/ope/checks.py); ``estimate`` names the trusted one docs/ope.md's decision rule may use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from trainer.ope.checks import heldout_check, outside_range, value_range
from trainer.ope.estimators import FQEConfig, bootstrap_mean, fqe, pdwis
from trainer.ope.target import TargetPolicy, load_target

__all__ = ["FQEConfig", "OPEReport", "evaluate_offline", "fqe", "load_target", "pdwis", "TargetPolicy"]


@dataclass
class OPEReport:
    policy: str
    data: str
    env_id: str
    episodes: int
    gamma: float
    behavior_value: float  # the log's own mean (discounted) return
    behavior_ci: tuple[float, float]
    wis: float | None = None
    wis_ci: tuple[float, float] | None = None
    ess: float | None = None
    ess_min: float | None = None
    matched_episodes: int | None = None
    fqe: float | None = None
    fqe_ci: tuple[float, float] | None = None
    fqe_range: tuple[float, float] | None = None  # the values the log's rewards allow (trainer/ope/checks.py)
    fqe_heldout: dict | None = None  # the held-out check of the fitted Q (HeldOutCheck.as_dict())
    wis_trustworthy: bool | None = None  # None: not computed
    fqe_trustworthy: bool | None = None
    estimate: str | None = None  # "wis" or "fqe": the trusted estimate the decision rule may use, if any
    warnings: list[str] = field(default_factory=list)
    not_available: dict[str, str] = field(default_factory=dict)  # field -> why it has no number
    trustworthy: bool = False  # some estimate is trusted (``estimate``)

    def to_dict(self) -> dict:
        """JSON-safe: every NaN/Inf becomes null, with the reason under ``not_available``."""
        d = asdict(self)
        reasons = dict(self.not_available)
        for key, value in d.items():
            if isinstance(value, float) and not np.isfinite(value):
                d[key] = None
                reasons.setdefault(key, "not a finite number")
            elif isinstance(value, tuple | list) and any(
                isinstance(v, float) and not np.isfinite(v) for v in value
            ):
                d[key] = None
                reasons.setdefault(key, "the bootstrap gave too few finite resamples for an interval")
        if isinstance(d.get("fqe_heldout"), dict):
            d["fqe_heldout"] = {
                k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                for k, v in d["fqe_heldout"].items()
            }
        d["not_available"] = reasons
        return d


def discounted_returns(rewards: np.ndarray, filled: np.ndarray, gamma: float) -> np.ndarray:
    disc = gamma ** np.arange(rewards.shape[1])
    return (np.where(filled, rewards, 0.0) * disc).sum(axis=1)


def evaluate_offline(
    policy: str,
    data_path: str,
    gamma: float = 1.0,
    bootstrap: int = 200,
    clip_step: float | None = None,
    clip_weight: float | None = None,
    ess_threshold: float = 0.0,
    run_fqe: bool = True,
    fqe_config: FQEConfig | None = None,
    seed: int = 0,
    data=None,
    check_fqe: bool = True,
) -> OPEReport:
    """Estimate ``policy``'s value on the log at ``data_path`` (``data``: an already opened LoadedLog).

    ``ess_threshold``: below it the WIS estimate is flagged meaningless (default max(10, 2 % of episodes)).
    ``check_fqe``: fit the held-out check of FQE (a second, behaviour-policy FQE; without it FQE is not
    trusted). Each estimate gets its own ``*_trustworthy``; ``estimate`` names the one to use (WIS first).
    """
    from trainer.logs import open_log

    loaded = data if data is not None else open_log(data_path)
    d = loaded.data
    controllers = getattr(loaded.columns, "controller", None)
    E = d.n_episodes
    base, base_ci = bootstrap_mean(discounted_returns(d.team_rewards, d.filled, gamma), bootstrap, seed)
    target = load_target(policy, d, controllers)
    report = OPEReport(target.name, str(data_path), d.env_id, E, gamma, base, base_ci)
    _importance_sampling(report, target, d, gamma, bootstrap, clip_step, clip_weight, ess_threshold, seed)
    if run_fqe:
        _fitted_q(report, target, d, gamma, bootstrap, fqe_config or FQEConfig(), check_fqe)
    else:
        report.not_available["fqe"] = "not run (--no-fqe)"
    if report.wis_trustworthy:
        report.estimate = "wis"
    elif report.fqe_trustworthy:
        report.estimate = "fqe"
    report.trustworthy = report.estimate is not None
    return report


def _importance_sampling(report, target, d, gamma, bootstrap, clip_step, clip_weight, ess_threshold, seed):
    E = d.n_episodes
    threshold = ess_threshold or max(10.0, 0.02 * E)
    mu = d.behavior_prob
    known = ~np.isnan(mu) | ~d.filled[..., None]
    report.wis_trustworthy = False
    if not known.all():
        share = 1 - known[d.filled].mean()
        report.warnings.append(
            f"behavior_prob is missing on {share:.0%} of agent-steps: importance sampling is impossible "
            "(only FQE is reported, and it cannot check its own extrapolation)"
        )
        report.not_available["wis"] = "behavior_prob is missing in the log"
        report.fqe_trustworthy = False
        return
    logged = mu[d.filled]
    if np.any(logged <= 0):
        report.warnings.append(
            f"behavior_prob is 0 on {np.mean(logged <= 0):.2%} of logged agent-steps: a logged action the "
            "logger could not take; the log is inconsistent and importance sampling is undefined"
        )
        report.not_available["wis"] = "behavior_prob 0 for logged actions"
        return
    if np.all(logged >= 1 - 1e-6):
        report.warnings.append(
            "every logged behavior_prob is 1: the logging controller was deterministic, so the log has one "
            "action per state. Importance sampling can only evaluate a policy that copies it, and FQE "
            "extrapolates to unseen actions: any estimate for a different policy is meaningless. Collect "
            "with exploration (<rule>@eps=0.1)."
        )
        report.fqe_trustworthy = False
        deterministic_log = True
    else:
        deterministic_log = False
    wis = pdwis(target.prob, mu, d.team_rewards, d.filled, gamma, clip_step, clip_weight, bootstrap, seed)
    report.wis, report.wis_ci = wis.value, wis.ci
    report.ess, report.ess_min, report.matched_episodes = wis.ess, wis.ess_min, wis.matched_episodes
    if not np.isfinite(wis.value):
        report.warnings.append(
            "no logged episode follows the target policy through every step (all importance weights are 0): "
            "WIS is undefined; the log does not cover this policy"
        )
        report.not_available["wis"] = (
            "undefined: no logged episode follows the target through every step (all importance weights 0)"
        )
        report.wis = None
    elif wis.ess < threshold:
        report.warnings.append(
            f"effective sample size {wis.ess:.1f} of {E} episodes is below {threshold:.0f}: a handful of "
            "episodes decide the WIS estimate and its interval is not reliable; the log barely covers "
            "this policy (longer horizons and more agents shrink the ESS exponentially)"
        )
    else:
        report.wis_trustworthy = not deterministic_log
    if report.wis_ci is not None and not np.isfinite(report.wis_ci).all():
        report.not_available["wis_ci"] = "fewer than half of the bootstrap resamples have a defined WIS"


def _fitted_q(report, target, d, gamma, bootstrap, cfg: FQEConfig, check: bool):
    if target.dist is None:
        report.warnings.append(
            "FQE needs the target's full action distribution; not available for rule targets"
        )
        report.not_available["fqe"] = "rule targets give no full action distribution"
        report.fqe_trustworthy = None
        return
    res = fqe(d.states, d.actions, d.team_rewards, d.filled, target.dist, d.masks, gamma, cfg, bootstrap)
    report.fqe, report.fqe_ci = res.value, res.ci
    trusted = report.fqe_trustworthy is not False  # a deterministic log or missing probabilities say no
    lo, hi = value_range(d.team_rewards, d.filled, gamma)
    report.fqe_range = (lo, hi)
    low_v, high_v = float(res.per_episode.min()), float(res.per_episode.max())
    scale = float(np.abs(discounted_returns(d.team_rewards, d.filled, gamma)).mean())
    if any(outside_range(v, lo, hi, scale) for v in (res.value, low_v, high_v)):
        report.warnings.append(
            f"FQE gives values in [{low_v:.4g}, {high_v:.4g}] (mean {res.value:.4g}) but the logged rewards only "
            f"allow [{lo:.4g}, {hi:.4g}] at gamma={report.gamma}: an impossible value, the fit has not converged "
            "or has diverged"
        )
        trusted = False
    horizon = int(d.filled.sum(axis=1).max())
    effective = horizon if gamma >= 1 else min(horizon, int(np.ceil(3 / (1 - gamma))))
    if cfg.iterations < effective:
        report.warnings.append(
            f"FQE made {cfg.iterations} Bellman backups but the effective horizon is {effective} steps: "
            f"its estimate only carries about the first {cfg.iterations} steps of reward. Use a discount "
            "(--gamma 0.99 and compare with discounted returns) or more --fqe-iterations"
        )
        trusted = False
    if check:
        held = heldout_check(d.states, d.actions, d.team_rewards, d.filled, d.masks, gamma, cfg)
        report.fqe_heldout = held.as_dict()
        if not held.passed:
            report.warnings.append(f"FQE held-out check failed: {held.reason}")
            trusted = False
    else:
        report.warnings.append("FQE held-out check skipped: FQE is not trusted without it")
        trusted = False
    report.fqe_trustworthy = trusted
