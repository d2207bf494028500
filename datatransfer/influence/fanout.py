"""Running the row-block tasks of an aggregation (refresh.py) on this machine: in this process, or in local worker
processes (``launcher=local launcher.workers=N``). Each task writes only its own block's chunks; the caller reduces.
``launcher=slurm`` runs them as a Slurm array instead: ``datatransfer/launchers/slurm/blocks.py``, which the app
``python -m aggregate`` passes in (the influence package knows nothing of Slurm)."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import multiprocessing as mp
import os
from typing import Any, List, Optional

from datatransfer.errors import ConfigError
from datatransfer.influence.refresh import Done, Task, run_task

log = logging.getLogger(__name__)


def runner(launcher: Optional[Any]):
    """``run_tasks(tasks, bar) -> [Done]`` for a ``launcher=local`` config node (None: in this process); ``bar``: a
    progress bar over rows, or None."""
    if launcher is not None and launcher.name != "local":
        raise ConfigError(f"launcher={launcher.name}: row blocks run on this machine here; `python -m aggregate "
                          f"launcher={launcher.name}` submits them")
    workers = int(launcher.workers) if launcher is not None else 0
    if workers <= 1:
        return _serial
    return lambda tasks, bar: _processes(tasks, workers, bar)


def _serial(tasks: List[Task], bar) -> List[Done]:
    step = bar.update if bar is not None else None
    return [run_task(t, step) for t in tasks]


def _processes(tasks: List[Task], workers: int, bar) -> List[Done]:
    """Tasks in ``workers`` fresh processes (spawned: no inherited zarr threads), the CPUs split between them."""
    if not tasks:
        return []
    threads = max(1, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
                  // workers)
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx) as pool:
        futures = [pool.submit(run_task, dataclasses.replace(t, threads=threads)) for t in tasks]
        for task, f in zip(tasks, futures):
            f.add_done_callback(lambda _f, n=len(task.rows): bar.update(n) if bar is not None else None)
        return [f.result() for f in futures]
