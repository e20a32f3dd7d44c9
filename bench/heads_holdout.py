"""Do the residual estimator's heads learn anything that holds on episodes they never saw?

    .venv/bin/python bench/heads_holdout.py [--seed 0] [--holdout 0.2] [--set KEY=VALUE ...]

The heads ``A_i(s, o_i, a)`` are fitted on ``G - V(s) ~ A_i(a_logged) - sum_a e_i(a) A_i(a)``
(docs/algorithm.md, "The residual advantage estimator"). That regression's loss on *held-out* episodes
(the R-loss) is a criterion that needs no simulator: a fit that beats the all-zero advantage there has
found some of the actions' effects; one that loses to it has fitted noise. This bench measures it
during the warm-up on the log of ``bench/advantage_truth.py`` (``etd@exp=0.2``, down-peak), with a
share ``--holdout`` of the episodes left out of the heads' fit (mu and the cross-fitted ``V(s)`` use all
of them, as in training). At checkpoints it prints the held-out R-loss minus that of all-zero heads
(negative: better than "no advantage"), and, against the cached paired-simulation truth of
``bench/advantage_truth.py --futures 32 --states 40`` (held-out tuning states), the heads' correlation
with it, their sign accuracy on the clear pairs, their mean and their typical size.

``--zero-init`` starts the heads' output layer at zero (the all-zero advantage) instead of at random.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CHECKPOINTS = (0, 100, 250, 500, 1000, 1500, 2000, 3000, 4000, 6000)


def held_out_rloss(algo, rows) -> float:
    """Mean residual-regression loss of the heads' member mean on ``rows`` (every agent, weight 1)."""
    import torch

    from trainer.algos import losses

    d, n, total = algo.data, algo.data.n_agents, 0.0
    with torch.no_grad():
        for start in range(0, len(rows), 4096):
            part = rows[start : start + 4096]
            adv = algo._every_agents_advantages(part).mean(1, keepdim=True)
            loss = losses.residual_advantage_loss(
                adv,
                d.actions[part].flatten(),
                algo.propensity_all[part].flatten(0, 1),
                algo._residuals(part).flatten(),
                torch.ones(len(part) * n, 1),
            )
            total += float(loss) * len(part)
    return total / len(rows)


def truth_agreement(algo, truth, scale: float) -> tuple[float, float, float, float]:
    """(correlation, sign accuracy on |truth| > 2 SE, mean estimate, mean |estimate|) on the supported pairs."""
    import advantage_truth

    light, futures = truth
    est = advantage_truth.estimated_advantages(
        algo,
        np.stack([s["state"] for s in light]),
        np.stack([s["obs"] for s in light]),
        np.array([s["agent"] for s in light]),
        np.stack([s["mask"] for s in light]),
    )
    rows = advantage_truth.truth_rows(light, futures, scale, {"heads": est})
    supported = [r for r in rows if r["behaviour_prob"] > 0]
    s = advantage_truth.summarize(supported, ["heads"])["heads"]
    return s["corr"], s["sign_acc"], s["mean"], float(np.mean([abs(r["heads"]) for r in supported]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--log", type=Path, default=ROOT / "bench" / ".cache" / "advantage-truth-log")
    p.add_argument("--episodes", type=int, default=300, help="episodes of the log when it is collected here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--holdout", type=float, default=0.2, help="share of episodes left out of the heads' fit")
    p.add_argument("--zero-init", action="store_true", help="start the heads' output layer at zero")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="estimator option")
    p.add_argument("--futures", type=int, default=32, help="the cached truth's futures")
    p.add_argument("--states", type=int, default=40, help="the cached truth's held-out states")
    args = p.parse_args()
    import advantage_truth
    import torch

    from trainer.algos.inspo import InSPO
    from trainer.logs import load_log

    torch.set_num_threads(1)
    extra = dict(item.split("=", 1) for item in args.set)
    config = advantage_truth.estimator_config("residual", extra, iterations=1, seed=args.seed)
    light, futures = advantage_truth.cached_elevator_truth(config, args.futures, args.states)

    t0 = time.time()
    algo = InSPO(config)
    algo.setup(load_log(advantage_truth.collect_log(args.log, args.episodes, 2)), None)
    fit = algo.prepare_residuals()
    d = algo.data
    if args.zero_init:
        last = [m for m in algo.adv_heads.body.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()
    n_episodes = int(d.episode.max()) + 1
    held_episodes = torch.randperm(n_episodes, generator=torch.Generator().manual_seed(1234))
    held = torch.isin(d.episode, held_episodes[: int(round(n_episodes * args.holdout))])
    informative = algo.informative
    algo.informative = informative[~held[informative]]  # the heads' warm-up samples only these
    held_rows = informative[held[informative]]
    print(
        f"log {args.log.name}: {n_episodes} episodes, V(s) explains {fit['value_r2']:.3f}; informative rows "
        f"{len(algo.informative):,} fitted, {len(held_rows):,} held out [{time.time() - t0:.0f}s]"
    )

    zero = None
    if not args.zero_init:  # the all-zero advantage's held-out loss, from a zeroed copy of the heads
        import copy

        live = algo.adv_heads
        algo.adv_heads = copy.deepcopy(live)
        for m in algo.adv_heads.modules():
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.zeros_(m.weight)
                torch.nn.init.zeros_(m.bias)
        zero = held_out_rloss(algo, held_rows)
        algo.adv_heads = live
    truth = (light, futures)
    print(
        f"{'warm-up step':>12s} {'held-out R-loss - zero':>23s} {'corr':>7s} {'sign':>6s} {'mean':>9s} {'|est|':>8s}"
    )
    for step in range(max(CHECKPOINTS) + 1):
        if step in CHECKPOINTS:
            loss = held_out_rloss(algo, held_rows)
            zero = loss if zero is None else zero
            corr, sign, mean, size = truth_agreement(algo, truth, d.reward_scale)
            print(
                f"{step:12d} {loss - zero:+23.3e} {corr:+7.3f} {sign:6.0%} {mean:+9.5f} {size:8.5f}  "
                f"[{time.time() - t0:.0f}s]",
                flush=True,
            )
        if step < max(CHECKPOINTS):
            algo.adv_warmup_step()


if __name__ == "__main__":
    main()
