"""The optimiser recipe shared by every training stage: the source model (``train``), the fixed-feature head trained
by SGD (``transfer.fixed``) and full-network transfer (``transfer.full``).

Each stage's section subclasses :class:`Recipe` and sets its own defaults (``TrainConfig``, ``FixedTransferConfig``,
``FullTransferConfig`` in ``sweep.py``); the values common to all of them are set here. A recipe is read by
``datatransfer.train`` whatever the stage: ``recipe.lr``, ``recipe.schedule`` ...
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

SCHEDULES = ("constant", "cyclic", "onecycle", "step")
OPTIMIZERS = ("sgd", "adam")


@dataclass
class Recipe:
    """One optimiser run. The ``MISSING`` fields are set by each stage's section."""

    epochs: int = MISSING
    batch_size: int = MISSING
    optimizer: str = MISSING  # adam | sgd
    lr: float = MISSING  # peak learning rate
    momentum: float = 0.9  # sgd only
    weight_decay: float = MISSING
    # onecycle (cosine up to peak_epoch, cosine down to 0) | cyclic (linear up to peak_epoch, linear down to 0) |
    # constant | step (x step_gamma every step_every epochs: Food-101)
    schedule: str = MISSING
    peak_epoch: float = MISSING  # cyclic/onecycle: epoch at which the LR peaks
    step_every: int = 5  # schedule=step: epochs between LR drops
    step_gamma: float = 0.1  # schedule=step: LR factor at each drop
