"""Sums of outputs over the rows whose mask contains each unit, for 0/1 masks: ``out[:, :K] += M^T Y`` and
``out[:, K:] += M^T Y**2`` in float64, by the method of four Russians instead of a dense matrix product.

Units go in groups of 8: each row's 8 mask bits of a group form a pattern p in 0..255. Rows are sorted by pattern
(a counting sort per group, shared by every column), the outputs of each pattern's rows are summed in registers into
a table T[p] (and T2[p] of squares), and unit j of the group gets the sum of T over the 128 patterns with bit j set
(folding the table bit by bit: ~2 x 256 adds for the 8 units). Per group that is (rows + ~512) additions per column
instead of 8 x rows multiply-adds, all exact float64 additions of the same values as the product (only their order
differs, so results agree with it to float64 rounding). Measured on this project's 2-core machine (1 thread, CPU
time, 4,096 rows x 1,000 units x 10,011 columns): 1.11 s against 4.37 s for the float64 BLAS product (AVX-512,
~35 GFMA/s); fewer rows than :data:`MIN_ROWS` go to the product (the table's fixed cost per group is not amortised).

The inner loop is generated unrolled over a tile of :data:`TILE` columns so that the accumulators stay in registers,
and compiled with LLVM's SLP vectoriser (off by default in numba) so that they become vector registers; the source
is compiled under this file's name, so numba's cache (keyed by this file's modification time) keeps it.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import threading

import numba
import numpy as np
from numba.core import config as numba_config

TILE = 32  # columns per tile: 2 x 32 float64 accumulators in vector registers (the table-filling loop alone measured
# 16: 3.5, 32: 5.9, 64: 5.4 G elements/s)
MIN_ROWS = 512  # below this, BLAS's float64 product is as fast (the per-group table costs ~512 adds per column)

_lines = "\n".join


def _source(tile: int) -> str:
    """The kernel, unrolled over ``tile`` columns (see the module's docstring)."""
    acc = [f"a{c}" for c in range(tile)]
    sq = [f"q{c}" for c in range(tile)]
    return f'''
def _group_sums(perm, off, yb, t1, t2, g):
    for p in range(256):
{_lines(f"        {a} = 0.0" for a in acc + sq)}
        for i in range(off[g, p], off[g, p + 1]):
            r = perm[g, i]
{_lines(f"            v{c} = yb[r, {c}]" for c in range(tile))}
{_lines(f"            a{c} += v{c}" for c in range(tile))}
{_lines(f"            q{c} += v{c} * v{c}" for c in range(tile))}
{_lines(f"        t1[p, {c}] = a{c}" for c in range(tile))}
{_lines(f"        t2[p, {c}] = q{c}" for c in range(tile))}



def _upper_sums(t1, t2, lo, hi, s1, s2):
{_lines(f"    {a} = 0.0" for a in acc + sq)}
    for q in range(lo, hi):
{_lines(f"        a{c} += t1[q, {c}]" for c in range(tile))}
{_lines(f"        q{c} += t2[q, {c}]" for c in range(tile))}
{_lines(f"    s1[{c}] = a{c}" for c in range(tile))}
{_lines(f"    s2[{c}] = q{c}" for c in range(tile))}


def _fold_half(t, half):
    for q in range(half):
{_lines(f"        a{c} = t[q, {c}] + t[q + half, {c}]" for c in range(tile))}
{_lines(f"        t[q, {c}] = a{c}" for c in range(tile))}


def _fold_into(t1, t2, s1, s2, out, total, g, units, c_y, c_sq, width):
    """Unit 8g + j (j < 8, 8g + j < units) gets the sum of the table's rows whose pattern has bit j set, added into
    out[u, c_y:c_y + width] (the squares' into out[u, c_sq:...]). Highest bit first: its sum is that of the upper
    half; then the upper half is added onto the lower one, which is the table of the remaining bits. Once every bit
    is folded, row 0 is the sum over all rows: group 0 adds it to ``total``."""
    size = 256
    for j in range(7, -1, -1):
        half = size // 2
        u = 8 * g + j
        if u < units:
            _upper_sums(t1, t2, half, size, s1, s2)
            for c in range(width):
                out[u, c_y + c] += s1[c]
                out[u, c_sq + c] += s2[c]
        _fold_half(t1, half)
        _fold_half(t2, half)
        size = half
    if g == 0:
        for c in range(width):
            total[c_y + c] += t1[0, c]
            total[c_sq + c] += t2[0, c]


def _tiles(perm, off, y, out, total, col0, sq0, first, last):
    b, cols = y.shape
    units, groups = out.shape[0], perm.shape[0]
    yb = np.zeros((b, {tile}))
    t1 = np.empty((256, {tile}))
    t2 = np.empty((256, {tile}))
    s1 = np.empty({tile})
    s2 = np.empty({tile})
    for ti in range(first, last):
        c0 = ti * {tile}
        width = min({tile}, cols - c0)
        for r in range(b):  # the tile's columns, contiguous, in float64 (a last, narrower tile leaves the rest unused)
            for c in range(width):
                yb[r, c] = y[r, c0 + c]
        for g in range(groups):
            _group_sums(perm, off, yb, t1, t2, g)
            _fold_into(t1, t2, s1, s2, out, total, g, units, col0 + c0, sq0 + c0, width)
'''


@numba.njit(cache=True, nogil=True)
def _sort_patterns(pat):
    """Per group g: ``perm[g]`` the rows ordered by their pattern, ``off[g, p]:off[g, p + 1]`` those of pattern p."""
    b, groups = pat.shape
    perm = np.empty((groups, b), dtype=np.int32)
    off = np.zeros((groups, 257), dtype=np.int64)
    for g in range(groups):
        for r in range(b):
            off[g, pat[r, g] + 1] += 1
        for p in range(256):
            off[g, p + 1] += off[g, p]
        fill = off[g, :256].copy()
        for r in range(b):
            p = pat[r, g]
            perm[g, fill[p]] = r
            fill[p] += 1
    return perm, off


_compiled = {}
_lock = threading.Lock()


def _kernel():
    """The compiled kernel (numba compiles it on first use, with the SLP vectoriser; later processes load it from
    numba's cache)."""
    with _lock:
        if "kernel" not in _compiled:
            # Into this module's globals: numba's cache rebuilds a function's globals from its module.
            ns = globals()
            exec(compile(_source(TILE), __file__, "exec"), ns)  # noqa: S102 - our own generated source
            for name in ("_group_sums", "_upper_sums", "_fold_half", "_fold_into"):
                ns[name] = numba.njit(cache=True, nogil=True, boundscheck=False)(ns[name])
            _compiled["kernel"] = numba.njit(cache=True, nogil=True, boundscheck=False)(ns["_tiles"])
        return _compiled["kernel"]


@contextlib.contextmanager
def _slp():
    old = numba_config.SLP_VECTORIZE
    numba_config.SLP_VECTORIZE = 1
    try:
        yield
    finally:
        numba_config.SLP_VECTORIZE = old


def mask_sums(masks: np.ndarray, y: np.ndarray, out: np.ndarray, total: np.ndarray, col0: int, sq0: int,
              threads: int = 1) -> None:
    """Over the b rows: ``out[u, col0 + k] += sum of y[:, k] over the rows with unit u``, ``out[u, sq0 + k]`` the
    same of ``y[:, k]**2``, and ``total[col0 + k]``, ``total[sq0 + k]`` the sums over all rows; in float64.

    ``masks`` (b, U) bool; ``y`` (b, k) float32 or float64; ``out`` (U, cols) and ``total`` (cols,) float64,
    C-contiguous. The kernel above from :data:`MIN_ROWS` rows and :data:`TILE` columns on (its column tiles split
    between ``threads`` threads: it releases the GIL), else a BLAS product."""
    b, units = masks.shape
    k = y.shape[1]
    if y.shape[0] != b or out.shape[0] != units or max(col0, sq0) + k > min(out.shape[1], total.shape[0]):
        raise ValueError(f"mask_sums: masks {masks.shape}, y {y.shape}, out {out.shape}, total {total.shape}, "
                         f"columns {col0} and {sq0} do not match")
    if b < MIN_ROWS or k < TILE:  # a few rows, or a few columns (e.g. the class averages): one small product
        x = masks.T.astype(np.float64)
        y64 = y.astype(np.float64)
        out[:, col0:col0 + k] += x @ y64
        out[:, sq0:sq0 + k] += x @ (y64 * y64)
        total[col0:col0 + k] += y64.sum(axis=0)
        total[sq0:sq0 + k] += (y64 * y64).sum(axis=0)
        return
    pat = np.packbits(masks, axis=1, bitorder="little")  # (b, ceil(U / 8)): bit j of byte g = unit 8g + j
    perm, off = _sort_patterns(pat)
    y = np.ascontiguousarray(y)
    kernel = _kernel()
    tiles = -(-k // TILE)
    cuts = np.linspace(0, tiles, min(max(threads, 1), tiles) + 1).astype(int)
    with _slp():  # compiles on the first call of a process (or loads numba's cache)
        if len(cuts) == 2:
            kernel(perm, off, y, out, total, col0, sq0, cuts[0], cuts[1])
            return
        kernel(perm, off, y, out, total, col0, sq0, 0, 0)  # no tile: compiled for these types before the threads
        with cf.ThreadPoolExecutor(len(cuts) - 2) as pool:  # the tiles' columns are disjoint: no two write alike
            rest = [pool.submit(kernel, perm, off, y, out, total, col0, sq0, cuts[i], cuts[i + 1])
                    for i in range(1, len(cuts) - 1)]
            kernel(perm, off, y, out, total, col0, sq0, cuts[0], cuts[1])  # the first share, here meanwhile
            for f in rest:
                f.result()
