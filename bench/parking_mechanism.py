"""Does the advantage the heads fit reach the policy, where idle cars decide to park?

    .venv/bin/python bench/parking_mechanism.py --config elevator-downpeak-experiment-p1-ordinal
    .venv/bin/python bench/parking_mechanism.py --runs RUN [RUN ...] --log LOG [--set KEY=VALUE ...]

For the rows of the training log where an empty car moving up crosses a floor with "stop" and "continue"
both legal and the logged choice random (the parking experiment's chain of decisions, docs/algorithm.md,
"Where the down-peak gain comes from"), per floor and split by whether an idle teammate already waits
above it: the behaviour's P(stop) (fitted mu), the trained actor's P(stop), and the heads' A(stop) -
A(continue) in the units the closed-form step uses (divided by the run's advantage scale): the ensemble
mean, the pessimistic value (mean - kappa std) the actor is fitted to, the all-agents prior (teammates as
logged), the spread of the pessimistic value over the rows, and the members' spread for each action. The closed-form target is pi ~ mu exp(A / alpha), so a
policy parks where the pessimistic column turns positive, or, if it never does, at the top.

Then per car: the effective share of its rows that its teammates' weights leave in InSPO's sequential refit
(as the run weighs them: ratio clip, ``teammate_memory_s``), and its own pessimistic stop-or-continue per
floor: whether cars that park on different floors do so because the weights let them coordinate or because
each fit rests on a few rows (docs/algorithm.md, "Teammates' parking in the sequential refit").
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_run(run: Path, data, overrides: list[str]):
    """The run's InSPO as its last checkpoint left it, on its training log; ``overrides`` (KEY=VALUE) change
    how the tables weigh and read it (e.g. ``teammate_memory_s=30``: the ESS those weights would leave)."""
    from trainer.algos.config import make_config, parse_overrides
    from trainer.algos.inspo import InSPO

    config = json.loads((run / "config.json").read_text())["config"]
    algo = InSPO(make_config("inspo", overrides=config))
    algo.setup(data)
    algo.load(run / "checkpoints" / "last.pt")  # refuses a config other than the run's: changed after
    if overrides:
        algo.config = make_config("inspo", overrides={**config, **parse_overrides(overrides)})
        algo.log_ratio_min, algo.log_ratio_max = (
            math.log(algo.config.ratio_min),
            math.log(algo.config.ratio_max),
        )
    return algo


def parking_rows(algo) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``[K, N]`` masks of the log's rows where an empty car moving up decides at a floor and where its
    logged action was random, the floor it decides at, and the number of floors."""
    from envs.elevator.features import empty_moving_up
    from envs.registry import ordinal_blocks
    from trainer.algos.inspo import CERTAIN

    d = algo.data
    [(start, stop)] = ordinal_blocks(algo.env_id, d.obs_dim)  # the decision floor's one-hot
    n_floors = stop - start
    empty_up, floor_all = empty_moving_up(d.obs.numpy(), n_floors)
    random = algo._logged_log_prob().numpy() < np.log(CERTAIN)
    return empty_up, random, floor_all, n_floors


def agent_table(algo, parking: tuple) -> list[dict]:
    """Per car: the effective share of its random rows left by its teammates' weights in the sequential
    refit (as the run weighs them, at its final policy), and its own A(stop) - A(continue) / scale
    (pessimistic) per floor where an empty car moving up decides: whether the cars' parking differs by
    car because they coordinate or because each fit rests on few rows."""
    import torch

    from trainer.algos import losses

    d = algo.data
    empty_up, random, floor_all, n_floors = parking
    table = []
    with torch.no_grad():
        for i in range(d.n_agents):
            rows, _ = algo._linear_inputs(i)
            w = algo.teammate_weights(i, rows)
            r = torch.as_tensor(np.nonzero(empty_up[:, i] & random[:, i])[0])
            agent = torch.full((len(r),), i)
            args = (d.states[r], d.obs[r, i], agent, d.masks[r, i], algo.log_mu_all[r, i])
            pess = losses.pessimistic_advantage(
                algo._centred_advantages(*args) / algo.adv_scale, algo.config.kappa
            )
            diff, floor = (pess[:, 1] - pess[:, 0]).numpy(), floor_all[r.numpy(), i]
            table.append(
                {
                    "car": i,
                    "rows": f"{len(rows):,}",
                    "ESS": f"{float(losses.effective_sample_size(torch.from_numpy(w))):.3f}",
                    **{
                        f"@{f}": f"{diff[floor == f].mean():+.1f}"
                        for f in range(1, n_floors - 1)
                        if (floor == f).any()
                    },
                }
            )
    return table


def floor_table(algo, parking: tuple, rows_max: int = 40000) -> list[dict]:
    import torch

    from envs.elevator.features import IDLE_ABOVE, teammates_relative
    from trainer.algos import losses
    from trainer.algos.base import all_agents_logits

    d = algo.data
    log_mu = algo.log_mu_all if algo.log_mu_all is not None else algo._compute_log_mu()
    obs, masks = d.obs.numpy(), d.masks.numpy()
    empty_up, random, floor_all, n_floors = parking
    rows, agents = np.nonzero(empty_up & masks[..., 0] & masks[..., 1] & random)
    pick = np.random.default_rng(0).permutation(len(rows))[:rows_max]
    rows, agents = torch.as_tensor(rows[pick]), torch.as_tensor(agents[pick])
    with torch.no_grad():
        pi = torch.softmax(all_agents_logits(algo.actor, d.obs[rows], d.masks[rows]), -1)[
            torch.arange(len(rows)), agents
        ]
        args = (d.states[rows], d.obs[rows, agents], agents, d.masks[rows, agents], log_mu[rows, agents])
        adv = algo._centred_advantages(*args) / algo.adv_scale
        pessimistic = losses.pessimistic_advantage(adv, algo.config.kappa)
        members = algo.adv_heads.theta.clone()
        algo.adv_heads.theta[:] = algo.linear_prior.float().view(members.shape[2:])
        prior = algo._centred_advantages(*args)[:, 0] / algo.adv_scale
        algo.adv_heads.theta[:] = members
    mu = torch.exp(log_mu[rows, agents])
    o = obs[rows.numpy(), agents.numpy()]
    floor = floor_all[rows.numpy(), agents.numpy()]
    above = teammates_relative(o, n_floors, d.n_agents)[:, IDLE_ABOVE] > 0
    stop_minus_continue = {
        "mean": adv.mean(1)[:, 1] - adv.mean(1)[:, 0],
        "pess.": pessimistic[:, 1] - pessimistic[:, 0],
        "prior": prior[:, 1] - prior[:, 0],
    }
    table = []
    for f in range(1, n_floors - 1):
        for label, part in (("yes", above), ("no", ~above)):
            s = torch.as_tensor((floor == f) & part)
            if int(s.sum()) < 50:
                continue
            table.append(
                {
                    "floor": f,
                    "idle above": label,
                    "rows": f"{int(s.sum()):,}",
                    "mu stop": f"{float(mu[s, 1].mean()):.2f}",
                    "pi stop": f"{float(pi[s, 1].mean()):.2f}",
                    **{
                        f"A stop-cont, {k}": f"{float(v[s].mean()):+.2f}"
                        for k, v in stop_minus_continue.items()
                    },
                    "pess. spread": f"{float(stop_minus_continue['pess.'][s].std()):.2f}",
                    "std stop/cont": f"{float(adv.std(1)[s, 1].mean()):.2f} / {float(adv.std(1)[s, 0].mean()):.2f}",
                }
            )
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="bench/results.py config whose cached runs and log to use")
    p.add_argument("--runs", nargs="*", default=[], type=Path)
    p.add_argument("--log", type=Path, help="the runs' training log (with --runs)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config value to read the runs with (e.g. teammate_memory_s=30 or ratio_min=0.2)",
    )
    args = p.parse_args()
    import torch

    from trainer.logs import load_log
    from trainer.report import print_table

    torch.set_num_threads(2)
    runs, log = list(args.runs), args.log
    if args.config:
        work = ROOT / "bench" / ".cache" / "results" / args.config
        runs, log = sorted((work / "runs").glob("inspo-s*")), work / "log"
    if not runs or log is None:
        raise SystemExit("give --config NAME, or --runs RUN ... --log LOG")
    data = load_log(log)
    for run in runs:
        algo = load_run(run, data, args.set)
        parking = parking_rows(algo)
        title = f"{run.name}: A(stop) - A(continue) / scale, empty car moving up, random rows of its log"
        print_table(floor_table(algo, parking), title=title, max_columns=11)
        title = (
            f"{run.name}, per car: its random rows, the share of them its teammates' weights leave in the refit "
            "(ESS), its pessimistic A(stop) - A(continue) / scale at floor @f"
        )
        print_table(agent_table(algo, parking), title=title, max_columns=12)


if __name__ == "__main__":
    main()
