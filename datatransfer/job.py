"""The worker: runs a list of rows into a store. Every launcher (local, Slurm) ends up calling ``run_rows``."""

from __future__ import annotations

import os
import time
from typing import Callable, Iterable, Optional

import numpy as np
import torch

from . import data, train
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
    """Holds the datasets of one sweep in memory, so a process loads them once for all its rows."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.source = data.load_source(cfg)
        self.targets = {key: data.load_target(cfg, key) for key in cfg.targets}

    def run(self, row: int, mask: np.ndarray, checkpoint: Optional[RowCheckpoint] = None) -> tuple[dict, dict, dict]:
        """Train row ``row``'s source model, transfer it to every target in every mode, evaluate."""
        cfg, start = self.cfg, time.perf_counter()
        seed = row_seed(cfg.sweep.seed, row)
        model, stats = train.train_source(cfg, self.source, mask, seed, checkpoint)
        outputs, predictions = {}, {}
        for ti, (key, target) in enumerate(self.targets.items()):
            per_mode = []
            for mode in cfg.transfer.modes:
                if mode == "fixed":
                    per_mode.append(train.transfer_fixed(model, train.linear_probe(cfg, model, target), target))
                else:  # a seed of its own per target, so the order of targets changes nothing
                    per_mode.append(train.transfer_full(cfg, model, target, seed + 1 + ti, key))
            outputs[key] = np.stack([output_kinds(z, target.test.y, cfg.sweep.outputs) for z in per_mode])
            predictions[key] = np.stack([z.argmax(1).numpy() for z in per_mode]).astype(np.int32)
        stats["total_seconds"] = time.perf_counter() - start
        return outputs, predictions, stats


class Worker:
    """One process's view of a sweep: its store, its datasets in memory, its thread count."""

    def __init__(self, cfg, store_path: str, threads: Optional[int] = None):
        torch.set_num_threads(threads or cpus_allotted())
        self.store = Store.open(store_path, mode="r+")
        self.runner = RowRunner(cfg) if cfg.get("planted") is None else PlantedRunner(cfg)  # experiment=planted

    def run_row(self, row: int) -> Optional[dict]:
        """Run and write ``row`` unless it is already completed; returns its stats, or None if skipped."""
        row = int(row)
        if self.store.group["completed"][row]:
            return None
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
