"""What the report shows besides influences: the target's test images (from its data file) and how often the
models got each example wrong (from the influence store, or the sweep store's predictions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from datatransfer.errors import StoreError
from datatransfer.influence.blocks import read_blocks
from datatransfer.influence.reader import Influence
from datatransfer.store.sweep_store import Store

# Where the embedded mini.npz ships (datatransfer/data/), named here to read it without importing torch.
EMBEDDED_DATA = Path(__file__).resolve().parent.parent / "data"


def target_images(config: Dict[str, Any], target: str, n: int):
    """(images uint8 (n, H, W) or None, captions per example). Read straight from the data file named in the
    store's config (no torch); None when the file or the array is not there (the report then skips image grids)."""
    tcfg = (config.get("targets") or {}).get(target) or {}
    name, root, file = tcfg.get("name", target), tcfg.get("root", ""), tcfg.get("file", "mini.npz")
    path = (Path(root) if root else EMBEDDED_DATA) / file
    try:
        with np.load(path, allow_pickle=False) as z:
            x = z[f"{name}_test_x"] if f"{name}_test_x" in z.files else None
            fine = z[f"{name}_test_fine"] if f"{name}_test_fine" in z.files else None
            src = [str(s) for s in z["source_class_names"]] if "source_class_names" in z.files else None
            classes = [str(s) for s in z[f"{name}_class_names"]] if f"{name}_class_names" in z.files else None
            labels = z[f"{name}_test_y"] if f"{name}_test_y" in z.files else None
    except (OSError, ValueError):
        return None, [str(i) for i in range(n)]
    if x is None or len(x) != n:
        return None, [str(i) for i in range(n)]
    if x.ndim == 4 and x.shape[-1] in (1, 3):
        x = x[..., 0] if x.shape[-1] == 1 else x
    captions = [classes[int(c)] if classes is not None else "" for c in labels] if labels is not None \
        else [""] * n
    if fine is not None and src is not None:
        captions = [f"{c}: {src[int(f)].split(':')[-1]}" for c, f in zip(captions, fine)]
    return x, captions


def error_rates(inf: Influence, store: Optional[Store], t: str, mode: str):
    """(share of rows that got each example wrong, most frequent wrong prediction per example), either None when
    unknown: the error rates come from output kind is_correct, else from the store's predictions, which alone give
    the most frequent wrong prediction."""
    wrong = 1.0 - inf.array(t, mode, "is_correct", "mean_output").astype(np.float64) \
        if "is_correct" in inf.output_kinds else None
    if store is None:
        return wrong, None
    try:
        counts = _prediction_counts(inf, store, t, mode)
    except (KeyError, ValueError, StoreError):
        return wrong, None
    seen = counts.sum(axis=1)
    if not seen.any():
        return wrong, None  # no predictions written (a synthetic store): nothing to say
    labels = inf.labels(t)
    if wrong is None:
        wrong = 1.0 - counts[np.arange(len(labels)), labels] / np.maximum(seen, 1)
    counts[np.arange(len(labels)), labels] = -1  # the most frequent *wrong* prediction
    return wrong, counts.argmax(axis=1)


def _prediction_counts(inf: Influence, store: Store, t: str, mode: str) -> np.ndarray:
    """(examples, classes): how many of the rows used predicted each class for each example of target ``t``."""
    arr = store.predictions(t)
    m = store.modes.index(mode)
    labels = inf.labels(t)
    n_classes = len(inf.class_names(t))
    counts = np.zeros((len(labels), n_classes + 1), dtype=np.int64)
    for _, data in read_blocks(arr, inf.rows(t), 256):
        p = np.clip(data[:, m, :], -1, n_classes - 1)  # -1: fill value of an unwritten row
        np.add.at(counts, (np.broadcast_to(np.arange(len(labels)), p.shape), p), 1)
    return counts[:, :n_classes]  # drop the -1 column


def counterfactual_results(store_path: Optional[str]) -> List[Tuple[Path, Dict[str, Any], List[Dict[str, str]]]]:
    """(folder, about.json, best_k.csv rows) of each counterfactual result folder beside the sweep store
    ``store_path``: ``<parent>/counterfactual/`` and ``<parent>/*/counterfactual/``, in name order."""
    import csv
    import json

    if not store_path:
        return []
    parent = Path(store_path).parent
    out = []
    for folder in sorted([parent / "counterfactual", *parent.glob("*/counterfactual")]):
        if (folder / "about.json").is_file() and (folder / "best_k.csv").is_file():
            with open(folder / "best_k.csv", newline="") as f:
                best = list(csv.DictReader(f))
            out.append((folder, json.loads((folder / "about.json").read_text()), best))
    return out
