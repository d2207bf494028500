"""Figures of a counterfactual sweep, drawn from plain records with matplotlib's Agg backend (``Figure`` objects)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

COLORS = {"bottom": "#2a7d3f", "top": "#b8312f", "random": "#4a6fa5", "full": "#222222", "handpicked": "#c07a00"}
LABELS = {"bottom": "remove most negative first (bottom)", "top": "remove most positive first (top)",
          "random": "remove at random", "full": "full source", "handpicked": "hand-picked classes"}


def accuracy_vs_k(path: Path, records: List[Dict[str, Any]], modes: Sequence[str], title: str) -> Path:
    """Fig. 2a: target accuracy against the number of source classes removed, one panel per mode: mean +- std
    band per order, the full-source and hand-picked baselines as horizontal lines (full with its std band)."""
    fig = Figure(figsize=(5.2 * len(modes), 3.8))
    axes = np.atleast_1d(fig.subplots(1, len(modes), squeeze=False)[0])
    for ax, mode in zip(axes, modes):
        mine = [x for x in records if x["mode"] == mode]
        for order in ("bottom", "top", "random"):
            pts = sorted((x for x in mine if x["point"] == order and x["n"] > 0), key=lambda x: x["k"])
            if not pts:
                continue
            k = np.array([x["k"] for x in pts])
            m = 100 * np.array([x["mean"] for x in pts])
            s = 100 * np.nan_to_num(np.array([x["std"] for x in pts]))
            ax.plot(k, m, "o-", color=COLORS[order], label=LABELS[order], ms=4)
            ax.fill_between(k, m - s, m + s, color=COLORS[order], alpha=0.15, lw=0)
        for base, style in (("full", "-"), ("handpicked", "--")):
            pts = [x for x in mine if x["point"] == base and x["n"] > 0]
            if pts:
                m, s = 100 * pts[0]["mean"], 100 * np.nan_to_num(pts[0]["std"])
                ax.axhline(m, color=COLORS[base], ls=style, lw=1.2,
                           label=f"{LABELS[base]} ({pts[0]['k']} removed)" if base == "handpicked" else LABELS[base])
                if base == "full":
                    ax.axhspan(m - s, m + s, color=COLORS[base], alpha=0.08, lw=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("source classes removed (k)")
        ax.set_ylabel("target test accuracy (%)")
        ax.set_title(f"{title}, {mode} transfer", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def prediction_histograms(path: Path, examples: List[Dict[str, Any]], class_names: Sequence[str]) -> Path:
    """Fig. 6 right: per debugged example, how often the models predict each target class, with its most negative
    influencer removed and with the full source (bars side by side; the true class marked)."""
    n = max(1, len(examples))
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(4.2 * cols, 2.8 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    c = np.arange(len(class_names))
    for ax, e in zip(axes, examples):
        ax.bar(c - 0.2, e["with"], width=0.4, color="#888888", label="full source")
        ax.bar(c + 0.2, e["without"], width=0.4, color="#2a7d3f", label=f"without {e['influencer']}")
        ax.axvline(e["label"], color="black", lw=0.6, ls=":")
        ax.set_xticks(c, [str(x) for x in class_names], fontsize=6, rotation=90 if len(c) > 10 else 0)
        ax.set_title(f"example {e['example']} (true: {class_names[e['label']]})", fontsize=8)
        ax.set_ylabel("models", fontsize=7)
        ax.legend(fontsize=6)
    for ax in axes[len(examples):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path
