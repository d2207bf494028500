"""Mask generators: which source units (classes) each row of a sweep trains on. A sweep kind (config group
``sweep``) is a mask generator; the rows, store, launchers and aggregator are the same for every kind.

- ``random_subsets`` (``random_subsets.py``): a random subset of the classes per row, as in the paper;
- ``example_subsets`` (``examples.py``): the units are source images (which: ``select``), random subsets as above;
- ``counterfactual`` (``counterfactual.py``): keep-lists that remove the units an influence store ranks lowest,
  highest or at random, baselines (``handpicked.py``), and single influencers of debugged examples;
- ``seeds.py``: the per-row random streams (masks, training seeds) every kind shares.

A new sweep kind: a module with ``masks(sweep_cfg, num_units) -> bool (rows, units)``, listed in ``GENERATORS``.
"""

from __future__ import annotations

import numpy as np

from datatransfer.masks import counterfactual, examples, random_subsets
from datatransfer.masks.random_subsets import mask_matrix, row_mask
from datatransfer.masks.seeds import init_seed, row_seed

GENERATORS = {"random_subsets": random_subsets.masks, "example_subsets": examples.masks,
              "counterfactual": counterfactual.masks}

__all__ = ["GENERATORS", "blocks", "mask_matrix", "matrix", "init_seed", "num_rows", "row_mask", "row_seed"]


# Kinds whose rows are drawn one by one from (sweep seed, row): their masks can be made a block of rows at a time
BLOCK_GENERATORS = {"random_subsets": random_subsets.block_masks, "example_subsets": examples.block_masks}


def matrix(sweep, num_units: int) -> np.ndarray:
    """Bool (rows, units): the masks of the sweep that ``sweep`` (the config section) describes."""
    return GENERATORS[str(sweep.get("kind", "random_subsets"))](sweep, num_units)


def blocks(sweep, num_units: int):
    """The same masks as a function (lo, hi) -> bool rows lo..hi-1, made a block at a time where the kind allows
    (example units: the whole matrix may not fit in memory), else cut from the matrix."""
    kind = str(sweep.get("kind", "random_subsets"))
    if kind in BLOCK_GENERATORS:
        return BLOCK_GENERATORS[kind](sweep, num_units)
    whole = matrix(sweep, num_units)
    return lambda lo, hi: whole[lo:hi]


def num_rows(cfg) -> int:
    """Rows of the sweep that ``cfg`` (the whole launch config) describes, from the config alone."""
    if str(cfg.sweep.get("kind", "random_subsets")) == "counterfactual":
        return counterfactual.num_rows(cfg.counterfactual)
    return int(cfg.sweep.num_models)
