"""The worker: runs a list of rows into a store. Every launcher (local, Slurm) ends up calling ``run_rows``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch

from datatransfer.rows.planted import PlantedRunner
from datatransfer.rows.trained import RowRunner
from datatransfer.store.sweep_store import Store
from datatransfer.train import backbones
from datatransfer.train.checkpoint import RowCheckpoint


def cpus_allotted() -> int:
    """CPUs this process may use: Slurm's allocation if inside a job, else the affinity mask."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit():
        return int(slurm)
    return len(os.sched_getaffinity(0))


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
