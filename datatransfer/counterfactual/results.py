"""Reading a counterfactual sweep store back: one record per completed row, summaries per point with the
difference to the full-source baseline and its 95% interval, and the best k (the paper's Table 2b).

The interval of a difference of two means is Welch's: (m1 - m2) +- t(0.975, nu) sqrt(s1^2/n1 + s2^2/n2), nu the
Welch-Satterthwaite degrees of freedom; runs of a point are independent trainings (own seeds), so the two samples
are independent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np
from scipy import stats

from datatransfer.errors import StoreError
from datatransfer.store.sweep_store import Store

GROUP = "counterfactual"


@dataclass
class Rows:
    """The completed rows of a counterfactual store and what was measured on each."""

    target: str
    mode: str  # the mode whose influences ranked the units
    kind: str
    modes: List[str]
    row: np.ndarray  # (N,) store row
    point: List[str]  # bottom | top | random | full | handpicked | example
    k: np.ndarray  # units removed
    run: np.ndarray
    example: np.ndarray  # -1 unless point == example
    accuracy: np.ndarray  # (N, modes) target test accuracy
    output: np.ndarray  # (N, modes) mean over the target's test examples of output `kind`
    num_units: int
    attrs: Dict[str, Any]

    def select(self, point: str, k: Optional[int] = None) -> np.ndarray:
        """Indices (into these rows) of a point's rows."""
        sel = np.array([p == point for p in self.point], dtype=bool)
        if k is not None:
            sel &= self.k == k
        return np.flatnonzero(sel)


def is_counterfactual(store: Store) -> bool:
    return GROUP in store.attrs and GROUP in store.group


def read(store: Store) -> Rows:
    """Every completed row of ``store`` (a ``sweep=counterfactual`` store) with its metadata and measurements."""
    if not is_counterfactual(store):
        raise StoreError(f"{store.path} is not a counterfactual sweep store (no {GROUP!r} attributes and arrays); "
                         f"it is made by `python -m launch sweep=counterfactual ...` (docs/counterfactual.md)")
    a = store.attrs[GROUP]
    g = store.group[GROUP]
    meta = {f: np.asarray(g[f][:]) for f in ("order", "k", "run", "baseline", "example")}
    orders, baselines = list(g["order"].attrs["names"]), list(g["baseline"].attrs["names"])
    rows = np.flatnonzero(store.completed())
    point = [orders[o] if o >= 0 else baselines[b] if b >= 0 else "example"
             for o, b in zip(meta["order"][rows], meta["baseline"][rows])]
    target, kind = a["target"], a["kind"]
    acc = store.target_accuracy(target, rows)
    out = np.full((len(rows), len(store.modes)), np.nan)
    if kind in store.output_kinds:
        arr, ki = store.outputs(target), store.output_kinds.index(kind)
        for n, r in enumerate(rows):
            out[n] = np.asarray(arr[int(r)])[:, ki, :].mean(axis=-1)
    return Rows(target, a["mode"], kind, list(store.modes), rows, point, meta["k"][rows], meta["run"][rows],
                meta["example"][rows], acc, out, len(store.unit_names), dict(a))


def welch(x: np.ndarray, y: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(mean(x) - mean(y), lower, upper): Welch's interval; NaN bounds when either side has fewer than 2 values."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if not len(x) or not len(y):
        return float("nan"), float("nan"), float("nan")
    d = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return d, float("nan"), float("nan")
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = np.sqrt(vx + vy)
    if se == 0:
        return d, d, d
    nu = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
    half = float(stats.t.ppf(0.5 + level / 2, nu) * se)
    return d, d - half, d + half


def _describe(values: np.ndarray) -> tuple[float, float, int]:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return (float(v.mean()) if len(v) else float("nan"), float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
            int(len(v)))


def summary(r: Rows, metric: str = "accuracy") -> List[Dict[str, Any]]:
    """One record per (point, k, mode): mean, std, n of ``metric`` (accuracy | output), and the difference to the
    full-source rows with its 95% Welch interval (NaN without full rows)."""
    values = getattr(r, metric)
    full = r.select("full")
    out = []
    points = [p for p in ("bottom", "top", "random", "full", "handpicked") if p in r.point]
    for p in points:
        for k in sorted({int(k) for k in r.k[r.select(p)]}):
            idx = r.select(p, k)
            for m, mode in enumerate(r.modes):
                mean, std, n = _describe(values[idx, m])
                d, lo, hi = welch(values[idx, m], values[full, m]) if len(full) else (np.nan,) * 3
                out.append({"point": p, "k": k, "mode": mode, "mean": mean, "std": std, "n": n,
                            "diff_to_full": d, "ci_low": lo, "ci_high": hi})
    return out


def best_k(r: Rows, records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Table 2b per mode: the k of ``bottom`` with the highest mean accuracy, then the full and hand-picked
    baselines, each with its difference to full and interval."""
    out = []
    for mode in r.modes:
        mine = [x for x in records if x["mode"] == mode]
        bottom = [x for x in mine if x["point"] == "bottom" and x["n"] > 0]
        rows = ([max(bottom, key=lambda x: x["mean"])] if bottom else []) + \
               [x for x in mine if x["point"] in ("full", "handpicked")]
        for x in rows:
            out.append({"mode": mode, "source": "best bottom" if x["point"] == "bottom" else x["point"],
                        "k": x["k"], "classes_kept": r.num_units - x["k"], "mean": x["mean"], "std": x["std"],
                        "n": x["n"], "diff_to_full": x["diff_to_full"], "ci_low": x["ci_low"],
                        "ci_high": x["ci_high"]})
    return out
