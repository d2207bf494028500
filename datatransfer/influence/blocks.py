"""Reading a sweep store for aggregation: its completed rows, and its outputs in blocks of rows, one
block ahead, within a memory budget; rows whose chunk cannot be decoded are left out, with a warning."""


import collections
import concurrent.futures as cf
import contextlib
import logging
import os
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import numpy as np
import zarr

from datatransfer.store import chunk_files
from datatransfer.store.extend import fingerprint_rows
from datatransfer.store.integrity import brief, chunk_file
from datatransfer.store.sweep_store import Store, bulk_reads

log = logging.getLogger(__name__)


def completed_rows(store: Store, target: Optional[str] = None) -> np.ndarray:
    """Sorted indices of the completed rows (of ``target``'s outputs when given: a target added to the store later
    has its own completion record). One chunk per row: read with :func:`bulk_reads`."""
    with bulk_reads():
        return np.flatnonzero(store.completed() if target is None else store.target_completed(target))


def completion_stamps(store: Store) -> np.ndarray:
    """(M, 2) int64: modification time (ns) and inode of each row's ``completed`` chunk file, (0, 0) when absent.
    zarr writes a chunk as a new file, so any write of a row's flag changes its stamp; a stat is ~30x cheaper
    than decoding the chunk."""
    arr = store.group["completed"]
    folder, encode = f"{store.path}/{arr.path}", arr.metadata.encode_chunk_key
    out = np.zeros((arr.shape[0], 2), dtype=np.int64)
    for r in range(arr.shape[0]):  # plain strings: pathlib per row costs more than the stat
        try:
            st = os.stat(f"{folder}/{encode((r,))}")
            out[r] = st.st_mtime_ns, st.st_ino
        except FileNotFoundError:
            pass
    return out


def completed_since(store: Store, previous: Optional[zarr.Group]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(completed rows, their flags (M,) bool, the stamps of :func:`completion_stamps`) of the original targets:
    the flags of ``previous`` (an influence store of this sweep store, or None) where a row's stamp is the one it
    recorded, and the chunk read only for the other rows. A refresh after 1% new rows decodes 1% of the flags."""
    stamps = completion_stamps(store)
    try:
        old_stamps, flags = np.asarray(previous["completed_stamp"][:]), np.asarray(previous["completed_flag"][:])
        had = len(old_stamps)  # rows of the store's state it was taken from (fewer when extended since)
        states = fingerprint_rows(store.attrs, store.fingerprint, store.num_rows)
        usable = states.get(previous.attrs.get("store_fingerprint")) == had
        if usable and had < len(stamps):  # extended since: the new rows' flags are read like any changed one
            old_stamps = np.concatenate([old_stamps, np.zeros((len(stamps) - had, 2), dtype=old_stamps.dtype)])
            flags = np.concatenate([flags, np.zeros(len(stamps) - had, dtype=bool)])
    except Exception:  # none, an older format, unreadable: read every flag
        usable = False
    if not usable:
        flags = completed_rows(store)
        flags = np.isin(np.arange(store.num_rows), flags)
        return np.flatnonzero(flags), flags, stamps
    changed = np.flatnonzero((old_stamps != stamps).any(axis=1))
    if len(changed):
        arr = store.group["completed"]
        with bulk_reads():
            for r0, r1 in _runs(changed):  # slices: zarr reads a slice much faster than single rows
                try:
                    flags[r0:r1] = chunk_files.rows(arr, r0, r1)
                except Exception:  # a damaged chunk: row by row, a damaged one is not completed (a warning)
                    for r in range(r0, r1):
                        got = store._row("completed", r)
                        flags[r] = bool(got) if got is not None else False
    return np.flatnonzero(flags), flags, stamps


def _runs(rows: np.ndarray):
    """(start, stop) of each run of consecutive ``rows``."""
    cut = np.flatnonzero(np.diff(rows) != 1) + 1
    return [(int(a[0]), int(a[-1]) + 1) for a in np.split(rows, cut)]


def rows_used(store: Store, rows: np.ndarray, target_rows: Dict[str, np.ndarray],
              used: Dict[str, np.ndarray]) -> Tuple[np.ndarray, Dict[str, List[int]]]:
    """The completed ``rows`` every original target could read (of ``used``: each aggregated target's rows used),
    and per target the rows of ``target_rows`` (its completed rows) left out because their chunk was unreadable."""
    for t in used:
        if t in store.targets:
            rows = np.intersect1d(rows, used[t])
    unreadable = {t: [int(r) for r in np.setdiff1d(target_rows[t], used[t])] for t in used}
    return rows, {t: left for t, left in unreadable.items() if left}


def _auto_block_rows(row_bytes: int, memory_mb: int) -> int:
    # A block and its prefetched successor, plus the float64 copy, take ~4x a block: keep that within 1/4 of the
    # budget; more than ~512 rows per block buys nothing for the matrix product.
    return int(np.clip(memory_mb * 2 ** 20 // 16 // max(row_bytes, 1), 8, 512))


def read_blocks(arr: zarr.Array, rows: np.ndarray, block_rows: int, skipped: Optional[Set[int]] = None,
                ahead: int = 1) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Yield (rows of the block, their data) for ``rows`` (sorted store indices), reading ``ahead`` blocks ahead
    (one thread, in order).

    Each block is read by ``chunk_files.take``: its rows' chunk files (a local store), else one zarr slice over the
    span of its rows, the unused rows in between dropped after the read. When that read fails, the block's rows are
    read one by one, and a row whose chunk cannot be decoded (left empty by a crash, garbage) is left out with a
    warning naming the row and the file: the rows yielded are exactly those whose data comes with them. Rows left
    out are added to ``skipped`` (if given); rows already in it are not read."""
    if skipped:
        rows = rows[~np.isin(rows, sorted(skipped))]
    blocks = [rows[i:i + block_rows] for i in range(0, len(rows), block_rows)]

    def read(block: np.ndarray) -> Tuple[np.ndarray, np.ndarray, List[int]]:
        try:
            return block, chunk_files.take(arr, block), []
        except Exception:  # a damaged chunk, or an unused row in the span mid-write: read the used rows one by one
            return _rows_one_by_one(arr, block)

    with bulk_reads(), cf.ThreadPoolExecutor(max_workers=1) as pool:
        pending = collections.deque(pool.submit(read, b) for b in blocks[:max(1, ahead)])
        for i in range(len(blocks)):
            block, data, bad = pending.popleft().result()
            if i + len(pending) + 1 < len(blocks):
                pending.append(pool.submit(read, blocks[i + len(pending) + 1]))
            if skipped is not None:
                skipped.update(bad)
            if len(block):
                yield block, data


def _rows_one_by_one(arr: zarr.Array, block: np.ndarray) -> Tuple[np.ndarray, np.ndarray, List[int]]:
    """(rows read, their data, rows whose chunk cannot be decoded: each with a warning)."""
    good, data, bad = [], [], []
    for r in (int(r) for r in block):
        try:
            data.append(np.asarray(arr[r]))
            good.append(r)
        except Exception as e:  # decoding errors are codec-specific (RuntimeError of zstd, ValueError, ...)
            bad.append(r)
            root = getattr(arr.store, "root", None)  # the store's folder (a local store)
            where = chunk_file(Path(root), arr, r) if root is not None else f"{arr.path}, chunk of row {r}"
            log.warning("%s cannot be read (%s; damaged, e.g. by a crash): row %d is left out of the rows used "
                        "(`python -m launch.verify store.path=%s` lists such rows; verify.invalidate=true and a "
                        "rerun recompute them)", where, brief(e), r, root or "STORE")
    stacked = np.stack(data) if data else np.empty((0, *arr.shape[1:]), dtype=arr.dtype)
    return np.asarray(good, dtype=block.dtype), stacked, bad


def _passes(pairs: List[Tuple[int, int]], cols_per_pair: int, units: int, memory_mb: int,
            factor: int) -> List[List[Tuple[int, int]]]:
    """Split (mode, kind) pairs into passes over the rows so that the statistics of one pass fit the budget."""
    per_pair = units * cols_per_pair * 8 * factor
    k = max(1, int(memory_mb * 2 ** 20 // 2 // max(per_pair, 1)))
    return [pairs[i:i + k] for i in range(0, len(pairs), k)]


def blas_limit(threads: int = 0):
    """Leave one CPU to the reading thread: zarr's chunk handling is mostly Python (one core, under the GIL), and
    when BLAS takes every core the two fight instead of overlapping. Measured on 2 cores at the paper's size:
    read + accumulate went from 1.5x to 1.1x the read alone. Only around the reading loop: the work after it
    (ridge's eigendecomposition, diagnostics) gets every core. A no-op without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads or compute_threads(), user_api="blas")


def compute_threads(outputs: Optional[zarr.Array] = None, reading: bool = True) -> int:
    """Threads for the products: a worker process's share of the CPUs (set in aggregation workers), else all CPUs
    but one beside a reading thread, or all of them where ``outputs`` are read from their chunk files
    (store/chunk_files.py: the reading thread then needs a fraction of a core, 0.9 CPU-s for the 7,540 rows of the
    bench against ~3 for their sums; docs/performance.md) or nothing is being read (``reading=False``)."""
    threads = int(os.environ.get("DATATRANSFER_BLAS_THREADS", "0"))
    if threads > 0:
        return threads
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    light = not reading or (outputs is not None and chunk_files.reads_files(outputs))
    return cpus if light else max(1, cpus - 1)


def plan(store: Store, t: str, estimator: str, block_rows: int, memory_mb: int):
    """Rows per block and the (mode, kind) pairs of each pass over the rows, for target ``t``."""
    _, n_modes, n_kinds, n = store.outputs(t).shape
    pairs = [(m, k) for m in range(n_modes) for k in range(n_kinds)]
    # a row's outputs (float32) and its decoded mask (one byte per unit: 1.28 M at the paper's example level)
    block_rows = block_rows or _auto_block_rows(n_modes * n_kinds * n * 4 + len(store.unit_names), memory_mb)
    return block_rows, _passes(pairs, n, len(store.unit_names), memory_mb, 6 if estimator == "ridge" else 4)
