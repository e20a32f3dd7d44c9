"""Off-policy evaluation: a candidate's value estimated from logs before it controls anything (docs/ope.md).

:func:`evaluate_offline` runs per-decision weighted importance sampling (PDWIS, exact behaviour
probabilities from the log) and fitted-Q evaluation on one log, with bootstrap intervals over
episodes, the effective sample size, and warnings when the log cannot support the estimate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

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
    warnings: list[str] = field(default_factory=list)
    trustworthy: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


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
) -> OPEReport:
    """Estimate ``policy``'s value on the log at ``data_path`` (``data``: an already opened LoadedLog).

    ``ess_threshold``: below it the WIS estimate is flagged meaningless (default max(10, 2 % of episodes)).
    """
    from trainer.logs import open_log

    loaded = data if data is not None else open_log(data_path)
    d = loaded.data
    controllers = getattr(loaded.columns, "controller", None)
    E = d.n_episodes
    base, base_ci = bootstrap_mean(discounted_returns(d.team_rewards, d.filled, gamma), bootstrap, seed)
    target = load_target(policy, d, controllers)
    report = OPEReport(target.name, str(data_path), d.env_id, E, gamma, base, base_ci)
    threshold = ess_threshold or max(10.0, 0.02 * E)
    mu = d.behavior_prob
    known = ~np.isnan(mu) | ~d.filled[..., None]
    if not known.all():
        share = 1 - known[d.filled].mean()
        report.warnings.append(
            f"behavior_prob is missing on {share:.0%} of agent-steps: importance sampling is impossible "
            "(only FQE is reported, and it cannot check its own extrapolation)"
        )
        report.trustworthy = False
    else:
        logged = mu[d.filled]
        if np.all(logged >= 1 - 1e-6):
            report.warnings.append(
                "every logged behavior_prob is 1: the logging controller was deterministic, so the log has one "
                "action per state. Importance sampling can only evaluate a policy that copies it, and FQE "
                "extrapolates to unseen actions: any estimate for a different policy is meaningless. Collect "
                "with exploration (<rule>@eps=0.1)."
            )
            report.trustworthy = False
        wis = pdwis(target.prob, mu, d.team_rewards, d.filled, gamma, clip_step, clip_weight, bootstrap, seed)
        report.wis, report.wis_ci = wis.value, wis.ci
        report.ess, report.ess_min, report.matched_episodes = wis.ess, wis.ess_min, wis.matched_episodes
        if not np.isfinite(wis.value):
            report.warnings.append(
                "no logged episode follows the target policy through every step (all importance weights are 0): "
                "WIS is undefined; the log does not cover this policy"
            )
            report.trustworthy = False
        elif wis.ess < threshold:
            report.warnings.append(
                f"effective sample size {wis.ess:.1f} of {E} episodes is below {threshold:.0f}: a handful of "
                "episodes decide the WIS estimate and its interval is not reliable; the log barely covers "
                "this policy (longer horizons and more agents shrink the ESS exponentially)"
            )
            report.trustworthy = False
    if run_fqe:
        if target.dist is None:
            report.warnings.append(
                "FQE needs the target's full action distribution; not available for rule targets"
            )
        else:
            cfg = fqe_config or FQEConfig()
            res = fqe(
                d.states,
                d.actions,
                d.team_rewards,
                d.filled,
                target.dist,
                d.masks,
                gamma,
                cfg,
                bootstrap,
            )
            report.fqe, report.fqe_ci = res.value, res.ci
            horizon = int(d.filled.sum(axis=1).max())
            effective = horizon if gamma >= 1 else min(horizon, int(np.ceil(3 / (1 - gamma))))
            if cfg.iterations < effective:
                report.warnings.append(
                    f"FQE made {cfg.iterations} Bellman backups but the effective horizon is {effective} steps: "
                    f"its estimate only carries about the first {cfg.iterations} steps of reward. Use a discount "
                    "(--gamma 0.99 and compare with discounted returns) or more --fqe-iterations"
                )
                report.trustworthy = False
    return report
