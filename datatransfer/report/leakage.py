"""The planted leakage experiment's measure (experiment=mini_leakage; data/leakage.py plants the images).

For each leaked target example: the rank of its best copy among its positive weights (1 = the largest), and whether
a copy is among its ``k`` largest (recall@k). For each misleading image (a near-copy of a target example under a
wrong label): the rank of it among that target example's negative weights (1 = the most negative), and recall@k.
Chance level for recall@k is about k / U per planted image."""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

from datatransfer.data import leakage
from datatransfer.influence import sparse
from datatransfer.report.examples import unit_images
from datatransfer.report.inputs import EMBEDDED_DATA


def planted() -> Dict[str, np.ndarray]:
    with np.load(leakage.path(EMBEDDED_DATA / "mini.npz"), allow_pickle=False) as z:
        return {"kind": z["source_train_planted"], "copy_of": z["source_train_copy_of"]}


def _rank(w_row: np.ndarray, units: np.ndarray, sign: int) -> int:
    """Rank (1 = strongest) of the best of ``units`` among the weights of that sign; 0 if none has that sign."""
    s = sign * w_row
    ok = [u for u in units if s[u] > 0]
    if not ok:
        return 0
    return int(1 + (s > max(s[u] for u in ok)).sum())


def evaluate(inf, t: str, mode: str, kind: str, k: int = 5) -> Dict[str, Any]:
    """Ranks and recall@k of the planted leaks (positive side) and misleading images (negative side)."""
    p = planted()
    index, _ = unit_images(inf.unit_names)
    unit_of = {int(i): u for u, i in enumerate(index)}
    if inf.has_sparse(t, mode, kind):
        w = sparse.to_dense(*inf.sparse(t, mode, kind), len(index))
    else:
        w = inf.array(t, mode, kind, "per_example")
    out: Dict[str, Any] = {"units": len(index), "k": k}
    for name, kinds, sign in (("leaks", (leakage.LEAK_EXACT, leakage.LEAK_AUGMENTED), 1),
                              ("misleading", (leakage.MISLEADING,), -1)):
        targets: Dict[int, list] = {}
        for i in np.flatnonzero(np.isin(p["kind"], kinds)):
            if int(i) in unit_of:
                targets.setdefault(int(p["copy_of"][i]), []).append(unit_of[int(i)])
        ranks = np.array([_rank(w[j], np.array(us), sign) for j, us in sorted(targets.items())])
        out[name] = {"targets": len(ranks), "ranks": ranks.tolist(),
                     "recall": float(np.mean((ranks >= 1) & (ranks <= k))) if len(ranks) else float("nan"),
                     "median_rank": float(np.median(np.where(ranks > 0, ranks, np.inf))) if len(ranks) else None}
    return out
