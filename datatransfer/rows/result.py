"""What computing one row gives: the store writes it, the launchers count it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict

import numpy as np


@dataclass
class Row:
    outputs: Dict[str, np.ndarray]  # target -> float32 (modes, kinds, examples)
    predictions: Dict[str, np.ndarray]  # target -> int32 (modes, examples)
    stats: Dict[str, float] = field(default_factory=dict)  # source_accuracy, train_seconds, total_seconds
