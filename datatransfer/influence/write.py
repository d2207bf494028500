"""Writing an influence store's groups: counts, influences with their standard errors, diagnostics; and what
the aggregation of every target shares (:class:`Job`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np
import zarr

from datatransfer.config import DiagnosticsConfig
from datatransfer.errors import AggregationError
from datatransfer.influence import diagnostics as diag
from datatransfer.influence import sparse
from datatransfer.influence.sums import averaging
from datatransfer.store.sweep_store import Store


@dataclass
class Job:
    """What the aggregation of every target shares."""

    store: Store
    estimator: str
    settings: Dict[str, Any]
    diagnostics: Optional[DiagnosticsConfig]
    knockoffs: Optional[np.ndarray]  # (store rows, U) knockoff masks, with diagnostics only
    block_rows: int
    memory_mb: int
    bar: Any = None  # tqdm progress bar over rows read, or None


def write_counts(g: zarr.Group, rows: np.ndarray, n_in: np.ndarray, unit_names) -> None:
    """The rows used and, per unit, how many of them had it in their mask (``n_in``) and how many not; with the
    coordinates ``row`` and ``unit`` (so that xarray labels them)."""
    n_in = np.asarray(n_in, dtype=np.int64)
    g.create_array("rows", data=rows.astype(np.int64), dimension_names=("row",))
    g.create_array("n_in", data=n_in, dimension_names=("unit",))
    g.create_array("n_out", data=len(rows) - n_in, dimension_names=("unit",))
    write_coords(g, row=rows, unit=unit_names)


def write_target(tg: zarr.Group, labels: np.ndarray, class_names, rows: np.ndarray, n_in: np.ndarray,
                 unit_names) -> None:
    """A target group's own arrays besides the influences: labels, the rows used and their counts."""
    tg.attrs.update({"class_names": list(class_names), "rows_used": int(len(rows))})
    tg.create_array("labels", data=labels.astype(np.int64), dimension_names=("example",))
    write_counts(tg, rows, n_in, unit_names)  # this target's rows (fewer than the root's when added later)
    write_coords(tg, example=np.arange(len(labels)))


def write_coords(g: zarr.Group, **coords) -> None:
    """One-dimensional coordinate arrays named like their dimension: xarray.open_zarr makes them the labels of that
    dimension (unit names, class names, example and row indices, modes, kinds)."""
    for name, values in coords.items():
        values = np.asarray(values)
        if values.dtype.kind in "USO":
            a = g.create_array(name, shape=values.shape, dtype=str, dimension_names=(name,))
            if len(values):
                a[:] = values.astype(object)
        else:
            g.create_array(name, data=values.astype(np.int64), dimension_names=(name,))


@dataclass
class Collected:
    """What the diagnostics need, gathered while reading: per row and (mode, kind) pair, the output averaged over
    the target's examples, and the outputs on a fixed sample of examples (for LDS)."""

    sample: np.ndarray  # (S,) sorted example indices
    aggregate: np.ndarray  # (rows, pairs)
    samples: np.ndarray  # (rows, pairs, S) float32

    @classmethod
    def empty(cls, rows: int, pairs: int, n: int, diagnostics: Optional[DiagnosticsConfig]) -> "Collected":
        rng = np.random.default_rng(diagnostics.seed if diagnostics else 0)
        sample = np.sort(rng.choice(n, size=min(n, diagnostics.lds_examples), replace=False)) if diagnostics \
            else np.zeros(0, dtype=np.int64)
        return cls(sample, np.zeros((rows, pairs)), np.zeros((rows, pairs, len(sample)), dtype=np.float32))

    def add(self, pos: np.ndarray, pidx: np.ndarray, y: np.ndarray) -> None:
        """Block ``y`` (b, pairs of a pass, n) of the rows at positions ``pos``, for the pairs at indices ``pidx``."""
        self.aggregate[np.ix_(pos, pidx)] = y.mean(axis=2)
        self.samples[np.ix_(pos, pidx)] = y[:, :, self.sample]

    def of(self, keep: np.ndarray) -> "Collected":
        """The rows where ``keep`` (bool over the rows) is True."""
        return Collected(self.sample, self.aggregate[keep], self.samples[keep])


def check_finite(store: Store, t: str, block: np.ndarray, y: np.ndarray, mi: np.ndarray, ki: np.ndarray) -> None:
    """Refuse a block of outputs with NaN or inf, naming the first such row, mode and kind."""
    bad = ~np.isfinite(y).all(axis=2)
    if bad.any():
        b, p = np.argwhere(bad)[0]
        raise AggregationError(
            f"outputs/{t}: completed row {int(block[b])} holds NaN or inf for mode "
            f"{store.modes[mi[p]]!r}, kind {store.output_kinds[ki[p]]!r} "
            f"({int(bad.any(axis=1).sum())} such rows in this block); fix or rerun those rows (`python -m "
            f"launch.verify store.path={store.path} verify.invalidate=true` clears their completion)")


def write_influences(g: zarr.Group, res, labels: np.ndarray, class_names, unit_names) -> None:
    """Per-example, per-class and overall influences of one (mode, kind) and, when the estimator gives them
    (difference of means; any estimator with bootstrap), their standard errors ``*_se`` of the same shapes; with the
    coordinates ``unit``, ``example`` and ``class``."""
    n_classes = len(class_names)
    write_coords(g, unit=unit_names, example=np.arange(len(labels)), **{"class": class_names})
    units, n = len(unit_names), len(labels)
    avg = averaging(labels, n_classes)
    empty = avg[:, :n_classes].sum(axis=0) == 0  # a class without test examples gets NaN (documented)
    chunk = max(1, min(n, 2 ** 20 // max(units, 1)))  # ~4 MB chunks of float32
    # dense influences and errors hardly compress (zstd: 74 against 84 MB for two 10,000 x 1,000 arrays) and
    # writing them raw takes 0.06 against 0.16 s, what every refresh pays; sparse ones (lasso) compress: zstd
    raw = {"compressors": None}
    if res.influence is None:  # only sparse weights (lasso, solver=stream): never formed dense
        per_class, overall = res.csr.group_means(labels, n_classes), res.csr.group_means(np.zeros(n, int), 1)[0]
        sparse.write(g, res.csr)
    else:
        infl = res.influence[:, :n]  # (U, n); difference of means has C + 1 averaged columns after these
        per_class, overall = (infl @ avg[:, :n_classes]).T, infl.mean(axis=1)
        if res.sparse:  # lasso: CSR per example (influence/sparse.py); dense only when small
            sparse.write(g, res.csr if res.csr is not None else infl.T)
        if res.dense:
            g.create_array("per_example", data=_rows_major(infl.T), chunks=(chunk, units),
                           dimension_names=("example", "unit"), **({} if res.sparse else raw))
    per_class[empty] = np.nan
    g.create_array("per_class", data=per_class.astype(np.float32), dimension_names=("class", "unit"))
    g.create_array("overall", data=overall, dimension_names=("unit",))
    g.create_array("mean_output", data=res.mean[:n].astype(np.float32), dimension_names=("example",))
    for name, values in res.extras.items():
        g.create_array(name, data=np.asarray(values), dimension_names=("example",))
    se = standard_errors(res, avg, n)
    if se is None:
        return
    se[1][empty] = np.nan
    g.attrs["se_method"] = "bootstrap" if res.replicates is not None else "welch"
    g.create_array("per_example_se", data=_rows_major(se[0]), chunks=(chunk, units),
                   dimension_names=("example", "unit"), **raw)
    g.create_array("per_class_se", data=se[1].astype(np.float32), dimension_names=("class", "unit"))
    g.create_array("overall_se", data=se[2], dimension_names=("unit",))


def _rows_major(a: np.ndarray) -> np.ndarray:
    """``a`` (a transposed view) as a C-ordered float32 array: ``astype`` would keep the transposed layout, and zarr
    then gathers every chunk from strided memory (measured: 0.13 against 0.05 s to write 40 MB)."""
    return np.ascontiguousarray(a, dtype=np.float32)


def standard_errors(res, avg: np.ndarray, n: int) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(per-example (n, U), per-class (C, U), overall (U,)) standard errors, or None when the estimate has none:
    the standard deviation of the bootstrap replicates (each replicate's per-class and overall influences are its
    per-example ones averaged, like the estimate's), else the Welch ones of the averaged columns."""
    if res.replicates is not None:
        reps = res.replicates[:, :, :n]  # (B, U, n)
        std = lambda a: np.nanstd(a, axis=0, ddof=1)  # noqa: E731
        return std(reps).T, std(reps @ avg[:, :-1]).T, std(reps @ avg[:, -1])
    if res.se is None:
        return None
    return res.se[:, :n].T, res.se[:, n:-1].T.copy(), res.se[:, -1]


def write_diagnostics(job: Job, t: str, rows: np.ndarray, masks: np.ndarray, collected: Collected,
                       root: zarr.Group) -> str:
    """The convergence curves of target ``t`` into ``root/diagnostics/t``; returns their note."""
    settings = job.diagnostics
    curves = diag.convergence(masks, rows, collected.aggregate, collected.samples, job.knockoffs[rows], settings,
                              seed=settings.seed, estimator=(job.estimator, job.settings))
    dg = root.require_group("diagnostics").require_group(t)
    dg.attrs.update({k: curves[k] for k in ("fit_rows", "heldout_rows", "top_k", "note")})
    dg.create_array("num_rows", data=curves["num_rows"], dimension_names=("point",))
    dg.create_array("lds_examples", data=collected.sample.astype(np.int64), dimension_names=("sample",))
    # One array per quantity with (mode, kind) axes: few files, and xarray reads them with named dims.
    shape = job.store.outputs(t).shape[1:3]  # (modes, kinds)
    for name in ("bootstrap_std", "rank_corr", "lds", "fdr"):
        dg.create_array(name, data=curves[name].reshape(*shape, -1), dimension_names=("mode", "kind", "point"))
    dg.create_array("knockoff_overall", data=curves["knockoff_overall"].reshape(*shape, -1),
                    dimension_names=("mode", "kind", "unit"))
    dg.create_array("aggregate_output", data=collected.aggregate.reshape(len(rows), *shape),
                    dimension_names=("row", "mode", "kind"))
    diag.write_extra(dg, curves, shape, settings)  # noise ceilings, null levels, convergence rule
    write_coords(dg, mode=job.store.modes, kind=job.store.output_kinds, unit=job.store.unit_names, row=rows)
    return curves["note"]
