"""The worker: runs a list of rows into a store. Every launcher (local, Slurm) ends up calling ``run_rows``.

A row is claimed before it is computed (``store/claims.py``), so that whichever launchers run at once (local,
Slurm, a resume, targets added later), a row is computed by at most one live writer: a row held by another live
writer is skipped here, with a log line naming the holder.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from datatransfer.config.sweep import row_kind
from datatransfer.errors import InjectedFault
from datatransfer.rows import make_rows
from datatransfer.store import layout
from datatransfer.store.claims import Claim, Claims, Found
from datatransfer.store.provenance import RowRun
from datatransfer.store.sweep_store import Store
from datatransfer.train.checkpoint import RowCheckpoint
from datatransfer.train.loop import make_runtime, resolve_device
from datatransfer.train.precision import resolve_amp

log = logging.getLogger(__name__)


def cpus_allotted() -> int:
    """CPUs this process may use: Slurm's allocation if inside a job, else the affinity mask."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit():
        return int(slurm)
    return len(os.sched_getaffinity(0))


# compute.models_per_process=0 (auto) per device type and precision (train.amp), from bench/models_per_hour.py
# (docs/performance.md): on the CPU, bf16 gains most at K = 8 (1.15-1.5x on AMX / AVX-512 BF16 CPUs); float32 at
# K = 4 (1.00-1.14x on an AVX2-only AMD EPYC, 1.09-1.14x on the Intel kind; K = 8 was slower than one at a time on both
# AMD kinds). CUDA: not measured yet.
AUTO_MODELS_PER_PROCESS = {("cpu", True): 8, ("cpu", False): 4, ("cuda", True): 8, ("cuda", False): 8}


def models_per_process(cfg, added_targets: Optional[Sequence[str]] = None) -> int:
    """How many rows a worker trains at once: ``compute.models_per_process``, or for 0 the measured default of
    the device and precision (``AUTO_MODELS_PER_PROCESS``); 1 for rows that do not batch (planted rows, targets
    added later, architectures other than the small CNN). A group is K consecutive rows of those to run, whatever
    the number of workers, so a row's group (and so its bits) does not depend on how many workers share the
    sweep."""
    # FFCV loaders are not stacked: zipping K of them gave one model of a group far lower source accuracy
    # (tests/data/test_ffcv_sweeps.py); the paper-scale FFCV path trains ResNets, which do not stack anyway.
    if (added_targets or row_kind(cfg) != "trained" or cfg.model.arch != "small_cnn" or cfg.sweep.unit != "class"
            or cfg.source.get("loader", "memory") == "ffcv"):
        return 1
    k = int(cfg.compute.get("models_per_process", 0) or 0)
    if k > 0:
        return k
    device = resolve_device(cfg.compute.device).type
    return AUTO_MODELS_PER_PROCESS.get((device, resolve_amp(cfg)), 1)


def groups(rows: Sequence[int], k: int) -> List[List[int]]:
    """``rows`` in consecutive groups of ``k`` (the last may be smaller)."""
    rows = [int(r) for r in rows]
    return [rows[i:i + k] for i in range(0, len(rows), max(1, k))]


class Worker:
    """One process's view of a sweep: its runtime (device, precision, threads: built once), its store, and the
    rows it computes (datasets opened once).

    ``added_targets``: run the rows of these targets added later (from saved source models) instead of the
    store's own rows."""

    def __init__(self, cfg, store_path: str, threads: Optional[int] = None,
                 added_targets: Optional[Sequence[str]] = None):
        self.rt = make_runtime(cfg.compute.device, resolve_amp(cfg), threads or cpus_allotted())
        store = Store.open(store_path, mode="r+")
        if added_targets:
            store = store.scoped(list(added_targets), layout.saved_backbones(store.path, store.num_rows))
        self.store = store
        self.rows = make_rows(cfg, self.rt, store, added_targets)
        self.fail_rows = set(cfg.launch.get("fail_rows") or [])  # fault injection (tests), in every launcher
        self.claims = Claims.of(cfg, store.path, store.scope)
        self.held: Dict[int, Optional[Found]] = {}  # rows skipped because another live writer holds them -> its claim
        self.models_per_process = models_per_process(cfg, added_targets)

    def run_row(self, row: int) -> Optional[dict]:
        """Run and write ``row`` unless it is already completed, is being computed by another live writer (see
        :attr:`held`), or cannot run here (a target added later and no saved source model); returns its stats, or
        None if skipped."""
        for _, result in self.run_group([row]):
            if isinstance(result, BaseException):
                raise result
            return result
        return None

    def run_group(self, rows: Sequence[int]) -> Iterator[Tuple[int, Union[dict, None, BaseException]]]:
        """Run ``rows`` together where the row kind can (``run_group``: the batched runner, source models stacked),
        else one after another; yields (row, its stats | None if skipped | the exception it alone failed with) as
        each is committed or skipped. Each row is claimed before and committed on its own, so a crash loses at most
        the rows in flight. An exception of the group's shared training propagates (every row not yet yielded
        failed with it)."""
        claimed: Dict[int, Claim] = {}
        try:
            for row in (int(r) for r in rows):
                verdict = self._claim(row)
                if verdict is True:
                    claimed[row] = self._held_claim
                else:
                    yield row, verdict
            checkpoints = {r: RowCheckpoint(layout.checkpoint(self.store.path, r)) for r in claimed}
            # rows resuming from a checkpoint run alone (they are at different epochs); fresh ones share a group
            fresh = [r for r in claimed if not checkpoints[r].path.is_file()]
            batched = getattr(self.rows, "run_group", None) if len(fresh) > 1 else None
            alone = [r for r in claimed if batched is None or r not in fresh]
            for row in alone:
                try:
                    result = self._commit(row, checkpoints[row], lambda: self.rows.run(
                        row, self.store.mask(row), checkpoints[row]))
                except Exception as e:
                    result = e
                self.claims.release(claimed.pop(row))
                yield row, result
            if batched is not None:
                began = time.time()
                rows_iter = batched(fresh, [self.store.mask(r) for r in fresh], [checkpoints[r] for r in fresh])
                for row, result in rows_iter:
                    run = RowRun(start_time=began, device=str(self.rt.device), threads=self.rt.threads,
                                 models=len(fresh))
                    stats = self._commit(row, checkpoints[row], lambda: result, run)
                    began = time.time()
                    self.claims.release(claimed.pop(row))
                    yield row, stats
        finally:
            for claim in claimed.values():
                self.claims.release(claim)

    def _claim(self, row: int) -> Union[bool, None, BaseException]:
        """True (claimed: :attr:`_held_claim`), None (skipped: completed, not runnable here, or held by another live
        writer) or the injected fault of ``row``."""
        if row in self.fail_rows:
            return InjectedFault(f"row {row}: injected fault (launch.fail_rows, for tests)")
        if self.store.row_done(row) or not self.rows.runnable(row):
            return None
        claim, holder = self.claims.acquire(row)
        if claim is None:
            self.held[row] = holder
            log.info("row %d: not run here: it is being computed by %s", row,
                     f"{holder.describe()} ({holder.path})" if holder else "another writer")
            return None
        if self.store.row_done(row):  # committed by the writer that released it just before our claim
            self.claims.release(claim)
            return None
        log.debug("row %d: claimed (%s)", row, claim.path)
        self._held_claim = claim
        return True

    def _commit(self, row: int, checkpoint: RowCheckpoint, compute: Callable, run: Optional[RowRun] = None) -> dict:
        run = run or RowRun(start_time=time.time(), device=str(self.rt.device), threads=self.rt.threads)
        result = compute()
        self.store.write_row(row, result.outputs, result.predictions, result.stats, run=run)
        checkpoint.delete()
        log.debug("row %d: computed and committed by process %d", row, os.getpid())
        return result.stats

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
        for group in groups(rows, worker.models_per_process):
            for row, result in worker.run_group(group):
                if isinstance(result, BaseException):
                    raise result
                if result is not None:
                    done += 1
                    if on_row is not None:
                        on_row(int(row), result)
    finally:
        worker.close()
    return done
