"""Difference of means from row-block sums: read only the rows that are new since the previous influence store,
recompute only the blocks whose rows changed or disappeared, then reduce the blocks to influences and Welch standard
errors (docs/influence-format.md, "Row-block sums").

A block of a target is, compared with the previous store's sums of it:
- unchanged: the same rows, each with the same stamp (its outputs chunk's modification time) and the same mask:
  its chunks are hard-linked, nothing is read;
- grown: every earlier row unchanged, some rows completed since: only those are read. In this process they are
  added to the totals only, and marked *pending* (``row_pending``): the block's sums, hard-linked, stay those of its
  earlier rows, so a refresh writes no block (a grown block's sums are U x 2K float64 per pair, read and written
  again every refresh otherwise). Where the tasks run elsewhere (worker processes, Slurm), they are added to the
  block's sums, read and written there;
- changed: a row was rewritten, invalidated (no longer completed) or its mask rewritten: all of its rows are read.
The totals are the previous totals plus, per block grown, its new rows' sums, and per block summed again, its new
sums minus its previous ones (the same numbers as a full recomputation up to float64 rounding). A block summed again
that had pending rows left its previous share of the totals unknown (a pending row may be the one rewritten): then
every block with pending rows is summed again too and the totals are the sum of the blocks; invalidations are rare,
so the refresh that meets one pays for it. Blocks are independent tasks (``fanout.py`` runs them in this process, in
worker processes or as a Slurm array), each writing only its own chunks.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import zarr

from datatransfer.errors import AggregationError, EstimatorError
from datatransfer.influence import sums_store as ss
from datatransfer.influence.blocks import blas_limit, plan
from datatransfer.influence.fanout import serial_map
from datatransfer.influence.sums import RowData, Sums, averaging, read_sums
from datatransfer.influence.write import Collected, Job, check_finite, write_diagnostics, write_influences, write_target
from datatransfer.store.extend import fingerprint_rows
from datatransfer.store.sweep_store import Store

log = logging.getLogger(__name__)


@dataclass
class Task:
    """Sum ``rows`` of block ``block`` of target ``target`` for the pairs ``pairs``, on top of the previous store's
    sums of the block's ``base`` rows (None: from zero), into the new influence store. Picklable."""

    store: str
    new: str
    old: Optional[str]
    target: str
    block: int
    pairs: List[int]
    rows: np.ndarray
    base: Optional[np.ndarray]
    layout: ss.Layout
    read_rows: int
    keep: bool = False  # return what the block adds to the totals (tasks run in this process, memory permitting)
    fresh: bool = False  # the previous store has no such block (the sweep store was extended since)
    pending: bool = False  # grown, kept: the new rows go to the totals only, the block's sums stay as they were


@dataclass
class Done:
    rows: np.ndarray  # rows the block now counts: in its sums, or pending (in the totals only)
    unreadable: List[int]  # rows left out: their chunk cannot be decoded
    delta: Optional[Sums] = None  # with Task.keep: the block's new sums minus its previous ones (None: not known)
    pending: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))  # rows not in its sums


@functools.lru_cache(maxsize=4)
def _store(path: str, fingerprint: str) -> Store:
    """The sweep store, opened once per process and state: an extension changes the fingerprint (and the shapes)."""
    return Store.open(path)


def run_task(task: Task) -> Done:
    """One block task (in this process, a worker process or a Slurm job)."""
    store = _store(task.store, task.layout.store_fingerprint)
    t, lay = task.target, task.layout
    kinds = len(store.output_kinds)
    mi, ki = np.array([p // kinds for p in task.pairs]), np.array([p % kinds for p in task.pairs])
    avg = averaging(store.labels(t), len(store.class_names(t)))
    skipped: set = set()
    with blas_limit():
        sums, data = read_sums(store.outputs(t), store.masks, task.rows, mi, ki, avg, lay.sample, task.read_rows,
                               skipped, lambda b, y: check_finite(store, t, b, y, mi, ki), lambda n: None)
    # What the block adds to the totals: all of it when there is no previous store or block, its new rows' sums when
    # it grew (exact: they are summed on their own); a changed block's is left to _total (previous minus new).
    grown = task.base is not None and len(task.base) > 0
    delta = sums if task.keep and (grown or task.old is None or task.fresh) else None
    pending = np.zeros(0, np.int64)
    if grown:
        old = zarr.open_group(str(Path(task.old) / "sums" / t), mode="r")
        pending = ss.pending_rows(old, lay, task.block)
        if task.pending:  # the block's sums stay as they are (hard-linked by aggregate_targets)
            pending = np.union1d(pending, data.rows)
        else:
            base = ss.read_block(old, task.block, task.pairs)
            base.s_in += sums.s_in  # in place: these are U x 2K float64 per pair
            base.total += sums.total
            base.n_in += sums.n_in
            base.count += sums.count
            sums = base
        prev = ss.read_rowdata(old, lay, task.block, task.pairs, task.base)
        order = np.argsort(np.concatenate([prev.rows, data.rows]), kind="stable")
        data = RowData(np.concatenate([prev.rows, data.rows])[order],
                       np.concatenate([prev.aggregate, data.aggregate])[order],
                       np.concatenate([prev.samples, data.samples])[order])
    with zarr.config.set({"array.write_empty_chunks": True}):  # no pass comparing 160 MB of sums with zeros
        g = zarr.open_group(str(Path(task.new) / "sums" / t), mode="r+")
        if not task.pending:
            ss.write_block(g, task.block, task.pairs, sums)
        ss.write_rowdata(g, lay, task.block, task.pairs, data)
    return Done(data.rows, sorted(skipped), delta, pending)


@dataclass
class _Plan:
    layout: ss.Layout
    prev: Optional[zarr.Group]
    prev_blocks: int  # blocks of the previous sums (fewer than the layout's when the store was extended since)
    stamps: np.ndarray  # (M,) current stamp of each completed row, 0 = not completed
    unchanged: List[int]
    grown: Dict[int, Tuple[np.ndarray, np.ndarray]]  # block -> (earlier rows, new rows)
    changed: Dict[int, np.ndarray]  # block -> all its rows
    summed: bool = False  # the totals are the sum of the blocks (a block with pending rows was summed again)


def _plan_target(job: Job, t: str, rows: np.ndarray, old: Optional[Path], block_rows: int) -> _Plan:
    store = job.store
    outputs = store.outputs(t)
    n = outputs.shape[-1]
    rng = np.random.default_rng(job.diagnostics.seed if job.diagnostics else 0)
    sample = np.sort(rng.choice(n, size=min(n, job.diagnostics.lds_examples), replace=False)) \
        if job.diagnostics else np.zeros(0, dtype=np.int64)
    lay = ss.Layout(block_rows, store.num_rows, len(store.unit_names), outputs.shape[1] * outputs.shape[2],
                    n + len(store.class_names(t)) + 1, sample, store.fingerprint, store.store_id)
    states = fingerprint_rows(store.attrs, store.fingerprint, store.num_rows)
    prev = ss.open_previous(old, t, lay, states) if old is not None else None
    stamps = np.zeros(store.num_rows, dtype=np.int64)
    stamps[rows] = ss.row_stamps(store.path, outputs, rows)
    before, hashes, prev_blocks = np.zeros_like(stamps), None, 0
    if prev is not None:  # after an extension the previous sums cover the first rows: the rest is new
        had = np.asarray(prev["row_stamp"][:])
        before[:len(had)] = had
        prev_hashes = np.asarray(prev["block_mask_hash"][:])
        prev_blocks = len(prev_hashes)
        hashes = np.full(lay.blocks, -1, dtype=np.int64)  # mask hashes are >= 0: a new block never matches
        hashes[:prev_blocks] = prev_hashes
    masks = store.masks
    p = _Plan(lay, prev, prev_blocks, stamps, [], {}, {})
    for j in range(lay.blocks):
        blk = lay.block(j)
        o, s = before[blk], stamps[blk]
        had, has = np.flatnonzero(o) + blk.start, np.flatnonzero(s) + blk.start
        same_masks = hashes is not None and hashes[j] == ss.mask_hash(masks[had], had)
        if same_masks and np.array_equal(o, s):
            p.unchanged.append(j)
        elif same_masks and len(had) and (s[o > 0] == o[o > 0]).all():
            p.grown[j] = (had, np.setdiff1d(has, had))
        elif len(has) or (prev is not None and len(had)):
            p.changed[j] = has
    if prev is not None:
        flags = np.asarray(prev["row_pending"][:])  # the rows before an extension: the first len(flags)
        waiting = [j for j in range(prev_blocks) if flags[lay.block(j)].any()]
        if any(j in p.changed for j in waiting):  # its share of the previous totals is unknown: sum every block
            for j in waiting:
                blk = lay.block(j)
                p.changed[j] = np.flatnonzero(stamps[blk]) + blk.start
                p.grown.pop(j, None)
                if j in p.unchanged:
                    p.unchanged.remove(j)
            p.summed = True
    return p


def _tasks(job: Job, t: str, p: _Plan, new: Path, old: Optional[Path], read_rows: int,
           in_process: bool) -> List[Task]:
    """The block tasks of target ``t``; run ``in_process``, they return their deltas to the totals when all of
    them fit half the memory budget (each U x 2K float64 per pair), sparing _reduce reading the blocks back."""
    _, passes = plan(job.store, t, "dim", read_rows, job.memory_mb)
    kinds = len(job.store.output_kinds)
    groups = [[m * kinds + k for m, k in group] for group in passes]
    todo = [*p.grown.items(), *((j, (None, r)) for j, r in p.changed.items())]
    lay = p.layout
    keep = in_process and len(todo) * lay.pairs * lay.units * 2 * lay.cols * 8 <= job.memory_mb * 2 ** 20 // 2
    out = []
    for j, (base, rows) in todo:
        fresh = p.prev is not None and j >= p.prev_blocks
        for pairs in groups:
            out.append(Task(str(job.store.path), str(new), str(old) if old else None, t, j, pairs, rows, base,
                            p.layout, read_rows, keep, fresh, keep and j in p.grown and not fresh and not p.summed))
    return out


def aggregate_targets(job: Job, target_rows: Dict[str, np.ndarray], root: zarr.Group, new: Path,
                      old: Optional[Path], block_rows: int, run_tasks) -> Tuple[Dict[str, np.ndarray],
                                                                                   Dict[str, str], int]:
    """Influences of every target into ``root`` (the new store, at ``new``) from row-block sums, reusing those of the
    previous store at ``old`` (None: sum everything). ``run_tasks(run_task, tasks, on_done)`` runs the block tasks
    (fanout.py) and returns their :class:`Done` in order. Returns each target's rows used, the diagnostics notes and
    the number of rows read."""
    read_rows, _ = plan(job.store, next(iter(target_rows)), "dim", job.block_rows, job.memory_mb)
    plans, tasks = {}, []
    for t, rows in target_rows.items():
        p = plans[t] = _plan_target(job, t, rows, old, block_rows)
        ss.create(root.require_group("sums").require_group(t), p.layout)
        for j in p.unchanged:
            ss.link_block(old / "sums" / t, new / "sums" / t, j)
        mine = _tasks(job, t, p, new, old, read_rows, run_tasks is serial_map)
        for j in sorted({task.block for task in mine if task.pending}):  # their sums stay: linked, never written
            ss.link_block(old / "sums" / t, new / "sums" / t, j, ss.BLOCK_ARRAYS)
        tasks += mine
        log.info(f"target {t}: {len(p.unchanged)} row blocks unchanged, {len(p.grown)} grown, {len(p.changed)} "
                 f"changed or new, of {p.layout.blocks}")
    bar = job.bar
    if bar is not None:
        bar.total = sum(len(task.rows) for task in tasks)
    done = run_tasks(run_task, tasks, (lambda i: bar.update(len(tasks[i].rows))) if bar is not None else None)
    used, notes = {}, {}
    for t in target_rows:
        results, deltas = {}, {}
        for task, d in zip(tasks, done):
            if task.target == t:
                if task.block in results and not np.array_equal(results[task.block].rows, d.rows):
                    raise AggregationError(f"outputs/{t}: rows of block {task.block} became unreadable while being "
                                           f"aggregated (written right now?); run the command again")
                results[task.block] = d
                if d.delta is not None:
                    deltas.update({(task.block, q): (d.delta, i) for i, q in enumerate(task.pairs)})
        used[t], notes[t] = _reduce(job, t, plans[t], results, root, deltas)
        del deltas
    return used, {t: n for t, n in notes.items() if n}, sum(len(task.rows) for task in tasks)


def _reduce(job: Job, t: str, p: _Plan, results: Dict[int, Done], root: zarr.Group,
            deltas: Dict[Tuple[int, int], Tuple[Sums, int]]) -> Tuple[np.ndarray, str]:
    """Stamps of the blocks read, totals, influences, counts and diagnostics of target ``t``."""
    store, lay = job.store, p.layout
    g = root["sums"][t]
    masks = store.masks
    for j, d in results.items():
        blk = lay.block(j)
        stamp = np.zeros(blk.stop - blk.start, dtype=np.int64)
        stamp[d.rows - blk.start] = p.stamps[d.rows]
        g["row_stamp"][blk] = stamp
        waiting = np.zeros(blk.stop - blk.start, dtype=np.int8)
        waiting[d.pending - blk.start] = 1
        g["row_pending"][blk] = waiting
        g["block_mask_hash"][j] = ss.mask_hash(masks[d.rows], d.rows)
    rows = np.flatnonzero(np.asarray(g["row_stamp"][:]))
    if len(rows) == 0:
        raise AggregationError(f"target {t}: none of its completed rows could be read")
    labels, class_names = store.labels(t), store.class_names(t)
    tg = root.require_group(t)
    touched = sorted(set(p.grown) | set(p.changed))
    for q in range(lay.pairs):
        tot = _total(g, None if p.summed else p.prev, p.prev_blocks, q, range(lay.blocks) if p.summed else touched,
                     {} if p.summed else deltas)
        with zarr.config.set({"array.write_empty_chunks": True}):
            ss.write_total(g, q, tot)
        try:
            res = tot.estimate(0, store.unit_names)
        except EstimatorError as e:
            m, k = divmod(q, len(store.output_kinds))
            raise AggregationError(f"target {t!r}, mode {store.modes[m]!r}, kind {store.output_kinds[k]!r}: {e}") \
                from e
        m, k = divmod(q, len(store.output_kinds))
        write_influences(tg.require_group(store.modes[m]).require_group(store.output_kinds[k]), res, labels,
                         class_names, store.unit_names)
    write_target(tg, labels, class_names, rows, masks[rows].sum(axis=0), store.unit_names)
    if not job.diagnostics:
        return rows, ""
    agg = np.asarray(g["row_aggregate"][:])[rows]
    smp = np.asarray(g["row_samples"][:])[rows][:, :, :len(lay.sample)]
    return rows, write_diagnostics(job, t, rows, masks[rows], Collected(lay.sample, agg, smp), root)


def _total(g: zarr.Group, prev: Optional[zarr.Group], prev_blocks: int, q: int, touched,
           deltas: Dict[Tuple[int, int], Tuple[Sums, int]]) -> Sums:
    """Pair ``q``'s sums over all blocks: the previous totals corrected by the blocks read (by their ``deltas`` when
    the tasks returned them, else new minus previous sums read back; blocks past the previous ``prev_blocks`` had
    none), or the sum of the blocks."""
    if prev is None:  # every block with rows was read
        tot = None
        for j in touched:
            if (j, q) in deltas:
                d, i = deltas[j, q]
                s = Sums(d.s_in[i:i + 1], d.total[i:i + 1], d.n_in, d.count)
            else:
                s = ss.read_block(g, j, [q])
            if tot is None:  # a task's delta is this pair's alone and not used after this: summed into in place
                own = (j, q) in deltas
                tot = Sums(s.s_in if own else s.s_in.copy(), s.total.copy(), s.n_in.copy(), s.count)
            else:
                _accumulate(tot, s, 1.0)
        return tot
    if "total_s_in" not in prev:
        tot = ss.read_block(g, 0, [q])
        for j in range(1, g["block_count"].shape[0]):
            _accumulate(tot, ss.read_block(g, j, [q]), 1.0)
        return tot
    tot = ss.read_total(prev, q)
    for j in touched:
        if (j, q) in deltas:
            d, i = deltas[j, q]
            _accumulate(tot, Sums(d.s_in[i:i + 1], d.total[i:i + 1], d.n_in, d.count), 1.0)
        else:
            _accumulate(tot, ss.read_block(g, j, [q]), 1.0)
            if j < prev_blocks:
                _accumulate(tot, ss.read_block(prev, j, [q]), -1.0)
    return tot


def _accumulate(tot: Sums, s: Sums, sign: float) -> None:
    """tot += sign * s, in place (the sums are U x 2K float64: no temporaries of that size)."""
    if sign > 0:
        tot.s_in += s.s_in
        tot.total += s.total
        tot.n_in += s.n_in
        tot.count += s.count
    else:
        tot.s_in -= s.s_in
        tot.total -= s.total
        tot.n_in -= s.n_in
        tot.count -= s.count
