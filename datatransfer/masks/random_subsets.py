"""Sweep kind ``random_subsets`` (the default): each row trains on a random subset of the source units."""

from __future__ import annotations

import numpy as np

from datatransfer.errors import ConfigError
from datatransfer.masks.seeds import MASK_STREAM, seed_sequence


def row_mask(seed: int, row: int, num_units: int, alpha: float, scheme: str = "fixed_size") -> np.ndarray:
    """Bool (num_units,) mask of row ``row``.

    fixed_size: exactly round(alpha * U) units, uniformly among subsets of that size (the paper's scheme).
    bernoulli: each unit independently with probability alpha.
    """
    rng = np.random.default_rng(seed_sequence(seed, row, MASK_STREAM))
    mask = np.zeros(num_units, dtype=bool)
    if scheme == "fixed_size":
        k = int(round(alpha * num_units))
        mask[rng.choice(num_units, size=k, replace=False)] = True
    elif scheme == "bernoulli":
        mask[:] = rng.random(num_units) < alpha
    else:
        raise ValueError(f"unknown mask scheme {scheme!r}")
    return mask


def mask_row(row: int, repeats: int = 0) -> int:
    """The row whose mask row ``row`` trains on: itself, or with ``repeats`` = k >= 2 and row % k == k - 1 (every
    k-th row), the row before it. A repeated row keeps its own training seed (masks/seeds.py:row_seed)."""
    return row - 1 if repeats >= 2 and row % repeats == repeats - 1 else row


def mask_matrix(seed: int, num_rows: int, num_units: int, alpha: float, scheme: str = "fixed_size",
                repeats: int = 0) -> np.ndarray:
    """Bool (num_rows, num_units): row i is row_mask(seed, mask_row(i, repeats), ...)."""
    out = np.empty((num_rows, num_units), dtype=bool)
    for i in range(num_rows):
        j = mask_row(i, repeats)
        out[i] = out[j] if j != i else row_mask(seed, i, num_units, alpha, scheme)
    return out


def masks(sweep, num_units: int) -> np.ndarray:
    """The sweep's mask matrix from its config section. A fixed-size mask of none or all of the units is refused:
    every row would be the same and no influence could be estimated."""
    k = int(round(float(sweep.alpha) * num_units))
    if str(sweep.scheme) == "fixed_size" and not 0 < k < num_units:
        raise ConfigError(f"sweep.alpha: round({sweep.alpha} x {num_units} units) = {k}: every row would train on "
                          f"{'none' if k == 0 else 'all'} of the units; choose alpha in "
                          f"[{0.5 / num_units:.3g}, {1 - 0.5 / num_units:.3g}]")
    return mask_matrix(int(sweep.seed), int(sweep.num_models), num_units, float(sweep.alpha), str(sweep.scheme),
                       int(sweep.get("repeats", 0)))
