"""The report's figure: each measure per phase, logged vs learned controller, as grouped bars (PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainer.atspm.compare import MEASURES

PLOTTED = ("aog", "platoon_ratio", "split_failures", "green_time", "yellow_actuations", "red_actuations")


def plot_measures(
    logged: dict[str, dict], learned: dict[str, dict], labels: tuple[str, str], path: Path
) -> Path:
    """One panel per measure (phases on the x axis, "all" first); returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {m.key: m.title for m in MEASURES}
    better = {m.key: m.better for m in MEASURES}
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for ax, key in zip(axes.flat, PLOTTED, strict=True):
        phases = ["all", *sorted({p for p in (*logged[key], *learned[key]) if p != "all"})]
        x = np.arange(len(phases))
        for offset, values, label in ((-0.2, logged[key], labels[0]), (0.2, learned[key], labels[1])):
            ax.bar(x + offset, [values.get(p, np.nan) for p in phases], width=0.4, label=label)
        ax.set_xticks(x, [str(p) for p in phases])
        ax.set_xlabel("phase")
        hint = f" ({better[key]} is better)" if better[key] != "-" else ""
        ax.set_title(titles[key] + hint, fontsize=10)
        if not any(v for v in (*logged[key].values(), *learned[key].values()) if np.isfinite(v)):
            ax.text(0.5, 0.5, "none in either set", transform=ax.transAxes, ha="center", va="center")
            ax.set_yticks([])
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper right", ncol=2, fontsize=9)
    fig.suptitle("ATSPM measures (atspm 2.6.1): logged vs learned controller on the same episodes", x=0.4)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
