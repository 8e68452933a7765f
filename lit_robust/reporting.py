"""Rich tables and matplotlib figures for selection callbacks."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from rich.table import Table

__all__ = ["round_table", "plot_score_histograms", "fmt_pct"]


def fmt_pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def round_table(history: Sequence[Any], monitor: str | None = None, title: str = "ITLM rounds") -> Table:
    """A rich table with one row per finished round (``RoundRecord`` objects)."""
    metric_names: list[str] = []
    for rec in history:
        for k in rec.metrics:
            if k not in metric_names:
                metric_names.append(k)
    table = Table(title=title)
    for col in ("round", "epochs", "kept", "clean precision", "corrupted dropped"):
        table.add_column(col, justify="right")
    for k in metric_names:
        table.add_column(k, justify="right")
    for rec in history:
        row = [str(rec.round), str(rec.epochs), f"{rec.kept}/{rec.n}", fmt_pct(rec.clean_precision),
               fmt_pct(rec.corrupted_recall)]
        row += [f"{rec.metrics[k]:.4f}" if k in rec.metrics else "—" for k in metric_names]
        table.add_row(*row)
    return table


def plot_score_histograms(score_history: Sequence[dict], folder: str, filename: str = "scores.png") -> str:
    """One panel per scoring pass: histograms of clean vs corrupted samples' scores (log10 scale)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import torch

    passes = [h for h in score_history if h.get("corrupted") is not None]
    if not passes:
        raise ValueError("no scoring pass with ground truth to plot.")
    fig, axes = plt.subplots(1, len(passes), figsize=(3.2 * len(passes), 2.8), squeeze=False)
    for ax, h in zip(axes[0], passes):
        s, c = h["scores"], h["corrupted"]
        finite = torch.isfinite(s)
        v = torch.log10(s[finite].clamp(min=1e-8))
        cf = c[finite]
        bins = torch.linspace(float(v.min()), float(v.max()) + 1e-6, 40).tolist() if v.numel() else 10
        ax.hist(v[~cf].tolist(), bins=bins, alpha=0.6, label="clean", color="tab:blue")
        ax.hist(v[cf].tolist(), bins=bins, alpha=0.6, label="corrupted", color="tab:red")
        ax.set_title(f"scores before round {h['round']}")
        ax.set_xlabel("log10 score")
    axes[0][0].set_ylabel("samples")
    axes[0][0].legend()
    fig.tight_layout()
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, filename)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
