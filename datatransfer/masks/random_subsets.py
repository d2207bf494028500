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


def mask_block(seed: int, lo: int, hi: int, num_units: int, alpha: float, scheme: str = "fixed_size",
               repeats: int = 0) -> np.ndarray:
    """Bool (hi - lo, num_units): rows lo..hi-1, row i being row_mask(seed, mask_row(i, repeats), ...)."""
    out = np.empty((hi - lo, num_units), dtype=bool)
    for i in range(lo, hi):
        j = mask_row(i, repeats)
        out[i - lo] = out[j - lo] if lo <= j < i else row_mask(seed, j, num_units, alpha, scheme)
    return out


def mask_matrix(seed: int, num_rows: int, num_units: int, alpha: float, scheme: str = "fixed_size",
                repeats: int = 0) -> np.ndarray:
    """Bool (num_rows, num_units): row i is row_mask(seed, mask_row(i, repeats), ...)."""
    return mask_block(seed, 0, num_rows, num_units, alpha, scheme, repeats)


def block_masks(sweep, num_units: int):
    """The sweep's masks as a function (lo, hi) -> bool rows lo..hi-1, from its config section: what a store is
    created from a block at a time (the whole matrix is 92 GB of bool at the paper's 71,828 rows x 1.28 M source
    images). A fixed-size mask of none or all of the units is refused: every row would be the same and no influence
    could be estimated."""
    k = int(round(float(sweep.alpha) * num_units))
    if str(sweep.scheme) == "fixed_size" and not 0 < k < num_units:
        raise ConfigError(f"sweep.alpha: round({sweep.alpha} x {num_units} units) = {k}: every row would train on "
                          f"{'none' if k == 0 else 'all'} of the units; choose alpha in "
                          f"[{0.5 / num_units:.3g}, {1 - 0.5 / num_units:.3g}]")
    seed, alpha, scheme, repeats = int(sweep.seed), float(sweep.alpha), str(sweep.scheme), int(sweep.get("repeats", 0))
    return lambda lo, hi: mask_block(seed, lo, hi, num_units, alpha, scheme, repeats)


def masks(sweep, num_units: int) -> np.ndarray:
    """The sweep's whole mask matrix (:func:`block_masks` of every row)."""
    return block_masks(sweep, num_units)(0, int(sweep.num_models))
