"""The worker: runs a list of rows into a store. Every launcher (local, Slurm) ends up calling ``run_rows``.

A row is claimed before it is computed (``store/claims.py``), so that whichever launchers run at once (local,
Slurm, a resume, targets added later), a row is computed by at most one live writer: a row held by another live
writer is skipped here, with a log line naming the holder.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable, Dict, Iterable, Optional, Sequence

from datatransfer.errors import InjectedFault
from datatransfer.rows import make_rows
from datatransfer.store import layout
from datatransfer.store.provenance import RowRun
from datatransfer.store.claims import Claims, Found
from datatransfer.store.sweep_store import Store
from datatransfer.train.checkpoint import RowCheckpoint
from datatransfer.train.loop import make_runtime

log = logging.getLogger(__name__)


def cpus_allotted() -> int:
    """CPUs this process may use: Slurm's allocation if inside a job, else the affinity mask."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit():
        return int(slurm)
    return len(os.sched_getaffinity(0))


class Worker:
    """One process's view of a sweep: its runtime (device, precision, threads: built once), its store, and the
    rows it computes (datasets opened once).

    ``added_targets``: run the rows of these targets added later (from saved source models) instead of the
    store's own rows."""

    def __init__(self, cfg, store_path: str, threads: Optional[int] = None,
                 added_targets: Optional[Sequence[str]] = None):
        self.rt = make_runtime(cfg.compute.device, cfg.train.amp, threads or cpus_allotted())
        store = Store.open(store_path, mode="r+")
        if added_targets:
            store = store.scoped(list(added_targets), layout.saved_backbones(store.path, store.num_rows))
        self.store = store
        self.rows = make_rows(cfg, self.rt, store, added_targets)
        self.fail_rows = set(cfg.launch.get("fail_rows") or [])  # fault injection (tests), in every launcher
        self.claims = Claims.of(cfg, store.path, store.scope)
        self.held: Dict[int, Optional[Found]] = {}  # rows skipped because another live writer holds them -> its claim

    def run_row(self, row: int) -> Optional[dict]:
        """Run and write ``row`` unless it is already completed, is being computed by another live writer (see
        :attr:`held`), or cannot run here (a target added later and no saved source model); returns its stats, or
        None if skipped."""
        row = int(row)
        if row in self.fail_rows:
            raise InjectedFault(f"row {row}: injected fault (launch.fail_rows, for tests)")
        if self.store.row_done(row) or not self.rows.runnable(row):
            return None
        claim, holder = self.claims.acquire(row)
        if claim is None:
            self.held[row] = holder
            log.info("row %d: not run here: it is being computed by %s", row,
                     f"{holder.describe()} ({holder.path})" if holder else "another writer")
            return None
        try:
            if self.store.row_done(row):  # committed by the writer that released it just before our claim
                return None
            log.debug("row %d: claimed (%s)", row, claim.path)
            checkpoint = RowCheckpoint(layout.checkpoint(self.store.path, row))
            run = RowRun(start_time=time.time(), device=str(self.rt.device), threads=self.rt.threads)
            result = self.rows.run(row, self.store.mask(row), checkpoint)
            self.store.write_row(row, result.outputs, result.predictions, result.stats, run=run)
            checkpoint.delete()
            log.debug("row %d: computed and committed by process %d", row, os.getpid())
            return result.stats
        finally:
            self.claims.release(claim)

    def close(self) -> None:
        self.claims.close()


def run_rows(
    cfg,
    store_path: str,
    rows: Iterable[int],
    threads: Optional[int] = None,
    on_row: Optional[Callable[[int, dict], None]] = None,
    added_targets: Optional[Sequence[str]] = None,
) -> int:
    """Run every row of ``rows`` not yet completed in the store (nor held by another live writer); returns how many
    this call completed."""
    worker = Worker(cfg, store_path, threads, added_targets)
    done = 0
    try:
        for row in rows:
            stats = worker.run_row(row)
            if stats is not None:
                done += 1
                if on_row is not None:
                    on_row(int(row), stats)
    finally:
        worker.close()
    return done
