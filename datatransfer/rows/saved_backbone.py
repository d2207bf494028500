"""Rows of targets added later (``python -m launch.add_targets``): transfer each row's saved source model
(``store.save_backbones``) to the new targets; no source model is trained."""

from __future__ import annotations

import time
from typing import Mapping, Optional

import numpy as np

from datatransfer.masks import row_seed
from datatransfer.rows.result import Row
from datatransfer.rows.targets import TargetTransfer
from datatransfer.store import layout
from datatransfer.train import backbones
from datatransfer.train.loop import Runtime


class SavedBackboneRows:
    def __init__(self, cfg, rt: Runtime, target_index: Mapping[str, int], store_path: str):
        self.seed, self.rt, self.store_path = int(cfg.sweep.seed), rt, store_path
        self.transfer = TargetTransfer(cfg, rt, target_index)

    def runnable(self, row: int) -> bool:
        """Only rows whose source model was saved can be transferred."""
        return layout.backbone(self.store_path, row).is_file()

    def run(self, row: int, mask: np.ndarray, checkpoint: Optional[object] = None) -> Row:
        start = time.perf_counter()
        model = backbones.load(layout.backbone(self.store_path, row), self.rt.device)
        outputs, predictions = self.transfer(model, row_seed(self.seed, row))
        return Row(outputs, predictions, {"total_seconds": time.perf_counter() - start})
