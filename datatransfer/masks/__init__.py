"""Masks: which units (source classes) row i trains on, as a function of (sweep seed, i) alone.

Nothing here depends on which machine, worker or order computes a row, so every launcher and every rerun agrees.
"""

from __future__ import annotations

import numpy as np

# spawn_key slots: one independent stream per purpose, so adding a purpose never shifts another's numbers.
_MASK_STREAM = 0
_TRAIN_STREAM = 1


def _seq(seed: int, row: int, stream: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(entropy=int(seed), spawn_key=(int(row), stream))


def row_mask(seed: int, row: int, num_units: int, alpha: float, scheme: str = "fixed_size") -> np.ndarray:
    """Bool (num_units,) mask of row ``row``.

    fixed_size: exactly round(alpha * U) units, uniformly among subsets of that size (the paper's scheme).
    bernoulli: each unit independently with probability alpha.
    """
    rng = np.random.default_rng(_seq(seed, row, _MASK_STREAM))
    mask = np.zeros(num_units, dtype=bool)
    if scheme == "fixed_size":
        k = int(round(alpha * num_units))
        mask[rng.choice(num_units, size=k, replace=False)] = True
    elif scheme == "bernoulli":
        mask[:] = rng.random(num_units) < alpha
    else:
        raise ValueError(f"unknown mask scheme {scheme!r}")
    return mask


def mask_matrix(seed: int, num_rows: int, num_units: int, alpha: float, scheme: str = "fixed_size") -> np.ndarray:
    """Bool (num_rows, num_units): row i is row_mask(seed, i, ...)."""
    out = np.empty((num_rows, num_units), dtype=bool)
    for i in range(num_rows):
        out[i] = row_mask(seed, i, num_units, alpha, scheme)
    return out


def row_seed(seed: int, row: int) -> int:
    """The training seed of row ``row`` (a 63-bit int, usable by torch.manual_seed)."""
    return int(_seq(seed, row, _TRAIN_STREAM).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
