"""Where a store's rows are: completed, running, queued, failed, never submitted; plus throughput and ETA.

The store's ``completed`` flags are the truth about rows. The manifests (``manifest``) say which array task
each row was given to, one ``squeue`` call says which of those tasks are live, one ``sacct`` call gives the final
state of the others (without accounting, a task that left the queue is just "ended"). The queue is read *before*
the store, so a task that ends in between is never taken for a failure: what left the queue wrote its rows first.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

import numpy as np

from datatransfer.launchers.slurm import queue as slurm_queue
from datatransfer.launchers.slurm.manifest import Manifest, load_all
from datatransfer.launchers.slurm.pending import never_start_lines
from datatransfer.launchers.slurm.plan import describe_rows
from datatransfer.store.sweep_store import Store

NO_RECORD = "NO_RECORD"  # left the queue, no accounting record (e.g. cancelled while pending)
ENDED = "ENDED"  # left the queue; accounting unavailable
WINDOW_S = 600.0  # throughput is measured over the last 10 minutes


@dataclass
class Task:
    manifest: Manifest
    element: str  # Slurm id of the array element, e.g. '1234_17'
    rows: List[int]
    state: str
    live: bool
    reason: str = ""  # squeue's pending reason, for a live task that is not running

    @property
    def running(self) -> bool:
        return self.live and self.state in slurm_queue.RUNNING_STATES

    @property
    def label(self) -> str:
        """Its state as the array lines show it: 'PENDING (Priority)', 'RUNNING', 'FAILED'."""
        return f"{self.state} ({self.reason})" if self.reason and self.live and not self.running else self.state


@dataclass
class QueueView:
    """Every task of every submission of a store, with its state from one squeue (+ one sacct) call."""

    manifests: List[Manifest]
    tasks: List[Task] = field(default_factory=list)
    accounting: bool = True  # False when sacct was not asked or unavailable

    @classmethod
    def poll(cls, store_path: str | os.PathLike, accounting: bool = True) -> "QueueView":
        manifests = load_all(store_path)
        job_ids = [j for m in manifests for j in m.job_ids]
        live = slurm_queue.squeue(job_ids)
        acct = slurm_queue.sacct(job_ids) if accounting else None
        view = cls(manifests, accounting=acct is not None)
        for m in manifests:
            for element, rows in m.elements():
                q = live.get(element)
                if q is not None and q.name != m.job_name:
                    q = None  # a job id reused by the controller for someone else's job
                if q is not None and slurm_queue.is_live(q.state):
                    view.tasks.append(Task(m, element, rows, q.state, True, q.reason))
                    continue
                a = acct.get(element) if acct is not None else None
                if a is not None and a.name != m.job_name:
                    a = None
                if a is None:
                    state = ENDED if acct is None else NO_RECORD
                elif slurm_queue.is_live(a.state):
                    state = ENDED  # sacct lags squeue by a few seconds: it just ended
                else:
                    state = a.state
                view.tasks.append(Task(m, element, rows, state, False))
        return view

    def live_rows(self) -> Set[int]:
        return {r for t in self.tasks if t.live for r in t.rows}

    def latest_task(self) -> Dict[int, Task]:
        """Row -> the task of the latest submission that was given the row (a live one wins)."""
        out: Dict[int, Task] = {}
        for t in self.tasks:  # manifests oldest first, so later submissions overwrite
            for r in t.rows:
                if not (r in out and out[r].live and not t.live):
                    out[r] = t
        return out


@dataclass
class RowCounts:
    total: int
    completed: int
    running: int  # not completed, in a running task
    queued: int  # not completed, in a pending / requeued task
    failed: int  # not completed, its task left the queue (failed, cancelled, timed out, node lost, ...)
    unsubmitted: int
    failed_tasks: List[Task]


def count_rows(view: QueueView, completed: np.ndarray) -> RowCounts:
    latest = view.latest_task()
    running = queued = failed = 0
    failed_tasks: Dict[str, Task] = {}
    for r in np.flatnonzero(~completed):
        t = latest.get(int(r))
        if t is None:
            continue
        if t.running:
            running += 1
        elif t.live:
            queued += 1
        else:
            failed += 1
            failed_tasks[t.element] = t
    done = int(completed.sum())
    unsubmitted = len(completed) - done - running - queued - failed
    ordered = sorted(failed_tasks.values(), key=lambda t: (-t.manifest.created_unix, t.element))
    return RowCounts(len(completed), done, running, queued, failed, unsubmitted, ordered)


def throughput(times: np.ndarray, since: Optional[float], now: float, window_s: float = 600.0) -> float:
    """Rows per second over the last ``window_s`` (or since ``since``, if later)."""
    start = now - window_s if since is None else max(now - window_s, since)
    span = now - start
    if span <= 0:
        return 0.0
    return float((times >= start).sum()) / span


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _tail(path: Path, lines: int) -> List[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return [f"(no log at {path})"]
    return text.rstrip("\n").splitlines()[-lines:]


def added_target_lines(store: Store) -> List[str]:
    """One line per target added later (launch.add_targets): its rows have a completion record of their own."""
    lines = []
    for t in store.added_targets:
        done = store.target_completed(t)
        lines.append(f"added target {t}: {int(done.sum())} of {len(done)} rows completed "
                     f"(the counts above are the original targets')")
    return lines


def _cost_lines(store: Store, c: RowCounts, done) -> List[str]:
    """What the completed rows cost (``done``: ``cost.spent``, None without provenance times) and what the others
    will at the same rate."""
    from datatransfer.launchers import cost

    if done is None:
        return ["cost: no completed row with provenance times yet", *cost.unmeasured(store).disk_lines()]
    lines = done.lines(what="completed")
    left = c.total - c.completed
    if left:
        rest = done.more(left)
        lines.append(f"cost of the {left} rows left: {rest.device_hours:.2f} {rest.unit}-hours "
                     f"({cost.duration(rest.wall_seconds)} at the {done.parallel} row(s) at a time seen so far, "
                     f"{cost.duration(left * done.seconds_per_row)} in one process)")
    return lines


def report(store_path: str, failed: int = 10, tail: int = 5) -> tuple[str, RowCounts, Optional[Any]]:
    """The text of ``python -m launch.status``, the counts behind it and what the completed rows cost
    (``cost.spent``: read once, the convergence lines reuse it)."""
    from datatransfer.launchers import cost

    view = QueueView.poll(store_path)  # the queue first, then the store (see the module doc)
    store = Store.open(store_path)
    completed = store.completed()
    c = count_rows(view, completed)
    name = store.attrs.get("config", {}).get("name", "?")
    lines = [
        f"store {store.path} (experiment {name}): {c.total} rows",
        f"rows: {c.completed} completed, {c.running} in running tasks, {c.queued} queued, {c.failed} failed, "
        f"{c.unsubmitted} never submitted",
    ]
    lines.extend(added_target_lines(store))
    for e in store.attrs.get("extended") or []:
        lines.append(f"extended from {e['from_rows']} to {e['to_rows']} rows on {e['time']} (sweep.num_models "
                     f"raised; rows 0..{e['from_rows'] - 1} unchanged)")
    if view.manifests:
        how = "squeue + sacct" if view.accounting else "squeue only: Slurm accounting unavailable"
        lines.append(f"arrays ({how}):")
        arrays = [(m, a) for m in view.manifests for a in m.arrays if a.job_id is not None]
        by_elem = {t.element: t for t in view.tasks}
        for m, a in arrays[-10:]:
            states = Counter(by_elem[a.element_id(i)].label for i in range(len(a.tasks)))
            text = ", ".join(f"{n} {s}" for s, n in states.most_common())
            lines.append(f"  {a.job_id:>10}  {len(a.tasks):>6} tasks  submission {m.id}: {text}")
        if len(arrays) > 10:
            lines.append(f"  ... and {len(arrays) - 10} earlier arrays")
        lines.extend(never_start_lines(view.tasks, str(store.path)))
    if c.failed_tasks:
        lines.append(f"failed tasks ({len(c.failed_tasks)}; {c.failed} rows not completed):")
        for t in c.failed_tasks[:failed]:
            log = t.manifest.log_path(t.element)
            lines.append(f"  {t.element} {t.state}: rows {describe_rows(t.rows)}  log {log}")
            lines.extend(f"    | {line}" for line in _tail(log, tail))
        if len(c.failed_tasks) > failed:
            lines.append(f"  ... and {len(c.failed_tasks) - failed} more")
    now = time.time()
    done = cost.spent(store, completed)  # every completed row's provenance: seconds at the paper's 7,540 rows
    # a store never submitted to Slurm: from its first completed row's start, so that a run shorter than the
    # throughput window is not spread over the whole window
    since = view.manifests[0].created_unix if view.manifests else (done.started if done is not None else None)
    window = min(WINDOW_S, now - since) if since is not None else WINDOW_S
    rate = throughput(store.completion_times(completed), since, now, WINDOW_S)
    todo = c.running + c.queued
    if rate > 0:
        eta = f"; ETA {_duration(todo / rate)} for the {todo} rows in the queue" if todo else ""
        lines.append(f"throughput: {rate * 60:.1f} rows/min over the last {_duration(window)}{eta}")
    elif todo:
        lines.append(f"throughput: no row completed in the last {_duration(window)}; ETA unknown")
    lines.extend(_cost_lines(store, c, done))
    if c.failed or c.unsubmitted:
        lines.append(f"to rerun the {c.failed + c.unsubmitted} rows neither completed nor queued: "
                     f"python -m launch.resume store.path={store.path}")
    return "\n".join(lines), c, done
