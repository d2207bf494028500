"""Estimators: from (mask, output) rows to the influence of every unit on every output column.

Every estimator streams: ``update`` is called once per block of rows (masks (b, U) bool, outputs (b, K) float) and
keeps only sufficient statistics whose size does not grow with the number of rows, so a store of any length is read
with bounded memory. ``result`` turns the statistics into an :class:`Estimate`. The sums are taken in float64; the
result depends on the set of rows, not on their order or on how they were cut into blocks (up to rounding).

- :class:`DifferenceOfMeans` is the paper's estimator (Eq. 1, Algorithm 1): mean output over the rows whose mask
  contains the unit minus the mean over the rows whose mask lacks it.
- :class:`Ridge` is the datamodels variant (Appendix B): a linear model of the output on the mask, with a bias,
  fitted in closed form by ridge regression; the penalty is chosen per output column on held-out rows.

A new estimator (LASSO path, example-level units) implements the same three methods.
"""

from __future__ import annotations

import abc
import concurrent.futures as cf
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from datatransfer.errors import EstimatorError


@dataclass
class Estimate:
    influence: Optional[np.ndarray]  # float64 (U, K): effect of unit u on output column k; None: only ``csr``
    n_in: np.ndarray  # int64 (U,): rows whose mask contains the unit
    n_out: np.ndarray  # int64 (U,): rows whose mask lacks it
    mean: np.ndarray  # float64 (K,): mean output over all rows used
    rows: int  # number of rows used
    extras: Dict[str, np.ndarray] = field(default_factory=dict)  # estimator-specific per-column arrays
    se: Optional[np.ndarray] = None  # float64 (U, K): Welch standard error (difference of means), else None
    replicates: Optional[np.ndarray] = None  # float64 (B, U, K): bootstrap replicates of ``influence``, else None
    sparse: bool = False  # also written as CSR per column (most influences exactly 0: lasso)
    dense: bool = True  # per_example written dense (False when too large; the CSR then holds it)
    csr: Any = None  # sparse.Csr (K, U) of the influences when the estimator gives them so (lasso, solver=stream)

    def dense_influence(self) -> np.ndarray:
        """``influence``, formed from ``csr`` when only that was kept (small fits: diagnostics, bootstrap)."""
        return self.influence if self.influence is not None else self.csr.dense().T


class Estimator(abc.ABC):
    """Streaming estimator. Use: ``est.update(rows, masks, y)`` per block, then ``est.result(unit_names)``."""

    @abc.abstractmethod
    def update(self, rows: np.ndarray, masks: np.ndarray, y: np.ndarray) -> None:
        """Add a block: ``rows`` (b,) store row indices, ``masks`` bool (b, U), ``y`` (b, K) outputs."""

    @abc.abstractmethod
    def result(self, unit_names: Optional[Sequence[str]] = None) -> Estimate:
        """The estimate from every row added so far. ``unit_names`` only improves error messages."""

    @abc.abstractmethod
    def settings(self) -> Dict[str, Any]:
        """What, besides the rows, determines the result (stored with it)."""


def _as_2d(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    return y[:, None] if y.ndim == 1 else y


def _check_blocks(masks: np.ndarray, y: np.ndarray) -> None:
    if masks.ndim != 2 or y.ndim != 2 or masks.shape[0] != y.shape[0]:
        raise EstimatorError(f"masks {masks.shape} and outputs {y.shape} must be (b, U) and (b, K) with equal b")
    if not np.isfinite(y).all():
        raise EstimatorError("outputs contain NaN or infinite values")


def check_coverage(n_in: np.ndarray, n_out: np.ndarray, unit_names: Optional[Sequence[str]] = None) -> None:
    """Refuse, with the units named, when a unit is in every row or in none (its influence is undefined)."""
    names = list(unit_names) if unit_names is not None else [f"unit {u}" for u in range(len(n_in))]

    def show(idx: np.ndarray) -> str:
        listed = ", ".join(repr(names[i]) for i in idx[:8])
        return listed + (f" and {len(idx) - 8} more" if len(idx) > 8 else "")

    never_in, never_out = np.flatnonzero(n_in == 0), np.flatnonzero(n_out == 0)
    rows = int(n_in[0] + n_out[0]) if len(n_in) else 0
    problems = []
    if len(never_in):
        problems.append(f"{len(never_in)} unit(s) in none of the {rows} rows used ({show(never_in)})")
    if len(never_out):
        problems.append(f"{len(never_out)} unit(s) in every one of the {rows} rows used ({show(never_out)})")
    if problems:
        raise EstimatorError("cannot estimate influences: " + "; ".join(problems)
                             + ". Every unit needs rows with it and rows without it: wait for more completed rows.")


def welch(s_in: np.ndarray, s_in_sq: np.ndarray, total: np.ndarray, total_sq: np.ndarray, n_in: np.ndarray,
          rows: int, threads: int = 1):
    """Difference of means and its Welch standard error from the sufficient statistics of one set of rows.

    ``s_in`` = sum_i x_iu y_ik and ``s_in_sq`` = sum_i x_iu y_ik^2 (U, K); ``total``, ``total_sq`` = sum_i y_ik,
    sum_i y_ik^2 (K,); ``n_in`` (U,) rows with the unit; ``rows`` rows in all. With s1^2, s0^2 the sample variances
    (n - 1 in the denominator) of y over the n1 rows with the unit and the n0 rows without it,

        influence = mean_in - mean_out,    se = sqrt(s1^2 / n1 + s0^2 / n0)

    (NaN where n1 or n0 is below 2). Returns (influence, se), float64 (U, K). ``threads``: the units are split
    between that many threads (numpy releases the GIL in each pass); every entry gets the same operations
    whatever the split, so the same bits."""
    # In blocks of units that stay in the CPU's cache: 0.14 s against ~0.35 s for whole-array passes with U x K
    # temporaries (1,000 x 10,011), and against 0.03 s + 0.44-0.77 s of numba's start-up for the compiled kernel
    # used before in a process that had not loaded numba (a refresh). The same IEEE operations in the same order
    # as the formulas above, so the same bits.
    units, cols = s_in.shape
    infl, se = np.empty((units, cols)), np.empty((units, cols))
    n1 = np.asarray(n_in, dtype=np.float64)
    n0 = rows - n1
    with np.errstate(divide="ignore", invalid="ignore"):
        r1, r0 = 1.0 / n1, 1.0 / n0
        w1, w0 = r1 / (n1 - 1), r0 / (n0 - 1)
    undefined = (n1 < 2) | (n0 < 2)
    step = max(1, min(units, 2 ** 17 // max(cols, 1)))  # ~1 MB per temporary

    def part(lo: int, hi: int) -> None:
        b, t, v = (np.empty((step, cols)) for _ in range(3))
        with np.errstate(all="ignore"):
            for u0 in range(lo, hi, step):
                at = slice(u0, min(hi, u0 + step))
                m, a, a2 = at.stop - u0, s_in[at], s_in_sq[at]
                b_, t_, v_ = b[:m], t[:m], v[:m]
                rr1, rr0 = r1[at, None], r0[at, None]
                np.subtract(total, a, out=b_)  # sums over the rows without the unit
                np.multiply(a, rr1, out=t_)
                np.multiply(b_, rr0, out=v_)
                np.subtract(t_, v_, out=infl[at])
                np.multiply(a, a, out=t_)  # in-mask sum of squared deviations
                t_ *= rr1
                np.subtract(a2, t_, out=t_)
                np.multiply(b_, b_, out=v_)  # out-of-mask one
                v_ *= rr0
                np.subtract(total_sq, a2, out=b_)
                np.subtract(b_, v_, out=v_)
                # rounding can make a zero sum of squares slightly negative; NaN stays NaN
                np.copyto(t_, 0.0, where=t_ < 0.0)
                np.copyto(v_, 0.0, where=v_ < 0.0)
                t_ *= w1[at, None]
                v_ *= w0[at, None]
                t_ += v_
                np.sqrt(t_, out=se[at])

    cuts = [int(c) for c in np.linspace(0, units, max(1, min(threads, units // step or 1)) + 1)]
    if len(cuts) == 2:
        part(0, units)
    else:
        with cf.ThreadPoolExecutor(len(cuts) - 2) as pool:
            rest = [pool.submit(part, cuts[i], cuts[i + 1]) for i in range(1, len(cuts) - 1)]
            part(cuts[0], cuts[1])
            for f in rest:
                f.result()
    se[undefined] = np.nan
    return infl, se


class DifferenceOfMeans(Estimator):
    """Eq. 1: Infl[c -> k] = sum_i x_ic y_ik / n_in(c) - sum_i (1 - x_ic) y_ik / n_out(c).

    Sufficient statistics: S = M^T [Y, Y^2] (U, 2K), the column totals 1^T Y, 1^T Y^2 (K,) and n_in = M^T 1 (U,).
    The out-of-mask sums are the totals minus the in-mask sums, so one matrix product per block does all the work;
    the squares give the Welch standard error (:func:`welch`).
    """

    def __init__(self) -> None:
        self._s: Optional[np.ndarray] = None  # (U, 2K): in-mask sums of y, then of y^2
        self._total: Optional[np.ndarray] = None  # (2K,)
        self._n_in: Optional[np.ndarray] = None
        self._rows = 0

    def settings(self) -> Dict[str, Any]:
        return {}

    def update(self, rows: np.ndarray, masks: np.ndarray, y: np.ndarray) -> None:
        masks, y = np.asarray(masks, dtype=bool), _as_2d(y)
        _check_blocks(masks, y)
        if self._s is None:
            self._s = np.zeros((masks.shape[1], 2 * y.shape[1]))
            self._total = np.zeros(2 * y.shape[1])
            self._n_in = np.zeros(masks.shape[1], dtype=np.int64)
        y64 = y.astype(np.float64, copy=False)
        yy = np.hstack([y64, y64 * y64])
        self._s += masks.T.astype(np.float64) @ yy  # BLAS dgemm: (U, b) @ (b, 2K)
        self._total += yy.sum(axis=0)
        self._n_in += masks.sum(axis=0)
        self._rows += masks.shape[0]

    def result(self, unit_names: Optional[Sequence[str]] = None) -> Estimate:
        if self._s is None:
            raise EstimatorError("no rows to estimate from")
        n_in = self._n_in.copy()
        n_out = self._rows - n_in
        check_coverage(n_in, n_out, unit_names)
        k = self._s.shape[1] // 2
        infl, se = welch(self._s[:, :k], self._s[:, k:], self._total[:k], self._total[k:], n_in, self._rows)
        return Estimate(infl, n_in, n_out, self._total[:k] / self._rows, self._rows, se=se)


def holdout_rows(rows: np.ndarray, fraction: float, salt: int = 0) -> np.ndarray:
    """Bool (len(rows),): whether each store row is held out. A hash of (row index, salt), so the split is the same
    whatever order or blocks the rows come in, and a row keeps its side as the store grows."""
    offset = (0x9E3779B97F4A7C15 * (int(salt) + 1)) % 2 ** 64
    with np.errstate(over="ignore"):  # splitmix64 relies on wrap-around arithmetic
        z = np.asarray(rows, dtype=np.uint64) + np.uint64(offset)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2 ** 53) < fraction


class _Moments:
    """Streaming (U+1)x(U+1) normal equations of the augmented design [1, x]: enough for any ridge fit."""

    def __init__(self, units: int, cols: int):
        self.gram = np.zeros((units + 1, units + 1))  # [1, x]^T [1, x]
        self.xy = np.zeros((units + 1, cols))  # [1, x]^T y
        self.yy = np.zeros(cols)  # sum of y^2 per column

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        xa = np.hstack([np.ones((x.shape[0], 1)), x])
        self.gram += xa.T @ xa
        self.xy += xa.T @ y
        self.yy += np.einsum("ij,ij->j", y, y)

    def __iadd__(self, other: "_Moments") -> "_Moments":
        self.gram += other.gram
        self.xy += other.xy
        self.yy += other.yy
        return self

    @property
    def n(self) -> int:
        return int(round(self.gram[0, 0]))

    def centered(self, xbar: np.ndarray, ybar: np.ndarray):
        """Sums of (x - xbar)(x - xbar)^T, (x - xbar)(y - ybar), (y - ybar)^2 over these rows, for given means."""
        n, sx, sy = self.n, self.gram[0, 1:], self.xy[0]
        cxx = self.gram[1:, 1:] - np.outer(xbar, sx) - np.outer(sx, xbar) + n * np.outer(xbar, xbar)
        cxy = self.xy[1:] - np.outer(xbar, sy) - np.outer(sx, ybar) + n * np.outer(xbar, ybar)
        cyy = self.yy - 2 * ybar * sy + n * ybar ** 2
        return cxx, cxy, cyy


# In units of the per-row mean squared error; the masks' variance is alpha (1 - alpha) = 0.25 per unit, so the
# grid runs from almost no shrinkage to strong shrinkage. Same list as RidgeEstimatorConfig.lambdas.
DEFAULT_LAMBDAS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)


def accumulate_split(fit: Optional[_Moments], held: Optional[_Moments], rows: np.ndarray, masks: np.ndarray,
                     y: np.ndarray, fraction: float, salt: int, hold_out: bool = True) -> Tuple[_Moments, _Moments]:
    """Add a block to the moments of the fit rows and of the held-out rows (a hash of the row index picks them;
    none when ``hold_out`` is false), creating both on the first block: ridge and LASSO choose lambda this way."""
    masks, y = np.asarray(masks, dtype=bool), _as_2d(y)
    _check_blocks(masks, y)
    if fit is None:
        fit, held = _Moments(masks.shape[1], y.shape[1]), _Moments(masks.shape[1], y.shape[1])
    x, y64 = masks.astype(np.float64), y.astype(np.float64, copy=False)
    out = holdout_rows(rows, fraction, salt) if hold_out else np.zeros(len(rows), dtype=bool)
    if out.any():
        held.add(x[out], y64[out])
    if (~out).any():
        fit.add(x[~out], y64[~out])
    return fit, held


class Ridge(Estimator):
    """Datamodels variant (Appendix B): per output column k, minimise over (b, w)

        (1/N) sum_i (y_ik - b - x_i^T w)^2 + lam * |w|^2        (the bias b is not penalised)

    Closed form from the normal equations accumulated in blocks: with x_bar, y_bar the means, Sxx the covariance of
    the masks and Sxy their covariance with y, w = (Sxx + lam I)^-1 Sxy and b = y_bar - x_bar^T w. One
    eigendecomposition of Sxx gives the solution for every lam. Each column's lam is the grid value with the least
    squared error on held-out rows (a hash of the row index picks them); the final fit then uses all rows.
    The influence of unit u on column k is w_u.
    """

    def __init__(self, lambdas: Sequence[float] = DEFAULT_LAMBDAS, holdout_fraction: float = 0.2, salt: int = 0):
        if len(lambdas) == 0 or min(lambdas) <= 0:
            raise EstimatorError(f"ridge lambdas must be positive and non-empty, got {list(lambdas)}")
        if not 0.0 < holdout_fraction < 1.0:
            raise EstimatorError(f"ridge holdout_fraction must lie strictly between 0 and 1, got {holdout_fraction}")
        self.lambdas = sorted(float(v) for v in lambdas)
        self.holdout_fraction = float(holdout_fraction)
        self.salt = int(salt)
        self._fit: Optional[_Moments] = None
        self._held: Optional[_Moments] = None

    def settings(self) -> Dict[str, Any]:
        return {"lambdas": self.lambdas, "holdout_fraction": self.holdout_fraction, "holdout_salt": self.salt,
                "objective": "(1/N) sum (y - b - x.w)^2 + lambda |w|^2, lambda per output column"}

    def update(self, rows: np.ndarray, masks: np.ndarray, y: np.ndarray) -> None:
        self._fit, self._held = accumulate_split(self._fit, self._held, rows, masks, y, self.holdout_fraction,
                                                 self.salt, hold_out=len(self.lambdas) > 1)

    @staticmethod
    def _solve(m: _Moments):
        """Means, eigendecomposition of the mask covariance, and the covariance with y in its eigenbasis."""
        n = m.n
        xbar, ybar = m.gram[0, 1:] / n, m.xy[0] / n
        cxx, cxy, _ = m.centered(xbar, ybar)
        evals, q = np.linalg.eigh(cxx / n)
        return xbar, ybar, np.maximum(evals, 0.0), q, q.T @ (cxy / n)

    def _choose(self) -> np.ndarray:
        """Index into the grid of each column's lambda: least held-out squared error."""
        if len(self.lambdas) == 1:
            return np.zeros(self._fit.xy.shape[1], dtype=int)
        if self._fit.n < 2 or self._held.n < 1:
            raise EstimatorError(f"ridge needs fit and held-out rows to choose lambda; have {self._fit.n} fit and "
                                 f"{self._held.n} held-out rows")
        xbar, ybar, evals, q, z = self._solve(self._fit)
        cxx, cxy, cyy = self._held.centered(xbar, ybar)
        h, p = q.T @ cxx @ q, q.T @ cxy  # held-out statistics in the fit's eigenbasis
        sse = np.empty((len(self.lambdas), len(cyy)))
        for i, lam in enumerate(self.lambdas):
            v = z / (evals + lam)[:, None]  # w = q @ v
            sse[i] = cyy - 2 * np.einsum("uk,uk->k", v, p) + np.einsum("uk,uk->k", h @ v, v)
        return np.argmin(sse, axis=0)

    def result(self, unit_names: Optional[Sequence[str]] = None) -> Estimate:
        if self._fit is None:
            raise EstimatorError("no rows to estimate from")
        choice = self._choose()
        everything = _Moments(self._fit.gram.shape[0] - 1, self._fit.xy.shape[1])
        everything += self._fit
        everything += self._held
        n = everything.n
        n_in = np.rint(everything.gram[0, 1:]).astype(np.int64)
        check_coverage(n_in, n - n_in, unit_names)
        _, ybar, evals, q, z = self._solve(everything)
        w = np.empty_like(z)
        for i in np.unique(choice):
            cols = choice == i
            w[:, cols] = q @ (z[:, cols] / (evals + self.lambdas[i])[:, None])
        lam = np.asarray(self.lambdas)[choice]
        return Estimate(w, n_in, n - n_in, ybar, n, extras={"lambda": lam})


def poisson_weights(rows: np.ndarray, replicates: int, seed: int) -> np.ndarray:
    """Int (len(rows), B): each row's count in each bootstrap replicate, Poisson(1) from (seed, row index), so a row
    weighs the same whatever block or order it comes in, and a growing store keeps every earlier row's counts."""
    return np.stack([np.random.default_rng([int(seed), int(r)]).poisson(1.0, replicates) for r in rows]) \
        if len(rows) else np.zeros((0, replicates), dtype=np.int64)


class Bootstrap(Estimator):
    """Any estimator, plus B replicates of it on resampled rows (the Poisson bootstrap: row i enters replicate b
    :func:`poisson_weights` times, an approximation of drawing N rows with replacement that streams). The estimate is
    the inner estimator's on all rows; ``replicates`` holds the B replicate influences (their standard deviation is
    the bootstrap standard error). Costs B + 1 times the inner estimator's time and memory."""

    def __init__(self, make_inner, replicates: int, seed: int = 0):
        if replicates < 2:
            raise EstimatorError(f"bootstrap needs at least 2 replicates, got {replicates}")
        self.inner = make_inner()
        self.reps = [make_inner() for _ in range(replicates)]
        self.seed = int(seed)

    def settings(self) -> Dict[str, Any]:
        return {**self.inner.settings(), "bootstrap": len(self.reps), "bootstrap_seed": self.seed}

    def update(self, rows: np.ndarray, masks: np.ndarray, y: np.ndarray) -> None:
        self.inner.update(rows, masks, y)
        counts = poisson_weights(rows, len(self.reps), self.seed)
        for b, rep in enumerate(self.reps):
            idx = np.repeat(np.arange(len(rows)), counts[:, b])  # a row drawn k times enters k times
            if len(idx):
                rep.update(np.asarray(rows)[idx], np.asarray(masks)[idx], _as_2d(y)[idx])

    def result(self, unit_names: Optional[Sequence[str]] = None) -> Estimate:
        est = self.inner.result(unit_names)
        reps = []
        for rep in self.reps:
            try:
                reps.append(rep.result(unit_names).dense_influence())
            except EstimatorError:  # a replicate where a unit is never in (or never out): too few rows for it
                reps.append(np.full_like(est.dense_influence(), np.nan))
        est.replicates = np.stack(reps)
        est.se = None
        return est


def make(name: str, bootstrap: int = 0, bootstrap_seed: int = 0, **settings: Any) -> Estimator:
    """An estimator by its config name ('dim', 'ridge' or 'lasso') and settings; ``bootstrap`` > 0 wraps it in
    :class:`Bootstrap` with that many replicates."""
    if bootstrap:
        return Bootstrap(lambda: make(name, **settings), bootstrap, bootstrap_seed)
    if name == "dim":
        if settings:
            raise EstimatorError(f"estimator 'dim' takes no settings besides bootstrap, got {sorted(settings)}")
        return DifferenceOfMeans()
    if name == "ridge":
        return Ridge(**settings)
    if name == "lasso":
        from datatransfer.influence.lasso import Lasso

        return Lasso(**settings)
    raise EstimatorError(f"unknown estimator {name!r}; choose 'dim', 'ridge' or 'lasso'")
