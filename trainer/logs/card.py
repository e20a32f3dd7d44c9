"""The dataset card: what a log holds and whether in-sample training can improve on it.

In-sample methods (InSPO among them) only ever reweight logged actions, so the card reports
action coverage per agent (share of the actions ever legal that were ever logged), joint
coverage where the joint action space is small, and warns when the logged behaviour was
deterministic or its probabilities are missing. It also warns when the behaviour was *near*-deterministic
(e.g. ``etd@eps=0.001``): a log where almost every real choice (a decision with more than one legal
action) was made with probability > 0.99, or where an agent almost never took anything but the
behaviour's clear choice, gives in-sample training next to nothing to reweight.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from trainer.logs.convert import LoadedLog

JOINT_COVERAGE_LIMIT = 10_000  # joint action spaces up to this size get a joint coverage figure
NEAR_ONE = 0.99  # a logged choice made with probability above this is near-deterministic ...
NEAR_DETERMINISTIC_SHARE = 0.9  # ... and a log where more than this share of choices are is warned about
CLEAR_CHOICE = 0.5  # an action logged with probability at most this was not the behaviour's clear choice
MIN_ALTERNATIVES = 0.01  # an agent taking such alternatives in fewer of its choices than this is warned about


@dataclass
class DatasetCard:
    path: str
    env_id: str
    fingerprint: str
    files: int
    episodes: int
    steps: int  # env steps (decision steps of the team)
    agent_steps: int
    agents: list[str]
    obs_dim: int
    n_actions: int
    action_names: list[str]
    length: dict[str, float]  # mean / min / max steps per episode
    returns: dict[str, float]  # mean / std / min / max team return
    controllers: list[dict] = field(default_factory=list)  # name, episodes, return mean
    action_histogram: dict[str, list[int]] = field(default_factory=dict)
    action_coverage: dict[str, float] = field(default_factory=dict)
    joint_coverage: float | None = None
    joint_actions: int | None = None  # size of the joint space joint_coverage refers to
    behavior_prob_known: float = 0.0  # share of agent-steps with a logged probability
    behavior_prob_one: float = 0.0  # share of those equal to 1 (deterministic choices)
    # among known choices (decisions with > 1 legal action): share made with probability > NEAR_ONE;
    # None when the log has no such decisions
    behavior_prob_near_one: float | None = None
    # per agent: share of its known choices where the logged action had probability <= CLEAR_CHOICE
    alternatives: dict[str, float | None] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    site_spec: dict | None = None  # the resolved site the log records (envs/site.py); None for older logs
    # the exogenous input events (docs/log-format.md): channel names and events per channel; None without
    exogenous: dict[str, int] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _action_names(env_id: str, n_actions: int, spec: dict | None = None) -> list[str]:
    """Names from the env family (or the log's site spec) where building the env is cheap; indices otherwise."""
    from envs.registry import action_names

    try:
        names = action_names(env_id, spec)
    except Exception:  # an env id this checkout cannot build: the card still works
        names = None
    return list(names) if names and len(names) == n_actions else [str(a) for a in range(n_actions)]


def _stats(values: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
    }


def build_card(log: LoadedLog, path: str = "") -> DatasetCard:
    data, cols = log.data, log.columns
    filled = data.filled
    returns = data.episode_returns().astype(np.float64)
    lengths = filled.sum(axis=1)
    n_actions, agents = data.n_actions, data.agent_ids
    actions, masks = data.actions[filled], data.masks[filled]  # [steps, N], [steps, N, A]

    card = DatasetCard(
        path=path,
        env_id=data.env_id,
        fingerprint=data.fingerprint,
        files=len(log.raw.agents.files) + (len(log.raw.envs.files) if log.raw.envs else 0),
        episodes=data.n_episodes,
        steps=int(filled.sum()),
        agent_steps=int(filled.sum()) * data.n_agents,
        agents=list(agents),
        obs_dim=data.obs_dim,
        n_actions=n_actions,
        action_names=_action_names(data.env_id, n_actions, data.site_spec),
        site_spec=data.site_spec,
        length={k: v for k, v in _stats(lengths.astype(np.float64)).items() if k != "std"},
        returns=_stats(returns),
    )
    if cols.controller is not None:
        for name in sorted(set(cols.controller)):
            chosen = cols.controller == name
            card.controllers.append(
                {
                    "controller": name,
                    "episodes": int(chosen.sum()),
                    "return_mean": float(returns[chosen].mean()),
                }
            )

    ever_legal = masks.any(axis=0)  # [N, A]
    for i, agent in enumerate(agents):
        counts = np.bincount(actions[:, i], minlength=n_actions)
        card.action_histogram[agent] = counts.tolist()
        card.action_coverage[agent] = float((counts > 0).sum() / max(ever_legal[i].sum(), 1))
    joint_size = int(np.prod(ever_legal.sum(axis=1), dtype=np.float64))
    if joint_size <= JOINT_COVERAGE_LIMIT:
        codes = (actions * (n_actions ** np.arange(len(agents)))).sum(axis=1)
        card.joint_coverage = float(len(np.unique(codes)) / joint_size)
        card.joint_actions = joint_size

    probs = data.behavior_prob[filled]
    known = ~np.isnan(probs)
    card.behavior_prob_known = float(known.mean())
    card.behavior_prob_one = float((probs[known] >= 1.0 - 1e-6).mean()) if known.any() else 0.0
    choice = known & (masks.sum(axis=-1) > 1)  # [steps, N]: real choices with a logged probability
    if choice.any():
        card.behavior_prob_near_one = float((probs[choice] > NEAR_ONE).mean())
    for i, agent in enumerate(agents):
        mine = choice[:, i]
        card.alternatives[agent] = float((probs[mine, i] <= CLEAR_CHOICE).mean()) if mine.any() else None
    if data.exogenous is not None:
        counts = np.zeros(len(data.exogenous.channels), np.int64)
        for channel in data.exogenous.channel.values():
            counts += np.bincount(channel, minlength=len(counts))
        card.exogenous = dict(zip(data.exogenous.channels, counts.tolist(), strict=True))
    card.warnings = _warnings(card, log)
    return card


def _warnings(card: DatasetCard, log: LoadedLog) -> list[str]:
    out = []
    if card.behavior_prob_known == 0.0:
        out.append(
            "behavior_prob is missing (null) everywhere: the behaviour policy is unknown, so importance "
            "ratios must come from a behaviour-cloned estimate; if the logging controller was deterministic, "
            "InSPO degenerates to cloning it. Log controllers that report their probabilities."
        )
    elif card.behavior_prob_known < 1.0:
        out.append(
            f"behavior_prob is missing for {1 - card.behavior_prob_known:.1%} of agent-steps; those steps "
            "need a behaviour-cloned estimate of the logging policy."
        )
    if card.behavior_prob_known > 0 and card.behavior_prob_one == 1.0:
        out.append(
            "every logged action had probability 1: the behaviour was deterministic, so each state has a single "
            "logged action. In-sample methods can only reweight logged actions, and InSPO degenerates to "
            "behaviour cloning. Collect with exploration (e.g. '<rule>@eps=0.1' or '<rule>@temp=2')."
        )
    elif near_deterministic := _near_deterministic(card):
        out.append(near_deterministic)
    for agent, coverage in card.action_coverage.items():
        if coverage < 1.0:
            never = [
                card.action_names[a]
                for a in range(card.n_actions)
                if card.action_histogram[agent][a] == 0
                and log.data.masks[log.data.filled][:, card.agents.index(agent), a].any()
            ]
            out.append(
                f"agent {agent!r} never took legal action(s) {never}: in-sample training cannot learn their value."
            )
    if log.raw.envs is None:
        out.append(
            "no env_steps in this log: state = all agents' observations, team reward = mean agent reward."
        )
    return out


def _near_deterministic(card: DatasetCard) -> str | None:
    """The warning for a behaviour that was deterministic in all but name, or None."""
    rare = {
        a: share for a, share in card.alternatives.items() if share is not None and share < MIN_ALTERNATIVES
    }
    near_one = card.behavior_prob_near_one
    if not rare and (near_one is None or near_one <= NEAR_DETERMINISTIC_SHARE):
        return None
    found = []
    if near_one is not None and near_one > NEAR_DETERMINISTIC_SHARE:
        found.append(
            f"{near_one:.1%} of the logged choices (decisions with more than one legal action) had "
            f"behavior_prob > {NEAR_ONE}"
        )
    if rare:
        shares = ", ".join(f"{a} {share:.2%}" for a, share in rare.items())
        found.append(
            f"agents took an action other than the behaviour's clear choice (behavior_prob <= {CLEAR_CHOICE}) "
            f"in under {MIN_ALTERNATIVES:.0%} of their choices ({shares})"
        )
    return (
        "the behaviour was near-deterministic: "
        + "; ".join(found)
        + ". In-sample methods can only reweight logged actions, and here there is little besides the "
        "behaviour's own choice to reweight: InSPO will stay close to behaviour cloning, and what it learns "
        "about other actions rests on a handful of steps. Collect with more exploration "
        "(e.g. '<rule>@eps=0.1' or '<rule>@temp=0.5')."
    )
