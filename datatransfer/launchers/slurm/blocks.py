"""``python -m aggregate launcher=slurm``: the row-block tasks of an aggregation (influence/refresh.py) as one Slurm
job array through submitit, with the same launcher settings as sweeps (``executor_parameters``), waited for; the
app then reduces the blocks. Each task sums its rows into its own chunks of the new influence store (a folder every
node sees, like the sweep store)."""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, List, Optional

from datatransfer.config.launchers import validate_slurm
from datatransfer.errors import AggregationError
from datatransfer.influence.refresh import Done, Task, run_task
from datatransfer.launchers.slurm.plan import executor_parameters

log = logging.getLogger(__name__)
POLL_S = 1.0


def runner(launcher: Any, out: Path):
    """``run_tasks(tasks, bar) -> [Done]`` submitting the tasks as one array; its submitit folder (logs) sits beside
    ``out`` and is removed once every task succeeded."""
    validate_slurm(launcher)
    return lambda tasks, bar=None: run(tasks, launcher, out, bar)


def run(tasks: List[Task], launcher: Any, out: Path, bar) -> List[Done]:
    """One Slurm array of the tasks (submitit), waited for; its logs are kept only when a task fails."""
    if not tasks:
        return []
    import submitit

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
class _Call:
    """A task as a submitit callable (the function and its argument pickled together)."""

    def __init__(self, task: Task):
        self.task = task

    def __call__(self) -> Done:
        return run_task(self.task)
