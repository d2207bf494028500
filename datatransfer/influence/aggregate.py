"""Aggregation: a sweep store's completed rows -> the influence store (format in docs/influence-format.md).

For every target x mode x output kind: per-example influences (n_t, U), their mean over each target class
(C_t, U) and over all examples (U,), the mean output per example, and the convergence diagnostics. The store is read
in blocks of rows with one zarr call per block (the rows' chunks are fetched and decompressed concurrently), while a
background thread already reads the next block; accumulation is a float64 matrix product per block. Memory is bounded
by the block size and the estimator's statistics, never by the number of rows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import numpy as np
import zarr

from datatransfer.config import DiagnosticsConfig
from datatransfer.errors import AggregationError, EstimatorError
from datatransfer.influence import diagnostics as diag
from datatransfer.influence import sparse
from datatransfer.influence.blocks import blas_limit, completed_rows, plan, read_blocks, rows_used
from datatransfer.influence.estimators import Estimator, make
from datatransfer.influence.reader import FORMAT, FORMAT_VERSION, Influence
from datatransfer.store.sweep_store import Store

log = logging.getLogger(__name__)

# Names at the root of the influence store that a target may not take.
RESERVED = {"rows", "n_in", "n_out", "diagnostics"}


def default_out(store_path: str | os.PathLike) -> Path:
    return Path(store_path).resolve().parent / "influence.zarr"


@dataclass
class Summary:
    """What a run of :func:`aggregate` did, for the CLI to print."""

    out: Path
    rows_used: int
    rows_total: int
    targets: List[str]
    estimator: str
    seconds: float
    diagnostics: Dict[str, str] = field(default_factory=dict)  # target -> note (empty when all curves exist)
    unreadable: Dict[str, List[int]] = field(default_factory=dict)  # target -> completed rows left out (damaged)


@dataclass
class _Job:
    """What the aggregation of every target shares."""

    store: Store
    estimator: str
    settings: Dict[str, Any]
    diagnostics: Optional[DiagnosticsConfig]
    knockoffs: Optional[np.ndarray]  # (store rows, U) knockoff masks, with diagnostics only
    block_rows: int
    memory_mb: int
    bar: Any = None  # tqdm progress bar over rows read, or None


def aggregate(
    store_path: str | os.PathLike,
    out: Optional[str | os.PathLike] = None,
    estimator: str = "dim",
    estimator_settings: Optional[Dict[str, Any]] = None,
    diagnostics: Optional[DiagnosticsConfig] = DiagnosticsConfig(),
    block_rows: int = 0,
    memory_mb: int = 1024,
    progress: bool = True,
) -> Summary:
    """Compute the influence store of the store at ``store_path`` from its completed rows; returns a summary.

    ``out`` defaults to ``<store's parent>/influence.zarr``; it is replaced atomically (readers never see a
    half-written one). ``diagnostics=None`` skips the convergence curves.
    """
    start = time.perf_counter()
    if diagnostics is not None and not diagnostics.enabled:
        diagnostics = None
    store = Store.open(store_path)
    out = _out_path(store, out)
    clash = RESERVED.intersection(store.all_targets)
    if clash:
        raise AggregationError(f"target name(s) {sorted(clash)} clash with the influence store's own arrays")
    settings = dict(estimator_settings or {})
    full_settings = make(estimator, **settings).settings()  # also fails on bad settings before reading anything
    rows = completed_rows(store)
    if len(rows) == 0:
        raise AggregationError(f"{store.path} has no completed rows yet ({store.num_rows} rows planned)")
    target_rows = _target_rows(store, rows)
    targets = list(target_rows)
    scheme = diag.mask_scheme(store.attrs.get("config"), store.masks)
    knock = diag.knockoff_masks(scheme[0], store.num_rows, len(store.unit_names), scheme[1], scheme[2]) \
        if diagnostics else None
    job = _Job(store, estimator, settings, diagnostics, knock, block_rows, memory_mb)
    notes: Dict[str, str] = {}
    used: Dict[str, np.ndarray] = {}  # each target's rows used: its completed rows whose outputs could be read
    with _writing(out) as root:
        job.bar = _progress_bar(progress, total=sum(
            len(target_rows[t]) * len(plan(store, t, estimator, block_rows, memory_mb)[1]) for t in targets))
        for t in targets:
            used[t], note = _aggregate_target(job, t, target_rows[t], root)
            if note:
                notes[t] = note
        if job.bar is not None:
            job.bar.close()
        rows, unreadable = rows_used(store, rows, target_rows, used)
        root.attrs.update({**_root_attrs(store, rows, targets, estimator, full_settings, diagnostics, scheme),
                           "rows_unreadable": unreadable})
        _write_counts(root, rows, store.masks[rows])
        if diagnostics:
            root.require_group("diagnostics").create_array(
                "knockoff_masks", data=knock, chunks=(min(len(knock), 4096), knock.shape[1]),
                dimension_names=("row", "unit"))
    return Summary(out, len(rows), store.num_rows, targets, estimator, time.perf_counter() - start, notes,
                   unreadable)


def _out_path(store: Store, out: Optional[str | os.PathLike]) -> Path:
    """Where the influence store goes: ``out`` or the default, never inside the sweep store."""
    out = Path(out).resolve() if out else default_out(store.path)
    if out == store.path.resolve() or store.path.resolve() in out.parents:
        raise AggregationError(f"out={out} would write inside the sweep store {store.path}; choose another path")
    if (out / "zarr.json").is_file():  # an influence store is replaced only by one of the same sweep store
        attrs = zarr.open_group(str(out), mode="r").attrs
        if attrs.get("format") != FORMAT:
            raise AggregationError(f"{out} exists and is not an influence store; refusing to replace it")
        if attrs.get("store") != str(store.path.resolve()):
            raise AggregationError(f"{out} holds the influences of another sweep store ({attrs.get('store')}); "
                                   f"refusing to replace them with those of {store.path.resolve()}: give this one "
                                   f"its own out=PATH")
    elif out.exists():
        raise AggregationError(f"{out} exists and is not an influence store; refusing to replace it")
    return out


def _target_rows(store: Store, rows: np.ndarray) -> Dict[str, np.ndarray]:
    """Each target's own completed rows: ``rows`` for the original targets; targets added later (transfer only) may
    lag behind. A target without any yet is left out, with a message."""
    targets = store.all_targets
    target_rows = {t: rows if t in store.targets else completed_rows(store, t) for t in targets}
    for t in [t for t in targets if len(target_rows[t]) == 0]:
        log.info(f"target {t}: no completed rows yet, left out")
        del target_rows[t]
    log.info(f"reading {store.path}: {len(rows)} of {store.num_rows} rows completed; {len(store.unit_names)} units; "
             f"targets {', '.join(target_rows)}; modes {', '.join(store.modes)}; kinds "
             f"{', '.join(store.output_kinds)}")
    for t, done in target_rows.items():
        if len(done) != len(rows):
            log.info(f"  target {t} (added later): {len(done)} rows completed")
    return target_rows


@contextlib.contextmanager
def _writing(out: Path) -> Iterator[zarr.Group]:
    """A new influence store, written in a temporary folder beside ``out`` and put at ``out`` once complete; on any
    error (or Ctrl-C) the temporary folder is removed and ``out`` is left as it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.writing-{uuid.uuid4().hex[:8]}"
    try:
        yield zarr.open_group(store=str(tmp), mode="w-")
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _root_attrs(store: Store, rows, targets, estimator, settings, diagnostics, scheme) -> Dict[str, Any]:
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "store": str(store.path.resolve()), "store_fingerprint": store.fingerprint,
        "store_rows": store.num_rows, "rows_used": int(len(rows)),
        "estimator": {"name": estimator, "settings": settings},
        "unit": store.attrs.get("unit", "class"), "unit_names": store.unit_names,
        "targets": targets, "modes": store.modes, "output_kinds": store.output_kinds,
        "config": store.attrs.get("config", {}),
        "diagnostics": None if not diagnostics else {
            **{k: getattr(diagnostics, k) for k in ("holdout_fraction", "bootstrap", "points", "top_k",
                                                   "lds_examples", "seed")},
            "estimator": "dim", "knockoff_seed": scheme[0] + diag.KNOCKOFF_SEED_OFFSET,
            "mask_alpha": scheme[1], "mask_scheme": scheme[2]},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "datatransfer_version": _version(),
    }


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("datatransfer")
    except Exception:  # not installed (run from a checkout): the version is only informative
        return ""


def _progress_bar(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm import tqdm

    # Appears only once a run has taken 2 s (delay), so quick runs and tests stay quiet.
    return tqdm(total=total, unit="row", desc="aggregating", file=sys.stderr, mininterval=1.0, delay=2.0,
                leave=False)


def _write_counts(g: zarr.Group, rows: np.ndarray, masks: np.ndarray) -> None:
    """The rows used and, per unit, how many of them had it in their mask and how many not."""
    n_in = masks.sum(axis=0).astype(np.int64)
    g.create_array("rows", data=rows.astype(np.int64), dimension_names=("row",))
    g.create_array("n_in", data=n_in, dimension_names=("unit",))
    g.create_array("n_out", data=len(rows) - n_in, dimension_names=("unit",))


@dataclass
class _Collected:
    """What the diagnostics need, gathered while reading: per row and (mode, kind) pair, the output averaged over
    the target's examples, and the outputs on a fixed sample of examples (for LDS)."""

    sample: np.ndarray  # (S,) sorted example indices
    aggregate: np.ndarray  # (rows, pairs)
    samples: np.ndarray  # (rows, pairs, S) float32

    @classmethod
    def empty(cls, rows: int, pairs: int, n: int, diagnostics: Optional[DiagnosticsConfig]) -> "_Collected":
        rng = np.random.default_rng(diagnostics.seed if diagnostics else 0)
        sample = np.sort(rng.choice(n, size=min(n, diagnostics.lds_examples), replace=False)) if diagnostics \
            else np.zeros(0, dtype=np.int64)
        return cls(sample, np.zeros((rows, pairs)), np.zeros((rows, pairs, len(sample)), dtype=np.float32))

    def add(self, pos: np.ndarray, pidx: np.ndarray, y: np.ndarray) -> None:
        """Block ``y`` (b, pairs of a pass, n) of the rows at positions ``pos``, for the pairs at indices ``pidx``."""
        self.aggregate[np.ix_(pos, pidx)] = y.mean(axis=2)
        self.samples[np.ix_(pos, pidx)] = y[:, :, self.sample]

    def of(self, keep: np.ndarray) -> "_Collected":
        """The rows where ``keep`` (bool over the rows) is True."""
        return _Collected(self.sample, self.aggregate[keep], self.samples[keep])


def _aggregate_target(job: _Job, t: str, rows: np.ndarray, root: zarr.Group) -> Tuple[np.ndarray, str]:
    """Influences (and diagnostics) of target ``t`` from ``rows``, into ``root/t``; returns the rows used (``rows``
    but those whose outputs chunk cannot be decoded: each left out with a warning) and the diagnostics note."""
    store = job.store
    labels, class_names = store.labels(t), store.class_names(t)
    tg = root.require_group(t)
    block_rows, passes = plan(store, t, job.estimator, job.block_rows, job.memory_mb)
    pairs = [p for group in passes for p in group]
    collected = _Collected.empty(len(rows), len(pairs), store.outputs(t).shape[-1], job.diagnostics)
    skipped: Set[int] = set()
    for i, group in enumerate(passes):
        before = len(skipped)
        ests = _read_pass(job, t, rows, group, block_rows, np.array([pairs.index(p) for p in group]), collected,
                          skipped)
        if i > 0 and len(skipped) > before:  # rows used by the earlier passes' estimates: they would disagree
            raise AggregationError(f"outputs/{t}: rows {sorted(skipped)[before:]} became unreadable while being "
                                   f"aggregated (written right now?); run the command again")
        for (m, k), est in zip(group, ests):
            try:
                res = est.result(store.unit_names)
            except EstimatorError as e:
                raise AggregationError(f"target {t!r}, mode {store.modes[m]!r}, kind "
                                       f"{store.output_kinds[k]!r}: {e}") from e
            _write_influences(tg.require_group(store.modes[m]).require_group(store.output_kinds[k]),
                              res, labels, len(class_names))
            del res
    keep = ~np.isin(rows, sorted(skipped))
    rows = rows[keep]
    tg.attrs.update({"class_names": class_names, "rows_used": int(len(rows))})
    tg.create_array("labels", data=labels.astype(np.int64), dimension_names=("example",))
    _write_counts(tg, rows, store.masks[rows])  # this target's rows (fewer than the root's when added later)
    if not job.diagnostics:
        return rows, ""
    return rows, _write_diagnostics(job, t, rows, store.masks[rows], collected.of(keep), root)


def _read_pass(job: _Job, t: str, rows: np.ndarray, group: List[Tuple[int, int]], block_rows: int,
               pidx: np.ndarray, collected: _Collected, skipped: Set[int]) -> List[Estimator]:
    """One pass over ``rows`` of target ``t``: an estimator per (mode, kind) pair of ``group``, fed block by block
    (rows whose chunk cannot be decoded are left out and added to ``skipped``)."""
    ests: List[Estimator] = [make(job.estimator, **job.settings) for _ in group]
    mi, ki = np.array([m for m, _ in group]), np.array([k for _, k in group])
    masks = job.store.masks
    with blas_limit():
        for block, data in read_blocks(job.store.outputs(t), rows, block_rows, skipped):
            y = data[:, mi, ki, :]  # (b, pairs of this pass, n)
            _check_finite(job.store, t, block, y, mi, ki)
            mb = masks[block]
            for j, est in enumerate(ests):
                est.update(block, mb, y[:, j, :])
            collected.add(np.searchsorted(rows, block), pidx, y)
            if job.bar is not None:
                job.bar.update(len(block))
    return ests


def _check_finite(store: Store, t: str, block: np.ndarray, y: np.ndarray, mi: np.ndarray, ki: np.ndarray) -> None:
    """Refuse a block of outputs with NaN or inf, naming the first such row, mode and kind."""
    bad = ~np.isfinite(y).all(axis=2)
    if bad.any():
        b, p = np.argwhere(bad)[0]
        raise AggregationError(
            f"outputs/{t}: completed row {int(block[b])} holds NaN or inf for mode "
            f"{store.modes[mi[p]]!r}, kind {store.output_kinds[ki[p]]!r} "
            f"({int(bad.any(axis=1).sum())} such rows in this block); fix or rerun those rows (`python -m "
            f"launch.verify store.path={store.path} verify.invalidate=true` clears their completion)")


def _write_influences(g: zarr.Group, res, labels: np.ndarray, n_classes: int) -> None:
    infl = res.influence  # (U, n)
    units, n = infl.shape
    onehot = np.zeros((n, n_classes))
    onehot[np.arange(n), labels] = 1.0
    counts = onehot.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):  # a class without test examples gets NaN (documented)
        per_class = (infl @ onehot / counts).T
    chunk = max(1, min(n, 2 ** 20 // max(units, 1)))  # ~4 MB chunks of float32
    if res.sparse:  # lasso: CSR per example (influence/sparse.py); dense only when small
        sparse.write(g, infl.T)
    if res.dense:
        g.create_array("per_example", data=infl.T.astype(np.float32), chunks=(chunk, units),
                       dimension_names=("example", "unit"))
    g.create_array("per_class", data=per_class.astype(np.float32), dimension_names=("class", "unit"))
    g.create_array("overall", data=infl.mean(axis=1), dimension_names=("unit",))
    g.create_array("mean_output", data=res.mean.astype(np.float32), dimension_names=("example",))
    for name, values in res.extras.items():
        g.create_array(name, data=np.asarray(values), dimension_names=("example",))


def _write_diagnostics(job: _Job, t: str, rows: np.ndarray, masks: np.ndarray, collected: _Collected,
                       root: zarr.Group) -> str:
    """The convergence curves of target ``t`` into ``root/diagnostics/t``; returns their note."""
    settings = job.diagnostics
    curves = diag.convergence(masks, rows, collected.aggregate, collected.samples, job.knockoffs[rows], settings,
                              seed=settings.seed)
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
    return curves["note"]


def _replace(tmp: Path, out: Path) -> None:
    """Put ``tmp`` at ``out``: a reader sees the old result or the new one, never a mix."""
    old = None
    if out.exists():
        if not (out / "zarr.json").is_file() or zarr.open_group(str(out), mode="r").attrs.get("format") != FORMAT:
            raise AggregationError(f"{out} exists and is not an influence store; refusing to replace it")
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def aggregate_from_config(cfg: Any) -> Summary:
    """`python -m aggregate`: the config's store, estimator and diagnostics -> the influence store."""
    from omegaconf import OmegaConf

    est = OmegaConf.to_container(cfg.estimator, resolve=True)
    name = est.pop("name")
    return aggregate(cfg.store.path, cfg.out or None, name, est, cfg.diagnostics, cfg.block_rows, cfg.memory_mb,
                     cfg.progress)


def current_influence(cfg: Any) -> Tuple[Influence, Store]:
    """The influence store of the config's store, (re)computed first when absent or older than the store's
    completed rows (e.g. more rows finished since)."""
    store = Store.open(cfg.store.path)
    path = Path(cfg.out).resolve() if cfg.out else default_out(store.path)
    reason = ""
    if not (path / "zarr.json").is_file():
        reason = f"no influence store at {path} yet"
    else:
        try:
            if not Influence(path).is_current(store):
                reason = f"{path} was computed from other rows than the store's {len(completed_rows(store))} " \
                         f"completed ones"
        except AggregationError as e:
            reason = str(e)
    if reason:
        log.info(f"{reason}: aggregating first")
        s = aggregate_from_config(cfg)
        log.info(f"wrote {s.out} ({s.rows_used} rows, {s.seconds:.1f} s)")
    return Influence(path), store
