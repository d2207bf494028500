"""`python -m launch.verify`: does a store hold what its completion flags claim? (docs/store-format.md, "Verifying a
store".)

Checked: every completed row's chunks decode (``outputs``, ``predictions``, ``row_stats``, ``provenance``; for a
target added later, its rows per ``completed_targets/<t>``), outputs are finite and predictions class indices; the
completion flags themselves decode; the masks equal those the sweep's config gives (when its sweep kind is known to
this code); the root attributes are there and the arrays' shapes agree with the rows, units, targets, modes and
kinds. With ``invalidate``, the completion flags of the damaged rows are cleared (and masks that differ are
rewritten from the config), so that a rerun (``python -m launch``, ``launch.resume``, ``launch.add_targets``)
computes those rows again. Metadata that cannot be read is a StoreError, as everywhere.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import zarr

from datatransfer.store import mask_bits, provenance
from datatransfer.store.integrity import brief, chunk_file, read_rows
from datatransfer.store.spec import WRITABLE_VERSIONS
from datatransfer.store.sweep_store import Store

log = logging.getLogger(__name__)

ROOT_ATTRS = ("format", "format_version", "fingerprint", "config", "unit", "unit_names", "targets", "modes",
              "output_kinds", "created", "code_version")
BLOCK_BYTES = 64 * 2 ** 20  # rows read per call: about this much data
CONCURRENCY = 64  # chunks fetched at once (one chunk per row: many small files)


@dataclass
class Damage:
    """One problem of one row: ``flag`` is the completion flag that clearing makes the row run again."""

    row: int
    array: str
    file: Path
    problem: str
    flag: str  # "completed" or "completed_targets/<t>"


@dataclass
class Report:
    path: Path
    format_version: int
    rows: int
    completed: Dict[str, int]  # flag -> rows it marks completed
    damaged: List[Damage] = field(default_factory=list)
    mask_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # rows whose mask differs
    mask_files: List[str] = field(default_factory=list)  # masks chunk files of those rows, with their state
    mask_note: str = ""  # why the masks were not compared, if they were not
    metadata: List[str] = field(default_factory=list)
    cleared: Dict[str, List[int]] = field(default_factory=dict)  # with invalidate: flag -> rows cleared
    masks_rewritten: bool = False

    @property
    def damage_found(self) -> bool:
        return bool(self.damaged or len(self.mask_rows) or self.metadata)

    def text(self) -> str:
        """The report the app prints."""
        return _render(self)


def verify(path: str | Path, invalidate: bool = False) -> Report:
    """Check the store at ``path``; with ``invalidate``, clear the completion of the damaged rows (and rewrite masks
    that differ from the sweep's). StoreError if its metadata cannot be read."""
    store = Store.open(path, mode="r+" if invalidate else "r")
    report = Report(store.path, store.format_version, store.num_rows, {})
    report.metadata = _metadata(store)
    flags = _flags(store, report)
    with zarr.config.set({"async.concurrency": CONCURRENCY}):
        for name, rows, check in _checks(store, flags):
            try:
                arr = store.array(name)
            except KeyError:  # reported with the metadata
                continue
            for row, problem in _scan(store.path, arr, rows, check):
                report.damaged.append(Damage(row, name, chunk_file(store.path, arr, row), problem,
                                             _flag_of(store, name)))
    expected = _compare_masks(store, report)
    report.damaged.sort(key=lambda d: (d.row, d.array))
    if invalidate and report.damage_found:
        _invalidate(store, report, flags, expected)
    return report


def _flag_of(store: Store, name: str) -> str:
    """The completion flag covering array ``name``: an added target's own, else ``completed``."""
    parts = name.split("/")
    if parts[0] in ("outputs", "predictions", "completed_targets") and parts[1] in store.added_targets:
        return f"completed_targets/{parts[1]}"
    return "completed"


def _flags(store: Store, report: Report) -> Dict[str, np.ndarray]:
    """Each completion flag array (``completed``, ``completed_targets/<t>``) as read; a chunk that cannot be decoded
    is damage (it reads as not completed)."""
    flags = {}
    for name in ["completed"] + [f"completed_targets/{t}" for t in store.added_targets]:
        def bad(arr: zarr.Array, row: int, e: Exception, name=name) -> None:
            report.damaged.append(Damage(row, name, chunk_file(store.path, arr, row),
                                         f"cannot be decoded ({brief(e)}); the row counts as not completed", name))

        flags[name] = np.asarray(read_rows(store.array(name), bad), dtype=bool)
        report.completed[name] = int(flags[name].sum())
    return flags


Check = Callable[[int, np.ndarray], Optional[str]]


def _checks(store: Store, flags: Dict[str, np.ndarray]) -> Iterator[Tuple[str, np.ndarray, Optional[Check]]]:
    """(array, completed rows to read, value check) for every per-row array."""
    done = np.flatnonzero(flags["completed"])
    for t in store.all_targets:
        rows = done if t not in store.added_targets else np.flatnonzero(flags[f"completed_targets/{t}"])
        try:
            classes = len(store.class_names(t))
        except KeyError:  # no labels array: reported with the metadata
            classes = None
        yield f"outputs/{t}", rows, _finite
        yield f"predictions/{t}", rows, None if classes is None else (lambda row, p, c=classes: _classes(p, c))
    yield "row_stats", done, None
    if store.format_version >= 2:
        for name in provenance.ARRAYS:
            yield f"{provenance.GROUP}/{name}", done, _json if name == "info" else None


def _finite(row: int, out: np.ndarray) -> Optional[str]:
    bad = ~np.isfinite(out)
    return f"{int(bad.sum())} of {out.size} outputs are NaN or infinite" if bad.any() else None


def _classes(pred: np.ndarray, classes: int) -> Optional[str]:
    bad = (pred < 0) | (pred >= classes)
    if not bad.any():
        return None
    return f"{int(bad.sum())} of {pred.size} predictions outside the {classes} classes (-1: never written)"


def _json(row: int, info: np.ndarray) -> Optional[str]:
    text = str(np.asarray(info).item())
    try:
        json.loads(text) if text else None
    except ValueError as e:
        return f"provenance info is not JSON ({brief(e)})"
    return None


def _scan(path: Path, arr: zarr.Array, rows: np.ndarray, check: Optional[Check]) -> Iterator[Tuple[int, str]]:
    """(row, problem) for each of ``rows`` whose chunk of ``arr`` (of the store at ``path``) cannot be decoded or
    fails ``check``. Rows are read in blocks (one slice over their span); a block that fails is read row by row."""
    row_bytes = int(np.prod(arr.shape[1:], dtype=np.int64)) * max(arr.dtype.itemsize, 8)
    block = int(np.clip(BLOCK_BYTES // max(row_bytes, 1), 1, 4096))
    for i in range(0, len(rows), block):
        b = rows[i:i + block]
        try:
            span = arr[int(b[0]):int(b[-1]) + 1]
            data = [(int(r), span[int(r) - int(b[0])]) for r in b]
        except Exception:  # an undecodable chunk in the block: find it
            data = []
            for r in b:
                try:
                    data.append((int(r), arr[int(r)]))
                except Exception as e:  # decoding errors are codec-specific
                    yield int(r), f"cannot be decoded ({brief(e)})"
        for r, values in data:
            problem = check(r, np.asarray(values)) if check is not None else None
            if problem:
                if not chunk_file(path, arr, r).exists():
                    problem += " (its chunk file is missing: it reads as the fill value)"
                yield r, problem


Masks = Callable[[int, int], np.ndarray]


def _expected_masks(store: Store) -> Tuple[Optional[Masks], int, str]:
    """The masks the stored config's sweep gives, as a function (lo, hi) -> bool rows lo..hi-1 (made a block at a
    time: the whole matrix may not fit in memory), and their number of rows; or (None, 0, why they cannot be
    recomputed here)."""
    from datatransfer import masks
    from datatransfer.config import structured

    sweep = (store.attrs.get("config") or {}).get("sweep")
    if not isinstance(sweep, dict):
        return None, 0, "masks not compared: the stored config has no sweep section"
    kind = str(sweep.get("kind", "random_subsets"))
    if kind == "counterfactual":
        return _recorded_counterfactual(store, sweep)
    if kind not in masks.GENERATORS:
        return None, 0, f"masks not compared: sweep kind {kind!r} is not known to this code"
    try:
        sw = structured({"sweep": sweep}).sweep
        return masks.blocks(sw, len(store.unit_names)), int(sw.num_models), ""
    except Exception as e:  # a config this code's schema or generator does not take
        return None, 0, f"masks not compared: the stored sweep config does not give masks here ({brief(e)})"


def _recorded_counterfactual(store: Store, sweep: dict) -> Tuple[Optional[Masks], int, str]:
    """A counterfactual store's keep-masks, from its config and what it recorded at creation (the ranking, the
    hand-picked classes, the debugged examples' influencers): the influence store is not read."""
    from datatransfer.config import structured
    from datatransfer.masks import counterfactual as cfm

    try:
        cf = structured({"sweep": sweep, "counterfactual": store.attrs["config"].get("counterfactual") or {}})
        rec = store.attrs["counterfactual"]
        influence = np.asarray(store.array("counterfactual/unit_influence")[:], dtype=np.float64)
        units = list(rec["handpicked"]["units"])
        picked = np.isin(store.unit_names, units) if units else None
        pairs = [(int(e["example"]), int(e["unit"])) for e in rec["examples"]]
        whole = cfm.keep_masks(cf.counterfactual, influence, picked, pairs)[0]  # a few hundred rows
        return (lambda lo, hi: whole[lo:hi]), len(whole), ""
    except Exception as e:  # a record this code cannot read, damaged arrays
        return None, 0, f"masks not compared: the counterfactual record does not give masks here ({brief(e)})"


def _compare_masks(store: Store, report: Report) -> Optional[Masks]:
    """Fill in the report's mask mismatches, a chunk of rows at a time; returns the expected masks (None when not
    compared)."""
    expected, rows, report.mask_note = _expected_masks(store)
    if expected is None:
        return None
    arr = store.array("masks")
    shape = (arr.shape[0], mask_bits.units_of(arr))
    given = (rows, int(np.shape(expected(0, 1))[1]) if rows else len(store.unit_names))
    if given != shape:
        report.mask_note = f"masks not compared: shape {shape}, the sweep's config gives {given}"
        return None
    step, bad = int(arr.chunks[0]), []
    for lo in range(0, arr.shape[0], step):
        hi = min(lo + step, arr.shape[0])
        file = chunk_file(store.path, arr, lo)
        try:
            differ = lo + np.flatnonzero((mask_bits.read(arr, slice(lo, hi)) != expected(lo, hi)).any(axis=1))
            state = "missing: reads as all False" if not file.exists() else "holds other masks"
        except Exception as e:  # an undecodable chunk
            differ, state = np.arange(lo, hi), f"cannot be decoded ({brief(e)})"
        if len(differ):
            bad.append(differ)
            report.mask_files.append(f"{file}: {state} (rows {lo}-{hi - 1})")
    report.mask_rows = np.concatenate(bad) if bad else np.zeros(0, dtype=np.int64)
    return expected


def _metadata(store: Store) -> List[str]:
    """Problems of the root attributes and of the arrays' shapes."""
    a, m, u = store.attrs, store.num_rows, len(store.unit_names)
    needed = ROOT_ATTRS + (("store_id",) if store.format_version >= 2 else ())
    problems = [f"{store.path / 'zarr.json'}: root attribute {k!r} missing" for k in needed if k not in a]
    sweep_rows = ((a.get("config") or {}).get("sweep") or {}).get("num_models")
    if sweep_rows is not None and int(sweep_rows) != m:
        problems.append(f"{store.path}: {m} rows, its config's sweep.num_models is {sweep_rows}")
    for name, shape in _shapes(store, m, u).items():
        try:
            found = tuple(store.array(name).shape)
        except KeyError:
            problems.append(f"{store.path / name}: array missing")
            continue
        if shape is not None and found != shape:
            problems.append(f"{store.path / name}: shape {found}, expected {shape} (from the root attributes' "
                            f"units, targets, modes, kinds and the {m} rows)")
    return problems


def _shapes(store: Store, m: int, u: int) -> Dict[str, Optional[tuple]]:
    """Every array the store should have and its shape (None: any)."""
    modes, kinds = len(store.modes), len(store.output_kinds)
    fields = len(store.row_stat_fields) if "row_stats" in store.group else None
    packed = "masks" in store.group and mask_bits.packed(store.array("masks"))
    shapes: Dict[str, Optional[tuple]] = {"masks": (m, -(-u // 8) if packed else u), "completed": (m,),
                                          "row_stats": (m, fields)}
    for t in store.all_targets:
        try:
            n = int(store.array(f"targets/{t}/labels").shape[0])
        except KeyError:
            shapes[f"targets/{t}/labels"] = None
            n = store.outputs(t).shape[-1] if f"outputs/{t}" in store.group else -1
        shapes.update({f"outputs/{t}": (m, modes, kinds, n), f"predictions/{t}": (m, modes, n)})
    shapes.update({f"completed_targets/{t}": (m,) for t in store.added_targets})
    if store.format_version >= 2:
        shapes.update({f"{provenance.GROUP}/{name}": (m,) for name in provenance.ARRAYS})
    return shapes


def _invalidate(store: Store, report: Report, flags: Dict[str, np.ndarray], expected: Optional[Masks]) -> None:
    """Clear the completion flags of the damaged rows; rewrite masks that differ from the sweep's (their rows'
    every flag is cleared: they may have been computed with the wrong mask)."""
    clear: Dict[str, set] = {name: {d.row for d in report.damaged if d.flag == name} for name in flags}
    for name, done in flags.items():
        clear[name].update(int(r) for r in report.mask_rows if done[r])
    if len(report.mask_rows) and expected is not None:
        arr = store.array("masks")
        step = int(arr.chunks[0])
        for lo in sorted({int(r) // step * step for r in report.mask_rows}):
            mask_bits.write(arr, lo, expected(lo, min(lo + step, arr.shape[0])))
        report.masks_rewritten = True
    for name, rows in clear.items():
        arr = store.array(name)
        for r in sorted(rows):
            arr[r] = False
        if rows:
            report.cleared[name] = sorted(rows)


def _ranges(rows) -> str:
    """'0-3, 7, 9-10'."""
    rows, out = sorted(int(r) for r in rows), []
    for r in rows:
        if out and r == out[-1][1] + 1:
            out[-1][1] = r
        else:
            out.append([r, r])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in out)


def _render(r: Report, shown: int = 50) -> str:
    extra = "".join(f", {n} completed for {k.split('/', 1)[1]}" for k, n in r.completed.items() if k != "completed")
    lines = [f"store {r.path}: format version {r.format_version}, {r.rows} rows, "
             f"{r.completed.get('completed', 0)} completed{extra}"]
    lines += ["metadata problems:"] + [f"  {p}" for p in r.metadata] if r.metadata else ["metadata: consistent"]
    rows = sorted({d.row for d in r.damaged})
    lines.append(f"damaged rows: {len(rows)}" + (f" ({_ranges(rows)})" if rows else ""))
    lines += [f"  row {d.row}: {d.array}: {d.file}: {d.problem}" for d in r.damaged[:shown]]
    if len(r.damaged) > shown:
        lines.append(f"  ... and {len(r.damaged) - shown} more")
    if len(r.mask_rows):
        lines.append(f"mask mismatches: {len(r.mask_rows)} rows ({_ranges(r.mask_rows)}) differ from the masks of "
                     f"the sweep's config")
        lines += [f"  {f}" for f in r.mask_files]
    else:
        lines.append(r.mask_note or "masks: as the sweep's config gives them")
    if not r.damage_found:
        return "\n".join(lines + ["no damage found"])
    if r.cleared or r.masks_rewritten:
        done = "; ".join(f"{k} of rows {_ranges(v)}" for k, v in r.cleared.items())
        lines.append(f"invalidated: cleared {done or 'nothing'}" + ("; masks rewritten from the sweep's config"
                                                                   if r.masks_rewritten else ""))
        lines.append(f"rerun them with the command that made the store (python -m launch ..., launch.add_targets "
                     f"...) or python -m launch.resume store.path={r.path}"
                     + (" (with the code that wrote it: an older format)" if r.format_version not in WRITABLE_VERSIONS
                        else ""))
    elif rows or len(r.mask_rows):
        lines.append(f"damage found: python -m launch.verify store.path={r.path} verify.invalidate=true clears the "
                     f"completion of those rows, so that a rerun computes them again")
    if r.metadata:
        lines.append("metadata problems are not repaired by verify.invalidate")
    return "\n".join(lines)
