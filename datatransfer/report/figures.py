"""The report's figures: each function draws one PNG from plain arrays (no store access), with matplotlib's Agg
backend through ``Figure`` objects, so nothing depends on a display or on pyplot's global state."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from matplotlib.figure import Figure

POS, NEG, GREY = "#2a7d3f", "#b8312f", "#888888"
PALE = "#cfcfcf"  # bars of estimates judged noise (report/noise.py)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _bars(ax, names: Sequence[str], values: np.ndarray, top: int, noise: Optional[float] = None,
          judged: Optional[Dict] = None) -> None:
    """Horizontal bars: the ``top`` largest values (green) above the ``top`` smallest (red), largest first.
    ``judged`` (optional): ``null`` (the null level, a float), ``err`` (U,) half-widths of the 95% intervals or
    None, ``is_noise`` (U,) bool: noise bars are pale and hatched, intervals drawn as whiskers, the knockoff band
    (half-width ``noise``) centred on the null level."""
    order = np.argsort(-values, kind="stable")
    top = min(top, len(values) // 2 if len(values) >= 2 else 1)
    chosen = list(order[:top]) + list(order[len(order) - top:]) if len(order) > top else list(order)
    vals = values[chosen]
    y = np.arange(len(chosen))[::-1]
    null = float(judged["null"]) if judged else 0.0
    flags = np.asarray(judged["is_noise"])[chosen] if judged else np.zeros(len(chosen), dtype=bool)
    colours = [PALE if f else (POS if v >= null else NEG) for v, f in zip(vals, flags)]
    err = np.asarray(judged["err"])[chosen] if judged and judged.get("err") is not None else None
    ax.barh(y, vals, color=colours, xerr=err, error_kw={"lw": 0.7, "capsize": 1.5, "ecolor": "#444"})
    for yy, v, f in zip(y, vals, flags):
        if f:
            ax.barh(yy, v, color="none", edgecolor=GREY, hatch="///", lw=0)
    ax.set_yticks(y, [names[i] for i in chosen], fontsize=8)
    ax.axvline(0, color="black", lw=0.6)
    if null != 0.0:
        ax.axvline(null, color=GREY, lw=0.8, ls=":")
    if noise is not None and np.isfinite(noise) and noise > 0:
        ax.axvspan(null - noise, null + noise, color=GREY, alpha=0.15, lw=0)
    ax.tick_params(axis="x", labelsize=7)


def overall_bars(path: Path, names: Sequence[str], overall: np.ndarray, top: int, title: str, xlabel: str,
                 noise: Optional[float] = None, judged: Optional[Dict] = None) -> Path:
    """Fig. 1: most positive and most negative source classes by overall influence (``judged``: see _bars)."""
    k = min(top, max(1, len(names) // 2))
    fig = Figure(figsize=(7, 0.32 * 2 * k + 1.4))
    ax = fig.subplots()
    _bars(ax, names, overall, top, noise, judged)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    return _save(fig, path)


def per_class_bars(path: Path, names: Sequence[str], per_class: np.ndarray, class_names: Sequence[str],
                   top: int, title: str, xlabel: str, max_classes: int = 20,
                   judged: Optional[List[Dict]] = None) -> Path:
    """Fig. 3: for each target class, its most positive and most negative source classes (``judged``: one dict
    per class, see _bars)."""
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
        _bars(ax, names, per_class[i], k, judged=judged[i] if judged else None)
        ax.set_title(f"target class {class_names[i]!s}", fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.supxlabel(xlabel, fontsize=9)
    # Fixed margins instead of tight_layout (which measures every label and is slow): room on the left of each
    # panel for source-class names.
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.09, right=0.99, wspace=0.75, hspace=0.35, top=1 - 0.55 / height,
                        bottom=0.45 / height)
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


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)


def _tile(images: np.ndarray, idx: Sequence[int], k: int, colour: str, pad: int = 3) -> np.ndarray:
    """k images side by side as one RGB strip, each framed in ``colour`` (a missing slot stays white)."""
    h, w = images.shape[1:3]
    strip = np.full((h + 2 * pad, k * (w + 2 * pad + 2), 3), 255, dtype=np.uint8)
    for j, i in enumerate(idx[:k]):
        x0 = j * (w + 2 * pad + 2)
        strip[:, x0:x0 + w + 2 * pad] = _rgb(colour)
        img = images[int(i)]
        strip[pad:pad + h, x0 + pad:x0 + pad + w] = img[..., None] if img.ndim == 2 else img
    return strip


def projection_grid(path: Path, images: np.ndarray, rows: List[Tuple[str, np.ndarray, np.ndarray]],
                    infl: np.ndarray, captions: Sequence[str], title: str) -> Path:
    """Figs. 4-5: for each source class (one row), the target images it influences most positively (left, green
    frames) and most negatively (right, red frames). ``rows``: (source name, indices of most positive, indices of
    most negative); ``infl`` (n, len(rows)) the per-example influence of each row's class; ``captions`` per
    example. Each row is one image strip (a single imshow), which keeps drawing fast for many images."""
    k = max(max(len(p), len(q)) for _, p, q in rows)
    fig = Figure(figsize=(2 * 1.0 * k + 1.6, 1.45 * len(rows) + 0.7))
    axes = fig.subplots(len(rows), 2, squeeze=False)
    fig.subplots_adjust(left=0.09, right=0.995, top=1 - 0.55 / (1.45 * len(rows) + 0.7), bottom=0.06,
                        wspace=0.03, hspace=0.55)
    for r, (name, pos, neg) in enumerate(rows):
        for c, (idx, colour) in enumerate(((pos, POS), (neg, NEG))):
            ax = axes[r, c]
            strip = _tile(images, idx, k, colour)
            ax.imshow(strip, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.axis("off")
            cell = strip.shape[1] / k
            for j, i in enumerate(idx[:k]):
                ax.text((j + 0.5) * cell, -2, f"{captions[int(i)]}\n{infl[int(i), r]:+.3f}", ha="center",
                        va="bottom", fontsize=6)
        axes[r, 0].text(-8, strip.shape[0] / 2, name, ha="right", va="center", fontsize=8, fontweight="bold")
    fig.suptitle(title, fontsize=10)
    fig.text(0.3, 0.01, "most positively influenced (green)", ha="center", fontsize=8, color=POS)
    fig.text(0.77, 0.01, "most negatively influenced (red)", ha="center", fontsize=8, color=NEG)
    return _save(fig, path)


def hard_examples(path: Path, images: Optional[np.ndarray], examples: List[Dict], title: str) -> Path:
    """Fig. 6 (left): target examples whose most negative source class stands out most clearly, with their most
    negative source classes. ``examples``: dicts with index, caption, names (source classes), values (their
    influences), and optionally err (half-widths of their 95% intervals), noise (bool flags) and null (level)."""
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
        flags = np.asarray(ex.get("noise", np.zeros(len(vals), dtype=bool)))
        ax_bar.barh(y, vals, color=[PALE if f else NEG for f in flags], xerr=ex.get("err"),
                    error_kw={"lw": 0.7, "capsize": 1.5, "ecolor": "#444"})
        ax_bar.set_yticks(y, ex["names"], fontsize=8)
        ax_bar.axvline(0, color="black", lw=0.6)
        if ex.get("null"):
            ax_bar.axvline(float(ex["null"]), color=GREY, lw=0.8, ls=":")
        ax_bar.tick_params(axis="x", labelsize=7)
        ax_bar.set_title(ex["caption"], fontsize=8, loc="left")
    fig.suptitle(title, fontsize=10)
    fig.supxlabel("influence of the source class on this example (negative = including it hurts)", fontsize=8)
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.02, right=0.98, wspace=0.45, hspace=0.75, top=1 - 0.8 / height, bottom=0.5 / height)
    return _save(fig, path)


def convergence(path: Path, num_rows: np.ndarray, curves: Dict[str, Dict[str, np.ndarray]], title: str) -> Path:
    """Appendix A.5 / F: bootstrap std, rank correlation, LDS and knockoff FDR vs the number of rows, one line per
    output kind. ``curves[kind][metric]`` arrays over ``num_rows``; ``curves[kind]["rank_corr_ceiling"]`` and
    ``["lds_ceiling"]`` (when present and finite) are drawn as dashed lines of the kind's colour."""
    fig = Figure(figsize=(10, 6.4))
    axes = fig.subplots(2, 2).ravel()
    panels = [
        ("bootstrap_std", "bootstrap std of overall influence\n(mean over source classes; lower = more stable)"),
        ("rank_corr", "held-out rank correlation (Fig. 29)\n(Spearman of mask·influence vs mean output;"
                      " dashed: noise ceiling)"),
        ("lds", "linear datamodeling score\n(per-example rank correlation on held-out rows; dashed: ceiling)"),
        ("fdr", "knockoff FDR among the top-k (Fig. 30)\n(share of fake classes; 0.5 = chance)"),
    ]
    for ax, (metric, label) in zip(axes, panels):
        for kind, c in curves.items():
            line, = ax.plot(num_rows, c[metric], marker="o", ms=3, label=kind)
            ceiling = c.get(f"{metric}_ceiling")
            if ceiling is not None and np.isfinite(ceiling):
                ax.axhline(float(ceiling), color=line.get_color(), ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_xticks(num_rows, [str(int(v)) for v in num_rows], fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel("rows (models) used to estimate, N", fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
        if metric == "fdr":
            ax.axhline(0.5, color=GREY, ls="--", lw=0.8)
            ax.set_ylim(-0.03, 1.03)
    axes[0].set_yscale("log")  # output kinds differ in scale (probabilities vs logits)
    axes[0].legend(fontsize=7, title="output", title_fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.88, bottom=0.08, hspace=0.55, wspace=0.22)
    return _save(fig, path)


def knockoff_ranks(path: Path, overall: np.ndarray, knockoff: np.ndarray, title: str, null: float = 0.0) -> Path:
    """Sorted overall influences of the real source classes (minus their null level ``null``, see
    report/noise.py) against those of as many knockoff (fake) classes: real classes outside the knockoffs' range
    carry signal above the estimation noise."""
    fig = Figure(figsize=(7, 3.6))
    ax = fig.subplots()
    label = "real source classes" + (f" (minus null level {null:+.3g})" if null else "")
    ax.plot(np.sort(overall - null)[::-1], marker="o", ms=3, color=POS, label=label)
    ax.plot(np.sort(knockoff)[::-1], marker="x", ms=3, color=GREY, label="knockoffs (independent random masks)")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("rank")
    ax.set_ylabel("overall influence")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)
