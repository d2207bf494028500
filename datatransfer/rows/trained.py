"""Row kind ``trained`` (``row=trained``, the default): train a source model on the mask's classes, transfer it to
every target in every mode, and record every test example's outputs."""

from __future__ import annotations

import time
from typing import Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np

from datatransfer import data
from datatransfer.masks import init_seed, row_seed
from datatransfer.rows.result import Row
from datatransfer.rows.targets import TargetTransfer
from datatransfer.store import layout
from datatransfer.train import backbones
from datatransfer.train.checkpoint import RowCheckpoint
from datatransfer.train.loop import Runtime
from datatransfer.train.source import train_source, train_sources


class TrainedRows:
    """Holds the datasets of one sweep (tensors in memory, or FFCV loaders over betons), so a process opens them
    once for all its rows. ``backbone_store``: when set (store.save_backbones), each row's source model is saved
    in that store, so that targets can be added later (``python -m launch.add_targets``)."""

    def __init__(self, cfg, rt: Runtime, target_index: Mapping[str, int], backbone_store: Optional[str] = None):
        self.seed, self.model_cfg, self.recipe, self.rt = int(cfg.sweep.seed), cfg.model, cfg.train, rt
        # sweep.init=shared: every row's initial weights from the sweep seed alone (other sweep kinds: per row)
        self.init_seed = init_seed(self.seed) if cfg.sweep.get("init", "per_row") == "shared" else None
        self.source = data.open_source(cfg, rt.device)
        self.transfer = TargetTransfer(cfg, rt, target_index)
        self.backbone_store = backbone_store
        self.unit_index = None  # example units: each unit's train index (sweep=example_subsets)
        if cfg.sweep.unit == "example":
            from datatransfer.masks import examples

            self.unit_index = examples.select(cfg.sweep, self.source.labels("train"), self.source.class_names)

    def runnable(self, row: int) -> bool:
        return True

    def run(self, row: int, mask: np.ndarray, checkpoint: Optional[RowCheckpoint] = None) -> Row:
        """Train row ``row``'s source model, transfer it to every target in every mode, evaluate."""
        start = time.perf_counter()
        seed = row_seed(self.seed, row)
        model, stats = train_source(self.source, mask, seed, self.model_cfg, self.recipe, self.rt, checkpoint,
                                    self.unit_index, self.init_seed)
        return self._finish(row, seed, model, stats, time.perf_counter() - start)

    def run_group(self, rows: Sequence[int], masks: Sequence[np.ndarray],
                  checkpoints: Sequence[Optional[RowCheckpoint]]) -> Iterator[Tuple[int, Row]]:
        """The batched runner: the rows' source models train together (``train_sources``), then each is transferred
        and yielded in turn, so the caller commits it before the next one's transfer starts."""
        start = time.perf_counter()
        seeds = [row_seed(self.seed, r) for r in rows]
        trained = train_sources(self.source, masks, seeds, self.model_cfg, self.recipe, self.rt, checkpoints,
                                self.init_seed)
        shared = (time.perf_counter() - start) / max(1, len(rows))  # each row's share of the group's training
        for row, seed, (model, stats) in zip(rows, seeds, trained):
            yield row, self._finish(row, seed, model, stats, shared)

    def _finish(self, row: int, seed: int, model, stats: dict, seconds_so_far: float) -> Row:
        """Save the source model if asked, transfer it to every target, evaluate."""
        start = time.perf_counter()
        if self.backbone_store is not None:
            backbones.save(layout.backbone(self.backbone_store, row), model, self.model_cfg, self.source.channels,
                           {"row": int(row), "seed": seed, "source_accuracy": stats["source_accuracy"]})
        outputs, predictions = self.transfer(model, seed)
        stats["total_seconds"] = seconds_so_far + time.perf_counter() - start
        return Row(outputs, predictions, stats)
