"""Evaluation plots for traffic (used by ``inspo eval`` through the registry's ``plot_eval``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_eval(results_by_controller: dict, out_dir: Path, title: str = "") -> list[Path]:
    """Two PNGs: trip delay per controller (completed and all trips, mean ± std over episodes) and
    halted vehicles at signals over time (mean over episodes). Returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(results_by_controller)
    paths = []

    fig, ax = plt.subplots(figsize=(max(4.5, 1.4 * len(names) + 2), 3.6))
    x = np.arange(len(names))
    for offset, key, label in ((-0.2, "delay", "completed trips"), (0.2, "delay_all", "incl. unfinished")):
        vals = [[r.metrics.get(key, np.nan) for r in results_by_controller[n]] for n in names]
        means = [np.nanmean(v) if v else np.nan for v in vals]
        stds = [np.nanstd(v) if len(v) > 1 else 0.0 for v in vals]
        bars = ax.bar(x + offset, means, 0.4, yerr=stds, capsize=3, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
    n_eps = {len(results_by_controller[n]) for n in names}
    ax.set_xticks(x, names, rotation=15 if len(names) > 3 else 0)
    ax.set_ylabel("mean trip delay (tripinfo timeLoss, s)")
    subtitle = f"trip delay per controller, {'/'.join(map(str, sorted(n_eps)))} episodes each"
    ax.set_title((title + "\n" if title else "") + subtitle, fontsize=10)
    ax.legend(fontsize=8)
    ax.margins(y=0.15)
    fig.tight_layout()
    paths.append(out_dir / "delay_per_controller.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for n in names:
        traces = [r.extras.get("queue_over_time") for r in results_by_controller[n]]
        traces = [tr for tr in traces if tr and tr.get("t")]
        if not traces:
            continue
        length = min(len(tr["t"]) for tr in traces)
        t = np.asarray(traces[0]["t"][:length]) / 60.0
        q = np.mean([np.asarray(tr["total"][:length]) for tr in traces], axis=0)
        step = float(t[1] - t[0]) * 60 if length > 1 else 60.0
        window = max(1, min(length, round(60.0 / step)))  # 1-min moving average hides the signal cycle
        q = np.convolve(q, np.ones(window) / window, mode="valid")
        ax.plot(t[window - 1 :], q, label=n, lw=1.2)
    ax.set_xlabel("simulated time (min)")
    ax.set_ylabel("vehicles halted at signals")
    subtitle = "halted vehicles, 1-min moving average, mean over episodes"
    ax.set_title((title + "\n" if title else "") + subtitle, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "queue_over_time.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths
