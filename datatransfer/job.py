"""The worker: runs a list of rows into a store. Every launcher (local, Slurm) ends up calling ``run_rows``."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional

import numpy as np
import torch

from . import backbones, data, train
from .checkpoint import RowCheckpoint
from .masks import row_seed
from .outputs import output_kinds
from .planted import PlantedRunner
from .store import Store


def cpus_allotted() -> int:
    """CPUs this process may use: Slurm's allocation if inside a job, else the affinity mask."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit():
        return int(slurm)
    return len(os.sched_getaffinity(0))


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


class Worker:
    """One process's view of a sweep: its store, its datasets in memory, its thread count."""

    def __init__(self, cfg, store_path: str, threads: Optional[int] = None):
        torch.set_num_threads(threads or cpus_allotted())
        store = Store.open(store_path, mode="r+")
        self.transfer_only = bool(cfg.get("transfer_only"))
        if self.transfer_only:  # rows of the added targets, from saved source models
            store = store.scoped(list(cfg.targets), backbones.saved(store.path, store.num_rows))
        self.store = store
        if cfg.get("planted") is not None:  # experiment=planted
            self.runner = PlantedRunner(cfg)
        else:
            self.runner = RowRunner(cfg, {t: i for i, t in enumerate(store.all_targets)})
            if cfg.store.get("save_backbones") and not self.transfer_only:
                self.runner.backbone_store = Path(store.path)

    def run_row(self, row: int) -> Optional[dict]:
        """Run and write ``row`` unless it is already completed; returns its stats, or None if skipped.

        With transfer_only, a row without a saved source model is skipped too."""
        row = int(row)
        if self.store.row_done(row):
            return None
        if self.transfer_only:
            file = backbones.path(self.store.path, row)
            if not file.is_file():
                return None
            outputs, predictions, stats = self.runner.run_from_backbone(row, file)
            self.store.write_row(row, outputs, predictions, stats)
            return stats
        checkpoint = RowCheckpoint(self.store.path, row)
        outputs, predictions, stats = self.runner.run(row, self.store.masks[row], checkpoint)
        self.store.write_row(row, outputs, predictions, stats)
        checkpoint.delete()
        return stats


def run_rows(
    cfg,
    store_path: str,
    rows: Iterable[int],
    threads: Optional[int] = None,
    on_row: Optional[Callable[[int, dict], None]] = None,
) -> int:
    """Run every row of ``rows`` not yet completed in the store; returns how many this call completed."""
    worker = Worker(cfg, store_path, threads)
    done = 0
    for row in rows:
        stats = worker.run_row(row)
        if stats is not None:
            done += 1
            if on_row is not None:
                on_row(int(row), stats)
    return done
