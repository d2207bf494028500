"""Local launcher: runs a store's missing rows on this machine in ``launcher.workers`` processes.

Every worker process is supervised on its own pipe and is given one row at a time, so the launcher always knows
which row each worker holds, and it waits on the processes themselves, never on results alone: a worker that dies
(killed, out of memory, a crash in native code) costs only the row it held. That row is reported as failed (a
log line naming it), a fresh worker takes the dead one's place, and the other rows go on. A row that raises is
reported the same way. At the end the launcher fails with a WorkerError (exit 2) listing the failed rows; the
completed rows are in the store, and rerunning the same command runs the failed ones again.

Rows that another live writer is computing (a Slurm task, another launcher: their claims, ``store/claims.py``) are
not run here: those known at the start are left out up front, those claimed meanwhile are skipped by the worker,
and both are reported (who holds them), not counted as failed.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
from tqdm import tqdm

from datatransfer import masks
from datatransfer.errors import AppError, WorkerError
from datatransfer.launchers import cost, rows_to_add
from datatransfer.rows.worker import Worker, cpus_allotted, groups, models_per_process
from datatransfer.store.claims import Claims, Found, describe_holders
from datatransfer.store.integrity import brief
from datatransfer.store.sweep_store import Store
from datatransfer.train.loop import resolve_device

log = logging.getLogger(__name__)
_POLL_S = 1.0  # how often the launcher looks at its workers when none has anything to say
_STOP_S = 10.0  # how long a worker gets to exit after SIGTERM before it is killed


def _logging_setup() -> dict:
    """The parent's logging as Hydra set it up (format, levels, hydra.verbose=datatransfer.<module>), so that
    spawned workers log as a single process would."""
    root = logging.getLogger()
    fmt = next((h.formatter._fmt for h in root.handlers if h.formatter is not None), None)
    loggers = logging.Logger.manager.loggerDict
    levels = {name: lg.level for name, lg in loggers.items()
              if name.startswith("datatransfer") and isinstance(lg, logging.Logger) and lg.level}
    return {"root": root.level, "format": fmt, "levels": levels}


def _outcome(worker: Worker, row: int, result) -> Tuple[str, object]:
    """What a worker's result for ``row`` is: ("done", whether it was computed here: False if it was complete
    already), ("held", the claim of the live writer computing it), or ("failed", why: the traceback logged, unless
    it is an AppError)."""
    if isinstance(result, BaseException):
        if not isinstance(result, AppError):
            log.error("row %d failed", row, exc_info=result)
        return "failed", brief(result)
    if row in worker.held:
        return "held", worker.held.pop(row)
    return "done", result is not None


def _run_group(worker: Worker, rows: List[int]) -> Iterator[Tuple[int, str, object]]:
    """Run ``rows`` (together where the row kind can: compute.models_per_process): (row, kind, value) for each as it
    is committed or skipped (:func:`_outcome`). Should the group's shared training fail, every row not yet answered
    failed with it."""
    pending = [int(r) for r in rows]
    try:
        for row, result in worker.run_group(pending):
            pending.remove(row)
            yield (row, *_outcome(worker, row, result))
    except Exception as e:
        if not isinstance(e, AppError):
            log.exception("rows %s failed", pending)
        for row in pending:
            yield row, "failed", brief(e)


def _serve(conn: Connection, cfg, path: str, threads: int, log_setup: dict, added_targets) -> None:
    """A worker process: builds its Worker once (datasets loaded once, not once per row), then runs each group of
    rows it is sent until it is sent None (or the launcher is gone), answering on ``conn`` after each row."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the launcher's: it stops the workers
    logging.basicConfig(level=log_setup["root"], format=log_setup["format"], stream=sys.stdout)
    for name, level in log_setup["levels"].items():
        logging.getLogger(name).setLevel(level)
    try:
        worker = Worker(cfg, path, threads, added_targets)
    except Exception as e:
        if not isinstance(e, AppError):
            log.exception("worker process %d could not start", os.getpid())
        conn.send(("init_failed", (e if isinstance(e, AppError) else None, brief(e))))
        return
    conn.send(("ready", None))
    while True:
        try:
            rows = conn.recv()
        except (EOFError, OSError):  # the launcher is gone
            return
        if rows is None:
            worker.close()
            return
        for row, kind, value in _run_group(worker, rows):
            try:
                conn.send((kind, (row, value)))
            except OSError:  # the launcher is gone
                return


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory, or killed by hand?)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with status {code}"


@dataclass
class _Proc:
    process: mp.Process
    conn: Connection
    rows: List[int] = field(default_factory=list)  # the rows it was given and has not answered for
    ready: bool = False  # its Worker was built
    stopping: bool = False  # it was told to exit
    closed: bool = False  # its pipe is closed (it exited)


class _Supervisor:
    """``size`` worker processes running ``rows``; :meth:`run` returns the failed rows (row -> why)."""

    def __init__(self, args: tuple, size: int, group: int = 1):
        self.group = group  # rows sent to a worker at once (compute.models_per_process)
        self.ctx = mp.get_context("spawn")  # a fresh interpreter per worker, no torch state forked from the parent
        self.args, self.size = args, size
        self.procs: List[_Proc] = []
        self.failed: Dict[int, str] = {}
        self.held: Dict[int, Optional[Found]] = {}  # rows another live writer was computing
        self.init_error: Optional[Exception] = None
        self.starts = self.limit = 0

    def _start(self) -> None:
        parent, child = self.ctx.Pipe()
        process = self.ctx.Process(target=_serve, args=(child, *self.args), name=f"row-worker-{self.starts}")
        process.start()
        child.close()
        self.starts += 1
        self.procs.append(_Proc(process, parent))

    def run(self, rows: List[int], on_done: Callable[[int, bool], None]) -> Dict[int, str]:
        todo = list(reversed(rows))
        self.limit = self.size + len(rows)  # starts at most (each replacement follows the death of a ready worker)
        try:
            for _ in range(min(self.size, len(rows))):
                self._start()
            while self.procs:
                self._assign(todo)
                wait([w.process.sentinel if w.closed else w.conn for w in self.procs], timeout=_POLL_S)
                for w in list(self.procs):
                    self._read(w, on_done)
                    if w.closed or not w.process.is_alive():
                        w.process.join(timeout=_POLL_S)
                        if w.process.exitcode is not None:
                            self._read(w, on_done)  # what it sent before it exited
                            self._reap(w, todo)
                if self.init_error is not None:
                    raise self.init_error
        finally:
            self._stop()
        for row in reversed(todo):  # only left when no worker could start
            self.failed[row] = "not run: no worker process could start"
        return self.failed

    def _assign(self, todo: List[int]) -> None:
        for w in self.procs:  # rows go to workers ready for them: a slow start holds none up
            if not w.ready or w.rows or w.stopping or w.closed:
                continue
            rows = [todo.pop() for _ in range(min(self.group, len(todo)))]
            try:
                w.conn.send(rows or None)
            except OSError:  # it is gone: its exit is handled below
                todo.extend(reversed(rows))
                w.closed = True
                continue
            w.rows, w.stopping = rows, not rows

    def _read(self, w: _Proc, on_done: Callable[[int, bool], None]) -> None:
        """Every answer ``w`` has sent."""
        try:
            while not w.closed and w.conn.poll():
                kind, value = w.conn.recv()
                if kind == "ready":
                    w.ready = True
                elif kind in ("done", "held", "failed"):
                    row = int(value[0])
                    if row in w.rows:
                        w.rows.remove(row)
                    if kind == "done":
                        on_done(row, bool(value[1]))
                    elif kind == "held":
                        self.held[row] = value[1]
                    else:
                        self._fail(row, value[1])
                elif kind == "init_failed":
                    error, text = value
                    self.init_error = error or WorkerError(f"a worker process could not start: {text}")
        except (EOFError, OSError):
            w.closed = True

    def _fail(self, row: int, why: str) -> None:
        self.failed[row] = why
        log.error("row %d failed: %s", row, why)

    def _reap(self, w: _Proc, todo: List[int]) -> None:
        """``w`` has exited: its row (if it held one) failed; a fresh worker replaces it while rows are left."""
        self.procs.remove(w)
        w.conn.close()
        code = w.process.exitcode
        for row in w.rows:
            self._fail(row, f"its worker process {w.process.pid} {_exit_reason(code)} while running it")
        if not w.rows and not w.stopping:
            log.error("worker process %d %s%s", w.process.pid, _exit_reason(code),
                      "" if w.ready else " before it was ready")
        if todo and w.ready and self.starts < self.limit and self.init_error is None:
            log.info("starting a fresh worker process for the %d rows left", len(todo))
            self._start()

    def _stop(self) -> None:
        """End every worker still running (after Ctrl-C or an error): SIGTERM, then SIGKILL after ``_STOP_S``."""
        for w in self.procs:
            if w.process.is_alive() and not w.stopping:
                w.process.terminate()
        deadline = time.monotonic() + _STOP_S
        for w in self.procs:
            w.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()
        self.procs = []


def _run_here(cfg, store: Store, rows: List[int], threads: int, on_done: Callable[[int, bool], None],
              held: Dict[int, Optional[Found]]) -> Dict[int, str]:
    """launcher.workers=1: the rows one after another in this process; a row that raises is a failed row, as in a
    worker process, and the next row runs. Rows another live writer holds go to ``held``."""
    worker = Worker(cfg, str(store.path), threads, store.scope)
    failed: Dict[int, str] = {}
    try:
        for group in groups(rows, worker.models_per_process):
            for row, kind, value in _run_group(worker, group):
                if kind == "done":
                    on_done(row, bool(value))
                elif kind == "held":
                    held[row] = value
                else:
                    failed[row] = str(value)
                    log.error("row %d failed: %s", row, value)
    finally:
        worker.close()
    return failed


def worker_threads(workers: int) -> int:
    """Torch threads of each of ``workers`` local worker processes: the allotted CPUs split evenly."""
    return max(1, cpus_allotted() // workers)


def local_workers(cfg) -> int:
    """launcher.workers, or for 0 (auto): one worker per allotted CPU on the CPU, a single one on a GPU."""
    if int(cfg.launcher.workers) > 0:
        return int(cfg.launcher.workers)
    return 1 if resolve_device(cfg.compute.device).type == "cuda" else cpus_allotted()


def rows_to_run(cfg, store: Store) -> Tuple[List[int], Dict[int, Optional[Found]]]:
    """(the store's missing rows to run here, the missing rows that live writers are computing -> their claims)."""
    claims = Claims.of(cfg, store.path, store.scope)
    claims.clear_finished(store.completed())
    missing = [int(r) for r in store.missing_rows()]
    held = claims.held(missing) if missing else {}
    return [r for r in missing if r not in held], held


def run_local(cfg, store: Store, plan: Optional[Tuple[List[int], Dict[int, Optional[Found]]]] = None) -> int:
    """Run every missing row that no other live writer is computing (``plan``: :func:`rows_to_run`, if known);
    returns how many rows this call computed. Ctrl-C keeps completed rows. Rows whose worker process died or that
    raised: a WorkerError listing them, once every other row has run. Rows held by other live writers are
    reported, not failed."""
    if plan is None:
        plan = rows_to_run(cfg, store)
        if plan[1]:
            log.info("%s", describe_holders(plan[1]))
    rows, held = plan
    total = store.num_rows
    if len(rows) == 0:
        return 0
    workers = max(1, min(local_workers(cfg), len(rows)))
    threads = worker_threads(workers)
    bar = tqdm(total=total, initial=total - len(rows) - len(held), unit="row", desc="rows", dynamic_ncols=True)
    done = 0
    failed: Dict[int, str] = {}
    meanwhile: Dict[int, Optional[Found]] = {}  # rows other writers claimed after the start

    def tick(row: int, ran: bool) -> None:
        nonlocal done
        done += ran
        bar.update(1)

    try:
        if workers == 1:
            failed = _run_here(cfg, store, rows, threads, tick, meanwhile)
        else:
            args = (cfg, str(store.path), threads, _logging_setup(), store.scope)
            supervisor = _Supervisor(args, workers, models_per_process(cfg, store.scope))
            failed = supervisor.run(rows, tick)
            meanwhile = supervisor.held
    finally:
        bar.close()
    if meanwhile:
        log.info("meanwhile %s", describe_holders(meanwhile, meanwhile=True))
    if failed:
        shown = "; ".join(f"row {r}: {why}" for r, why in sorted(failed.items())[:20])
        more = f"; and {len(failed) - 20} more" if len(failed) > 20 else ""
        raise WorkerError(f"{len(failed)} of {len(rows)} rows failed (rows {sorted(failed)}): {shown}{more}. "
                          f"The other rows are complete in {store.path}; rerun the same command to run the failed "
                          f"rows again")
    return done


def summary(store: Store) -> str:
    """A few lines: rows completed, mean source accuracy, mean test accuracy per target and mode."""
    completed = np.flatnonzero(store.completed())
    lines = [f"store: {store.path}", f"rows completed: {len(completed)} / {store.num_rows}"]
    if len(completed) == 0:
        return "\n".join(lines)
    stats = store.row_stats_of(completed)
    fields = store.row_stat_fields
    for name, label, fmt in (("source_accuracy", "source accuracy (kept classes)", ".3f"),
                             ("total_seconds", "seconds per row", ".1f")):
        values = stats[:, fields.index(name)]
        if not np.isnan(values).all():  # planted rows train no source model: no accuracy to show
            lines.append(f"{label}: {np.nanmean(values):{fmt}}")
    for t in store.targets:
        acc = np.nanmean(store.target_accuracy(t, completed), axis=0)
        per_mode = ", ".join(f"{m} {a:.3f}" for m, a in zip(store.modes, acc))
        lines.append(f"target {t} test accuracy: {per_mode}")
    return "\n".join(lines)


def _log_cost(cfg, store: Optional[Store], rows: int) -> None:
    """The dry run's cost lines (launchers/cost.py) for ``rows`` rows in this launcher's worker processes."""
    workers = local_workers(cfg)
    for line in cost.estimate(cfg, store, rows, worker_threads(workers), workers).lines():
        log.info("%s", line)


class LocalLauncher:
    """``launcher=local``: the store's missing rows, here, in ``launcher.workers`` processes (progress bar)."""

    def run(self, cfg, store: Store | None, overrides=()) -> None:
        if store is None:
            log.info("dry run: would create %s and run its %d rows here in %d worker process(es)", cfg.store.path,
                     masks.num_rows(cfg), local_workers(cfg))
            _log_cost(cfg, None, masks.num_rows(cfg))
            return
        plan = rows_to_run(cfg, store)
        added = rows_to_add(cfg, store)  # a dry run's extension: not made, its rows counted
        todo, held, total = len(plan[0]) + len(added), plan[1], store.num_rows + len(added)
        log.info("store %s: %d of %d rows already complete, %d to run", store.path, total - todo - len(held), total,
                 todo)
        if held:
            log.info("%s", describe_holders(held))
        if cfg.launch.dry_run:
            log.info("dry run: would run %d rows here in %d worker process(es)", todo, local_workers(cfg))
            _log_cost(cfg, store, todo)
            return
        start = time.perf_counter()
        try:
            done = run_local(cfg, store, plan)
        except WorkerError:
            log.info("%s", summary(store))
            raise
        log.info("ran %d rows in %.0f s", done, time.perf_counter() - start)
        log.info("%s", summary(store))
