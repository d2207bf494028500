"""Sufficient statistics of difference of means, for a set of rows of one target: what a block of rows adds, and the
influences and Welch standard errors they give.

For the P (mode, kind) pairs of a pass, with K = n + C + 1 output columns per pair (the n examples, then each row's
output averaged over each of the C target classes and over all examples, :func:`averaging`):

    s_in   (P, U, 2K)  sum over rows of x_iu * [y_ik, y_ik^2]      (one float64 matrix product per read block)
    total  (P, 2K)     sum over rows of [y_ik, y_ik^2]
    n_in   (U,)        rows with the unit;   rows: rows in all

Sums over disjoint sets of rows add, so a store's statistics are the sum of its row blocks' (and a block's are its
earlier rows' plus its new rows'). Besides the sums, the diagnostics keep per row the overall column (each row's
output averaged over the target's examples) and the outputs on a fixed sample of examples (for LDS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Set

import numpy as np

from datatransfer.influence.blocks import compute_threads, read_blocks
from datatransfer.influence.estimators import Estimate, check_coverage, welch
from datatransfer.influence.masksum import mask_sums


def averaging(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, C + 1): ``y @ averaging`` is each target class's mean output (columns 0..C-1; a class without examples
    gets a column of zeros, its influence is NaN) and the mean over all examples (column C)."""
    n = len(labels)
    a = np.zeros((n, n_classes + 1))
    a[np.arange(n), labels] = 1.0
    counts = a[:, :n_classes].sum(axis=0)
    a[:, :n_classes] /= np.where(counts > 0, counts, 1.0)
    a[:, n_classes] = 1.0 / max(n, 1)
    return a


@dataclass
class Sums:
    """The statistics of a set of rows for P pairs (see the module's docstring). They add and subtract."""

    s_in: np.ndarray  # (P, U, 2K) float64
    total: np.ndarray  # (P, 2K) float64
    n_in: np.ndarray  # (U,) int64
    count: int  # rows

    @classmethod
    def zeros(cls, pairs: int, units: int, cols: int) -> "Sums":
        return cls(np.zeros((pairs, units, 2 * cols)), np.zeros((pairs, 2 * cols)), np.zeros(units, np.int64), 0)

    def __add__(self, o: "Sums") -> "Sums":
        return Sums(self.s_in + o.s_in, self.total + o.total, self.n_in + o.n_in, self.count + o.count)

    def __sub__(self, o: "Sums") -> "Sums":
        return Sums(self.s_in - o.s_in, self.total - o.total, self.n_in - o.n_in, self.count - o.count)

    def add(self, masks: np.ndarray, y: np.ndarray, aug: np.ndarray, threads: int = 1) -> None:
        """Add a block of rows: ``masks`` (b, U) bool, ``y`` (b, P, n) the outputs (float32 as stored, or float64),
        ``aug`` (b, P, C + 1) float64 their class and overall averages (masksum.py: the four-Russians kernel for
        many rows, a BLAS product for few; both in float64)."""
        n, k = y.shape[2], self.total.shape[1] // 2
        for p in range(y.shape[1]):
            mask_sums(masks, y[:, p, :], self.s_in[p], self.total[p], 0, k, threads)
            mask_sums(masks, aug[:, p, :], self.s_in[p], self.total[p], n, k + n, threads)
        self.n_in += masks.sum(axis=0)
        self.count += len(masks)

    def estimate(self, p: int, unit_names=None) -> Estimate:
        """Difference of means and Welch standard errors of pair ``p`` (all K columns)."""
        n, n_in = int(self.count), self.n_in.copy()
        check_coverage(n_in, n - n_in, unit_names)
        k = self.total.shape[1] // 2
        infl, se = welch(self.s_in[p][:, :k], self.s_in[p][:, k:], self.total[p, :k], self.total[p, k:], n_in, n,
                         compute_threads(reading=False))
        return Estimate(infl, n_in, n - n_in, self.total[p, :k] / n, n, se=se)


@dataclass
class RowData:
    """Per row, what the diagnostics need: the output averaged over all examples and the outputs on a sample."""

    rows: np.ndarray  # (r,) int64 store rows, ascending
    aggregate: np.ndarray  # (r, P) float64
    samples: np.ndarray  # (r, P, S) float32


def read_sums(outputs, masks: np.ndarray, rows: np.ndarray, mi: np.ndarray, ki: np.ndarray, avg: np.ndarray,
              sample: np.ndarray, block_rows: int, skipped: Optional[Set[int]],
              check: Callable[[np.ndarray, np.ndarray], None], progress: Callable[[int], None],
              batch_mb: int = 256):
    """(Sums, RowData) of ``rows`` (those that can be read; the others go to ``skipped``) of a target's ``outputs``
    array, for the pairs (mi[p], ki[p]); read ``block_rows`` at a time by a reading thread that runs up to a batch
    ahead (at most ``batch_mb`` of read blocks). Read blocks are gathered into batches (up to ``batch_mb`` of outputs
    and 2,048 rows: the kernel needs more than :data:`masksum.MIN_ROWS`), each summed while the next one is read.
    ``check(block, y)`` refuses bad values; ``progress(rows)`` is called after each read block."""
    n, k, pairs = avg.shape[0], avg.shape[0] + avg.shape[1], len(mi)
    sums = Sums.zeros(pairs, masks.shape[1], k)
    batch = int(np.clip(batch_mb * 2 ** 20 // (4 * k * pairs), block_rows, 2048))
    threads = compute_threads(outputs)
    ybuf = np.empty((batch + block_rows, pairs, n), dtype=outputs.dtype)  # a batch, as stored (float32)
    abuf = np.empty((batch + block_rows, pairs, k - n))
    got, agg, smp, filled = [], [], [], 0
    # read up to a batch ahead, and at most batch_mb of raw blocks (they hold every mode and kind, not only this pass's)
    block_mb = block_rows * int(np.prod(outputs.shape[1:])) * outputs.dtype.itemsize / 2 ** 20
    ahead = max(1, min(-(-batch // block_rows), int(batch_mb // max(block_mb, 1e-9))))
    for block, data in read_blocks(outputs, rows, block_rows, skipped, ahead=ahead):
        y = data[:, mi, ki, :]  # (b, P, n)
        check(block, y)
        at = slice(filled, filled + len(block))
        ybuf[at] = y
        # one (b·P, n) x (n, C + 1) product: a (b, P, n) operand is multiplied row by row (measured 2.2x slower)
        np.matmul(y.reshape(-1, n).astype(np.float64), avg, out=abuf[at].reshape(-1, k - n))
        got.append(block)
        agg.append(abuf[at, :, -1].copy())
        smp.append(y[:, :, sample])
        filled += len(block)
        progress(len(block))
        if filled >= batch:
            sums.add(masks[np.concatenate(got)[-filled:]], ybuf[:filled], abuf[:filled], threads)
            filled = 0
    if filled:
        sums.add(masks[np.concatenate(got)[-filled:]], ybuf[:filled], abuf[:filled], threads)
    if not got:
        return sums, RowData(np.zeros(0, np.int64), np.zeros((0, len(mi))), np.zeros((0, len(mi), len(sample)),
                                                                                     np.float32))
    return sums, RowData(np.concatenate(got).astype(np.int64), np.concatenate(agg), np.concatenate(smp))
