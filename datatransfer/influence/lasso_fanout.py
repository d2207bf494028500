"""Fan-out of LASSO solves over blocks of target examples (``estimator.fanout``): the statistics are read from the
sweep store once (here), written to a folder as .npy files, and each block of ``examples_per_task`` columns is solved
by another process (``launcher: local``, a process pool) or a Slurm array task (``launcher: slurm``: through the
runner ``run_tasks(fn, items, on_done)`` that ``python -m aggregate`` passes in, launchers/slurm/array_map.py, as for
the row blocks of difference of means; this package imports nothing of Slurm). A task memory-maps the shared matrices,
solves its columns with :func:`datatransfer.influence.lasso.solve` and returns them; the results equal a single
process's (each column's solve depends only on the statistics and its own data). With ``solver=stream`` the problem
is a lasso_stream.Job: the outputs are saved (y.npy), the rest pickled (the store's path, rows, settings), and each
task forms its own block's statistics and streams the masks from the sweep store itself."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import multiprocessing
import os
import pickle
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from datatransfer.errors import EstimatorError

log = logging.getLogger(__name__)
_FIELDS = ("s", "c", "syy", "h", "p", "cyy", "s_all", "c_all", "syy_all", "lambdas")


class SolveBlock:
    """A picklable task: solve columns [start, stop) of the problem saved in ``folder``."""

    def __init__(self, folder: str, start: int, stop: int, solver: str, device: str, tol: float, max_iter: int,
                 patience: int, threads: int = 0):
        self.folder, self.start, self.stop = folder, start, stop
        self.solver, self.device, self.tol, self.max_iter, self.threads = solver, device, tol, max_iter, threads
        self.patience = patience

    def __call__(self) -> Tuple[int, Dict[str, Any]]:
        from datatransfer.influence.lasso import Problem, solve

        if self.threads:
            import numba

            numba.set_num_threads(self.threads)
        if (Path(self.folder) / "job.pkl").is_file():  # solver=stream: this block's statistics are formed here
            job = _load(Path(self.folder), "job")
            y = np.asarray(np.load(Path(self.folder) / "y.npy", mmap_mode="r")[:, self.start:self.stop])
            return self.start, job.solve(y, self.device, self.tol, self.max_iter, self.patience)
        a = {f: _load(Path(self.folder), f) for f in _FIELDS}
        cols = slice(self.start, self.stop)
        whole = {f: np.asarray(a[f]) if isinstance(a[f], np.ndarray) else a[f] for f in ("s", "h", "s_all")}
        q = Problem(whole["s"], np.asarray(a["c"][cols]), np.asarray(a["syy"][cols]), whole["h"],
                    np.asarray(a["p"][cols]), np.asarray(a["cyy"][cols]), whole["s_all"],
                    np.asarray(a["c_all"][cols]), np.asarray(a["syy_all"][cols]),
                    np.asarray(a["lambdas"][:, cols]), int(np.load(Path(self.folder) / "n_held.npy")))
        return self.start, solve(q, self.solver, self.device, self.tol, self.max_iter, self.patience)


def _save(problem, folder: Path) -> None:
    if not hasattr(problem, "syy"):  # a lasso_stream.Job: the outputs, and the rest (paths, rows, settings) pickled
        np.save(folder / "y.npy", problem.y)
        with open(folder / "job.pkl", "wb") as fh:
            pickle.dump(dataclasses.replace(problem, y=None), fh)
        return
    for f in _FIELDS:
        value = getattr(problem, f)
        if isinstance(value, np.ndarray):
            np.save(folder / f"{f}.npy", np.ascontiguousarray(value))
        else:  # solver=stream's operators: the store's path (or packed masks), rows and means; each task streams
            with open(folder / f"{f}.pkl", "wb") as fh:
                pickle.dump(value, fh)
    np.save(folder / "n_held.npy", np.asarray(problem.n_held))


def _load(folder: Path, f: str):
    if (folder / f"{f}.pkl").is_file():
        with open(folder / f"{f}.pkl", "rb") as fh:
            return pickle.load(fh)
    return np.load(folder / f"{f}.npy", mmap_mode="r")


class Progress:
    """Log lines "lasso: E of K examples solved (P%), elapsed, ETA" as blocks of examples finish (hours at the
    paper's scale, so the ETA is what a user watches)."""

    def __init__(self, total: int):
        self.total, self.done, self.start = int(total), 0, time.perf_counter()

    def add(self, examples: int) -> None:
        self.done += int(examples)
        elapsed = time.perf_counter() - self.start
        eta = elapsed / max(self.done, 1) * (self.total - self.done)
        log.info("lasso: %d of %d examples solved (%.0f%%), %s elapsed, ETA %s", self.done, self.total,
                 100.0 * self.done / max(self.total, 1), _hms(elapsed), _hms(eta))


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def merge(parts: List[Tuple[int, Dict[str, Any]]], k: int) -> Dict[str, Any]:
    """The blocks' results as one; weights stay sparse (sparse.Csr) when the blocks return them so."""
    from datatransfer.influence.sparse import Csr

    parts = sorted(parts, key=lambda p: p[0])
    out = {name: np.concatenate([p[1][name] for p in parts], axis=1 if name == "path_sse" else 0)
           for name in ("lambda", "sse", "path_sse", "nnz")}
    ws = [p[1]["w"] for p in parts]
    out["w"] = Csr.concat(ws) if isinstance(ws[0], Csr) else np.concatenate(ws)
    out["not_converged"] = sum(int(p[1]["not_converged"]) for p in parts)
    assert len(out["lambda"]) == k
    return out


def solve_fanned_out(problem, fanout: Dict[str, Any], solver: str, device: str, tol: float,
                     max_iter: int, patience: int, run_tasks: Optional[Callable] = None) -> Dict[str, Any]:
    """Same result as ``lasso.solve(problem, ...)``, the columns solved in blocks elsewhere (``launcher: slurm``:
    by ``run_tasks``, a Slurm array's runner)."""
    k = len(problem.syy) if hasattr(problem, "syy") else problem.y.shape[1]
    per = int(fanout.get("examples_per_task", 256))
    launcher = fanout.get("launcher", "local")
    if launcher == "slurm" and run_tasks is None:
        raise EstimatorError("estimator.fanout.launcher=slurm needs the Slurm array runner that `python -m aggregate` "
                             "passes in (launchers/slurm/array_map.py); from Python, give aggregate(..., "
                             "fanout_tasks=array_map.mapper(slurm_settings, out))")
    given = str(fanout.get("folder") or "")
    folder = Path(given) if given else Path(tempfile.mkdtemp(prefix=".lasso-fanout-", dir=os.getcwd()))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        _save(problem, folder)
        blocks = [(s, min(s + per, k)) for s in range(0, k, per)]
        log.info("lasso: %d examples in %d block(s) of <= %d, launcher=%s, files in %s", k, len(blocks), per,
                 launcher, folder)
        progress = Progress(k)
        if launcher == "local":
            parts = _run_local(folder, blocks, fanout, (solver, device, tol, max_iter, patience), progress)
        elif launcher == "slurm":
            threads = int((fanout.get("slurm") or {}).get("cpus_per_task") or 0)
            tasks = [SolveBlock(str(folder), s, e, solver, device, tol, max_iter, patience, threads)
                     for s, e in blocks]
            parts = run_tasks(_call, tasks, lambda i: progress.add(blocks[i][1] - blocks[i][0]))
        else:
            raise EstimatorError(f"estimator.fanout.launcher must be none, local or slurm, got {launcher!r}")
        return merge(parts, k)
    finally:
        if not given:
            shutil.rmtree(folder, ignore_errors=True)


def _run_local(folder, blocks, fanout, how, progress: Progress):
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = int(fanout.get("workers", 0)) or cpus
    workers = max(1, min(workers, len(blocks)))
    threads = max(1, cpus // workers)
    tasks = [SolveBlock(str(folder), s, e, *how, threads) for s, e in blocks]
    # spawn: numba's and torch's thread pools are not safe to fork
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_call, task) for task in tasks]
        for done in cf.as_completed(futures):
            progress.add(len(done.result()[1]["lambda"]))
        return [f.result() for f in futures]


def _call(task: SolveBlock):
    return task()
