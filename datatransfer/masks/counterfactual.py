"""Sweep kind ``counterfactual``: keep-lists that remove chosen source units (docs/counterfactual.md).

Rows, in this order (``cf`` is the ``counterfactual`` config section):

1. one per (order, k, run), for order in ``cf.orders``, k in ``cf.k``, run < ``cf.runs``: ``bottom`` removes the k
   units of lowest influence, ``top`` the k highest (ties: the lower unit index first), ``random`` k units drawn
   from ``(cf.seed, k, run)`` alone;
2. ``cf.runs`` per baseline: ``full`` keeps every unit, ``handpicked`` keeps the units a rule matches to the target
   (``handpicked.py``); a sweep with examples always has the ``full`` rows (they are what the examples compare to);
3. ``cf.runs`` per debugged example: every unit but that example's most negative influencer.

Everything here is a function of the config and of what was read from the influence store once, at the sweep
store's creation (the ranking, the hand-picked units, each example's influencer), so the masks and the per-row
metadata written into the store are reproducible without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from datatransfer.errors import ConfigError

ORDERS = ("bottom", "top", "random")
BASELINES = ("full", "handpicked")
_RANDOM_STREAM = 3  # spawn-key slot of the random order's draws, apart from the mask and training streams


@dataclass
class RowMeta:
    """Per-row metadata of a counterfactual sweep: -1 where a field does not apply to a row."""

    order: np.ndarray  # int8: index into ORDERS
    k: np.ndarray  # int32: units removed
    run: np.ndarray  # int32: repetition of the row's point
    baseline: np.ndarray  # int8: index into BASELINES
    example: np.ndarray  # int64: the debugged target test example

    FIELDS = ("order", "k", "run", "baseline", "example")

    def arrays(self) -> Dict[str, np.ndarray]:
        return {f: getattr(self, f) for f in self.FIELDS}


def baselines(cf) -> List[str]:
    """The baselines that get rows: those asked for, plus ``full`` when examples are debugged."""
    out = [b for b in BASELINES if b in list(cf.baselines)]
    if (len(cf.examples) or int(cf.get("auto_examples", 0))) and "full" not in out:
        out.insert(0, "full")
    return out


def num_rows(cf) -> int:
    """Rows of the sweep (known from the config alone: automatically picked examples count ``auto_examples``)."""
    points = len(cf.orders) * len(cf.k) + len(baselines(cf)) + len(cf.examples) + int(cf.get("auto_examples", 0))
    return points * int(cf.runs)


def removal_ranking(influence: np.ndarray, order: str) -> np.ndarray:
    """Unit indices in the order they are removed: ``bottom`` lowest influence first, ``top`` highest first; ties
    (and NaN, which goes last) by unit index."""
    x = np.asarray(influence, dtype=np.float64)
    key = np.where(np.isnan(x), np.inf, x if order == "bottom" else -x)
    return np.argsort(key, kind="stable")


def random_removal(seed: int, k: int, run: int, num_units: int) -> np.ndarray:
    """The k units the ``random`` order removes at (k, run): a function of (seed, k, run) alone."""
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(_RANDOM_STREAM, int(k), int(run))))
    return rng.choice(num_units, size=int(k), replace=False)


def check_k(ks: Sequence[int], num_units: int) -> None:
    too_many = [int(k) for k in ks if int(k) >= num_units]
    if too_many:
        raise ConfigError(f"counterfactual.k: {too_many} would remove all {num_units} source units (or more), "
                          f"leaving nothing to train on; choose k in [0, {num_units - 1}]")


def keep_masks(cf, influence: np.ndarray, handpicked: Optional[np.ndarray] = None,
               influencers: Optional[Sequence[tuple]] = None) -> tuple[np.ndarray, RowMeta]:
    """(bool (rows, U) keep-masks, per-row metadata).

    ``influence``: (U,) overall influence of each unit on the target (mode, kind); ``handpicked``: bool (U,) the
    hand-picked units (needed when ``handpicked`` is a baseline); ``influencers``: (example, unit) pairs, the unit
    removed for each debugged example."""
    u = len(influence)
    if len(cf.orders):
        check_k(cf.k, u)
    masks, meta = [], {f: [] for f in RowMeta.FIELDS}

    def add(keep: np.ndarray, order=-1, k=-1, run=-1, baseline=-1, example=-1) -> None:
        masks.append(keep)
        for f, v in zip(RowMeta.FIELDS, (order, k, run, baseline, example)):
            meta[f].append(v)

    runs = int(cf.runs)
    for order in cf.orders:
        ranked = removal_ranking(influence, order)
        for k in cf.k:
            for run in range(runs):
                removed = random_removal(cf.seed, k, run, u) if order == "random" else ranked[:int(k)]
                keep = np.ones(u, dtype=bool)
                keep[removed] = False
                add(keep, order=ORDERS.index(order), k=int(k), run=run)
    for b in baselines(cf):
        if b == "handpicked" and (handpicked is None or not np.any(handpicked)):
            raise ConfigError("counterfactual.baselines: the hand-picked rule matched no source unit to the target")
        keep = np.ones(u, dtype=bool) if b == "full" else np.asarray(handpicked, dtype=bool)
        for run in range(runs):
            add(keep, k=int(u - keep.sum()), run=run, baseline=BASELINES.index(b))
    for example, unit in influencers or ():
        keep = np.ones(u, dtype=bool)
        keep[int(unit)] = False
        for run in range(runs):
            add(keep, k=1, run=run, example=int(example))
    dtypes = {"order": np.int8, "k": np.int32, "run": np.int32, "baseline": np.int8, "example": np.int64}
    arrays = {f: np.asarray(meta[f], dtype=dtypes[f]) for f in RowMeta.FIELDS}
    return np.asarray(masks, dtype=bool).reshape(-1, u), RowMeta(**arrays)


def masks(sweep, num_units: int) -> np.ndarray:
    """The GENERATORS entry: a counterfactual sweep's masks are not a function of its config alone."""
    raise ConfigError("sweep=counterfactual: the keep-masks come from an influence store, read once when the sweep "
                      "store is created and recorded in it (the store's `masks` and `counterfactual/*` arrays); "
                      "they cannot be recomputed from the config alone")
