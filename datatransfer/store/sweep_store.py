"""The sweep store: one Zarr v3 directory holding every row of a sweep (format documented in docs/store-format.md).

Row protocol: a worker writes every per-row array of row i (each row owns whole chunks, so concurrent writers never
touch the same file), then sets ``completed[i]``. Readers trust only completed rows. Rewriting a row is idempotent.

Targets added later (``python -m launch.add_targets``) get the same arrays plus ``completed_targets/<t>``, their own
completion record, and an entry in the root attrs ``added_targets``; ``completed`` and ``targets`` keep meaning
the original targets. A handle from :meth:`Store.scoped` reads and writes rows of added targets.

Damage is diagnosed, never fatal: a row's ``completed`` chunk that cannot be decoded (a zero-length file left by
a node crash, garbage) reads as not completed, with one warning naming the row and the file, so a resume reruns
the row and rewrites it. Metadata (``zarr.json``) that cannot be read is a StoreError naming the file. Rows are
checked before anything of them is written (:meth:`Store.write_row`).

Identity and provenance (format version 2): a store has a ``store_id``; a handle writes rows only while the store at
its path is still the one it opened (a store deleted and created again at the same path is never written by an old
task). Each row records where and how it was computed (``provenance/*``, :mod:`datatransfer.store.provenance`).
Version 1 stores are read, not written.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import zarr

from datatransfer.errors import StoreError
from datatransfer.store import extend, layout, mask_bits, provenance
from datatransfer.store.integrity import brief, chunk_file, identity_problem, read_row, read_rows, row_problem
from datatransfer.store.provenance import RowRun
from datatransfer.store.spec import (  # noqa: F401  (FORMAT..., TargetSpec: re-exported, readers import them here)
    FORMAT,
    FORMAT_VERSION,
    NEEDED_ATTRS,
    READABLE_VERSIONS,
    ROW_STAT_FIELDS,
    WRITABLE_VERSIONS,
    StoreSpec,
    TargetSpec,
    config_diff,
    create_target_arrays,
    defining,
    fingerprint,
    older_format,
    write_new,
)

log = logging.getLogger(__name__)
# Store.masks decodes the whole (rows, units) bool matrix only up to this many bytes (class-level sweeps: 7.5 MB
# at the paper's 7,540 x 1,000); paper-scale example sweeps take the block-wise paths instead.
MASKS_MAX_BYTES = 4 * 2 ** 30
MASKS_KEEP_BYTES = 256 * 2 ** 20  # Store.mask_rows decodes the whole matrix once up to this size
_WARNED: set = set()  # (store, array, row) whose unreadable chunk was already reported by this process


def bulk_reads():
    """zarr settings for reading many rows at once (one chunk per row: many small chunks): fetch 64 chunks at a time
    (zarr's default of 10 took 5 s for 7,540 completion flags) and decode them in batches of 16 (zarr otherwise
    decodes each chunk in a thread call of its own). Batches measured at the bench size (fresh processes,
    interleaved, 3 each): the 7,540 one-byte flags in 1.5-1.8 s against 2.0-2.8 s, 7,540 rows of outputs in 1.6-1.9
    s against 2.4-3.1 s; 128 or 1,024 at a time were no better."""
    return zarr.config.set({"async.concurrency": 64, "codec_pipeline.batch_size": 16})


class Store:
    """A sweep's store. ``targets`` are the targets this handle writes and ``completed()`` is about: the store's
    original targets, or for a handle from :meth:`scoped`, some of the targets added later."""

    def __init__(self, path: Path, group: zarr.Group, scope: Optional[Sequence[str]] = None,
                 runnable: Optional[np.ndarray] = None):
        self.path = path
        self.group = group
        attrs = dict(group.attrs)
        self.attrs = attrs
        self.added_targets: List[str] = list(attrs.get("added_targets", {}))
        self.scope: Optional[List[str]] = list(scope) if scope is not None else None
        self.targets: List[str] = list(self.scope) if self.scope is not None else list(attrs["targets"])
        self.modes: List[str] = list(attrs["modes"])
        self.output_kinds: List[str] = list(attrs["output_kinds"])
        self.unit_names: List[str] = list(attrs["unit_names"])
        self.fingerprint: str = attrs["fingerprint"]
        self.format_version: int = int(attrs["format_version"])
        self.store_id: str = attrs.get("store_id", "")  # the store this handle writes to ("": version 1)
        self._masks: Optional[np.ndarray] = None
        self._runnable = runnable
        self._arrays: Dict[str, zarr.Array] = {}  # opened once: each lookup reads metadata from disk

    def _array(self, name: str) -> zarr.Array:
        """The array at ``name``, opened once per handle (its chunks are still read afresh on every access)."""
        if name not in self._arrays:
            try:
                self._arrays[name] = self.group[name]
            except KeyError:
                raise
            except Exception as e:  # damaged metadata: JSONDecodeError, a validation error of zarr's, ...
                raise StoreError(f"{self.path / name / 'zarr.json'} cannot be read ({brief(e)}); the store is "
                                 f"damaged there") from e
        return self._arrays[name]

    def array(self, name: str) -> zarr.Array:
        """The array at ``name`` (e.g. ``completed``, ``provenance/info``): KeyError if absent, StoreError if its
        metadata cannot be read."""
        return self._array(name)

    def _unreadable(self, arr: zarr.Array, row: int, error: Exception) -> None:
        """Warn, once per process, that row ``row``'s chunk of ``arr`` cannot be decoded."""
        key = (str(self.path), arr.path, int(row))
        if key not in _WARNED:
            _WARNED.add(key)
            then = "counts as not completed; rerunning it rewrites the file" if arr.path.startswith("completed") \
                else "is left out there (NaN)"
            log.warning("store %s: %s cannot be read (%s; damaged, e.g. by a crash, or being written right now): "
                        "row %d %s", self.path, chunk_file(self.path, arr, row), brief(error), row, then)

    def _rows(self, name: str) -> np.ndarray:
        """The per-row array ``name``; a row whose chunk cannot be decoded reads as the fill value (a warning)."""
        return read_rows(self._array(name), self._unreadable)

    def _row(self, name: str, row: int) -> Optional[np.ndarray]:
        """Row ``row`` of the per-row array ``name``, or None (a warning) if its chunk cannot be decoded."""
        return read_row(self._array(name), row, self._unreadable)

    # ---- opening -------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> "Store":
        p = Path(path)
        if not (p / "zarr.json").is_file():
            raise StoreError(f"no store at {p} (no zarr.json there)")
        try:
            group = zarr.open_group(store=str(p), mode="r" if mode == "r" else "r+")
        except Exception as e:  # not JSON, not a Zarr group's metadata, unreadable
            raise StoreError(f"{p / 'zarr.json'} cannot be read as a store's metadata ({brief(e)}); the store is "
                             f"damaged there") from e
        if group.attrs.get("format") != FORMAT:
            raise StoreError(f"{p} is a Zarr group but not a {FORMAT} (attrs.format={group.attrs.get('format')!r})")
        version = group.attrs.get("format_version")
        if version not in READABLE_VERSIONS:
            raise StoreError(f"{p} has format_version {version}; this code reads versions "
                             f"{', '.join(map(str, READABLE_VERSIONS))}")
        lacking = [k for k in NEEDED_ATTRS[version] if k not in group.attrs]
        if lacking:
            raise StoreError(f"{p / 'zarr.json'} lacks the attributes {lacking}; the store's metadata is damaged there")
        store = cls(p, group)
        store._array("completed")  # damaged array metadata is reported here, as the root's is
        return store

    @classmethod
    def create_or_open(cls, path: str | os.PathLike, spec: StoreSpec) -> "Store":
        """Open the store at ``path`` if it holds this sweep; create it if absent; refuse if it holds another."""
        p = Path(path)
        fp = fingerprint(spec.sweep_defining)
        if p.exists():
            return cls._reopen_same(p, fp, spec)
        cls.check_creatable(p)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"store.path={p}: cannot create its folder {p.parent}: {e.strerror or e}") from e
        # Build beside the final path, then rename: a failed or interrupted creation leaves no half-made store,
        # and two concurrent creators cannot both win.
        tmp = p.parent / f".{p.name}.creating-{uuid.uuid4().hex[:8]}"
        try:
            write_new(tmp, spec, fp)
            os.rename(tmp, p)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if p.exists():  # another process created it first
                return cls._reopen_same(p, fp, spec)
            raise StoreError(f"store.path={p}: cannot create the store there: {e.strerror or e}") from e
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls.open(p, mode="r+")

    @staticmethod
    def check_creatable(p: Path) -> None:
        """A StoreError naming ``store.path`` unless a store could be created at ``p`` (which does not exist): its
        nearest existing ancestor is a writable folder. Creates nothing (a dry run asks too)."""
        up = p.parent
        while not up.exists() and up != up.parent:
            up = up.parent
        if not up.is_dir():
            raise StoreError(f"store.path={p}: cannot create the store there: {up} is a file, not a folder")
        if not os.access(up, os.W_OK):
            raise StoreError(f"store.path={p}: cannot create the store there: folder {up} is not writable")

    @classmethod
    def open_to_plan(cls, path: str | os.PathLike, spec: StoreSpec) -> Tuple["Store", int]:
        """A dry run's view of the existing store at ``path``: opened read-only, refused as :meth:`create_or_open`
        refuses another sweep, and how many rows the spec would add by extending it (a higher
        ``sweep.num_models``; 0: none). Nothing is written."""
        p = Path(path)
        fp = fingerprint(spec.sweep_defining)
        store = cls.open(p)
        added = extend.rows_added(store, spec) \
            if store.fingerprint != fp and store.format_version == FORMAT_VERSION else 0
        if not added:  # an extension is this sweep in this format: nothing to refuse
            cls._refuse_other(p, store, fp, spec)
        return store, added

    @classmethod
    def _reopen_same(cls, p: Path, fp: str, spec: StoreSpec) -> "Store":
        store = cls.open(p, mode="r+")
        if store.fingerprint != fp and store.format_version == FORMAT_VERSION and extend.if_longer(store, fp, spec):
            store = cls.open(p, mode="r+")  # a higher sweep.num_models: rows added (store/extend.py)
        cls._refuse_other(p, store, fp, spec)
        return store

    @staticmethod
    def _refuse_other(p: Path, store: "Store", fp: str, spec: StoreSpec) -> None:
        """A StoreError unless ``store`` holds the sweep of fingerprint ``fp`` in a format this code writes."""
        if store.fingerprint != fp:
            # the stored sweep as fingerprinted (LATER_KEYS at their old value left out, as in spec.sweep_defining)
            diff = config_diff(defining(store.attrs["config"], list(spec.sweep_defining)), spec.sweep_defining)
            shown = "\n  ".join(diff[:30]) + ("\n  ..." if len(diff) > 30 else "")
            raise StoreError(
                f"{p} holds a different sweep (fingerprint {store.fingerprint}, this config {fp}); "
                f"it is left untouched. Differing keys:\n  {shown}\n"
                f"Use another store.path, or the original settings to continue that sweep."
            )
        if store.format_version not in WRITABLE_VERSIONS:
            raise StoreError(f"{older_format(p, store.attrs)}; it is left untouched")

    # ---- reading -------------------------------------------------------------------------------------------
    @property
    def num_rows(self) -> int:
        return int(self._array("completed").shape[0])

    @property
    def masks(self) -> np.ndarray:
        """Bool (rows, U): every row's mask, decoded once and kept. Refused (StoreError) beyond
        ``MASKS_MAX_BYTES`` decoded: what needs the whole matrix says so at once rather than running out of memory
        (92 GB at the paper's example-level scale); :meth:`mask_rows` and :meth:`mask_counts` need no more than a
        block."""
        if self._masks is None:
            arr = self._array("masks")
            size = mask_bits.decoded_bytes(arr)
            if size > MASKS_MAX_BYTES:
                raise StoreError(f"{self.path / 'masks'}: this step needs the whole mask matrix in memory "
                                 f"({size / 2 ** 20:,.1f} MiB decoded: {arr.shape[0]} rows x "
                                 f"{mask_bits.units_of(arr)} units), more than the {MASKS_MAX_BYTES / 2 ** 20:,.1f} "
                                 f"MiB allowed; at this scale aggregate with estimator=lasso "
                                 f"estimator.solver=stream diagnostics.enabled=false (docs/paper-scale.md)")
            try:
                self._masks = mask_bits.read(arr)
            except Exception as e:  # an undecodable chunk
                raise StoreError(f"{self.path / 'masks'} cannot be read ({brief(e)}); `python -m launch.verify "
                                 f"store.path={self.path} verify.invalidate=true` rewrites it from the sweep's "
                                 f"config") from e
        return self._masks

    def mask_rows(self, rows: np.ndarray) -> np.ndarray:
        """Bool (len(rows), U): the masks of ``rows``; read alone when the whole decoded matrix would be large (more
        than ``MASKS_KEEP_BYTES``), else decoded once and kept (many blocks of a class-level sweep: one decode)."""
        arr = self._array("masks")
        if self._masks is not None or mask_bits.decoded_bytes(arr) <= min(MASKS_KEEP_BYTES, MASKS_MAX_BYTES):
            return self.masks[rows]
        return mask_bits.read(arr, np.asarray(rows, dtype=np.int64))

    def mask_counts(self, rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(how many of ``rows`` hold each unit (U,), each row's mask size (len(rows),)), int64, read a block at a
        time (:func:`mask_bits.counts`) unless the matrix is already in memory."""
        rows = np.asarray(rows, dtype=np.int64)
        if self._masks is not None:
            m = self._masks[rows]
            return m.sum(axis=0).astype(np.int64), m.sum(axis=1).astype(np.int64)
        return mask_bits.counts(self._array("masks"), rows)

    @property
    def unit_index(self) -> Optional[np.ndarray]:
        """Example units (sweep=example_subsets): each unit's index in the source's train split; None for classes."""
        return np.asarray(self._array("unit_index")[:]) if "unit_index" in self.group else None

    def mask(self, row: int) -> np.ndarray:
        """Bool (U,): row ``row``'s mask, read alone (a worker need not read every row's, e.g. 11.5 GB at the
        paper's example-level scale)."""
        if self._masks is not None:
            return self._masks[row]
        return mask_bits.read(self._array("masks"), int(row))

    @property
    def all_targets(self) -> List[str]:
        """The original targets, then those added later, in the order they were added."""
        return list(self.attrs["targets"]) + self.added_targets

    def completed(self) -> np.ndarray:
        """(M,) bool: rows complete for this handle's targets (``completed``, for the original targets). A row
        whose flag cannot be decoded counts as not completed (with a warning naming the row and the file)."""
        if self.scope is None:
            return np.asarray(self._rows("completed"), dtype=bool)
        return np.logical_and.reduce([self.target_completed(t) for t in self.scope])

    def target_completed(self, target: str) -> np.ndarray:
        """(M,) bool: rows whose outputs for ``target`` are written (for any target, original or added)."""
        if target in self.attrs["targets"]:
            return np.asarray(self._rows("completed"), dtype=bool)
        if target not in self.added_targets:
            raise StoreError(f"{self.path} has no target {target!r}; it has {self.all_targets}")
        return np.asarray(self._rows(f"completed_targets/{target}"), dtype=bool)

    def row_done(self, row: int) -> bool:
        """Whether row ``row`` is complete for this handle's targets (reads one chunk per target)."""
        names = ["completed"] if self.scope is None else [f"completed_targets/{t}" for t in self.scope]
        return all(bool(self._row(name, row)) for name in names)  # an unreadable flag (None): not completed

    def missing_rows(self) -> np.ndarray:
        """Rows to run: not complete (for a scoped handle: and runnable, i.e. with a saved source model)."""
        missing = ~self.completed()
        if self._runnable is not None:
            missing &= self._runnable
        return np.flatnonzero(missing)

    def labels(self, target: str) -> np.ndarray:
        return np.asarray(self._array(f"targets/{target}/labels")[:])

    def class_names(self, target: str) -> List[str]:
        return list(self._array(f"targets/{target}/labels").attrs["class_names"])

    def outputs(self, target: str) -> zarr.Array:
        return self._array(f"outputs/{target}")

    def predictions(self, target: str) -> zarr.Array:
        return self._array(f"predictions/{target}")

    def row_stats(self) -> zarr.Array:
        return self._array("row_stats")

    @property
    def row_stat_fields(self) -> List[str]:
        return list(self._array("row_stats").attrs["fields"])

    def completion_times(self, completed: Optional[np.ndarray] = None) -> np.ndarray:
        """Unix times at which the completed rows were written: their provenance end times (format version 2;
        rows written without one are left out), else (version 1) the modification times of the non-empty
        ``completed`` chunks (one chunk per row, written last). ``completed``: ``completed()`` if already read
        (reading it takes a second or more at thousands of rows)."""
        if self.format_version >= 2:
            with bulk_reads():
                end = np.asarray(self._rows(f"{provenance.GROUP}/end_time"), dtype=np.float64)
                return end[self._done(completed) & np.isfinite(end)]
        folder = layout.completed_chunks(self.path)
        if not folder.is_dir():
            return np.zeros(0)
        with os.scandir(folder) as it:
            stats = [e.stat() for e in it if e.is_file()]
        return np.array([st.st_mtime for st in stats if st.st_size > 0], dtype=np.float64)

    def _done(self, completed: Optional[np.ndarray]) -> np.ndarray:
        return self.completed() if completed is None else completed

    def row_spans(self, completed: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start, end unix seconds, torch threads) of each completed row whose provenance has both times (format
        version 2; none for version 1), as the worker recorded them (``completed``: as in ``completion_times``)."""
        if self.format_version < 2:
            return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int32)
        with bulk_reads():
            start, end = (np.asarray(self._rows(f"{provenance.GROUP}/{n}"), dtype=np.float64)
                          for n in ("start_time", "end_time"))
            threads = np.asarray(self._rows(f"{provenance.GROUP}/threads"))
        ok = self._done(completed) & np.isfinite(start) & np.isfinite(end)
        return start[ok], end[ok], threads[ok].astype(np.int32)

    def row_times(self, completed: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """(wall seconds, torch threads) of each completed row with both times: end_time - start_time."""
        start, end, threads = self.row_spans(completed)
        return end - start, threads

    def row_seconds(self, completed: Optional[np.ndarray] = None) -> np.ndarray:
        """The ``total_seconds`` row statistic of each completed row whose statistics could be read: its own cost,
        with a batched group's training shared among its K rows (a group's first committed row carries the whole
        training in its provenance span instead, so spans over a group still in progress overstate a row's cost)."""
        fields = self.row_stat_fields
        if "total_seconds" not in fields:
            return np.zeros(0)
        with bulk_reads():
            seconds = np.asarray(self._rows("row_stats"), dtype=np.float64)[:, fields.index("total_seconds")]
        seconds = seconds[self._done(completed)]
        return seconds[np.isfinite(seconds) & (seconds > 0)]

    def provenance(self, row: int) -> Dict[str, Any]:
        """Where and how row ``row`` was computed (docs/store-format.md, "Row provenance"): ``start_time``,
        ``end_time``, ``threads``, ``code_version``, ``host``, ``device``, ``libraries``, ``slurm_job_id``,
        ``slurm_array_job_id``, ``slurm_array_task_id``. Unknown values (a row not written, a version 1 store, a
        chunk that cannot be decoded: a warning) read as NaN, -1, "" and {}."""
        if self.format_version < 2:
            return provenance.unpack({})
        return provenance.read(lambda name: self._row(f"{provenance.GROUP}/{name}", int(row)), f"{self.path} row {row}")

    def target_accuracy(self, target: str, rows: np.ndarray) -> np.ndarray:
        """(len(rows), n_modes) test accuracy, derived from stored predictions and labels (NaN for a row whose
        predictions cannot be read, with a warning)."""
        labels = self.labels(target)
        acc = np.full((len(rows), len(self.modes)), np.nan)
        for k, i in enumerate(rows):
            preds = self._row(f"predictions/{target}", int(i))
            if preds is not None:
                acc[k] = (preds == labels[None, :]).mean(axis=1)
        return acc

    def row_stats_of(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), fields) ``row_stats`` of ``rows`` (NaN for a row whose chunk cannot be read, with a
        warning)."""
        out = np.full((len(rows), len(self.row_stat_fields)), np.nan, dtype=np.float32)
        for k, i in enumerate(rows):
            values = self._row("row_stats", int(i))
            if values is not None:
                out[k] = values
        return out

    # ---- writing -------------------------------------------------------------------------------------------
    def write_row(
        self,
        row: int,
        outputs: Mapping[str, np.ndarray],
        predictions: Mapping[str, np.ndarray],
        stats: Mapping[str, float],
        run: Optional[RowRun] = None,
    ) -> None:
        """Check every target's outputs and predictions, then write every array of ``row`` (its provenance too:
        ``run`` says what only the computing process knows), then mark it completed (the commit point). A row that
        fails a check is a StoreError naming row, target and problem, and nothing of it is written: it stays not
        completed, and a resume reruns it. So is a store of an older format version, and a store that is no longer
        the one this handle opened (checked before anything is written and again just before the commit).

        A scoped handle writes its added targets' outputs and predictions, then their ``completed_targets``
        entries; ``row_stats``, ``provenance`` and ``completed`` (the source model's row) are left as they are."""
        row = int(row)
        self._check_writable(row)
        checked = self._checked(row, outputs, predictions)
        for t, (out, pred) in checked.items():
            self.outputs(t)[row] = out
            self.predictions(t)[row] = pred
        if self.scope is not None:
            self._check_writable(row)
            for t in self.scope:
                self._array(f"completed_targets/{t}")[row] = True
            return
        fields = self.row_stat_fields
        self.row_stats()[row] = np.array([stats.get(f, np.nan) for f in fields], dtype=np.float32)
        for name, value in provenance.record(run).items():
            self._array(f"{provenance.GROUP}/{name}")[row] = value
        self._check_writable(row)
        self._array("completed")[row] = True

    def _check_writable(self, row: int) -> None:
        """StoreError unless rows may be written here: the store is of the current format version and is still the
        store this handle opened (not deleted, nor deleted and created again at the same path)."""
        if self.format_version not in WRITABLE_VERSIONS:
            raise StoreError(f"row {row} not written: {older_format(self.path, self.attrs)}")
        problem = identity_problem(self.path, self.store_id)
        if problem:
            raise StoreError(f"row {row} not committed: {problem}; this task's rows belong to the store it opened, "
                             f"and the store now at {self.path} is not written")

    def _checked(self, row: int, outputs: Mapping[str, np.ndarray],
                 predictions: Mapping[str, np.ndarray]) -> Dict[str, tuple]:
        """Each target's (outputs as float32, predictions as int32), or a StoreError: shapes as the store's, dtypes
        that cast, every output finite, every prediction a class index in [0, the target's number of classes)."""
        if not 0 <= row < self.num_rows:
            raise StoreError(f"row {row} outside the store's {self.num_rows} rows")
        checked = {}
        for t in self.targets:
            try:
                out, pred = np.asarray(outputs[t]), np.asarray(predictions[t])
                problem = row_problem(out, pred, self.outputs(t).shape[1:], self.predictions(t).shape[1:],
                                      len(self.class_names(t)))
            except (KeyError, ValueError, TypeError) as e:  # a target missing, ragged lists, ...
                problem = f"no usable outputs and predictions ({brief(e)})"
            if problem:
                raise StoreError(f"row {row}, target {t}: {problem}; nothing of row {row} was written (it stays "
                                 f"not completed)")
            checked[t] = (out.astype(np.float32), pred.astype(np.int32))
        return checked

    # ---- targets added later -------------------------------------------------------------------------------
    def add_targets(self, specs: Sequence[TargetSpec], records: Mapping[str, Mapping[str, Any]]) -> None:
        """Add targets to this store: their labels, outputs and predictions arrays (as the original targets'),
        a completion record ``completed_targets/<t>`` (all False), then ``records[t]`` (the config they are
        transferred with, ...) in the root attrs ``added_targets``, which commits the addition.

        Existing arrays are not touched. Arrays of an addition that did not commit (no attrs entry) are replaced.
        Callers hold the store's addition lock (``store/added_targets.py``): one addition at a time."""
        taken = set(self.all_targets)
        clash = [t.name for t in specs if t.name in taken]
        if clash:
            raise StoreError(f"{self.path} already has target(s) {clash}")
        m, modes, kinds = self.num_rows, self.modes, self.output_kinds
        self._arrays.clear()  # arrays of an uncommitted addition are replaced below
        for spec in specs:
            create_target_arrays(self.group, spec, m, modes, kinds, overwrite=True)
            self.group.require_group("completed_targets").create_array(
                spec.name, shape=(m,), dtype="bool", chunks=(1,), fill_value=False, dimension_names=("row",),
                overwrite=True)
        fresh = zarr.open_group(store=str(self.path), mode="r+")  # the attrs as they are now, not as opened
        added = dict(fresh.attrs.get("added_targets", {}))
        added.update({t.name: dict(records[t.name]) for t in specs})
        fresh.attrs.update({"added_targets": added})
        self.group = zarr.open_group(store=str(self.path), mode="r+")
        self.attrs = dict(self.group.attrs)
        self.added_targets = list(self.attrs.get("added_targets", {}))
        lost = [t.name for t in specs if t.name not in self.added_targets]
        if lost:
            raise StoreError(f"adding {lost} to {self.path} raced with another process; run the command again")

    def scoped(self, targets: Sequence[str], runnable: Optional[np.ndarray] = None) -> "Store":
        """A handle whose ``targets``, ``completed()``, ``missing_rows()`` and ``write_row`` are about the added
        ``targets``; ``runnable`` (bool (M,)) limits ``missing_rows()`` to rows that can run."""
        unknown = [t for t in targets if t not in self.added_targets]
        if unknown:
            raise StoreError(f"{self.path}: {unknown} are not added targets (added: {self.added_targets})")
        return Store(self.path, self.group, scope=list(targets), runnable=runnable)

