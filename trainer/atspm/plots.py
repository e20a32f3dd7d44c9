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
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("ATSPM measures (atspm 2.6.1): logged vs learned controller on the same episodes")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
