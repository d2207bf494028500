"""Where the row-block tasks of an aggregation (refresh.py) run on this machine: in this process, or in local worker
processes (``launcher=local launcher.workers=N``). A runner is ``map(fn, items, on_done) -> [fn(item)]``; the app
``python -m aggregate launcher=slurm`` passes a Slurm array's instead (launchers/slurm/array_map.py): each task
writes only its own block's chunks, so where it runs does not matter."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
from typing import Any, Callable, List, Optional, Sequence

from datatransfer.errors import ConfigError

THREADS_ENV = "DATATRANSFER_BLAS_THREADS"  # a worker process's share of the CPUs (blocks.blas_limit reads it)


def local_mapper(launcher: Optional[Any]):
    """The runner of a ``launcher=local`` config node (None, or workers 0 or 1: this process)."""
    if launcher is not None and launcher.name != "local":
        raise ConfigError(f"launcher={launcher.name}: this runs row blocks on this machine only; `python -m "
                          f"aggregate launcher={launcher.name}` submits them")
    workers = int(launcher.workers) if launcher is not None else 0
    return serial_map if workers <= 1 else lambda fn, items, on_done=None: process_map(fn, items, on_done, workers)


def serial_map(fn: Callable, items: Sequence, on_done: Optional[Callable[[int], None]] = None) -> List[Any]:
    out = []
    for i, item in enumerate(items):
        out.append(fn(item))
        if on_done is not None:
            on_done(i)
    return out


def _init(threads: int) -> None:
    os.environ[THREADS_ENV] = str(threads)


def process_map(fn: Callable, items: Sequence, on_done: Optional[Callable[[int], None]], workers: int) -> List[Any]:
    """``fn`` over ``items`` in ``workers`` fresh processes (spawned: no inherited zarr threads), the CPUs split
    between them."""
    if not items:
        return []
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    with cf.ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=mp.get_context("spawn"),
                                initializer=_init, initargs=(max(1, cpus // workers),)) as pool:
        futures = [pool.submit(fn, item) for item in items]
        for i, f in enumerate(futures):
            if on_done is not None:
                f.add_done_callback(lambda _f, i=i: on_done(i))
        try:
            return [f.result() for f in futures]
        except BaseException:  # an error, Ctrl-C, SIGTERM: the tasks not started are dropped, not waited for
            pool.shutdown(wait=True, cancel_futures=True)
            raise
