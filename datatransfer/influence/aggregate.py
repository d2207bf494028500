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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import zarr

from datatransfer.config import DiagnosticsConfig
from datatransfer.config.aggregate import AggregateConfig
from datatransfer.errors import AggregationError
from datatransfer.influence import diagnostics as diag
from datatransfer.influence import fanout, full, refresh
from datatransfer.influence.blocks import completed_rows, completed_since, plan, rows_used
from datatransfer.influence.estimators import make
from datatransfer.influence.reader import FORMAT, FORMAT_VERSION, Influence, of_store
from datatransfer.influence.write import Job, write_counts
from datatransfer.store import swap
from datatransfer.store.sweep_store import Store

log = logging.getLogger(__name__)

# Names at the root of the influence store that a target may not take.
RESERVED = {"rows", "n_in", "n_out", "diagnostics", "sums", "completed_stamp", "completed_flag"}


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
    rows_read: int = 0  # rows whose outputs were read (per target, summed): fewer than used in a refresh


def aggregate(
    store_path: str | os.PathLike,
    out: Optional[str | os.PathLike] = None,
    estimator: str = "dim",
    estimator_settings: Optional[Dict[str, Any]] = None,
    diagnostics: Optional[DiagnosticsConfig] = DiagnosticsConfig(),
    block_rows: int = 0,
    memory_mb: int = 1024,
    progress: bool = True,
    incremental: bool = True,
    sums_block_rows: int = AggregateConfig.sums_block_rows,
    launcher: Any = None,
    run_tasks: Any = None,
    fanout_tasks: Any = None,
) -> Summary:
    """Compute the influence store of the store at ``store_path`` from its completed rows; returns a summary.

    ``out`` defaults to ``<store's parent>/influence.zarr``; it is replaced atomically (readers never see a
    half-written one). ``diagnostics=None`` skips the convergence curves. Difference of means (without bootstrap)
    keeps its sums per block of ``sums_block_rows`` store rows in the influence store and, ``incremental``, reads
    only the rows that changed since the previous one (refresh.py); ``launcher`` (a ``launcher=local`` config node;
    None: this process) runs those blocks, unless ``run_tasks(fn, tasks, on_done)`` is given (a Slurm array's).
    ``fanout_tasks``: the same kind of runner for ``estimator=lasso`` with ``estimator.fanout.launcher=slurm``
    (its blocks of target examples).
    """
    start = time.perf_counter()
    if diagnostics is not None and not diagnostics.enabled:
        diagnostics = None
    store = Store.open(store_path)
    # refusals of the path come before anything is written (the lock file included); checked again under the lock
    with _sole_writer(_out_path(store, out)) as out:
        return _aggregate(store, out, start, estimator, estimator_settings, diagnostics, block_rows, memory_mb,
                          incremental, sums_block_rows, launcher, run_tasks, fanout_tasks, progress)


def _aggregate(store: Store, out: Path, start: float, estimator, estimator_settings, diagnostics, block_rows,
               memory_mb, incremental, sums_block_rows, launcher, run_tasks, fanout_tasks, progress) -> Summary:
    out = _out_path(store, out)
    clash = RESERVED.intersection(store.all_targets)
    if clash:
        raise AggregationError(f"target name(s) {sorted(clash)} clash with the influence store's own arrays")
    settings = dict(estimator_settings or {})
    if fanout_tasks is not None and estimator == "lasso":
        settings["run_tasks"] = fanout_tasks
    if estimator == "lasso":  # solver=stream reads the masks from the store on every pass, not from memory
        settings.setdefault("mask_store", str(store.path))
    full_settings = make(estimator, **settings).settings()  # also fails on bad settings before reading anything
    previous = out if incremental and (out / "zarr.json").is_file() else None
    rows, flags, stamps = completed_since(store, zarr.open_group(str(previous), mode="r") if previous else None)
    if len(rows) == 0:
        raise AggregationError(f"{store.path} has no completed rows yet ({store.num_rows} rows planned)")
    target_rows = _target_rows(store, rows)
    targets = list(target_rows)
    scheme = diag.mask_scheme(store.attrs.get("config"),
                              lambda: (store.mask_counts(np.arange(store.num_rows))[1], len(store.unit_names)))
    if diagnostics:  # the curves need every row's mask and a knockoff copy: refused now when too large (StoreError)
        store.masks
    knock = diag.knockoff_masks(scheme[0], store.num_rows, len(store.unit_names), scheme[1], scheme[2]) \
        if diagnostics else None
    job = Job(store, estimator, settings, diagnostics, knock, block_rows, memory_mb)
    notes: Dict[str, str] = {}
    used: Dict[str, np.ndarray] = {}  # each target's rows used: its completed rows whose outputs could be read
    by_sums = estimator == "dim" and not settings.get("bootstrap")
    rows_read = 0
    with _writing(out) as root:
        job.bar = _progress_bar(progress, total=0 if by_sums else sum(
            len(target_rows[t]) * len(plan(store, t, estimator, block_rows, memory_mb)[1]) for t in targets))
        if by_sums:
            used, notes, rows_read = refresh.aggregate_targets(
                job, target_rows, root, Path(str(root.store.root)), previous, sums_block_rows,
                run_tasks or fanout.local_mapper(launcher))
        for t in targets if not by_sums else []:
            used[t], note = full.aggregate_target(job, t, target_rows[t], root)
            rows_read += len(target_rows[t])
            if note:
                notes[t] = note
        if job.bar is not None:
            job.bar.close()
        rows, unreadable = rows_used(store, rows, target_rows, used)
        root.attrs.update({**_root_attrs(store, rows, targets, estimator, full_settings, diagnostics, scheme),
                           "rows_unreadable": unreadable})
        write_counts(root, rows, store.mask_counts(rows)[0], store.unit_names)
        # What the next run needs to decode only the completion flags that were written since (blocks.py).
        root.create_array("completed_stamp", data=stamps, dimension_names=("store_row", "stat"))
        root.create_array("completed_flag", data=flags, dimension_names=("store_row",))
        if diagnostics:
            root.require_group("diagnostics").create_array(
                "knockoff_masks", data=knock, chunks=(min(len(knock), 4096), knock.shape[1]),
                dimension_names=("row", "unit"))
    return Summary(out, len(rows), store.num_rows, targets, estimator, time.perf_counter() - start, notes,
                   unreadable, rows_read)


def out_path(out: Optional[str | os.PathLike], store_path: str | os.PathLike) -> Path:
    """Where the influence store goes: ``out`` (the config's ``out``), else beside the sweep store."""
    return Path(out).resolve() if out else default_out(store_path)


def _out_path(store: Store, out: Optional[str | os.PathLike]) -> Path:
    """Where the influence store goes (``out_path``), never inside the sweep store."""
    out = out_path(out, store.path)
    if out == store.path.resolve() or store.path.resolve() in out.parents:
        raise AggregationError(f"out={out} would write inside the sweep store {store.path}; choose another path")
    if (out / "zarr.json").is_file():  # an influence store is replaced only by one of the same sweep store
        attrs = zarr.open_group(str(out), mode="r").attrs
        if attrs.get("format") != FORMAT:
            raise AggregationError(f"{out} exists and is not an influence store; refusing to replace it")
        if not of_store(attrs, store):
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
def _sole_writer(out: Path) -> Iterator[Path]:
    """Run the ``with`` block as the only writer of ``out`` (swap.sole_writer: a second run at once is refused, since
    it would read the previous store while the first replaces it; what killed runs left is cleaned up), with SIGTERM
    (Slurm's scancel and time limit, kill) cleaning up like Ctrl-C instead of leaving a temporary folder behind."""
    with _os_errors(out), swap.sole_writer(out, "python -m aggregate", AggregationError), _sigterm_interrupts():
        yield out


@contextlib.contextmanager
def _os_errors(out: Path) -> Iterator[None]:
    """An OSError (no space left, no permission, a file where a folder should be) -> an AggregationError naming the
    path: the app then prints one line and exits 2; ``out`` is left as it was (see _writing)."""
    try:
        yield
    except OSError as e:
        where = e.filename or out.parent
        raise AggregationError(f"{e.strerror or e}: {where} (aggregating into {out}; nothing was replaced)") from e


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt in the ``with`` block (main thread only), so that it unwinds like Ctrl-C."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


@contextlib.contextmanager
def _writing(out: Path) -> Iterator[zarr.Group]:
    """A new influence store, written in a temporary folder beside ``out`` and put at ``out`` once complete; on any
    error (or Ctrl-C, SIGTERM) the temporary folder is removed and ``out`` is left as it was."""
    with swap.written_beside(out, _is_influence_store, "an influence store", AggregationError) as tmp:
        yield zarr.open_group(store=str(tmp), mode="w-")


def _is_influence_store(p: Path) -> bool:
    return (p / "zarr.json").is_file() and zarr.open_group(str(p), mode="r").attrs.get("format") == FORMAT


def _root_attrs(store: Store, rows, targets, estimator, settings, diagnostics, scheme) -> Dict[str, Any]:
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "store": str(store.path.resolve()), "store_id": store.store_id, "store_fingerprint": store.fingerprint,
        "store_rows": store.num_rows, "rows_used": int(len(rows)),
        "estimator": {"name": estimator, "settings": settings},
        "unit": store.attrs.get("unit", "class"), "unit_names": store.unit_names,
        "targets": targets, "modes": store.modes, "output_kinds": store.output_kinds,
        "config": store.attrs.get("config", {}),
        "diagnostics": None if not diagnostics else {
            **{k: getattr(diagnostics, k) for k in ("holdout_fraction", "bootstrap", "points", "top_k",
                                                   "lds_examples", "seed")},
            "estimator": estimator, "knockoff_seed": scheme[0] + diag.KNOCKOFF_SEED_OFFSET,
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


def aggregate_from_config(cfg: Any, run_tasks: Any = None, fanout_tasks: Any = None) -> Summary:
    """`python -m aggregate`: the config's store, estimator and diagnostics -> the influence store. The row blocks run
    as ``cfg.launcher`` (local) says, or through ``run_tasks`` (the app passes the Slurm array's); the LASSO's
    example blocks with ``estimator.fanout.launcher=slurm`` through ``fanout_tasks``."""
    from omegaconf import OmegaConf

    est = OmegaConf.to_container(cfg.estimator, resolve=True)
    name = est.pop("name")
    return aggregate(cfg.store.path, cfg.out or None, name, est, cfg.diagnostics, cfg.block_rows, cfg.memory_mb,
                     cfg.progress, cfg.incremental, cfg.sums_block_rows,
                     cfg.launcher if cfg.launcher.name == "local" else None, run_tasks, fanout_tasks)


def current_influence(cfg: Any, estimator_asked: bool = False) -> Tuple[Influence, Store]:
    """The influence store of the config's store, (re)computed first when absent, older than the store's
    completed rows (e.g. more rows finished since), or, with ``estimator_asked`` (the command line chose
    ``estimator``), computed by another estimator."""
    store = Store.open(cfg.store.path)
    path = out_path(cfg.out, store.path)
    reason = ""
    if not (path / "zarr.json").is_file():
        reason = f"no influence store at {path} yet"
    else:
        try:
            inf = Influence(path)
            held = inf.attrs.get("estimator", {}).get("name")
            if not inf.is_current(store):
                reason = f"{path} was computed from other rows than the store's {len(completed_rows(store))} " \
                         f"completed ones"
            elif estimator_asked and held != cfg.estimator.name:
                reason = f"{path} holds estimator {held}, and estimator={cfg.estimator.name} was asked"
        except AggregationError as e:
            reason = str(e)
    if reason:
        log.info(f"{reason}: aggregating first (on this machine)")
        s = aggregate_from_config(cfg)
        log.info(f"wrote {s.out} ({s.rows_used} rows, {s.seconds:.1f} s)")
    return Influence(path), store
