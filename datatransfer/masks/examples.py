"""Sweep kind ``example_subsets``: the units are source training images. Which images (``select``): every one, or
those of some classes; ``count`` > 0 keeps a random subset of that many (drawn with ``select_seed``). Row i's mask
over the units is drawn exactly as for classes (``random_subsets``), from (sweep seed, i) alone."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from datatransfer.errors import ConfigError
from datatransfer.masks import random_subsets


def select(sweep, labels: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """Ascending int64 indices (into the source's train split) of the images that are units."""
    labels = np.asarray(labels)
    if str(sweep.select) == "classes":
        names = list(class_names)
        unknown = [c for c in sweep.classes if c not in names]
        if unknown:
            raise ConfigError(f"sweep.classes: {unknown} are not source classes (the source has {names[:12]}"
                              f"{' ...' if len(names) > 12 else ''})")
        idx = np.flatnonzero(np.isin(labels, [names.index(c) for c in sweep.classes]))
    else:
        idx = np.arange(len(labels))
    count = int(sweep.count)
    if count > len(idx):
        raise ConfigError(f"sweep.count: {count} images asked, the selection has {len(idx)}")
    if count > 0:
        rng = np.random.default_rng(np.random.SeedSequence(int(sweep.select_seed), spawn_key=(11,)))
        idx = np.sort(rng.choice(idx, size=count, replace=False))
    return idx.astype(np.int64)


def unit_names(idx: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> list:
    """'#<train index> <class name>' per unit (the index is also in the store's ``unit_index`` array)."""
    return [f"#{int(i)} {class_names[int(labels[i])]}" for i in idx]


def masks(sweep, num_units: int) -> np.ndarray:
    return random_subsets.masks(sweep, num_units)


def block_masks(sweep, num_units: int):
    return random_subsets.block_masks(sweep, num_units)
