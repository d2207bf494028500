"""Run one function over a list of arguments as a single Slurm job array (submitit), and wait for the results: what
``python -m aggregate launcher=slurm`` uses for its row blocks. The same launcher settings as sweeps
(``executor_parameters``); the caller knows what the function does, this module only where it runs."""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

from datatransfer.config.launchers import validate_slurm
from datatransfer.errors import SlurmError
from datatransfer.launchers.slurm import queue, resources
from datatransfer.launchers.slurm.pending import never_starts
from datatransfer.launchers.slurm.plan import executor_parameters

log = logging.getLogger(__name__)
POLL_S = 1.0
# How often the queue is asked how the tasks fare (one squeue call): progress, and waits that never end; the first
# time soon after the submission, when a request that can never start is already pending.
WATCH_S, FIRST_WATCH_S = 30.0, 5.0


def mapper(launcher: Any, near: Path, what: str = "tasks", prefix: str = "launcher."):
    """``map(fn, items, on_done) -> [fn(item)]`` running each call as a task of one Slurm array; ``on_done(i)`` is
    called as task i finishes. The submitit folder (logs, pickles) is a hidden folder beside ``near`` (it must be on
    a filesystem the nodes see) and is removed once every task succeeded; a failed task raises a SlurmError naming
    it and the folder. The settings are checked here, before anything is read or submitted (``prefix``: where they
    sit in the config, for the keys a refusal names): a request no node of the partition can run would otherwise
    stay PENDING for good while this process waits for it. While it waits, the queue is asked every ``WATCH_S``: it
    logs how many tasks are done, running and pending (with why), and stops (cancels the array, SlurmError) when a
    task waits for a reason Slurm never resolves by itself (a QOS or association limit, a dependency that can no
    longer be met, ...: ``pending.never_starts``), which the partition check cannot see."""
    validate_slurm(launcher, prefix)
    resources.check(launcher, prefix)  # one sinfo call

    def run(fn: Callable, items: Sequence, on_done: Optional[Callable[[int], None]] = None) -> List[Any]:
        return _run(fn, items, on_done, launcher, near, what, prefix)

    return run


def _run(fn, items, on_done, launcher, near: Path, what: str, prefix: str = "launcher.") -> List[Any]:
    if not items:
        return []
    import submitit

    folder = near.parent / f".{near.name}.slurm-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True, exist_ok=True)
    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=int(launcher.max_num_timeout),
                                python=launcher.python or None)
    params = executor_parameters(launcher, launcher.job_name or "dt-aggregate")
    params.setdefault("additional_parameters", {})["chdir"] = str(folder)  # a neutral working directory
    ex.update_parameters(**params)
    jobs = ex.map_array(fn, items)
    log.info(f"submitted {len(items)} {what} as Slurm array {jobs[0].job_id.split('_')[0]} (logs: {folder})")
    try:
        results = _wait(jobs, on_done, folder, what, prefix)
    except BaseException:  # a failed task, Ctrl-C, SIGTERM: the others would go on writing for nobody
        for job in jobs:
            if not job.done():
                job.cancel(check=False)
        raise
    shutil.rmtree(folder, ignore_errors=True)
    return results


def _wait(jobs, on_done, folder: Path, what: str = "tasks", prefix: str = "launcher.") -> List[Any]:
    results: List[Any] = [None] * len(jobs)
    pending = set(range(len(jobs)))
    watch = time.monotonic() + FIRST_WATCH_S
    while pending:
        for i in sorted(pending):
            if not jobs[i].done():
                continue
            pending.discard(i)
            try:
                results[i] = jobs[i].result()
            except Exception as e:
                last = (str(e).strip().splitlines() or [type(e).__name__])[-1]
                raise SlurmError(f"task {i} of the array ({jobs[i].job_id}) failed: {last}; logs in {folder}") from e
            if on_done is not None:
                on_done(i)
        if pending and time.monotonic() >= watch:
            _watch(jobs, len(jobs) - len(pending), what, prefix)
            watch = time.monotonic() + WATCH_S
        if pending:
            time.sleep(POLL_S)
    return results


def _watch(jobs, done: int, what: str, prefix: str) -> None:
    """Log the array's progress; raise SlurmError when a task waits for a reason Slurm never resolves by itself."""
    array = jobs[0].job_id.split("_")[0]
    try:
        live = queue.squeue([array])
    except SlurmError as e:  # the controller did not answer this time: the next watch asks again
        log.warning("could not ask squeue about array %s (%s); still waiting", array, e)
        return
    waiting = Counter(s.reason or s.state for s in live.values() if s.state == "PENDING")
    running = sum(s.state in queue.RUNNING_STATES for s in live.values())
    why = "; ".join(f"{n} {reason}" for reason, n in waiting.most_common())
    log.info(f"{what}: {done} of {len(jobs)} done, {running} running, {sum(waiting.values())} pending"
             f"{f' ({why})' if why else ''}")
    for reason in waiting:
        never = never_starts(reason)
        if never is not None:
            change, meaning = never
            raise SlurmError(f"array {array}: {waiting[reason]} of its {what} are PENDING ({reason}) and will never "
                             f"start: {meaning}; change {change.replace('launcher.', prefix)} and run again (the "
                             f"array is cancelled, nothing was replaced)")
