"""The report's figures: each function draws one PNG from plain arrays (no store access), with matplotlib's Agg
backend through ``Figure`` objects, so nothing depends on a display or on pyplot's global state."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from matplotlib.figure import Figure

POS, NEG, GREY = "#2a7d3f", "#b8312f", "#888888"


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _bars(ax, names: Sequence[str], values: np.ndarray, top: int, noise: Optional[float] = None) -> None:
    """Horizontal bars: the ``top`` largest values (green) above the ``top`` smallest (red), largest first."""
    order = np.argsort(-values, kind="stable")
    top = min(top, len(values) // 2 if len(values) >= 2 else 1)
    chosen = list(order[:top]) + list(order[len(order) - top:]) if len(order) > top else list(order)
    vals = values[chosen]
    y = np.arange(len(chosen))[::-1]
    ax.barh(y, vals, color=[POS if v >= 0 else NEG for v in vals])
    ax.set_yticks(y, [names[i] for i in chosen], fontsize=8)
    ax.axvline(0, color="black", lw=0.6)
    if noise is not None and np.isfinite(noise) and noise > 0:
        ax.axvspan(-noise, noise, color=GREY, alpha=0.15, lw=0)
    ax.tick_params(axis="x", labelsize=7)


def overall_bars(path: Path, names: Sequence[str], overall: np.ndarray, top: int, title: str, xlabel: str,
                 noise: Optional[float] = None) -> Path:
    """Fig. 1: most positive and most negative source classes by overall influence."""
    k = min(top, max(1, len(names) // 2))
    fig = Figure(figsize=(7, 0.32 * 2 * k + 1.4))
    ax = fig.subplots()
    _bars(ax, names, overall, top, noise)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    return _save(fig, path)


def per_class_bars(path: Path, names: Sequence[str], per_class: np.ndarray, class_names: Sequence[str],
                   top: int, title: str, xlabel: str, max_classes: int = 20) -> Path:
    """Fig. 3: for each target class, its most positive and most negative source classes."""
    c = min(len(class_names), max_classes)
    cols = min(c, 5)
    rows = int(np.ceil(c / cols))
    k = min(top, max(1, len(names) // 2))
    fig = Figure(figsize=(3.3 * cols, (0.26 * 2 * k + 0.9) * rows + 0.6))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        if i >= c:
            ax.set_visible(False)
            continue
        _bars(ax, names, per_class[i], k)
        ax.set_title(f"target class {class_names[i]!s}", fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.supxlabel(xlabel, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def heatmap(path: Path, names: Sequence[str], per_class: np.ndarray, class_names: Sequence[str], title: str,
            max_units: int = 60) -> Path:
    """Target class x source class matrix of class-level influences (the most influential columns when many)."""
    cols = np.arange(len(names))
    if len(names) > max_units:
        cols = np.argsort(-np.abs(per_class).max(axis=0))[:max_units]
    m = per_class[:, cols]
    lim = float(np.nanmax(np.abs(m))) or 1.0
    fig = Figure(figsize=(max(6.0, 0.24 * len(cols) + 2), 0.32 * len(class_names) + 2.2))
    ax = fig.subplots()
    im = ax.imshow(m, cmap="RdYlGn", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(np.arange(len(cols)), [names[i] for i in cols], rotation=90, fontsize=7)
    ax.set_yticks(np.arange(len(class_names)), [str(c) for c in class_names], fontsize=8)
    ax.set_xlabel("source class")
    ax.set_ylabel("target class")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01, label="influence")
    return _save(fig, path)


def projection_grid(path: Path, images: np.ndarray, rows: List[Tuple[str, np.ndarray, np.ndarray]],
                    infl: np.ndarray, captions: Sequence[str], title: str) -> Path:
    """Figs. 4-5: for each source class (one row), the target images it influences most positively (left) and most
    negatively (right). ``rows``: (source name, indices of most positive, indices of most negative);
    ``infl`` (n, len(rows)) the per-example influence of each row's class; ``captions`` per target example."""
    k = max(len(p) for _, p, _ in rows)
    fig = Figure(figsize=(1.05 * (2 * k + 1), 1.35 * len(rows) + 0.8))
    axes = fig.subplots(len(rows), 2 * k + 1, squeeze=False)
    for r, (name, pos, neg) in enumerate(rows):
        for j in range(2 * k + 1):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j == k:  # the middle column names the source class
                ax.text(0.5, 0.5, name, ha="center", va="center", fontsize=8, wrap=True, fontweight="bold")
                continue
            idx_list, colour = (pos, POS) if j < k else (neg, NEG)
            jj = j if j < k else j - k - 1
            if jj >= len(idx_list):
                continue
            i = int(idx_list[jj])
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
            for s in ax.spines.values():
                s.set_visible(True)
                s.set_color(colour)
                s.set_linewidth(2)
            ax.set_title(f"{captions[i]}\n{infl[i, r]:+.3f}", fontsize=6.5, pad=2)
    fig.suptitle(title, fontsize=10)
    fig.text(0.25, 0.005, "most positively influenced  (green)", ha="center", fontsize=8, color=POS)
    fig.text(0.75, 0.005, "most negatively influenced  (red)", ha="center", fontsize=8, color=NEG)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    return _save(fig, path)


def hard_examples(path: Path, images: Optional[np.ndarray], examples: List[Dict], title: str) -> Path:
    """Fig. 6 (left): each often-misclassified target example with its most negative source classes.
    ``examples``: dicts with index, caption, names (source classes) and values (their influences)."""
    n = len(examples)
    fig = Figure(figsize=(7.5, 1.25 * n + 0.6))
    axes = fig.subplots(n, 2, squeeze=False, gridspec_kw={"width_ratios": [1, 4]})
    for r, ex in enumerate(examples):
        ax_img, ax_bar = axes[r]
        ax_img.set_xticks([])
        ax_img.set_yticks([])
        if images is not None:
            ax_img.imshow(images[ex["index"]], cmap="gray", vmin=0, vmax=255)
        ax_img.set_title(f"example {ex['index']}", fontsize=7, pad=2)
        vals = np.asarray(ex["values"])
        y = np.arange(len(vals))[::-1]
        ax_bar.barh(y, vals, color=NEG)
        ax_bar.set_yticks(y, ex["names"], fontsize=8)
        ax_bar.axvline(0, color="black", lw=0.6)
        ax_bar.tick_params(axis="x", labelsize=7)
        ax_bar.set_title(ex["caption"], fontsize=8, loc="left")
    fig.suptitle(title, fontsize=10)
    fig.supxlabel("influence of the source class on this example (negative = including it hurts)", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def convergence(path: Path, num_rows: np.ndarray, curves: Dict[str, Dict[str, np.ndarray]], title: str) -> Path:
    """Appendix A.5 / F: bootstrap std, rank correlation, LDS and knockoff FDR vs the number of rows, one line per
    output kind. ``curves[kind][metric]`` arrays over ``num_rows``."""
    fig = Figure(figsize=(10, 6.4))
    axes = fig.subplots(2, 2).ravel()
    panels = [
        ("bootstrap_std", "bootstrap std of overall influence\n(mean over source classes; lower = more stable)"),
        ("rank_corr", "held-out rank correlation (Fig. 29)\n(Spearman of mask·influence vs mean output)"),
        ("lds", "linear datamodeling score\n(per-example rank correlation on held-out rows)"),
        ("fdr", "knockoff FDR among the top-k (Fig. 30)\n(share of fake classes; 0.5 = chance)"),
    ]
    for ax, (metric, label) in zip(axes, panels):
        for kind, c in curves.items():
            ax.plot(num_rows, c[metric], marker="o", ms=3, label=kind)
        ax.set_xscale("log")
        ax.set_xlabel("rows (models) used to estimate, N")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
        if metric == "fdr":
            ax.axhline(0.5, color=GREY, ls="--", lw=0.8)
            ax.set_ylim(-0.03, 1.03)
    axes[0].legend(fontsize=7, title="output", title_fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def knockoff_ranks(path: Path, overall: np.ndarray, knockoff: np.ndarray, title: str) -> Path:
    """Sorted overall influences of the real source classes against those of as many knockoff (fake) classes:
    real classes outside the knockoffs' range carry signal above the estimation noise."""
    fig = Figure(figsize=(7, 3.6))
    ax = fig.subplots()
    ax.plot(np.sort(overall)[::-1], marker="o", ms=3, color=POS, label="real source classes")
    ax.plot(np.sort(knockoff)[::-1], marker="x", ms=3, color=GREY, label="knockoffs (independent random masks)")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("rank")
    ax.set_ylabel("overall influence")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)
