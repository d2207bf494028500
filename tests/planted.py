"""Stores with a planted truth, written in the documented store format through `Store`, for aggregation tests.

Row i's output on target example j is  b_j + sum_c mask[i, c] * w[c, j] + noise,  so an estimator should recover
w (up to what the mask scheme can identify: with fixed-size masks, w minus its mean over units).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from datatransfer.masks import mask_matrix
from datatransfer.store.sweep_store import Store, StoreSpec, TargetSpec


@dataclass
class Planted:
    store: Store
    w: Dict[str, np.ndarray]  # target -> (U, n) planted per-example effects
    y: Dict[str, np.ndarray]  # target -> (M, n_modes, n_kinds, n) outputs as written (also for unwritten rows)


def make_planted_store(
    path: Path,
    rows: int = 200,
    units: int = 12,
    n: Sequence[int] = (25, 9),
    classes: int = 3,
    noise: float = 0.1,
    modes: Sequence[str] = ("fixed", "full"),
    kinds: Sequence[str] = ("softmax_gt", "is_correct"),
    completed: Optional[np.ndarray] = None,
    scheme: str = "fixed_size",
    seed: int = 0,
    masks: Optional[np.ndarray] = None,
    via_write_row: bool = False,
    unit_names: Optional[Sequence[str]] = None,
    targets: Optional[Dict[str, Tuple[np.ndarray, Sequence[str]]]] = None,
    effects: Optional[Dict[str, np.ndarray]] = None,
    config: Optional[Dict] = None,
    pack_masks: Optional[bool] = None,
) -> Planted:
    """Create a store at ``path`` and write the rows in ``completed`` (default: all).

    ``targets`` (name -> (labels, class names)) and ``unit_names`` replace the generic t0, t1 / u0.. ones,
    ``effects`` (name -> (U, n)) the random w, ``config`` is merged into the store's config attrs, ``pack_masks``
    forces bit-packed masks (or not; None: by the number of units, as a sweep does).
    Each (mode, kind) gets its own scaled copy of w plus independent noise. ``via_write_row`` writes row by row
    through ``Store.write_row`` (slow, the worker's path); otherwise arrays are written in bulk, then the
    ``completed`` flags are set, which is the same format."""
    rng = np.random.default_rng(seed)
    if unit_names is not None:
        units = len(unit_names)
    if masks is None:
        masks = mask_matrix(seed, rows, units, 0.5, scheme)
    rows, units = masks.shape
    sweep = {"alpha": 0.5, "num_models": rows, "seed": seed, "scheme": scheme}
    if targets is None:
        specs = [TargetSpec(f"t{i}", np.arange(k) % classes, [f"c{c}" for c in range(classes)])
                 for i, k in enumerate(n)]
    else:
        specs = [TargetSpec(name, np.asarray(lab), list(names)) for name, (lab, names) in targets.items()]
    spec = StoreSpec(
        config={"sweep": sweep, "name": "planted", **(config or {})},
        sweep_defining={"sweep": sweep, "planted_seed": seed},
        unit_names=list(unit_names) if unit_names is not None else [f"u{c}" for c in range(units)],
        targets=specs, modes=list(modes), output_kinds=list(kinds), masks=masks, pack_masks=pack_masks,
    )
    store = Store.create_or_open(path, spec)
    w, y = {}, {}
    for t in specs:
        k = len(t.labels)
        w[t.name] = np.asarray(effects[t.name], dtype=np.float64) if effects and t.name in effects \
            else rng.normal(size=(units, k))
        scale = 1.0 + np.arange(len(modes) * len(kinds)).reshape(len(modes), len(kinds))
        clean = masks.astype(np.float64) @ w[t.name] + rng.normal(size=k)  # (M, n) + per-example bias
        y[t.name] = (clean[:, None, None, :] * scale[None, :, :, None]
                     + noise * rng.normal(size=(rows, len(modes), len(kinds), k))).astype(np.float32)
    done = np.arange(rows) if completed is None else np.asarray(completed)
    if via_write_row:
        for i in done:
            store.write_row(int(i), {t: y[t][i] for t in y},
                            {t: np.zeros((len(modes), y[t].shape[-1]), np.int32) for t in y},
                            {"source_accuracy": 0.5})
    else:
        for t in y:
            arr = store.outputs(t)
            # Consecutive runs in one call each: zarr writes their chunks concurrently.
            for run in np.split(done, np.flatnonzero(np.diff(done) != 1) + 1):
                if len(run):
                    arr[int(run[0]):int(run[-1]) + 1] = y[t][run]
        flags = np.zeros(rows, dtype=bool)
        flags[done] = True
        store.group["completed"][:] = flags
    return Planted(store, w, y)


def sparse_effects(rng: np.random.Generator, units: int, n: int, strong: int, background: float = 0.0) -> np.ndarray:
    """A sparse truth (units, n): per example, ``strong`` random units with effects +-(1 + |N(0,1)|), every other
    unit ``background`` x N(0,1) (a background of many small effects; 0 = exactly sparse)."""
    w = background * rng.normal(size=(units, n))
    for j in range(n):
        idx = rng.choice(units, size=min(strong, units), replace=False)
        w[idx, j] = rng.choice([-1.0, 1.0], size=len(idx)) * (1.0 + np.abs(rng.normal(size=len(idx))))
    return w
