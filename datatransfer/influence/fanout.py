"""Running the row-block tasks of an aggregation (refresh.py): in this process, in local worker processes
(``launcher=local launcher.workers=N``), or as one Slurm job array through submitit (``launcher=slurm``, the same
launcher settings as sweeps). Each task writes only its own block's chunks; the caller reduces."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import multiprocessing as mp
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, List, Optional

from datatransfer.errors import AggregationError
from datatransfer.influence.refresh import Done, Task, run_task

log = logging.getLogger(__name__)


def runner(launcher: Optional[Any], out: Path, bar=None):
    """``run_tasks(tasks) -> [Done]`` for the ``launcher`` config node (None: in this process)."""
    name = launcher.name if launcher is not None else "local"
    if name == "slurm":
        return lambda tasks: _slurm(tasks, launcher, out, bar)
    workers = int(launcher.workers) if launcher is not None else 0
    if workers <= 1:
        return lambda tasks: _serial(tasks, bar)
    return lambda tasks: _processes(tasks, workers, bar)


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


def _slurm(tasks: List[Task], launcher: Any, out: Path, bar) -> List[Done]:
    """One Slurm array of the tasks (submitit), waited for; its logs are kept only when a task fails."""
    if not tasks:
        return []
    import submitit

    from datatransfer.config.launchers import validate_slurm
    from datatransfer.launchers.slurm.plan import executor_parameters

    validate_slurm(launcher)
    folder = out.parent / f".{out.name}.slurm-{uuid.uuid4().hex[:8]}"
    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=int(launcher.max_num_timeout),
                                python=launcher.python or None)
    params = executor_parameters(launcher, launcher.job_name or "dt-aggregate")
    params.setdefault("additional_parameters", {})["chdir"] = str(folder)
    ex.update_parameters(**params)
    folder.mkdir(parents=True, exist_ok=True)
    jobs = ex.submit_array([_Call(t) for t in tasks])
    log.info(f"submitted {len(tasks)} row-block tasks as Slurm array {jobs[0].job_id.split('_')[0]} "
             f"(logs: {folder})")
    results: List[Optional[Done]] = [None] * len(jobs)
    pending = set(range(len(jobs)))
    while pending:
        for i in sorted(pending):
            if jobs[i].done():
                pending.discard(i)
                try:
                    results[i] = jobs[i].result()
                except Exception as e:
                    raise AggregationError(f"row-block task {i} (target {tasks[i].target}, block {tasks[i].block}) "
                                           f"failed on Slurm: {str(e).strip().splitlines()[-1]}; logs in "
                                           f"{folder}") from e
                if bar is not None:
                    bar.update(len(tasks[i].rows))
        if pending:
            time.sleep(1.0)
    shutil.rmtree(folder, ignore_errors=True)
    return results  # type: ignore[return-value]


class _Call:
    """A task as a submitit callable (the function and its argument pickled together)."""

    def __init__(self, task: Task):
        self.task = task

    def __call__(self) -> Done:
        return run_task(self.task)
