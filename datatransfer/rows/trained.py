"""Trained rows: train a source model on the mask's classes, transfer it to every target in every mode, and
record every test example's outputs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import torch

from datatransfer import data
from datatransfer.masks import row_seed
from datatransfer.rows.outputs import output_kinds
from datatransfer.train import backbones
from datatransfer.train import loop as train
from datatransfer.train.checkpoint import RowCheckpoint


class RowRunner:
    """Holds the datasets of one sweep (tensors in memory, or FFCV loaders over betons), so a process opens them
    once for all its rows.

    ``target_index``: each target's position in the store (original targets, then added ones); a target's
    transfer seed follows it, so a target added later gets the seed it would have had from the start.
    ``backbone_store``: when set (store.save_backbones), each row's source model is saved in that store folder.
    """

    def __init__(self, cfg, target_index: Optional[Mapping[str, int]] = None):
        self.cfg = cfg
        device = train.runtime(cfg).device
        self.source = None if cfg.get("transfer_only") else data.open_source(cfg, device)
        self.targets = {key: data.open_target(cfg, key, device) for key in cfg.targets}
        self.target_index = dict(target_index) if target_index else {k: i for i, k in enumerate(cfg.targets)}
        self.backbone_store: Optional[Path] = None  # a store folder: save each row's source model in it

    def run(self, row: int, mask: np.ndarray, checkpoint: Optional[RowCheckpoint] = None) -> tuple[dict, dict, dict]:
        """Train row ``row``'s source model, transfer it to every target in every mode, evaluate."""
        cfg, start = self.cfg, time.perf_counter()
        seed = row_seed(cfg.sweep.seed, row)
        model, stats = train.train_source(cfg, self.source, mask, seed, checkpoint)
        if self.backbone_store is not None:
            backbones.save(backbones.path(self.backbone_store, row), model, cfg.model, self.source.channels,
                           {"row": int(row), "seed": seed, "source_accuracy": stats["source_accuracy"]})
        outputs, predictions = self.transfer(model, seed)
        stats["total_seconds"] = time.perf_counter() - start
        return outputs, predictions, stats

    def run_from_backbone(self, row: int, file: Path) -> tuple[dict, dict, dict]:
        """Transfer row ``row``'s saved source model to the targets (transfer_only): no source training."""
        start = time.perf_counter()
        model = backbones.load(file, train.runtime(self.cfg).device)
        outputs, predictions = self.transfer(model, row_seed(self.cfg.sweep.seed, row))
        return outputs, predictions, {"total_seconds": time.perf_counter() - start}

    def transfer(self, model, seed: int) -> tuple[dict, dict]:
        """Every target in every mode: per target, outputs (n_modes, n_kinds, n) and predictions (n_modes, n)."""
        cfg = self.cfg
        outputs, predictions = {}, {}
        for key, target in self.targets.items():
            ts = seed + 1 + self.target_index[key]  # a seed of its own per target: their order changes nothing
            per_mode = []
            for mode in cfg.transfer.modes:
                if mode == "fixed":
                    per_mode.append(train.transfer_fixed(cfg, model, target, ts, key))
                else:
                    per_mode.append(train.transfer_full(cfg, model, target, ts, key))
            labels = torch.from_numpy(target.labels("test"))
            outputs[key] = np.stack([output_kinds(z, labels, cfg.sweep.outputs) for z in per_mode])
            predictions[key] = np.stack([z.argmax(1).numpy() for z in per_mode]).astype(np.int32)
        return outputs, predictions
