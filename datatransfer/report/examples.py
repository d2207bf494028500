"""Example-level sweeps (sweep=example_subsets) in the report: Fig. 7 of the paper. For the target examples with the
strongest weights, the target image beside the source images with the highest positive weights (candidate leaks:
near-copies) and the most negative ones (candidate misleading or mislabelled images), with weights and labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from matplotlib.figure import Figure

from datatransfer.influence import sparse
from datatransfer.report.figures import NEG, POS, _save
from datatransfer.report.inputs import EMBEDDED_DATA
from datatransfer.report.tables import write_csv


def unit_images(names: List[str]) -> Tuple[np.ndarray, List[str]]:
    """(train indices, class names) of example units, from their names '#<train index> <class name>'."""
    idx, labels = [], []
    for n in names:
        head, _, label = n.partition(" ")
        idx.append(int(head.lstrip("#")))
        labels.append(label)
    return np.asarray(idx, dtype=np.int64), labels


PLANTED = {1: "leak (exact copy)", 2: "leak (augmented copy)", 3: "misleading (relabelled)"}  # data/leakage.py


def source_file(config: Dict[str, Any]) -> Path:
    """The source data file named in the store's config (mini_leakage.npz: the derived, cached file)."""
    src = config.get("source") or {}
    root, file = src.get("root", ""), src.get("file", "mini.npz")
    if not root and file == "mini_leakage.npz":
        from datatransfer.data import leakage

        return leakage.path(EMBEDDED_DATA / "mini.npz")
    return (Path(root) if root else EMBEDDED_DATA) / file


def source_images(config: Dict[str, Any]) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(the source's training images (uint8), their planted kind per image (mini_leakage: data/leakage.py)) from
    the data file named in the store's config; either None if absent."""
    name = (config.get("source") or {}).get("name", "source")
    try:
        with np.load(source_file(config), allow_pickle=False) as z:
            x = z[f"{name}_train_x"] if f"{name}_train_x" in z.files else None
            kind = z[f"{name}_train_planted"] if f"{name}_train_planted" in z.files else None
            return x, kind
    except (OSError, ValueError):
        return None, None


def planted_tags(unit_index: np.ndarray, kind: Optional[np.ndarray]) -> List[str]:
    """Per unit: what was planted there ("" for an ordinary image, or when the source plants nothing)."""
    if kind is None:
        return [""] * len(unit_index)
    return [PLANTED.get(int(k), "") for k in kind[unit_index]]


def table(path: Path, rows: List[Dict[str, Any]], target_captions: List[str], unit_index: np.ndarray,
          unit_labels: List[str], tags: List[str]) -> Path:
    """The thumbnails of :func:`figure` as a CSV: one line per source image shown."""
    lines = []
    for row in rows:
        j = row["example"]
        for side, (units, weights) in (("positive", row["pos"]), ("negative", row["neg"])):
            for rank, (u, w) in enumerate(zip(units, weights, strict=True), 1):
                lines.append([j, target_captions[j], side, rank, int(u), int(unit_index[u]), unit_labels[u],
                              float(w), tags[u]])
    return write_csv(path, ["target_example", "target_label", "side", "rank", "unit", "source_index",
                            "source_label", "weight", "planted"], lines)


def strongest(inf, t: str, mode: str, kind: str, examples: int, per_side: int) -> List[Dict[str, Any]]:
    """The ``examples`` target examples with the largest |weight| (only those with a nonzero weight), each with its
    ``per_side`` most positive and most negative units (unit indices and weights)."""
    if inf.has_sparse(t, mode, kind):
        indptr, unit, weight = inf.sparse(t, mode, kind)
    else:  # a dense estimator (dim, ridge): every weight
        indptr, unit, weight = sparse.to_csr(inf.array(t, mode, kind, "per_example"))
    n = len(indptr) - 1
    peak = np.zeros(n)
    for j in range(n):
        w = weight[indptr[j]:indptr[j + 1]]
        peak[j] = np.abs(w).max() if len(w) else 0.0
    out = []
    for j in np.argsort(-peak, kind="stable")[:examples]:
        if peak[j] == 0:  # every weight of this (and each later) example is 0: nothing to show
            break
        pos, neg = (sparse.top(indptr, unit, weight, int(j), per_side, s) for s in (1, -1))
        out.append({"example": int(j), "pos": pos, "neg": neg})
    return out


def figure(path: Path, rows: List[Dict[str, Any]], target_images: Optional[np.ndarray], target_captions: List[str],
           src_images: Optional[np.ndarray], unit_index: np.ndarray, unit_labels: List[str], per_side: int,
           title: str, tags: Optional[List[str]] = None) -> Path:
    """Fig. 7: one row per target example: its image, then the top positive and top negative source images."""
    cols = 1 + 2 * per_side
    fig = Figure(figsize=(1.05 * cols + 0.4, 1.35 * len(rows) + 0.7))
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, row in enumerate(rows):
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.axis("off")
        j = row["example"]
        if target_images is not None:
            axes[r, 0].imshow(target_images[j], cmap="gray", vmin=0, vmax=255)
        axes[r, 0].set_title(f"target {j}\n{target_captions[j]}", fontsize=7, fontweight="bold")
        for (units, weights), colour, offset in ((row["pos"], POS, 1), (row["neg"], NEG, 1 + per_side)):
            for c, (u, w) in enumerate(zip(units, weights, strict=True)):
                ax = axes[r, offset + c]
                if src_images is not None:
                    ax.imshow(src_images[unit_index[u]], cmap="gray", vmin=0, vmax=255)
                tag = f"\n{tags[u].split(' (')[0]}" if tags and tags[u] else ""  # planted: leak / misleading
                ax.set_title(f"{w:+.3g}\n{unit_labels[u]}{tag}", fontsize=6, color=colour)
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.8 / height, bottom=0.3 / height, hspace=0.55)
    fig.suptitle(title, fontsize=10)
    fig.text((1 + per_side / 2) / cols, 0.08 / height, "highest positive weights (candidate leaks)", ha="center",
             fontsize=8, color=POS)
    fig.text((1 + 1.5 * per_side) / cols, 0.08 / height, "most negative weights (candidate misleading images)",
             ha="center", fontsize=8, color=NEG)
    return _save(fig, path)
