"""Aggregation: a sweep store's completed rows -> the influence store (format in docs/influence-format.md).

For every target x mode x output kind: per-example influences (n_t, U), their mean over each target class
(C_t, U) and over all examples (U,), the mean output per example, and the convergence diagnostics. The store is read
in blocks of rows with one zarr call per block (the rows' chunks are fetched and decompressed concurrently), while a
background thread already reads the next block; accumulation is a float64 matrix product per block. Memory is bounded
by the block size and the estimator's statistics, never by the number of rows.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import zarr

from datatransfer.config import DiagnosticsConfig
from datatransfer.errors import AggregationError
from datatransfer.influence import diagnostics as diag
from datatransfer.influence.blocks import _blas_limit, _plan, read_blocks
from datatransfer.influence.estimators import Estimator, EstimatorError, make
from datatransfer.influence.reader import (
    FORMAT,
    FORMAT_VERSION,
    Influence,
    completed_rows,
    store_targets,
)
from datatransfer.store.sweep_store import Store

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


def aggregate(
    store_path: str | os.PathLike,
    out: Optional[str | os.PathLike] = None,
    estimator: str = "dim",
    estimator_settings: Optional[Dict[str, Any]] = None,
    diagnostics: Optional[DiagnosticsConfig] = DiagnosticsConfig(),
    block_rows: int = 0,
    memory_mb: int = 1024,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Summary:
    """Compute the influence store of the store at ``store_path`` from its completed rows; returns a summary.

    ``out`` defaults to ``<store's parent>/influence.zarr``; it is replaced atomically (readers never see a
    half-written one). ``diagnostics=None`` skips the convergence curves.
    """
    start = time.perf_counter()
    if diagnostics is not None and not diagnostics.enabled:
        diagnostics = None
    store = Store.open(store_path)
    out = Path(out).resolve() if out else default_out(store.path)
    if out == store.path.resolve() or store.path.resolve() in out.parents:
        raise AggregationError(f"out={out} would write inside the sweep store {store.path}; choose another path")
    targets = store_targets(store)
    clash = RESERVED.intersection(targets)
    if clash:
        raise AggregationError(f"target name(s) {sorted(clash)} clash with the influence store's own arrays")
    settings = dict(estimator_settings or {})
    full_settings = make(estimator, **settings).settings()  # also fails on bad settings before reading anything

    rows = completed_rows(store)
    if len(rows) == 0:
        raise AggregationError(f"{store.path} has no completed rows yet ({store.num_rows} rows planned)")
    # Each target's own completed rows: the same as `rows` for the original targets; targets added later
    # (transfer only) may lag behind. A target without any yet is left out, with a message.
    target_rows = {t: rows if t in store.targets else completed_rows(store, t) for t in targets}
    for t in [t for t in targets if len(target_rows[t]) == 0]:
        log(f"target {t}: no completed rows yet, left out")
        targets.remove(t)
    units = len(store.unit_names)
    log(f"reading {store.path}: {len(rows)} of {store.num_rows} rows completed; {units} units; targets "
        f"{', '.join(targets)}; modes {', '.join(store.modes)}; kinds {', '.join(store.output_kinds)}")
    for t in targets:
        if len(target_rows[t]) != len(rows):
            log(f"  target {t} (added later): {len(target_rows[t])} rows completed")

    seed, alpha, scheme = diag.mask_scheme(store.attrs.get("config"), store.masks)
    knock = diag.knockoff_masks(seed, store.num_rows, units, alpha, scheme) if diagnostics else None

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.writing-{uuid.uuid4().hex[:8]}"
    try:
        root = zarr.open_group(store=str(tmp), mode="w-")
        root.attrs.update(_root_attrs(store, rows, targets, estimator, full_settings, diagnostics,
                                      (seed, alpha, scheme)))
        n_in = store.masks[rows].sum(axis=0).astype(np.int64)
        root.create_array("rows", data=rows.astype(np.int64), dimension_names=("row",))
        root.create_array("n_in", data=n_in, dimension_names=("unit",))
        root.create_array("n_out", data=len(rows) - n_in, dimension_names=("unit",))
        notes: Dict[str, str] = {}
        bar = _progress_bar(progress, total=sum(
            len(target_rows[t]) * len(_plan(store, t, estimator, block_rows, memory_mb)[1]) for t in targets))
        for t in targets:
            note = _aggregate_target(store, t, target_rows[t], store.masks[target_rows[t]], root, estimator,
                                     settings, diagnostics, knock, block_rows, memory_mb, bar)
            if note:
                notes[t] = note
        if bar is not None:
            bar.close()
        if diagnostics:
            dg = root.require_group("diagnostics")
            dg.create_array("knockoff_masks", data=knock, chunks=(min(len(knock), 4096), units),
                            dimension_names=("row", "unit"))
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Summary(out, len(rows), store.num_rows, targets, estimator,
                   time.perf_counter() - start, notes)


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


def _aggregate_target(store: Store, t: str, rows: np.ndarray, masks: np.ndarray, root: zarr.Group,
                      estimator: str, settings: Dict[str, Any], diagnostics: Optional[DiagnosticsConfig],
                      knock: Optional[np.ndarray], block_rows: int, memory_mb: int, bar) -> str:
    arr = store.outputs(t)
    _, n_modes, n_kinds, n = arr.shape
    labels, class_names = store.labels(t), store.class_names(t)
    tg = root.require_group(t)
    tg.attrs.update({"class_names": class_names, "rows_used": int(len(rows))})
    tg.create_array("labels", data=labels.astype(np.int64), dimension_names=("example",))
    # This target's rows and counts (the root's, unless the target was added to the store later)
    tg.create_array("rows", data=rows.astype(np.int64), dimension_names=("row",))
    tg.create_array("n_in", data=masks.sum(axis=0).astype(np.int64), dimension_names=("unit",))
    tg.create_array("n_out", data=len(rows) - masks.sum(axis=0).astype(np.int64), dimension_names=("unit",))
    block_rows, passes = _plan(store, t, estimator, block_rows, memory_mb)
    pairs = [p for group in passes for p in group]

    # What the diagnostics need, gathered on the way: per-row mean over examples, outputs on sampled examples.
    rng = np.random.default_rng(diagnostics.seed if diagnostics else 0)
    sample = np.sort(rng.choice(n, size=min(n, diagnostics.lds_examples), replace=False)) if diagnostics \
        else np.zeros(0, dtype=np.int64)
    agg = np.zeros((len(rows), len(pairs)))
    samples = np.zeros((len(rows), len(pairs), len(sample)), dtype=np.float32)

    for group in passes:
        ests: List[Estimator] = [make(estimator, **settings) for _ in group]
        mi, ki = np.array([m for m, _ in group]), np.array([k for _, k in group])
        pidx = np.array([pairs.index(p) for p in group])
        pos = 0
        with _blas_limit():
            for block, data in read_blocks(arr, rows, block_rows):
                y = data[:, mi, ki, :]  # (b, pairs of this pass, n)
                bad = ~np.isfinite(y).all(axis=2)
                if bad.any():
                    b, p = np.argwhere(bad)[0]
                    raise AggregationError(
                        f"outputs/{t}: completed row {int(block[b])} holds NaN or inf for mode "
                        f"{store.modes[mi[p]]!r}, kind {store.output_kinds[ki[p]]!r} "
                        f"({int(bad.any(axis=1).sum())} such rows in this block); fix or rerun those rows")
                mb = masks[pos:pos + len(block)]
                for j, est in enumerate(ests):
                    est.update(block, mb, y[:, j, :])
                agg[pos:pos + len(block), pidx] = y.mean(axis=2)
                samples[pos:pos + len(block)][:, pidx] = y[:, :, sample]
                pos += len(block)
                if bar is not None:
                    bar.update(len(block))
        for (m, k), est in zip(group, ests):
            try:
                res = est.result(store.unit_names)
            except EstimatorError as e:
                raise AggregationError(f"target {t!r}, mode {store.modes[m]!r}, kind "
                                       f"{store.output_kinds[k]!r}: {e}") from e
            _write_influences(tg.require_group(store.modes[m]).require_group(store.output_kinds[k]),
                              res, labels, len(class_names))
            del res

    note = ""
    if diagnostics:
        curves = diag.convergence(masks, rows, agg, samples, knock[rows], diagnostics, seed=diagnostics.seed)
        note = curves["note"]
        dg = root.require_group("diagnostics").require_group(t)
        dg.attrs.update({k: curves[k] for k in ("fit_rows", "heldout_rows", "top_k", "note")})
        dg.create_array("num_rows", data=curves["num_rows"], dimension_names=("point",))
        dg.create_array("lds_examples", data=sample.astype(np.int64), dimension_names=("sample",))
        # One array per quantity with (mode, kind) axes: few files, and xarray reads them with named dims.
        shape = (n_modes, n_kinds)
        for name in ("bootstrap_std", "rank_corr", "lds", "fdr"):
            dg.create_array(name, data=curves[name].reshape(*shape, -1), dimension_names=("mode", "kind", "point"))
        dg.create_array("knockoff_overall", data=curves["knockoff_overall"].reshape(*shape, -1),
                        dimension_names=("mode", "kind", "unit"))
        dg.create_array("aggregate_output", data=agg.reshape(len(rows), *shape),
                        dimension_names=("row", "mode", "kind"))
    return note


def _write_influences(g: zarr.Group, res, labels: np.ndarray, n_classes: int) -> None:
    infl = res.influence  # (U, n)
    units, n = infl.shape
    onehot = np.zeros((n, n_classes))
    onehot[np.arange(n), labels] = 1.0
    counts = onehot.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):  # a class without test examples gets NaN (documented)
        per_class = (infl @ onehot / counts).T
    chunk = max(1, min(n, 2 ** 20 // max(units, 1)))  # ~4 MB chunks of float32
    g.create_array("per_example", data=infl.T.astype(np.float32), chunks=(chunk, units),
                   dimension_names=("example", "unit"))
    g.create_array("per_class", data=per_class.astype(np.float32), dimension_names=("class", "unit"))
    g.create_array("overall", data=infl.mean(axis=1), dimension_names=("unit",))
    g.create_array("mean_output", data=res.mean.astype(np.float32), dimension_names=("example",))
    for name, values in res.extras.items():
        g.create_array(name, data=np.asarray(values), dimension_names=("example",))


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


def aggregate_from_config(cfg: Any, log: Callable[[str], None] = print) -> Summary:
    """`python -m aggregate`: the config's store, estimator and diagnostics -> the influence store."""
    from omegaconf import OmegaConf

    est = OmegaConf.to_container(cfg.estimator, resolve=True)
    name = est.pop("name")
    return aggregate(cfg.store.path, cfg.out or None, name, est, cfg.diagnostics, cfg.block_rows, cfg.memory_mb,
                     cfg.progress, log)


def current_influence(cfg: Any, log: Callable[[str], None] = print) -> Tuple[Influence, Store]:
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
        log(f"{reason}: aggregating first")
        s = aggregate_from_config(cfg, log)
        log(f"wrote {s.out} ({s.rows_used} rows, {s.seconds:.1f} s)")
    return Influence(path), store
