"""LASSO on the masks themselves (``estimator.solver=stream``): for units too many for the (U, U) Gram matrix (the
paper's 1.28 M source images: 13 TB), the mask covariance S is never formed. Each product S W that FISTA needs is
computed from row blocks of the (bit-packed) mask matrix X, for a block of K target examples at once:

    S W = (1/n) X_c^T (X_c W),   X_c = X - 1 xbar^T,   so   S W = (1/n) [X^T V - xbar (1^T V)],  V = X W - 1 (xbar W)

one pass over the rows per product, each pass serving all K examples (W is (U, K)). Memory: a few (U, K) matrices
and one block of rows (unpacked to 0/1 on the device), never U^2; the packed masks are kept on the device between
passes when they fit ``cache_mb`` (11.5 GB at the paper's 71,828 x 1.28 M: an 80 GB GPU holds them), else read from
the store again on every pass.

The problem, the path (lambda_max, the geometric grid), the held-out choice and the refit are those of the Gram form
(lasso.py): the statistics that are (K, U) or smaller (covariance of each example with the masks, held-out
cross-moments) come from one pass over the rows (:func:`moments`), and the three (U, U) matrices of
:class:`datatransfer.influence.lasso.Problem` (fit, held-out, all rows) are replaced by :class:`Implicit` operators
that FISTA (lasso_solvers.path_fista / refit_fista) uses through ``@``. The same duality-gap stopping rule holds, so
the solution equals the Gram solvers' to the tolerance."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import numpy as np

from datatransfer.store import mask_bits


@dataclass
class MaskRows:
    """The masks of ``rows`` (sorted store rows), bit-packed, read in blocks: from the sweep store at ``store``
    (its ``masks`` array, packed or not) or, without a store, from ``packed`` (rows, ceil(U / 8)) in memory."""

    units: int
    rows: np.ndarray
    store: str = ""
    packed: Optional[np.ndarray] = None
    block_rows: int = 1024

    def blocks(self) -> Iterator[Tuple[slice, np.ndarray]]:
        """(positions in ``rows``, packed masks of those rows) per block."""
        if self.packed is not None:
            for i in range(0, len(self.rows), self.block_rows):
                yield slice(i, i + self.block_rows), self.packed[i:i + self.block_rows]
            return
        import zarr

        arr = zarr.open_group(self.store, mode="r")["masks"]
        for i in range(0, len(self.rows), self.block_rows):
            rows = self.rows[i:i + self.block_rows]
            r0, r1 = int(rows[0]), int(rows[-1]) + 1
            data = np.asarray(arr[r0:r1])[rows - r0]  # one slice read (zarr is fast at slices), used rows kept
            yield slice(i, i + len(rows)), data if mask_bits.packed(arr) else mask_bits.encode(data)


class Device:
    """The rows' masks on a torch device: packed blocks kept there when they fit ``cache_mb``, unpacked per pass."""

    def __init__(self, source: MaskRows, device, dtype, cache_mb: float):
        self.source, self.device, self.dtype = source, device, dtype
        self.cached = None
        if len(source.rows) * math.ceil(source.units / 8) <= cache_mb * 2 ** 20:
            self.cached = [(s, self._put(p)) for s, p in source.blocks()]
        self.passes = 0

    def _put(self, packed: np.ndarray):
        import torch

        return torch.as_tensor(np.ascontiguousarray(packed), device=self.device)

    def blocks(self):
        """(positions, 0/1 masks (b, U) in ``dtype``) per block: one pass over the rows."""
        import torch

        self.passes += 1
        # byte -> its 8 bits as 0/1 in little bit order (mask_bits.BITORDER): one gather per block
        table = ((torch.arange(256, device=self.device).unsqueeze(-1) >> torch.arange(8, device=self.device)) & 1)
        table = table.to(self.dtype)
        for s, p in self.cached if self.cached is not None else ((s, self._put(p)) for s, p in self.source.blocks()):
            yield s, table[p.long()].reshape(p.shape[0], -1)[:, :self.source.units]


class Implicit:
    """The matrix scale * sum over the rows picked by ``pick`` of (x - xbar)(x - xbar)^T, never formed: ``op @ W``
    streams the rows once. Picklable (numpy arrays and a path) until :meth:`on` puts it on a device."""

    def __init__(self, source: MaskRows, pick: np.ndarray, xbar: np.ndarray, scale: float, cache_mb: float):
        self.source, self.pick, self.xbar, self.scale, self.cache_mb = source, pick, xbar, float(scale), cache_mb
        self.shape = (source.units, source.units)
        self._dev: Optional[Device] = None
        self._xbar_t = None

    def __getstate__(self):
        return {**self.__dict__, "_dev": None, "_xbar_t": None}

    def on(self, device, dtype) -> "Implicit":
        import torch

        if self._dev is None or self._dev.device != device or self._dev.dtype != dtype:
            sub = MaskRows(self.source.units, self.source.rows[self.pick], self.source.store,
                           None if self.source.packed is None else self.source.packed[self.pick],
                           self.source.block_rows)
            self._dev = Device(sub, device, dtype, self.cache_mb)
            self._xbar_t = torch.as_tensor(self.xbar, device=device, dtype=dtype)
        return self

    @property
    def passes(self) -> int:
        return 0 if self._dev is None else self._dev.passes

    def __matmul__(self, w):
        import torch

        out = torch.zeros_like(w)
        total = torch.zeros(w.shape[1:], dtype=w.dtype, device=w.device)
        shift = self._xbar_t @ w
        for _, x in self._dev.blocks():
            v = x @ w - shift
            out += x.T @ v
            total += v.sum(0)
        out -= torch.outer(self._xbar_t, total) if w.dim() == 2 else self._xbar_t * total
        return out * self.scale

    def lipschitz(self, iters: int = 100, rtol: float = 1e-4, safety: float = 1.02) -> float:
        """The largest eigenvalue by subspace (power) iteration on 4 vectors, until it changes by < rtol; times
        ``safety``, as the iteration approaches it from below and a step of 1 / (an underestimate) can diverge."""
        import torch

        gen = torch.Generator(device="cpu").manual_seed(0)
        v = torch.randn((self.shape[0], 4), generator=gen, dtype=self._xbar_t.dtype).to(self._xbar_t.device)
        last = 0.0
        for it in range(iters):
            v, _ = torch.linalg.qr(v)
            z = self @ v
            top = float(torch.linalg.eigvalsh(v.T @ z)[-1])
            v = z
            if it >= 5 and abs(top - last) <= rtol * abs(top):
                break
            last = top
        return max(top, 1e-12) * safety


def _sums(dev: Device, y: np.ndarray, held: np.ndarray):
    """One pass: per side (fit, held out): n, sum x (U,), sum y (K,), sum x y^T (U, K), sum y^2 (K,)."""
    import torch

    u, k = dev.source.units, y.shape[1]
    out = {side: [0, torch.zeros(u, dtype=dev.dtype, device=dev.device), np.zeros(k),
                  torch.zeros((u, k), dtype=dev.dtype, device=dev.device), np.zeros(k)] for side in (0, 1)}
    for s, x in dev.blocks():
        yb, hb = y[s], held[s]
        for side in (0, 1):
            pick = np.flatnonzero(hb == bool(side))
            if len(pick) == 0:
                continue
            ys, t = yb[pick], torch.as_tensor(pick, device=dev.device)
            o = out[side]
            o[0] += len(pick)
            o[1] += x[t].sum(0)
            o[2] += ys.sum(0)
            o[3] += x[t].T @ torch.as_tensor(ys, dtype=dev.dtype, device=dev.device)
            o[4] += np.einsum("ij,ij->j", ys, ys)
    return {side: (o[0], o[1].cpu().numpy(), o[2], o[3].cpu().numpy(), o[4]) for side, o in out.items()}


def _centred(n, sx, sy, sxy, syy, xbar, ybar):
    """Sums of (x - xbar)(y - ybar) (U, K) and (y - ybar)^2 (K,) from raw sums."""
    cxy = sxy - np.outer(xbar, sy) - np.outer(sx, ybar) + n * np.outer(xbar, ybar)
    return cxy, syy - 2 * ybar * sy + n * ybar ** 2


def problem(source: MaskRows, y: np.ndarray, held: np.ndarray, path_length: int, eps: float, device: str = "cpu",
            cache_mb: float = 1024.0):
    """The :class:`~datatransfer.influence.lasso.Problem` of ``y`` (rows of ``source`` x K) on the masks, its (U, U)
    matrices as :class:`Implicit` operators; and every unit's count of rows (n_in). One pass over the rows."""
    import torch

    from datatransfer.influence.lasso import Problem, grid

    y = np.asarray(y, dtype=np.float64)
    dev = Device(source, torch.device(device), torch.float64, 0.0)
    sums = _sums(dev, y, held)
    fit, ho = sums[0], sums[1]
    n, na = fit[0], fit[0] + ho[0]
    xbar, ybar = fit[1] / n, fit[2] / n
    cxy, cyy = _centred(*fit, xbar, ybar)
    p, cyy_h = _centred(*ho, xbar, ybar)
    sx_all, sy_all = fit[1] + ho[1], fit[2] + ho[2]
    xa, ya = sx_all / na, sy_all / na
    axy, ayy = _centred(na, sx_all, sy_all, fit[3] + ho[3], fit[4] + ho[4], xa, ya)
    c = np.ascontiguousarray((cxy / n).T)
    var_x = np.clip(xbar * (1 - xbar), 0, None)  # the diagonal of S for 0/1 masks
    lambdas = grid(c, cyy / n, var_x.max(), path_length, eps)
    ops = [Implicit(source, pick, mean, scale, cache_mb) for pick, mean, scale in
           ((~held, xbar, 1.0 / n), (held, xbar, 1.0), (np.ones_like(held), xa, 1.0 / na))]
    q = Problem(ops[0], c, cyy / n, ops[1], np.ascontiguousarray(p.T), cyy_h, ops[2],
                np.ascontiguousarray((axy / na).T), ayy / na, lambdas, int(ho[0]))
    return q, np.rint(sx_all).astype(np.int64)


def counts(source: MaskRows) -> np.ndarray:
    """Rows that include each unit (U,): a pass without products (the coverage check comes before any solve)."""
    total = np.zeros(source.units, dtype=np.int64)
    for _, packed in source.blocks():
        total += mask_bits.decode(packed, source.units).sum(axis=0)
    return total


@dataclass
class Job:
    """The stream solver's work for many target examples: the rows' masks, their outputs ``y`` (rows x K) and the
    held-out rows. Solved a block of examples at a time (:meth:`solve`), each block forming only its own (block, U)
    statistics: memory ~ U x block, whatever K (10,000 examples x 1.28 M units would be 100 GB per statistic)."""

    source: MaskRows
    y: Optional[np.ndarray]  # None in a pickled job: the tasks read their columns from a file
    held: np.ndarray
    path_length: int
    eps: float
    cache_mb: float

    def solve(self, y: np.ndarray, device: str, tol: float, max_iter: int, patience: int):
        """lasso.solve's output for the columns ``y`` (rows x block)."""
        from datatransfer.influence.lasso import solve
        from datatransfer.influence.sparse import Csr

        q, _ = problem(self.source, y, self.held, self.path_length, self.eps, device, self.cache_mb)
        out = solve(q, "stream", device, tol, max_iter, patience)
        out["w"] = Csr.of(out["w"])  # the blocks' weights are merged sparse: all of them dense would be examples x U
        return out

    def heldout_ss(self) -> np.ndarray:
        """Per example: sum over held-out rows of (y - mean of y over the fit rows)^2 (what R^2 compares with)."""
        ybar = self.y[~self.held].mean(axis=0)
        return ((self.y[self.held] - ybar) ** 2).sum(axis=0)


def solve_blocks(job: Job, per: int, device: str, tol: float, max_iter: int, patience: int):
    """Every example of ``job`` in this process, ``per`` at a time (lasso_fanout.py runs the blocks elsewhere)."""
    from datatransfer.influence.lasso_fanout import Progress, merge

    k = job.y.shape[1]
    parts, progress = [], Progress(k)
    for start in range(0, k, per):
        parts.append((start, job.solve(job.y[:, start:start + per], device, tol, max_iter, patience)))
        progress.add(min(per, k - start))
    return merge(parts, k)
