"""Debugged examples (the paper's Fig. 6 right, Appendix E.4): for each target example whose most negative
influencer was removed, how the predictions of the models trained without it differ from those of the
full-source models."""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from datatransfer.counterfactual.results import Rows
from datatransfer.store.sweep_store import Store


def debugged(store: Store, r: Rows, mode: str) -> List[Dict[str, Any]]:
    """Per debugged example with completed rows: predicted-class counts without its influencer and with the full
    source, and the share of those models that predict it correctly."""
    labels = store.labels(r.target)
    classes = len(store.class_names(r.target))
    m = store.modes.index(mode)
    preds = store.predictions(r.target)
    full = r.row[r.select("full")]
    out = []
    for info in r.attrs.get("examples", []):
        e = int(info["example"])
        without = r.row[np.flatnonzero((r.example == e) & np.array([p == "example" for p in r.point]))]
        if not len(without) or not len(full):
            continue
        hist = {}
        for name, rows in (("without", without), ("with", full)):
            p = np.array([int(np.asarray(preds[int(i)])[m, e]) for i in rows])
            p = p[p >= 0]
            hist[name] = np.bincount(p, minlength=classes)
        lab = int(labels[e])
        out.append({"example": e, "label": lab, "influencer": info["influencer"], "influence": info["influence"],
                    "without": hist["without"], "with": hist["with"],
                    "correct_without": hist["without"][lab] / max(1, hist["without"].sum()),
                    "correct_with": hist["with"][lab] / max(1, hist["with"].sum())})
    return out


def shares(examples: List[Dict[str, Any]], tolerance: float = 0.0) -> Dict[str, Any]:
    """Appendix E.4's numbers: how many debugged examples are predicted correctly more often, less often, or
    equally often once their most negative influencer is removed (differences within ``tolerance`` are equal)."""
    d = np.array([x["correct_without"] - x["correct_with"] for x in examples], dtype=float)
    n = len(d)
    counts = {"more_often": int((d > tolerance).sum()), "less_often": int((d < -tolerance).sum()),
              "equally": int((np.abs(d) <= tolerance).sum())}
    return {"n": n, **counts, **{f"share_{k}": (v / n if n else float("nan")) for k, v in counts.items()}}
