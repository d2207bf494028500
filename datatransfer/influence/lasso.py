"""LASSO datamodels (the paper's Sec. 4.3 / Appendix D; Ilyas et al.'s datamodels): per output column (target
example) k, a sparse linear model of the output on the mask,

    min over (b, w)   (1/2N) sum_i (y_ik - b - x_i . w)^2 + lam_k |w|_1          (the bias b is not penalised)

- **Path.** lam_k runs over ``path_length`` values from lam_max(k) (the smallest penalty with w = 0:
  max_u |cov(x_u, y_k)|) down to ``eps`` lam_max(k), geometrically (scikit-learn's ``lasso_path`` grid), each
  solution warm-starting the next, fitted on the rows that are not held out.
- **Choice.** lam_k is the path value with the least squared error on held-out rows (a hash of the row index picks
  them, as for ridge; the same rows whatever the blocks or their order). The path stops once that error has not
  improved for ``patience`` steps (the small-lambda tail is where solves are slowest; 0 = the whole path).
- **Refit.** The model is fitted again on all rows at the chosen lam_k (warm started), as datamodels does.

The influence of unit u on column k is w_u: most entries are exactly zero, so results are written sparse (CSR per
example, docs/influence-format.md). Sufficient statistics are the normal equations of [1, x] on the fit and the
held-out rows (as for ridge): the (U+1)^2 Gram is formed once for every column of the (mode, kind), so the solver
only ever sees (U, U) and (U, K) matrices. Solvers (``solver``): ``cd``, coordinate descent with covariance updates
in numba on the CPU; ``torch``, FISTA on ``device`` (a GPU) — see lasso_solvers.py and docs/estimators.md for the
measured choice; ``stream``, the same FISTA with the (U, U) matrices replaced by passes over row blocks of the
masks (lasso_stream.py: memory ~ U x K, never U^2, for the paper's 1.28 M units); ``auto`` (the default), ``cd``
while the Gram form fits ``gram_max_mb`` (:func:`gram_fits`), else ``stream``. ``fanout`` solves blocks of columns
in other processes or Slurm tasks (lasso_fanout.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

from datatransfer.errors import EstimatorError
from datatransfer.influence.estimators import (
    Estimate,
    Estimator,
    _Moments,
    accumulate_split,
    check_coverage,
)
from datatransfer.influence.sparse import Csr

log = logging.getLogger(__name__)
SOLVERS = ("auto", "cd", "torch", "stream")
GRAM_COPIES = 8  # (U, U) float64 matrices the Gram form holds at its peak (moments, centred copies)


def gram_fits(units: int, gram_max_mb: float) -> bool:
    """solver=auto's rule: the Gram form (``cd``) when its matrices fit ``gram_max_mb``, else ``stream``."""
    return GRAM_COPIES * (units + 1) ** 2 * 8 <= gram_max_mb * 2 ** 20


def grid(c: np.ndarray, syy: np.ndarray, var_x_max: float, path_length: int, eps: float) -> np.ndarray:
    """(L, K) penalties: per column from lam_max = max_u |c_u| (0 for a constant column) down to eps * lam_max."""
    lam_max = np.abs(c).max(axis=1)
    lam_max[lam_max < 1e-12 * np.sqrt(np.maximum(syy, 0) * var_x_max)] = 0.0
    g = np.geomspace(1.0, eps, path_length) if path_length > 1 else np.ones(1)
    return g[:, None] * lam_max[None, :]


@dataclass
class Problem:
    """Everything a block of columns needs to be solved: the fit rows' centred moments (S, c, syy), the held-out
    rows' moments centred at the fit means (H, p, cyy_h, in sums), all rows' (S_all, c_all, syy_all), and the path."""

    s: Any  # (U, U) mask covariance on fit rows (solver=stream: a lasso_stream.Implicit operator, as h, s_all)
    c: np.ndarray  # (K, U) covariance of each column with the masks, fit rows
    syy: np.ndarray  # (K,) variance of each column, fit rows
    h: np.ndarray  # (U, U) held-out sums of (x - xbar)(x - xbar)^T
    p: np.ndarray  # (K, U) held-out sums of (x - xbar)(y - ybar)
    cyy: np.ndarray  # (K,) held-out sums of (y - ybar)^2
    s_all: np.ndarray
    c_all: np.ndarray
    syy_all: np.ndarray
    lambdas: np.ndarray  # (L, K) decreasing per column
    n_held: int

    def columns(self, cols: np.ndarray) -> "Problem":
        return Problem(self.s, self.c[cols], self.syy[cols], self.h, self.p[cols], self.cyy[cols], self.s_all,
                       self.c_all[cols], self.syy_all[cols], self.lambdas[:, cols], self.n_held)


def solve(problem: Problem, solver: str = "cd", device: str = "cpu", tol: float = 1e-4,
          max_iter: int = 1000, patience: int = 0) -> Dict[str, np.ndarray]:
    """Path, held-out choice and refit for every column of ``problem``. Returns w (K, U), lambda, sse (the chosen
    one), path_sse (L, K; +inf past an early stop), nnz (K,), not_converged (count of solves that hit ``max_iter``).
    ``patience`` > 0 stops an example's path once its held-out error has not improved for that many steps."""
    from datatransfer.influence import lasso_solvers as ls

    k = len(problem.syy)
    live = problem.lambdas[0] > 0  # a constant column has lam_max = 0: w = 0, nothing to fit
    w = np.zeros((k, problem.s.shape[0]))
    out = {"w": w, "lambda": np.zeros(k), "sse": problem.cyy.astype(np.float64).copy(),
           "path_sse": np.tile(problem.cyy, (len(problem.lambdas), 1)), "not_converged": 0}
    if live.any():
        q = problem.columns(np.flatnonzero(live))
        if solver == "cd":
            best, sse, _, capped = ls.path_cd(q.s, q.c, q.syy, q.lambdas, q.h, q.p, q.cyy, tol, max_iter,
                                              patience)
            choice = np.argmin(sse, axis=0)
            lam = q.lambdas[choice, np.arange(len(choice))]
            refit, capped2 = ls.refit_cd(q.s_all, q.c_all, q.syy_all, lam, best, tol, max_iter)
            left = int(np.sum(capped)) + int(np.sum(capped2))
        elif solver in ("torch", "stream"):
            refit, sse, lam, left = _solve_torch(q, device, tol, max_iter, patience)
            choice = np.argmin(sse, axis=0)
        else:
            raise EstimatorError(f"lasso solver must be one of {SOLVERS}, got {solver!r}")
        w[live], out["lambda"][live] = refit, lam
        out["sse"][live], out["path_sse"][:, live] = sse[choice, np.arange(len(choice))], sse
        out["not_converged"] = left
    out["nnz"] = (w != 0).sum(axis=1)
    return out


def _solve_torch(q: Problem, device: str, tol: float, max_iter: int, patience: int):
    import torch

    from datatransfer.influence import lasso_solvers as ls

    dev = torch.device(_device(device))
    t = {name: torch.as_tensor(np.ascontiguousarray(getattr(q, name)), dtype=torch.float64, device=dev)
         if isinstance(getattr(q, name), np.ndarray) else getattr(q, name).on(dev, torch.float64)
         for name in ("s", "c", "syy", "h", "p", "cyy", "s_all", "c_all", "syy_all", "lambdas")}
    best, sse, _, capped = ls.path_fista(t["s"], t["c"], t["syy"], t["lambdas"], t["h"], t["p"], t["cyy"], tol,
                                         max_iter, patience)
    choice = torch.argmin(sse, dim=0)
    lam = t["lambdas"][choice, torch.arange(len(choice), device=dev)]
    refit, left = ls.refit_fista(t["s_all"], t["c_all"], t["syy_all"], lam, best, tol, max_iter)
    return (refit.cpu().numpy(), sse.cpu().numpy(), lam.cpu().numpy(), int(capped.sum()) + int(left))


def _device(device: str) -> str:
    """``auto``: a GPU when there is one."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Lasso(Estimator):
    """See the module docstring. The influence of unit u on column k is the refitted w_u (exactly 0 for most)."""

    def __init__(self, path_length: int = 30, eps: float = 1e-3, holdout_fraction: float = 0.2, tol: float = 1e-4,
                 max_iter: int = 1000, solver: str = "auto", device: str = "cpu", dense_max_mb: float = 256.0,
                 fanout: Optional[Dict[str, Any]] = None, salt: int = 0, patience: int = 5,
                 run_tasks: Optional[Callable] = None, gram_max_mb: float = 4096.0, block_rows: int = 1024,
                 cache_mb: float = 2048.0, mask_store: str = ""):
        if path_length < 1 or not 0 < eps < 1:
            raise EstimatorError(f"lasso path_length must be >= 1 and eps in (0, 1), got {path_length}, {eps}")
        if not 0.0 < holdout_fraction < 1.0:
            raise EstimatorError(f"lasso holdout_fraction must lie strictly between 0 and 1, got {holdout_fraction}")
        if solver not in SOLVERS:
            raise EstimatorError(f"lasso solver must be one of {SOLVERS}, got {solver!r}")
        if patience < 0:
            raise EstimatorError(f"lasso patience must be >= 0, got {patience}")
        if tol <= 0 or max_iter < 1:
            raise EstimatorError(f"lasso tol must be > 0 and max_iter >= 1, got {tol}, {max_iter}")
        if gram_max_mb < 0 or block_rows < 1 or cache_mb < 0:
            raise EstimatorError(f"lasso gram_max_mb and cache_mb must be >= 0 and block_rows >= 1, got "
                                 f"{gram_max_mb}, {cache_mb}, {block_rows}")
        self.path_length, self.eps, self.holdout_fraction = int(path_length), float(eps), float(holdout_fraction)
        self.tol, self.max_iter, self.solver, self.device = float(tol), int(max_iter), solver, str(device)
        self.dense_max_mb, self.fanout, self.salt = float(dense_max_mb), dict(fanout or {}), int(salt)
        self.patience = int(patience)
        self.run_tasks = run_tasks  # fanout.launcher=slurm: a Slurm array's runner, passed in by the app
        self.gram_max_mb, self.block_rows, self.cache_mb = float(gram_max_mb), int(block_rows), float(cache_mb)
        self.mask_store = str(mask_store)  # solver=stream reads the masks from this sweep store (given by aggregate)
        self.used: Optional[str] = None  # the solver that runs: solver, or auto's choice on the first block
        self._fit: Optional[_Moments] = None
        self._held: Optional[_Moments] = None
        self._stream: Optional[Dict[str, list]] = None  # solver=stream: rows, outputs, packed masks (no store)
        self._counts = None  # (rows, n_in, mean output) once the problem is formed

    def settings(self) -> Dict[str, Any]:
        return {"path_length": self.path_length, "eps": self.eps, "holdout_fraction": self.holdout_fraction,
                "holdout_salt": self.salt, "tol": self.tol, "max_iter": self.max_iter, "solver": self.solver,
                "patience": self.patience, "gram_max_mb": self.gram_max_mb,
                "objective": "(1/2N) sum (y - b - x.w)^2 + lambda |w|_1, lambda per output column on held-out "
                             "rows, then refitted on all rows"}

    def update(self, rows: np.ndarray, masks: np.ndarray, y: np.ndarray) -> None:
        if self.used is None:
            self.used = self.solver if self.solver != "auto" else \
                ("cd" if gram_fits(np.shape(masks)[1], self.gram_max_mb) else "stream")
            log.info("lasso: solver %s for %d units", self.used, np.shape(masks)[1])
        if self.used != "stream":
            self._fit, self._held = accumulate_split(self._fit, self._held, rows, masks, y, self.holdout_fraction,
                                                     self.salt)
            return
        if self._stream is None:
            self._stream = {"rows": [], "y": [], "packed": [], "units": np.shape(masks)[1]}
        self._stream["rows"].append(np.asarray(rows, dtype=np.int64))
        self._stream["y"].append(np.asarray(y, dtype=np.float64).reshape(len(rows), -1))
        if not self.mask_store:  # no store to read them from again: kept here, bit-packed
            from datatransfer.store import mask_bits

            self._stream["packed"].append(mask_bits.encode(masks))

    def problem(self, unit_names: Optional[Sequence[str]] = None) -> Problem:
        """The statistics the solver needs (after every row was added)."""
        if self.used == "stream":
            return self._stream_problem(unit_names)
        if self._fit is None:
            raise EstimatorError("no rows to estimate from")
        if self._fit.n < 2 or self._held.n < 1:
            raise EstimatorError(f"lasso needs fit and held-out rows to choose lambda; have {self._fit.n} fit and "
                                 f"{self._held.n} held-out rows")
        every = _Moments(self._fit.gram.shape[0] - 1, self._fit.xy.shape[1])
        every += self._fit
        every += self._held
        n_in = np.rint(every.gram[0, 1:]).astype(np.int64)
        check_coverage(n_in, every.n - n_in, unit_names)
        self._counts = (every.n, n_in, every.xy[0] / every.n)
        n = self._fit.n
        xbar, ybar = self._fit.gram[0, 1:] / n, self._fit.xy[0] / n
        cxx, cxy, cyy = self._fit.centered(xbar, ybar)
        h, p, cyy_h = self._held.centered(xbar, ybar)
        na = every.n
        xa, ya = every.gram[0, 1:] / na, every.xy[0] / na
        axx, axy, ayy = every.centered(xa, ya)
        c = np.ascontiguousarray((cxy / n).T)
        return Problem(cxx / n, c, cyy / n, h, np.ascontiguousarray(p.T), cyy_h, axx / na,
                       np.ascontiguousarray((axy / na).T), ayy / na,
                       grid(c, cyy / n, np.diag(cxx / n).max(), self.path_length, self.eps), self._held.n)

    def stream_job(self, unit_names: Optional[Sequence[str]] = None):
        """solver=stream: the rows' masks and outputs as a lasso_stream.Job (after every row was added), checked for
        coverage (one pass counting each unit's rows)."""
        from datatransfer.influence import lasso_stream
        from datatransfer.influence.estimators import holdout_rows

        if self._stream is None:
            raise EstimatorError("no rows to estimate from")
        st = self._stream
        rows = np.concatenate(st["rows"])
        order = np.argsort(rows, kind="stable")  # the store is read in row order
        rows, y = rows[order], np.concatenate(st["y"])[order]
        held = holdout_rows(rows, self.holdout_fraction, self.salt)
        if held.sum() < 1 or (~held).sum() < 2:
            raise EstimatorError(f"lasso needs fit and held-out rows to choose lambda; have {(~held).sum()} fit and "
                                 f"{held.sum()} held-out rows")
        packed = np.concatenate(st["packed"])[order] if st["packed"] else None
        source = lasso_stream.MaskRows(st["units"], rows, self.mask_store, packed, self.block_rows)
        n_in = lasso_stream.counts(source)
        check_coverage(n_in, len(rows) - n_in, unit_names)
        self._counts = (len(rows), n_in, y.mean(axis=0))
        return lasso_stream.Job(source, y, held, self.path_length, self.eps, self.cache_mb)

    def _stream_problem(self, unit_names: Optional[Sequence[str]]) -> Problem:
        """solver=stream, every column at once (small K; result() forms the statistics a block at a time)."""
        from datatransfer.influence import lasso_stream

        job = self.stream_job(unit_names)
        return lasso_stream.problem(job.source, job.y, job.held, self.path_length, self.eps, _device(self.device),
                                    self.cache_mb)[0]

    def _solve(self, unit_names: Optional[Sequence[str]]):
        """(solve's output for every column, held-out sums of squares per column, held-out rows)."""
        fanned = self.fanout.get("launcher", "none") != "none"
        if self.used == "stream":
            from datatransfer.influence import lasso_stream

            problem = self.stream_job(unit_names)
            ss, n_held = problem.heldout_ss(), int(problem.held.sum())
        else:
            problem = self.problem(unit_names)
            ss, n_held = problem.cyy, problem.n_held
        if fanned:
            from datatransfer.influence.lasso_fanout import solve_fanned_out

            out = solve_fanned_out(problem, self.fanout, self.used, self.device, self.tol, self.max_iter,
                                   self.patience, self.run_tasks)
        elif self.used == "stream":
            out = lasso_stream.solve_blocks(problem, int(self.fanout.get("examples_per_task", 256)),
                                            _device(self.device), self.tol, self.max_iter, self.patience)
        else:
            out = solve(problem, self.used, self.device, self.tol, self.max_iter, self.patience)
        return out, ss, n_held

    def result(self, unit_names: Optional[Sequence[str]] = None) -> Estimate:
        out, ss, n_held = self._solve(unit_names)
        if out["not_converged"]:
            log.warning("lasso: %d solve(s) stopped at max_iter=%d before the duality gap reached tol=%g",
                        out["not_converged"], self.max_iter, self.tol)
        every_n, n_in, mean = self._counts
        with np.errstate(invalid="ignore", divide="ignore"):
            r2 = 1.0 - out["sse"] / ss
        w = out["w"]  # (K, U): dense, or a sparse.Csr (solver=stream)
        dense = len(out["lambda"]) * len(n_in) * 4 <= self.dense_max_mb * 2 ** 20
        csr = w if isinstance(w, Csr) else None
        influence = (csr.dense() if csr is not None else w).T if dense or csr is None else None
        return Estimate(influence, n_in, every_n - n_in, mean, every_n, extras={
            "lambda": out["lambda"], "heldout_r2": r2, "heldout_mse": out["sse"] / n_held,
            "nnz": out["nnz"].astype(np.int64)}, sparse=True, dense=dense, csr=csr)
