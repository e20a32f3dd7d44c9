"""Does a per-agent advantage estimator see the truth? Offline estimates vs paired simulation.

    .venv/bin/python bench/advantage_truth.py                       # down-peak, etd@exp=0.2 log of 300 episodes
    .venv/bin/python bench/advantage_truth.py --behaviour etd@exp=1 --futures 32 --states 40 --seeds 0 1 2
    .venv/bin/python bench/advantage_truth.py --futures 32 --states 40 --seeds 0 1 2 \
        --replicate bench/.cache/advantage-truth-log-b   # the estimators' own reliability (a second log)
    .venv/bin/python bench/advantage_truth.py --log LOG --states 60 --futures 8 --out docs/results/advantage
    .venv/bin/python bench/advantage_truth.py --env sumo:grid4x4    # traffic: bench/traffic_truth.py
    .venv/bin/python bench/advantage_truth.py --env sumo:grid4x4 --behaviour max-pressure@exp=0.1@keep=0.5 \
        --decisions keep --linear-set adv_weights=precision --out docs/results/advantage_keep
    .venv/bin/python bench/advantage_truth.py --behaviour etd@exp=1@assign=0.5 --decisions assign \
        --linear-set adv_ordinal=true --linear-set adv_weights=precision \
        --out docs/results/advantage_assign       # who stops for a call (envs/elevator/experiment.py)

1. A log of the behaviour policy (default: the logged parking experiment ``etd@exp=0.2``; ``--behaviour
   etd@exp=1`` for the experiment at every idle spell; collection seeds 6200+, cached under bench/.cache)
   trains the estimators with the actor frozen at mu (``actor_lr = 0``, ``actor_init = "mu"``), so each
   estimates the behaviour's own advantage ``A^mu_i(s, a)``: the paper's local Q (``estimator =
   "local_q"``), the residual estimator with network heads (``"residual"``) and with linear heads solved
   in closed form (``residual:linear``, ``adv_heads = "linear"``).
2. Held-out states: episodes of the same behaviour on *tuning* seeds (20000+), a snapshot at every
   ``--every``-th step where an idle car has a choice. The car's teammates' actions at that step are fixed
   to one draw of the behaviour.
3. Truth: for every legal action of the car, ``--futures`` paired rollouts of the behaviour from a copy of
   the building (passengers to come redrawn by ``resample_future``, the same draws for every action),
   discounted exactly as the learner discounts (its ``discount``/``horizon_s``/``gamma``), in the learner's
   reward units (divided by the log's reward scale). The difference to the behaviour's preferred action is
   the truth; its paired standard error says how well the simulation pinned it down.
4. Printed side by side for both estimators: correlation with the truth, sign accuracy where
   ``|truth| > 2 SE``, and a calibration plot (PNG). Runs on tuning seeds only, never evaluation seeds.
5. The truth's own reliability: the correlation of the truth from one half of the futures with the
   other half's (and Spearman-Brown's extension to all of them), the share of the truth's variance
   that is state-to-state signal rather than simulation noise (``1 - mean SE^2 / var``), and the mean
   SE with a quarter, half and all of the futures. No estimator can correlate with the truth better
   than about the square root of its reliability.
6. ``--replicate LOG``: the estimator's own reliability. Each estimator is trained again on a second log
   of the same behaviour and size from other collection seeds; the correlation of the two logs'
   estimates over the pairs is how well it reproduces itself. With the truth's reliability it bounds the
   correlation with the truth at ``sqrt(r_estimator * r_truth)``: an estimator near that bound is short of
   data, one far below it reproduces estimates that are not the truth's (its form is what to change).
7. The truth's precision differs a hundredfold between pairs (a move in a quiet building is pinned down
   by the futures, one in a congested peak is not), and a plain correlation is set by its noisiest
   pairs. So each estimator's correlation is also printed weighted by ``1 / SE^2`` and over the
   *measurable* pairs (``SE <= --measurable-se``), there also within each alternative (each
   alternative's mean removed: does the estimate follow the state, or only which alternative it is?).
   ``--tuning-skip N`` takes the held-out episodes after the first N tuning seeds: a second set of
   states, to confirm on states nothing was chosen on.

Traffic (``--env sumo:grid4x4``, bench/traffic_truth.py says how its truth is simulated): the named
dataset ``experiment`` (``max-pressure@exp=0.2``, 900 s episodes, collection seeds 6200+) trains the
estimators with the learner's settings of bench/configs/traffic-grid4x4.toml; the residual estimator is
trained once per ``reward_credit`` (team, local, local+neighbours), each compared with the truth of the
team's return, which is what the policy should maximise, and the linear heads once with
``local+neighbours`` (the results configs' credit). ``--behaviour max-pressure@exp=0.1@keep=0.5 --decisions
keep``: a log of that experiment (96 episodes) and held-out decisions where its keep alternative randomises
(max-pressure would leave a near-tie green). Written to ``traffic_truth.json``/``.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from envs.controllers import Controller

ENV = "elevator:cb10x4:downpeak"
BEHAVIOUR = "etd@exp=0.2"
SETTINGS = {  # what both estimators share (the elevator results config's returns)
    "discount": "time",
    "horizon_s": 120.0,
    "exact_propensity": True,
    "actor_init": "mu",
    "actor_lr": 0.0,
}


TRAFFIC_SETTINGS = {"exact_propensity": True, "actor_init": "mu", "actor_lr": 0.0}  # + the config file's
# The SE (learner reward units) up to which a pair's truth counts as measurable: an idle car's move in a
# quiet building changes the discounted return by about 0.001-0.002 in these units, so a truth less precise
# than that cannot tell such an effect's sign (elevator; --measurable-se for other settings).
MEASURABLE_SE = 0.002
CREDITS = ("team", "local", "local+neighbours")  # traffic: the residual estimator once per reward_credit


def is_traffic(env_id: str) -> bool:
    return env_id.startswith("sumo:")


def default_behaviour(env_id: str) -> str:
    import traffic_truth

    return traffic_truth.BEHAVIOUR if is_traffic(env_id) else BEHAVIOUR


def collect_log(
    path: Path,
    episodes: int,
    workers: int,
    env_id: str = ENV,
    behaviour: str = BEHAVIOUR,
    start_seed: int = 6200,
) -> Path:
    from trainer.collect import collect

    if not (path / "agent_steps").exists():
        if is_traffic(env_id):
            import traffic_truth

            plan = (
                {"dataset": "experiment"}
                if behaviour == traffic_truth.BEHAVIOUR
                else {"controller": behaviour, "episodes": 96}
            )
            collect(
                env_id,
                path,
                **plan,
                start_seed=start_seed,
                workers=workers,
                env_kwargs=traffic_truth.ENV_ARGS,
            )
        else:
            collect(
                ENV, path, controller=behaviour, episodes=episodes, start_seed=start_seed, workers=workers
            )
    return path


def estimator_config(estimator: str, extra: dict | None = None, env_id: str = ENV, **fields):
    """The InSPO config both estimators train with: the shared settings, the estimator, then overrides.
    Traffic: the learner's config file (gamma, networks, neighbours) under the frozen-actor settings."""
    from trainer.algos.config import make_config

    if is_traffic(env_id):
        import traffic_truth

        overrides = {**TRAFFIC_SETTINGS, "estimator": estimator, **fields, **(extra or {})}
        return make_config("inspo", file=ROOT / traffic_truth.CONFIG, overrides=overrides)
    return make_config("inspo", overrides={**SETTINGS, "estimator": estimator, **fields, **(extra or {})})


def train_estimator(
    log: Path,
    estimator: str,
    iterations: int,
    seed: int,
    extra: dict | None = None,
    env_id: str = ENV,
    neighbors: dict | None = None,
):
    import torch

    from trainer.algos.inspo import InSPO
    from trainer.logs import load_log

    torch.set_num_threads(1)
    algo = InSPO(estimator_config(estimator, extra, env_id, iterations=iterations, seed=seed))
    algo.setup(load_log(log), neighbors)
    algo.fit()
    return algo


def estimated_advantages(algo, states: np.ndarray, obs: np.ndarray, agents: np.ndarray, masks: np.ndarray):
    """``[S, A]`` advantage of each snapshot's car, centred under the fitted mu (local Q: its values centred)."""
    import torch

    from trainer.algos import losses
    from trainer.algos.base import agent_logits

    s, o, m = torch.as_tensor(states), torch.as_tensor(obs), torch.as_tensor(masks)
    agent = torch.as_tensor(agents, dtype=torch.long)
    with torch.no_grad():
        log_mu = torch.stack(
            [
                losses.floored_log_probs(
                    agent_logits(algo.mu, o[k : k + 1], int(agent[k]), m[k : k + 1]),
                    m[k : k + 1],
                    algo.config.mu_floor,
                )[0]
                for k in range(len(agent))
            ]
        )
        if algo.config.estimator == "residual":
            adv = algo._centred_advantages(s, o, agent, m, log_mu).mean(1)
        else:
            q = torch.stack(
                [algo.local_q(s[k : k + 1], o[k : k + 1], int(agent[k]))[0] for k in range(len(agent))]
            )
            adv = losses.centre_advantages(q.unsqueeze(1), torch.exp(log_mu), m)[:, 0]
    return adv.numpy()


def snapshots(
    seed: int, every: int, max_states: int, behaviour: str | Controller = BEHAVIOUR, decisions: str = "idle"
):
    """Decision states of one behaviour episode (a spec, or a controller to copy) where a car's behaviour
    chooses at random: an idle car's (the parking experiment's idle-spell decisions; ``decisions="idle"``) or
    a car's outside an idle spell (the assignment alternative's, ``@assign=q``; ``decisions="assign"``). Each
    holds the env and controller *before* the step, the car, ..."""
    from envs.controllers import build_controller
    from envs.elevator.core import IDLE
    from envs.registry import make_env
    from trainer.rollout import action_rng

    env = make_env(ENV)
    ctl = build_controller(ENV, behaviour) if isinstance(behaviour, str) else copy.deepcopy(behaviour)
    obs, infos = env.reset(seed=seed)
    ctl.reset(env, seed)
    rng = action_rng(seed)
    out, k, last = [], 0, -every
    while env.agents:
        deciding = [
            c
            for c, a in enumerate(env.possible_agents)
            if infos[a]["action_mask"].sum() > 1 and (decisions == "assign" or env.core.l_mode[c] == IDLE)
        ]
        before = (copy.deepcopy(env), copy.deepcopy(ctl), copy.deepcopy(rng)) if deciding else None
        actions, _ = ctl.act(env, obs, infos, rng)
        # cars whose behaviour had a real choice here: what a log can teach about
        choosers = [
            c for c in deciding if np.count_nonzero(ctl.last_distribution[env.possible_agents[c]]) > 1
        ]
        if decisions == "assign":  # outside the parking experiment's idle spells
            choosers = [c for c in choosers if ctl.spells[c] is None]
        record = choosers and len(out) < max_states and k - last >= every
        if record:
            last = k
            c = choosers[int(rng.integers(len(choosers)))]
            agent = env.possible_agents[c]
            out.append(
                {
                    "env": before[0],
                    "controller": before[1],
                    "car": c,
                    "actions": dict(actions),
                    "dist": ctl.last_distribution[agent].copy(),
                    "state": env.state().astype(np.float32),
                    "obs": obs[agent].astype(np.float32),
                    "mask": np.asarray(infos[agent]["action_mask"], bool),
                }
            )
        obs, _, _, _, infos = env.step(actions)
        k += 1
    return out


def rollout(job) -> float:
    """Discounted reward of one future: the car's candidate action now, then the behaviour."""
    env0, ctl0, car, actions, candidate, future, discount, horizon_s, gamma = job
    env, ctl, rng, obs, infos = future_copy(env0, ctl0, future)
    ctl.distribution(env, obs, infos)  # the snapshot step's decision, replayed with the car's candidate
    first = dict(actions)
    first[env.possible_agents[car]] = candidate
    return return_after(env, ctl, first, rng, discount, horizon_s, gamma)


def future_copy(env0, ctl0, future: int):
    """A copy of a snapshot's building and controller with the passengers to come redrawn by ``future``,
    that future's action generator, and the observations and infos the snapshot step decides on."""
    from trainer.rollout import action_rng

    env, ctl = copy.deepcopy(env0), copy.deepcopy(ctl0)
    env.resample_future(future)
    return env, ctl, action_rng(future), env._obs(), env._infos()


def return_after(env, ctl, first: dict, rng, discount, horizon_s, gamma) -> float:
    """Play the snapshot step with the joint action ``first``, then the behaviour; the rewards discounted as
    the learner discounts from this decision, until the weight is negligible."""
    t0 = env.sim_time()
    obs, rewards, _, _, infos = env.step(first)
    if hasattr(ctl, "condition_on"):  # the experiment's parking posterior follows the forced action
        ctl.condition_on(env, first)
    total, steps = env.team_reward(rewards), 0
    while env.agents:
        elapsed = env.sim_time() - t0
        if discount == "time":
            weight = float(np.exp(-elapsed / horizon_s))
            if elapsed > 6 * horizon_s:
                break
        else:
            weight = gamma ** (steps + 1)
            if weight < 2e-3:
                break
        acts, _ = ctl.act(env, obs, infos, rng)
        obs, rewards, _, _, infos = env.step(acts)
        total += weight * env.team_reward(rewards)
        steps += 1
    return total


def elevator_values(args, c) -> tuple[list[dict], dict[int, dict[int, np.ndarray]]]:
    """Snapshots of held-out elevator episodes and each candidate action's discounted futures."""
    per_episode = -(-args.states // args.tuning_episodes)
    snaps = [
        s
        for seed in held_out_seeds(args)
        for s in snapshots(seed, args.every, per_episode, args.behaviour, args.decisions)
    ]
    snaps = snaps[: args.states]
    jobs, index = [], []
    for si, snap in enumerate(snaps):
        snap["agent"] = snap["car"]
        for a in np.flatnonzero(snap["mask"]):
            for r in range(args.futures):
                future = 30_000_000 + si * 100 + r
                job = (snap["env"], snap["controller"], snap["car"], snap["actions"], int(a), future)
                jobs.append((*job, c.discount, c.horizon_s, c.gamma))
                index.append((si, int(a), r))
    from tqdm.auto import tqdm

    with ProcessPoolExecutor(args.workers, mp_context=get_context("fork")) as pool:
        values = list(tqdm(pool.map(rollout, jobs, chunksize=4), total=len(jobs), desc="truth rollouts"))
    q: dict[int, dict[int, np.ndarray]] = {}
    for (si, a, r), v in zip(index, values, strict=True):
        q.setdefault(si, {}).setdefault(a, np.zeros(args.futures))[r] = v
    return snaps, q


def held_out_seeds(args) -> list[int]:
    """The tuning seeds of the held-out episodes: ``--tuning-episodes`` of them after the first
    ``--tuning-skip`` (a second, independent set of states to confirm what the first one showed)."""
    from envs.seeds import tuning_seeds

    skip = getattr(args, "tuning_skip", 0)
    return tuning_seeds(skip + args.tuning_episodes)[skip:]


def truth_cache(args, c) -> tuple[Path, bool]:
    """Where the truth of these settings is kept, and whether the env code is uncommitted (then nothing
    is kept). The truth depends on the env code, the held-out episodes and the discounting only."""
    import hashlib

    from bench.results import envs_code_stamp

    envs_tree = envs_code_stamp(args.env)
    dirty = envs_tree is None or envs_tree.endswith("+uncommitted")
    skip = getattr(args, "tuning_skip", 0)
    key = {
        "env": args.env,
        "tuning_episodes": args.tuning_episodes,
        **({"tuning_skip": skip} if skip else {}),  # 0: the key kept before the option existed
        "every": args.every,
        "states": args.states,
        "futures": args.futures,
        # traffic's default behaviour: None, the key kept before other behaviours were possible
        "behaviour": None
        if args.behaviour == default_behaviour(args.env) and is_traffic(args.env)
        else args.behaviour,
        **({"decisions": args.decisions} if args.decisions != "idle" else {}),  # idle: the keys kept before
        "discount": c.discount,
        "horizon_s": c.horizon_s,
        "gamma": c.gamma,
        "envs_tree": envs_tree,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return ROOT / "bench" / ".cache" / f"truth-{digest}.pkl", dirty


def cached_truth(args, c, traffic: bool) -> tuple[list[dict], dict[int, dict[int, np.ndarray]], dict | None]:
    """The held-out states and their paired futures, computed once per setting and kept under bench/.cache.

    Comparing estimator settings (``--set``) then costs their training only. ``--fresh-truth``
    recomputes it."""
    import pickle

    path, dirty = truth_cache(args, c)
    if path.exists() and not args.fresh_truth and not dirty:
        print(f"truth from {path.relative_to(ROOT)} (computed once for these settings)")
        with path.open("rb") as f:
            return pickle.load(f)
    neighbors = None
    if traffic:
        snaps, futures, neighbors = traffic_values(args, c)
    else:
        snaps, futures = elevator_values(args, c)
    light = [{k: v for k, v in snap.items() if k not in ("env", "controller")} for snap in snaps]
    if not dirty:  # uncommitted env code may change again: nothing kept
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            pickle.dump((light, futures, neighbors), f)
    return light, futures, neighbors


def cached_elevator_truth(
    config, futures: int, states: int, behaviour: str = BEHAVIOUR
) -> tuple[list[dict], dict]:
    """The elevator truth this bench cached for ``--futures``/``--states`` (its default held-out
    episodes) under ``config``'s discounting: (held-out states, paired futures). For the benches that
    read it without recomputing it (bench/return_bias.py, bench/heads_holdout.py)."""
    import argparse
    import pickle

    args = argparse.Namespace(
        env=ENV,
        tuning_episodes=2,
        every=40,
        states=states,
        futures=futures,
        behaviour=behaviour,
        decisions="idle",
    )
    path, _ = truth_cache(args, config)
    if not path.exists():
        raise SystemExit(
            f"no cached truth for --futures {futures} --states {states} --behaviour {behaviour}: run "
            f"bench/advantage_truth.py --futures {futures} --states {states} --behaviour {behaviour} first"
        )
    with path.open("rb") as f:
        light, paired, _ = pickle.load(f)
    return light, paired


def traffic_values(args, c) -> tuple[list[dict], dict[int, dict[int, np.ndarray]], dict]:
    """The same for traffic: one SUMO worker process per held-out episode (bench/traffic_truth.py)."""
    import traffic_truth

    if c.discount != "step":
        raise ValueError(
            "the traffic truth discounts per decision step, as bench/configs/traffic-grid4x4.toml"
        )
    per_episode = -(-args.states // args.tuning_episodes)
    jobs = [
        (seed, per_episode, args.every, args.futures, c.gamma, 30_000_000, args.behaviour, args.decisions)
        for seed in held_out_seeds(args)
    ]
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        episodes = list(pool.map(traffic_truth.episode_truth, jobs))
    snaps = [s for e in episodes for s in e["snapshots"]][: args.states]
    return snaps, {si: s["values"] for si, s in enumerate(snaps)}, episodes[0]["neighbors"]


def estimator_plan(traffic: bool) -> list[tuple[str, str, dict]]:
    """(name, estimator, options) of each estimator trained: the elevator adds the residual estimator's
    linear heads, traffic its ``reward_credit`` options."""
    if not traffic:
        return [
            ("residual", "residual", {}),
            ("residual:linear", "residual", {"adv_heads": "linear"}),
            ("local_q", "local_q", {}),
        ]
    credits = [
        (f"residual:{k}" if k != "team" else "residual", "residual", {"reward_credit": k}) for k in CREDITS
    ]
    linear = ("residual:linear", "residual", {"adv_heads": "linear", "reward_credit": "local+neighbours"})
    return [*credits, linear, ("local_q", "local_q", {})]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default=ENV, choices=[ENV, "sumo:grid4x4"], help="elevator down-peak or traffic")
    p.add_argument("--log", type=Path, help="default: bench/.cache/advantage-truth-log (-traffic-log)")
    p.add_argument(
        "--behaviour",
        help="the logged experiment behind the log and the truth (default etd@exp=0.2, traffic "
        "max-pressure@exp=0.2; another one's log defaults to bench/.cache/advantage-truth-log-<behaviour>)",
    )
    p.add_argument(
        "--decisions",
        choices=["idle", "assign", "keep"],
        default="idle",
        help="the held-out decisions. Elevator: idle cars' (the parking experiment's) or, with a behaviour "
        "that has @assign=q, cars' outside idle spells (who stops for a call). Traffic: every choice "
        "(idle, the default) or, with @keep=q, where max-pressure would leave a near-tie green",
    )
    p.add_argument("--episodes", type=int, default=300, help="episodes of the log when it is collected here")
    p.add_argument(
        "--iterations",
        type=int,
        help="estimator training iterations (actor frozen); default 400 (traffic 300)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="training seeds of the estimators; with several, each seed is its own row (`residual s1`): "
        "an estimator's figures vary with its training seed",
    )
    p.add_argument(
        "--tuning-episodes",
        type=int,
        help="held-out behaviour episodes (tuning seeds); default 2 (traffic 8)",
    )
    p.add_argument(
        "--tuning-skip",
        type=int,
        default=0,
        help="take the held-out episodes from the tuning seeds after the first N: another set of states, to "
        "confirm on states nothing was chosen on",
    )
    p.add_argument(
        "--every", type=int, help="snapshot every N-th step with a choice; default 40 (traffic 12)"
    )
    p.add_argument("--states", type=int, help="held-out decisions; default 60 (traffic 32)")
    p.add_argument("--futures", type=int, default=8, help="paired futures per action")
    p.add_argument(
        "--estimators",
        nargs="+",
        metavar="NAME",
        help="train only these rows (residual, residual:linear, local_q; traffic also residual:<credit>); "
        "default all",
    )
    p.add_argument(
        "--replicate",
        type=Path,
        metavar="LOG",
        help="a second, independent log of the same behaviour (collected here when missing, from the collection "
        "seeds after the first log's): each estimator is trained on it too, and the agreement of the two logs' "
        "estimates is the estimator's own reliability",
    )
    p.add_argument(
        "--measurable-se",
        type=float,
        default=MEASURABLE_SE,
        help="pairs whose truth's SE is at most this (learner reward units) are the measurable ones: the "
        "correlation over them is printed beside the plain and the precision-weighted one",
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--fresh-truth", action="store_true", help="recompute the truth even if bench/.cache holds it"
    )
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "advantage")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="residual estimator option"
    )
    p.add_argument(
        "--linear-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the linear heads only (adv_ordinal, adv_weights, adv_features, ...): the row "
        "`residual:linear` then has a results config's design",
    )
    args = p.parse_args()
    traffic = is_traffic(args.env)
    args.behaviour = args.behaviour or default_behaviour(args.env)
    if args.decisions == "assign" and (traffic or "@assign=" not in args.behaviour):
        p.error("--decisions assign needs an elevator behaviour with @assign= (etd@exp=1@assign=0.5)")
    if args.decisions == "keep" and (not traffic or "@keep=" not in args.behaviour):
        p.error("--decisions keep needs a traffic behaviour with @keep= (max-pressure@exp=0.1@keep=0.5)")
    cache = ROOT / "bench" / ".cache"
    stem = "advantage-truth-traffic-log" if traffic else "advantage-truth-log"
    suffix = "" if args.behaviour == default_behaviour(args.env) else f"-{args.behaviour}"
    args.log = args.log or cache / (stem + suffix)
    args.tuning_episodes = args.tuning_episodes or (8 if traffic else 2)
    args.every = args.every or (12 if traffic else 40)
    args.states = args.states or (32 if traffic else 60)
    args.iterations = args.iterations or (300 if traffic else 400)  # traffic: its results config's

    t0 = time.time()
    log = collect_log(args.log, args.episodes, args.workers, args.env, args.behaviour)
    print(f"log {log} [{time.time() - t0:.0f}s]")
    if args.replicate:  # collected here when missing: the collection seeds after the first log's
        if args.replicate.resolve() == log.resolve():
            p.error("--replicate must be another log than --log")
        collect_log(
            args.replicate, args.episodes, args.workers, args.env, args.behaviour, 6200 + args.episodes
        )
        print(f"replicate log {args.replicate} [{time.time() - t0:.0f}s]")
    extra = dict(item.split("=", 1) for item in args.set)
    linear_extra = dict(item.split("=", 1) for item in args.linear_set)
    # Truth first, in a small process: forking rollout workers from one holding the trained estimators
    # (several GB of arrays) would copy them. The learner's discounting is its config's, known up front.
    c = estimator_config("residual", extra, args.env)
    snaps, futures, neighbors = cached_truth(args, c, traffic)
    n_rollouts = sum(len(v) for f in futures.values() for v in f.values())
    print(f"{len(snaps)} states, {n_rollouts} rollouts [{time.time() - t0:.0f}s]")
    states = np.stack([s["state"] for s in snaps])
    obs = np.stack([s["obs"] for s in snaps])
    agents = np.array([s["agent"] for s in snaps])
    masks = np.stack([s["mask"] for s in snaps])
    estimates, replicas, scale = {}, {}, 1.0
    known = [n for n, _, _ in estimator_plan(traffic)]
    if args.estimators and not set(args.estimators) <= set(known):
        p.error(f"--estimators: unknown {sorted(set(args.estimators) - set(known))}; known {known}")
    chosen = args.estimators or known
    plan = [(n, e, c, s) for n, e, c in estimator_plan(traffic) if n in chosen for s in args.seeds]
    for name, estimator, variant, seed in plan:  # one at a time: each holds the whole log's arrays
        linear = variant.get("adv_heads") == "linear"
        options = (
            {**extra, **variant, **(linear_extra if linear else {})} if estimator == "residual" else None
        )
        label = name if len(args.seeds) == 1 else f"{name} s{seed}"
        for source, out in ((log, estimates), (args.replicate, replicas)):
            if source is None:
                continue
            algo = train_estimator(source, estimator, args.iterations, seed, options, args.env, neighbors)
            out[label] = estimated_advantages(algo, states, obs, agents, masks)
            if out is estimates:  # the truth is shown in the first log's reward units
                scale = algo.data.reward_scale
            del algo
            print(f"{label} trained on {source.name} [{time.time() - t0:.0f}s]")
    print(f"estimators trained ({args.iterations} iterations each); reward scale {scale:.4g}")
    rows = truth_rows(snaps, futures, scale, estimates)
    # What a log can teach: alternatives the behaviour takes at that state (an in-sample learner never
    # acts on the others, and no log holds their value). All pairs are reported beside them.
    supported = [r for r in rows if r["behaviour_prob"] > 0]
    summary = {
        subset: summarize(pairs, list(estimates), args.measurable_se)
        for subset, pairs in (("supported", supported), ("all", rows))
    }
    noise = {"supported": truth_noise(supported), "all": truth_noise(rows)}
    if replicas:  # the second log's estimates of the same pairs, in its own reward units (correlations only)
        again = truth_rows(snaps, futures, 1.0, replicas)
        again_supported = [r for r in again if r["behaviour_prob"] > 0]
        for subset, first, second in (("supported", supported, again_supported), ("all", rows, again)):
            estimator_reliability(summary[subset], first, second)
    for subset, table in summary.items():
        t = table["truth"]
        print(
            f"{subset:9s} truth     mean {t['mean']:+.4f} ± {t['mean_se']:.4f}; reliability {t['reliability']:+.2f} "
            f"(split-half over futures), so no estimator can correlate above {t['ceiling']:.2f}; "
            f"{t['action_share']:.0%} of its spread is which alternative"
        )
        print(
            f"{subset:9s} truth     weighted by 1/SE^2: reliability {t['reliability_weighted']:+.2f} "
            f"({t['n_effective']:.1f} effective pairs); measurable (SE <= {t['measurable_se']:g}): "
            f"{t['n_measurable']} pairs, reliability {t['reliability_measurable']:+.2f} (split-half), "
            f"{t['signal_share_measurable']:+.2f} (signal share), "
            f"{t['action_share_measurable']:.0%} of its spread which alternative"
        )
        for name in estimates:
            s = table[name]
            print(
                f"{subset:9s} {name:27s} corr {s['corr']:+.3f} (disattenuated {s['corr_disattenuated']:+.2f})  "
                f"sign accuracy {s['sign_acc']:.0%} on {s['n_clear']} clear pairs (|truth| > 2 SE) of "
                f"{s['n']}; mean {s['mean']:+.4f}; {s['action_share']:.0%} of its spread is which alternative"
            )
            print(
                f"{subset:9s} {'':27s} corr weighted by 1/SE^2 {s['corr_weighted']:+.3f}; over the "
                f"measurable pairs {s['corr_measurable']:+.3f} (within each alternative "
                f"{s['corr_measurable_within']:+.3f})"
            )
            if "replicate_corr" in s:
                print(
                    f"{subset:9s} {'':27s} the other log's estimates: corr {s['replicate_corr']:+.3f} with these "
                    f"(the estimator's reliability), so its correlation with the truth is at most "
                    f"{s['joint_ceiling']:.2f}; its own {s['replicate_truth_corr']:+.3f}"
                )
                print(
                    f"{subset:9s} {'':27s} over the measurable pairs: the logs agree at "
                    f"{s['replicate_corr_measurable']:+.3f}, so at most {s['joint_ceiling_measurable']:.2f}; the "
                    f"other log's correlation with the truth there {s['replicate_truth_corr_measurable']:+.3f}"
                )
        r = noise[subset]
        print(
            f"{subset:9s} truth     signal share 1 - mean SE^2 / var {r['signal_share']:+.3f}; mean SE "
            + ", ".join(f"{k} futures {v:.4f}" for k, v in r["mean_se_by_futures"].items())
        )
    args.out.mkdir(parents=True, exist_ok=True)
    command = " ".join([".venv/bin/python bench/advantage_truth.py", *sys.argv[1:]])
    record = {"command": command, "summary": summary, "truth_noise": noise, "rows": rows}
    if replicas:
        record["replicate_log"] = str(args.replicate)
    stem = "traffic_truth" if traffic else "advantage_truth"
    (args.out / f"{stem}.json").write_text(json.dumps(record, indent=1))
    kind = {
        "idle": "intersection" if traffic else "idle-car",
        "assign": "assignment",
        "keep": "near-tie green",
    }
    title = f"{args.env}, behaviour {args.behaviour}: {kind[args.decisions]} decisions the log supports, tuning seeds"
    plot(supported, list(estimates), summary["supported"], args.out / f"{stem}.png", title)
    if not traffic:  # the measurable pairs on their own scale
        plot(
            supported, list(estimates), summary["supported"], args.out / f"{stem}_measurable.png", title, True
        )
    print(f"wrote {args.out}/{stem}.json, {stem}.png [{time.time() - t0:.0f}s]")


def truth_rows(
    snaps: list[dict], futures: dict, scale: float, estimates: dict[str, np.ndarray]
) -> list[dict]:
    """One row per (held-out state, alternative to the behaviour's preferred action): the truth of
    ``Q(alternative) - Q(preferred)`` in the learner's reward units, its paired SE, its even/odd halves,
    and each estimator's estimate of the same difference (``estimates``: name -> ``[S, A]``)."""
    rows = []
    for si, snap in enumerate(snaps):
        pref = int(np.argmax(snap["dist"]))
        q = {a: v / scale for a, v in futures[si].items()}
        for a, v in q.items():
            if a == pref:
                continue
            diff = v - q[pref]
            rows.append(
                {
                    "state": si,
                    "action": a,
                    "preferred": pref,
                    "behaviour_prob": float(snap["dist"][a]),
                    "truth": float(diff.mean()),
                    "se": float(diff.std(ddof=1) / np.sqrt(len(diff))),
                    # the truth from the even and the odd futures: their agreement across pairs is
                    # the truth's own reliability, which bounds any estimator's correlation with it
                    "truth_even": float(diff[0::2].mean()),
                    "truth_odd": float(diff[1::2].mean()),
                    **{name: float(est[si, a] - est[si, pref]) for name, est in estimates.items()},
                    "futures": diff.tolist(),
                }
            )
    return rows


def _corr(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Pearson's correlation, or with ``weights`` the weighted one (weighted means and moments)."""
    if len(x) <= 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    if weights is None:
        return float(np.corrcoef(x, y)[0, 1])
    w = weights / weights.sum()
    dx, dy = x - w @ x, y - w @ y
    return float((w @ (dx * dy)) / np.sqrt((w @ dx**2) * (w @ dy**2)))


def precision_weights(se: np.ndarray) -> np.ndarray:
    """``1 / SE^2`` of each pair's truth: how much it tells (a fixed-effect meta-analysis's weights). The
    truth's SE spans two orders of magnitude (a car's move in a quiet building is pinned down by 32
    futures, one in a congested peak is not), and an unweighted correlation is set by the noisiest pairs."""
    return 1.0 / np.maximum(se, 1e-12) ** 2


def signal_share(truth: np.ndarray, se: np.ndarray) -> float:
    """``1 - mean SE^2 / var``: the share of the truth's spread over the pairs that is signal, from each
    pair's own SE. With SEs that differ from pair to pair it is steadier than the split-half correlation,
    which a few pairs whose halves disagree by several SE can turn negative."""
    if len(truth) < 3 or truth.var(ddof=1) == 0:
        return float("nan")
    return float(1.0 - (se**2).mean() / truth.var(ddof=1))


def split_half_reliability(rows: list[dict], weights: np.ndarray | None = None) -> float:
    """Spearman-Brown corrected correlation of the truth from the even and the odd futures across pairs."""
    half = _corr(np.array([r["truth_even"] for r in rows]), np.array([r["truth_odd"] for r in rows]), weights)
    return 2 * half / (1 + half) if np.isfinite(half) and half > -1 else float("nan")


def action_share(values: np.ndarray, actions: np.ndarray) -> float:
    """The share of ``values``' spread over the pairs that the alternative's identity alone explains (one
    mean per action, eta squared): near 1, a pooled effect per action; near 0, effects that differ from
    state to state."""
    if len(values) == 0:
        return float("nan")
    total = ((values - values.mean()) ** 2).sum()
    if total == 0:
        return float("nan")
    within = sum(
        ((values[actions == a] - values[actions == a].mean()) ** 2).sum() for a in np.unique(actions)
    )
    return float(1 - within / total)


def within_action(values: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """``values`` less their alternative's mean: what is left once "which alternative" is known. Their
    correlation tells whether an estimator follows the state-to-state differences, not only the pooled
    effect of each alternative."""
    out = values.astype(float).copy()
    for a in np.unique(actions):
        out[actions == a] -= values[actions == a].mean()
    return out


def summarize(
    rows: list[dict], names: list[str], measurable_se: float = MEASURABLE_SE
) -> dict[str, dict[str, float]]:
    """Per estimator: correlation with the truth (and divided by the truth's own ceiling), sign accuracy
    where the truth is clear, mean estimate; for the truth: its mean, and its split-half reliability
    (Spearman-Brown corrected correlation of the even- and odd-future halves across pairs). For both, the
    share of their spread that the alternative's identity explains (``action_share``).

    Beside the plain correlation, two that account for the truth's own precision, which varies a
    hundredfold from pair to pair: weighted by ``1 / SE^2`` (:func:`precision_weights`; with the weights'
    effective number of pairs), and over the *measurable* pairs only, whose truth's SE is at most
    ``measurable_se`` (with the truth's reliability there)."""
    truth = np.array([r["truth"] for r in rows])
    se = np.array([r["se"] for r in rows])
    clear = np.abs(truth) > 2 * se
    actions = np.array([r["action"] for r in rows])
    weights = precision_weights(se)
    measurable = se <= measurable_se
    reliability = split_half_reliability(rows)
    ceiling = float(np.sqrt(reliability)) if reliability > 0 else 0.0
    out = {
        "truth": {
            "mean": float(truth.mean()),
            "mean_se": float(np.sqrt((se**2).sum()) / len(rows)),
            "reliability": float(reliability),
            "ceiling": ceiling,
            "n": len(rows),
            "action_share": action_share(truth, actions),
            "reliability_weighted": split_half_reliability(rows, weights),
            "n_effective": float(weights.sum() ** 2 / (weights**2).sum()),
            "measurable_se": measurable_se,
            "n_measurable": int(measurable.sum()),
            "reliability_measurable": split_half_reliability(
                [r for r, m in zip(rows, measurable, strict=True) if m]
            ),
            "action_share_measurable": action_share(truth[measurable], actions[measurable]),
            "signal_share_measurable": signal_share(truth[measurable], se[measurable]),
        }
    }
    for name in names:
        est = np.array([r[name] for r in rows])
        corr = _corr(truth, est)
        sign = float((np.sign(est[clear]) == np.sign(truth[clear])).mean()) if clear.any() else float("nan")
        out[name] = {
            "corr": corr,
            "corr_disattenuated": corr / ceiling if ceiling > 0 else float("nan"),
            "sign_acc": sign,
            "n_clear": int(clear.sum()),
            "n": len(rows),
            "mean": float(est.mean()),
            "action_share": action_share(est, actions),
            "corr_weighted": _corr(truth, est, weights),
            "corr_measurable": _corr(truth[measurable], est[measurable]),
            "corr_measurable_within": _corr(
                within_action(truth[measurable], actions[measurable]),
                within_action(est[measurable], actions[measurable]),
            ),
        }
    return out


def estimator_reliability(table: dict[str, dict], first: list[dict], second: list[dict]) -> None:
    """Add to ``table`` (summarize's, per estimator) how well each estimator reproduces itself on an
    independent log of the same behaviour: the correlation of the two logs' estimates over the pairs.

    Two noisy measures of the same quantities correlate at most ``sqrt(reliability_1 * reliability_2)``,
    so an estimator that reproduces itself at ``r`` and a truth of reliability ``R`` can correlate at most
    ``sqrt(r * R)`` (the *joint ceiling*). An estimator far below it is not short of data: it reproduces
    its own estimates, which are not the truth's (its form or its target is what to change). One near
    it is limited by noise, which more episodes reduce."""
    truth = table["truth"]
    y = np.array([r["truth"] for r in second])
    for name, s in table.items():
        if name == "truth" or name not in second[0]:
            continue
        a, b = np.array([r[name] for r in first]), np.array([r[name] for r in second])
        r = _corr(a, b)
        s["replicate_corr"] = r
        s["joint_ceiling"] = float(np.sqrt(max(r, 0.0) * max(truth["reliability"], 0.0)))
        s["replicate_truth_corr"] = _corr(y, b)
        if "se" not in first[0]:
            continue
        # the same over the measurable pairs (summarize's limit), where the truth's reliability is its own
        m = np.array([r["se"] for r in first]) <= truth.get("measurable_se", MEASURABLE_SE)
        r_m = _corr(a[m], b[m])
        s["replicate_corr_measurable"] = r_m
        s["joint_ceiling_measurable"] = float(
            np.sqrt(max(r_m, 0.0) * max(truth.get("reliability_measurable", 0.0), 0.0))
        )
        s["replicate_truth_corr_measurable"] = _corr(y[m], b[m])


def truth_noise(rows: list[dict]) -> dict:
    """How much of the truth's spread is simulation noise (``1 - mean SE^2 / var``: the share that is
    state-to-state signal), and how its mean SE shrinks with a quarter, half and all of the futures."""
    diffs = np.array([r["futures"] for r in rows])  # [pairs, futures]
    if len(rows) < 3 or diffs.shape[1] < 2:
        return {"signal_share": float("nan"), "mean_se_by_futures": {}}
    n = diffs.shape[1]
    by_futures = {}
    for k in sorted({max(2, n // 4), max(2, n // 2), n}):
        by_futures[str(k)] = float((diffs[:, :k].std(1, ddof=1) / np.sqrt(k)).mean())
    se = diffs.std(1, ddof=1) / np.sqrt(n)
    return {"signal_share": signal_share(diffs.mean(1), se), "mean_se_by_futures": by_futures}


def plot(
    rows: list[dict], names: list[str], summary: dict, path: Path, title: str, zoom: bool = False
) -> None:
    """Estimate against truth (±2 SE) per estimator. Measurable pairs (SE <= the summary's limit) in blue,
    the others in grey; ``zoom``: the measurable pairs only, on their own scale (the noisy ones span ten
    times their range)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    limit = summary["truth"].get("measurable_se", MEASURABLE_SE)
    truth = np.array([r["truth"] for r in rows])
    se = np.array([r["se"] for r in rows])
    measurable = se <= limit
    cols = min(len(names), 3)  # several training seeds: one row of panels per three
    nrows = -(-len(names) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.5 * cols, 4.4 * nrows + 0.4), squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names, strict=False):
        est = np.array([r[name] for r in rows])
        groups = [(measurable, "C0", f"SE ≤ {limit:g}")] + (
            [] if zoom else [(~measurable, "0.6", f"SE > {limit:g}")]
        )
        for keep, color, label in groups:
            ax.errorbar(truth[keep], est[keep], xerr=2 * se[keep], fmt="o", ms=4, alpha=0.7, elinewidth=0.8,
                        color=color, label=f"{label} ({keep.sum()})")  # fmt: skip
        # zoomed: the measurable truths' own range (the estimates keep theirs on the other axis)
        lim = (
            (np.abs(truth[measurable]) + 2 * se[measurable]).max() * 1.05
            if zoom and measurable.any()
            else np.abs(np.concatenate([truth, est])).max() * 1.1
        ) + 1e-9
        ax.axhline(0, color="0.7", lw=0.8)
        ax.axvline(0, color="0.7", lw=0.8)
        ax.set_xlim(-lim, lim)
        s = summary[name]
        ax.set_title(
            f"{name}: corr {s['corr']:+.2f}, measurable {s.get('corr_measurable', float('nan')):+.2f}, "
            f"sign {s['sign_acc']:.0%} ({s['n_clear']} clear)",
            fontsize=9,
        )
        ax.set_xlabel("truth: A(action) - A(preferred), paired simulation (±2 SE)")
        ax.set_ylabel("estimate from the log")
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(title + (f"; measurable pairs only (SE ≤ {limit:g})" if zoom else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
