"""Is the idle-car estimator's low correlation over *all* pairs the truth's noise? Refine it and see.

    .venv/bin/python bench/truth_refine.py docs/results/advantage_p02/advantage_truth.json --futures 256
    .venv/bin/python bench/truth_refine.py docs/results/advantage_p02_confirm/advantage_truth.json \
        --tuning-skip 2 --futures 256

bench/advantage_truth.py measures the truth of each (held-out state, alternative) pair with 32 paired
futures. Where a pair's SE stays above ``--above`` (0.002: the congested middle of the peak), this script
plays more futures of every legal action at that state, up to ``--futures`` in all (paired: one future's
passengers are the same for every action; seeds apart from the first 32's), and scores the estimates the
JSON already holds against the refined truth: nothing is retrained. If the estimators' correlation over
all pairs rises as the truth's noise falls, that noise is what held it down.

The held-out states are rebuilt from their tuning seeds (the truth cache keeps no simulator copies) and
checked against the cached ones. Runs on tuning seeds only. Prints the figures before and after; writes
``<json stem>_refined.json`` beside the input (the rows with the refined truth, and the summary).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import advantage_truth as at  # noqa: E402

REFINE_SEED = (
    31_000_000  # + state * 10_000 + future: apart from the first futures' 30_000_000 + state * 100 + r
)


def held_out_args(args) -> argparse.Namespace:
    """advantage_truth's settings of the held-out states (its defaults for the elevator's idle cars)."""
    return argparse.Namespace(
        env=at.ENV,
        tuning_episodes=args.tuning_episodes,
        tuning_skip=args.tuning_skip,
        every=args.every,
        states=args.states,
        futures=args.base_futures,
        behaviour=args.behaviour,
        decisions="idle",
    )


def refine(
    snaps: list[dict], cached: dict, noisy: set[int], total: int, config, workers: int
) -> dict[int, dict[int, np.ndarray]]:
    """``cached``'s futures, with those of the ``noisy`` states extended to ``total`` per action."""
    jobs, index = [], []
    for si in sorted(noisy):
        snap = snaps[si]
        for a, values in cached[si].items():
            for r in range(len(values), total):
                job = (
                    snap["env"],
                    snap["controller"],
                    snap["car"],
                    snap["actions"],
                    int(a),
                    REFINE_SEED + si * 10_000 + r,
                )
                jobs.append((*job, config.discount, config.horizon_s, config.gamma))
                index.append((si, a))
    from tqdm.auto import tqdm

    with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
        values = list(tqdm(pool.map(at.rollout, jobs, chunksize=4), total=len(jobs), desc="more futures"))
    out = {si: {a: list(v) for a, v in per.items()} for si, per in cached.items()}
    for (si, a), v in zip(index, values, strict=True):
        out[si][a].append(v)
    return {si: {a: np.array(v) for a, v in per.items()} for si, per in out.items()}


def rescored(
    rows: list[dict], snaps: list[dict], futures: dict, scale: float, names: list[str]
) -> list[dict]:
    """advantage_truth's rows again, with the truth from ``futures`` (raw returns, divided by ``scale``) and
    the estimates the rows hold (each the difference to the preferred action, whose own is then 0)."""
    n_actions = max(len(s["mask"]) for s in snaps)
    estimates = {name: np.zeros((len(snaps), n_actions)) for name in names}
    for r in rows:
        for name in names:
            estimates[name][r["state"], r["action"]] = r[name]
    return at.truth_rows(snaps, futures, scale, estimates)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("json", type=Path, help="bench/advantage_truth.py's output (idle cars, elevator)")
    p.add_argument("--futures", type=int, default=256, help="futures per action in all, at the noisy states")
    p.add_argument(
        "--above", type=float, default=at.MEASURABLE_SE, help="refine states with a pair's SE above"
    )
    p.add_argument("--base-futures", type=int, default=32, help="the JSON's run's --futures")
    p.add_argument("--states", type=int, default=40)
    p.add_argument("--tuning-episodes", type=int, default=2)
    p.add_argument("--tuning-skip", type=int, default=0)
    p.add_argument("--every", type=int, default=40)
    p.add_argument("--behaviour", default=at.BEHAVIOUR)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    t0 = time.time()
    data = json.loads(args.json.read_text())
    config = at.estimator_config("residual", {"baseline_inputs": "state+exogenous"})
    held = held_out_args(args)
    path, _ = at.truth_cache(held, config)
    if not path.exists():
        raise SystemExit(f"no cached truth at {path}: run bench/advantage_truth.py with these settings first")
    with path.open("rb") as f:
        light, cached, _ = pickle.load(f)
    rows = data["rows"]
    noisy = {r["state"] for r in rows if r["se"] > args.above and r["behaviour_prob"] > 0}
    print(
        f"{len(noisy)} of {len(light)} states have a pair with SE > {args.above:g}: {args.futures} futures each"
    )
    per_episode = -(-held.states // held.tuning_episodes)
    snaps = [
        s
        for seed in at.held_out_seeds(held)
        for s in at.snapshots(seed, held.every, per_episode, held.behaviour, held.decisions)
    ][: held.states]
    for snap, kept in zip(snaps, light, strict=True):  # the same states the truth was computed on
        if not (np.array_equal(snap["state"], kept["state"]) and snap["car"] == kept["car"]):
            raise SystemExit("the rebuilt held-out states differ from the cached truth's (env code changed?)")
    futures = refine(snaps, cached, noisy, args.futures, config, args.workers)
    print(f"[{time.time() - t0:.0f}s]")
    # the JSON's truth is in the learner's reward units: its scale from any pair (cached / JSON futures)
    first = rows[0]
    raw = cached[first["state"]][first["action"]] - cached[first["state"]][first["preferred"]]
    scale = float(np.linalg.norm(raw) / np.linalg.norm(first["futures"]))
    names = [n for n in data["summary"]["supported"] if n != "truth"]
    refined = rescored(rows, light, futures, scale, names)
    before = at.summarize([r for r in rows if r["behaviour_prob"] > 0], names)
    after = at.summarize([r for r in refined if r["behaviour_prob"] > 0], names)
    for label, table in (("32 futures", before), (f"refined ({args.futures})", after)):
        t = table["truth"]
        print(
            f"{label:15s} truth: mean SE {np.mean([r['se'] for r in (rows if table is before else refined)]):.4f}; "
            f"reliability {t['reliability']:+.2f}; measurable pairs {t['n_measurable']} (signal share "
            f"{t['signal_share_measurable']:+.2f})"
        )
        for name in names:
            s = table[name]
            print(
                f"{label:15s} {name:20s} corr {s['corr']:+.3f}  weighted {s['corr_weighted']:+.3f}  "
                f"measurable {s['corr_measurable']:+.3f}  sign {s['sign_acc']:.0%} of {s['n_clear']} clear"
            )
    out = args.json.with_name(args.json.stem + "_refined.json")
    command = " ".join([".venv/bin/python bench/truth_refine.py", *sys.argv[1:]])
    out.write_text(
        json.dumps(
            {"command": command, "summary": {"before": before, "after": after}, "rows": refined}, indent=1
        )
    )
    print(f"wrote {out} [{time.time() - t0:.0f}s]")


if __name__ == "__main__":
    main()
