"""Evaluation plots for ``inspo eval`` (matplotlib, imported lazily; not needed by the runtime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_eval(results_by_controller: dict, out_dir: Path) -> list[Path]:
    """Wait-time distribution per controller; mean waiting passengers per floor over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    names = [n for n, rs in results_by_controller.items() if rs and "wait_samples" in rs[0].extras]
    if not names:
        return []
    paths = []
    # 1. wait-time distribution (ECDF + histogram), pooled over episodes
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    hi = max(
        float(
            np.percentile(np.concatenate([r.extras["wait_samples"] for r in results_by_controller[n]]), 99.5)
        )
        for n in names
    )
    bins = np.linspace(0, max(hi, 10.0), 60)
    for name in names:
        w = np.concatenate([r.extras["wait_samples"] for r in results_by_controller[name]])
        xs = np.sort(w)
        ax1.plot(xs, np.arange(1, len(xs) + 1) / len(xs), label=f"{name} (mean {w.mean():.1f} s)")
        ax2.hist(w, bins=bins, histtype="step", density=True, label=name)
    ax1.axvline(60, color="grey", ls=":", lw=1)
    ax1.set(
        xlabel="wait (s)",
        ylabel="share of passengers with wait <= x",
        title="Wait-time CDF",
        xlim=(0, bins[-1]),
    )
    ax2.set(xlabel="wait (s)", ylabel="density", title="Wait-time histogram", yscale="log")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    n_ep = len(results_by_controller[names[0]])
    fig.suptitle(f"Wait times of passengers arriving in the measured window ({n_ep} episodes per controller)")
    fig.tight_layout()
    p = out_dir / "elevator_wait_distribution.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    # 2. waiting passengers per floor over time (mean over episodes)
    k = len(names)
    cols = min(k, 3)
    rows = (k + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    grids = {}
    for name in names:
        rs = results_by_controller[name]
        T = min(len(r.extras["trace_t"]) for r in rs)
        grids[name] = (
            rs[0].extras["trace_t"][:T],
            np.mean([r.extras["waiting_per_floor"][:T] for r in rs], axis=0),
        )
    vmax = max(float(g.max()) for _, g in grids.values()) or 1.0
    for ax, name in zip(axes.ravel(), names, strict=False):
        t, g = grids[name]
        im = ax.imshow(
            g.T,
            aspect="auto",
            origin="lower",
            cmap="magma_r",
            vmin=0,
            vmax=vmax,
            extent=(t[0] / 60, t[-1] / 60, -0.5, g.shape[1] - 0.5),
            interpolation="nearest",
        )
        ax.set(title=name, xlabel="minutes from the start of the measured window", ylabel="floor")
        fig.colorbar(im, ax=ax, label="waiting passengers")
    for ax in axes.ravel()[k:]:
        ax.axis("off")
    fig.suptitle("Waiting passengers per floor over time (mean over episodes)")
    fig.tight_layout()
    p = out_dir / "elevator_waiting_per_floor.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths
