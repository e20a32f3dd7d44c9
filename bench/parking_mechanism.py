"""Does the advantage the heads fit reach the policy, where idle cars decide to park?

    .venv/bin/python bench/parking_mechanism.py --config elevator-downpeak-experiment-p1-ordinal
    .venv/bin/python bench/parking_mechanism.py --runs RUN [RUN ...] --log LOG

For the rows of the training log where an empty car moving up crosses a floor with "stop" and "continue"
both legal and the logged choice random (the parking experiment's chain of decisions, docs/algorithm.md,
"Where the down-peak gain comes from"), per floor and split by whether an idle teammate already waits
above it: the behaviour's P(stop) (fitted mu), the trained actor's P(stop), and the heads' A(stop) -
A(continue) in the units the closed-form step uses (divided by the run's advantage scale): the ensemble
mean, the pessimistic value (mean - kappa std) the actor is fitted to, the all-agents prior (teammates as
logged), the spread of the pessimistic value over the rows, and the members' spread for each action. The closed-form target is pi ~ mu exp(A / alpha), so a
policy parks where the pessimistic column turns positive, or, if it never does, at the top.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def floor_table(run: Path, data, rows_max: int = 40000) -> list[dict]:
    import torch

    from envs.elevator.features import IDLE_ABOVE, empty_moving_up, teammates_relative
    from envs.registry import ordinal_blocks
    from trainer.algos import losses
    from trainer.algos.base import all_agents_logits
    from trainer.algos.config import make_config
    from trainer.algos.inspo import InSPO

    algo = InSPO(make_config("inspo", overrides=json.loads((run / "config.json").read_text())["config"]))
    algo.setup(data)
    algo.load(run / "checkpoints" / "last.pt")
    d = algo.data
    log_mu = algo.log_mu_all if algo.log_mu_all is not None else algo._compute_log_mu()
    obs, masks = d.obs.numpy(), d.masks.numpy()
    [(start, stop)] = ordinal_blocks(algo.env_id, d.obs_dim)  # the decision floor's one-hot
    n_floors = stop - start
    random = algo._logged_log_prob().numpy() < np.log(1 - 1e-6)
    empty_up, floor_all = empty_moving_up(obs, n_floors)
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
        title = f"{run.name}: A(stop) - A(continue) / scale, empty car moving up, random rows of its log"
        print_table(floor_table(run, data), title=title, max_columns=11)


if __name__ == "__main__":
    main()
