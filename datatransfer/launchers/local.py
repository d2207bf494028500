"""Local launcher: runs a store's missing rows on this machine in ``launcher.workers`` processes."""

from __future__ import annotations

import logging
import multiprocessing as mp
import sys
import time

import numpy as np
from tqdm import tqdm

from datatransfer.rows.worker import Worker, cpus_allotted, run_rows
from datatransfer.store.sweep_store import Store
from datatransfer.train.loop import resolve_device

log = logging.getLogger(__name__)
_worker: Worker | None = None  # one per pool process: datasets are loaded once, not once per row


def _logging_setup() -> dict:
    """The parent's logging as Hydra set it up (format, levels, hydra.verbose=datatransfer.<module>), so that
    spawned workers log as a single process would."""
    root = logging.getLogger()
    fmt = next((h.formatter._fmt for h in root.handlers if h.formatter is not None), None)
    loggers = logging.Logger.manager.loggerDict
    levels = {name: lg.level for name, lg in loggers.items()
              if name.startswith("datatransfer") and isinstance(lg, logging.Logger) and lg.level}
    return {"root": root.level, "format": fmt, "levels": levels}


def _init(cfg, path: str, threads: int, log: dict, added_targets) -> None:
    global _worker
    logging.basicConfig(level=log["root"], format=log["format"], stream=sys.stdout)
    for name, level in log["levels"].items():
        logging.getLogger(name).setLevel(level)
    _worker = Worker(cfg, path, threads, added_targets)


def _work(row: int) -> int:
    _worker.run_row(row)
    return row


def local_workers(cfg) -> int:
    """launcher.workers, or for 0 (auto): one worker per allotted CPU on the CPU, a single one on a GPU."""
    if int(cfg.launcher.workers) > 0:
        return int(cfg.launcher.workers)
    return 1 if resolve_device(cfg.compute.device).type == "cuda" else cpus_allotted()


def run_local(cfg, store: Store) -> int:
    """Run every missing row; returns how many rows this call completed. Ctrl-C keeps completed rows."""
    rows = store.missing_rows()
    total = store.num_rows
    if len(rows) == 0:
        return 0
    workers = max(1, min(local_workers(cfg), len(rows)))
    threads = max(1, cpus_allotted() // workers)
    bar = tqdm(total=total, initial=total - len(rows), unit="row", desc="rows", dynamic_ncols=True)
    done = 0
    try:
        if workers == 1:
            def tick(row, stats):
                nonlocal done
                done += 1
                bar.update(1)
            run_rows(cfg, str(store.path), rows, threads=threads, on_row=tick, added_targets=store.scope)
        else:
            # spawn: a fresh interpreter per worker, no torch state forked from the parent
            ctx = mp.get_context("spawn")
            init = (cfg, str(store.path), threads, _logging_setup(), store.scope)
            with ctx.Pool(workers, initializer=_init, initargs=init) as pool:
                for _ in pool.imap_unordered(_work, [int(r) for r in rows]):
                    done += 1
                    bar.update(1)
    finally:
        bar.close()
    return done


def summary(store: Store) -> str:
    """A few lines: rows completed, mean source accuracy, mean test accuracy per target and mode."""
    completed = np.flatnonzero(store.completed())
    lines = [f"store: {store.path}", f"rows completed: {len(completed)} / {store.num_rows}"]
    if len(completed) == 0:
        return "\n".join(lines)
    stats = np.stack([store.row_stats()[int(i)] for i in completed])
    fields = store.row_stat_fields
    for name, label, fmt in (("source_accuracy", "source accuracy (kept classes)", ".3f"),
                             ("total_seconds", "seconds per row", ".1f")):
        values = stats[:, fields.index(name)]
        if not np.isnan(values).all():  # planted rows train no source model: no accuracy to show
            lines.append(f"{label}: {np.nanmean(values):{fmt}}")
    for t in store.targets:
        acc = store.target_accuracy(t, completed).mean(axis=0)
        per_mode = ", ".join(f"{m} {a:.3f}" for m, a in zip(store.modes, acc))
        lines.append(f"target {t} test accuracy: {per_mode}")
    return "\n".join(lines)


class LocalLauncher:
    """``launcher=local``: the store's missing rows, here, in ``launcher.workers`` processes (progress bar)."""

    def run(self, cfg, store: Store | None, overrides=()) -> None:
        if store is None:
            log.info("dry run: would create %s and run its %d rows here in %d worker process(es)", cfg.store.path,
                     cfg.sweep.num_models, local_workers(cfg))
            return
        todo = len(store.missing_rows())
        log.info("store %s: %d of %d rows already complete, %d to run", store.path, store.num_rows - todo,
                 store.num_rows, todo)
        if cfg.launch.dry_run:
            log.info("dry run: would run %d rows here in %d worker process(es)", todo, local_workers(cfg))
            return
        start = time.perf_counter()
        done = run_local(cfg, store)
        log.info("ran %d rows in %.0f s", done, time.perf_counter() - start)
        log.info("%s", summary(store))
