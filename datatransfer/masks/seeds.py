"""Per-row random streams: everything random about row i comes from (sweep seed, i) alone.

Nothing here depends on which machine, worker or order computes a row, so every launcher and every rerun agrees.
"""

from __future__ import annotations

import numpy as np

# spawn_key slots: one independent stream per purpose, so adding a purpose never shifts another's numbers.
MASK_STREAM = 0
TRAIN_STREAM = 1
INIT_STREAM = 2  # the one initialisation of a sweep=random_subsets sweep.init=shared sweep


def seed_sequence(seed: int, row: int, stream: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(entropy=int(seed), spawn_key=(int(row), stream))


def row_seed(seed: int, row: int) -> int:
    """The training seed of row ``row`` (a 63-bit int, usable by torch.manual_seed)."""
    return int(seed_sequence(seed, row, TRAIN_STREAM).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def init_seed(seed: int) -> int:
    """The seed of the initial weights every row of a ``sweep.init=shared`` sweep starts from: a function of the
    sweep seed alone (its own stream, so no row's training seed equals it)."""
    return int(seed_sequence(seed, 0, INIT_STREAM).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
