"""How big a store gets on disk: now, and when all its rows are complete (``launch.dry_run``, ``launch.status``).
Bytes are what ``du`` counts: the blocks allocated to files and folders (a store of small chunk files takes a
block, often 4 kB, for each).

A row adds one slice of every array whose first dimension is ``row`` (outputs, predictions, completion flag, row
statistics, provenance, its mask). Two ways to price that slice:

- *measured*: a store with completed rows: the bytes of the files its rows wrote (the chunks of the arrays written
  one row at a time), divided by the rows written: what zarr's compression actually gave;
- *upper bound*: before any row is written: a two-row copy of the store made by its own creation code in a
  temporary folder (so no layout is written down twice), with a row of random values (which zstd cannot shrink)
  written into it: what that row added, files, folders and blocks included. Real rows compress: the demo's store
  ended at 51.0 MB against a bound of 65.4 MB (2026-12-07, docs/configuration.md).

Saved source models (``store.save_backbones``: one file per row) are priced by those saved so far, else by saving
an untrained model of the sweep's architecture; training checkpoints live only while a row trains, so they are
left out (``Usage.transient``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import zarr

from datatransfer.store.extend import row_arrays


def disk_bytes(path) -> Optional[int]:
    """Bytes ``path`` takes on disk, as ``du -s`` counts them: the blocks allocated to its files and folders (a store
    of small chunk files takes a block, often 4 kB, for each); None if it does not exist."""
    root = Path(path)
    if not root.exists():
        return None
    if not root.is_dir():
        return _blocks(root.stat())
    total = 0
    for folder, _, files in os.walk(root):
        for name in (folder, *(os.path.join(folder, f) for f in files)):
            try:
                total += _blocks(os.lstat(name))
            except OSError:  # removed meanwhile
                pass
    return total


def _blocks(st: os.stat_result) -> int:
    """Bytes allocated to a file or folder, as ``du`` counts them."""
    return st.st_blocks * 512


def _row_arrays(group: zarr.Group) -> List[Tuple[str, zarr.Array]]:
    """(path, array) of every array of ``group`` whose first dimension is ``row``, by path (zarr lists them in no
    fixed order, and the projection's random row must go to the same arrays every time)."""
    return sorted(row_arrays(group), key=lambda m: m[0])


def whole_row_bytes(group: zarr.Group, string_bytes: int) -> int:
    """Uncompressed bytes one row adds to the arrays of the store ``group`` written whole when the store is created
    or extended (its masks, the row coordinates), not one row at a time: a row's slice of each (a text element
    counted as ``string_bytes``)."""
    return sum(math.prod(arr.shape[1:]) * _item(arr, string_bytes) for _, arr in _row_arrays(group)
               if arr.chunks[0] > 1)


def _item(arr: zarr.Array, string_bytes: int) -> int:
    return string_bytes if _is_text(arr) else np.dtype(arr.dtype).itemsize


def _is_text(arr: zarr.Array) -> bool:
    return np.dtype(arr.dtype).kind in "TUSO"


@dataclasses.dataclass
class Usage:
    """A store's bytes on disk (``du -s``), and the parts of it a projection prices apart."""

    total: int  # the whole store folder
    rows: int  # the chunk files of the arrays written one row at a time (those whose chunks hold one row)
    models: int  # saved source models (store.save_backbones): backbones/
    saved: int  # how many saved source models
    transient: int  # training checkpoints (checkpoints/): deleted when their row completes

    def per_row(self, done: int) -> Optional[float]:
        """Mean bytes of a row's chunk files, from the ``done`` rows written so far; None when none is."""
        return self.rows / done if done > 0 else None

    @property
    def per_model(self) -> Optional[float]:
        return self.models / self.saved if self.saved else None


def usage(path, group: zarr.Group) -> Usage:
    """The store at ``path`` (opened as ``group``) on disk, in one walk of its folders (a paper-scale store has
    a chunk file per row and array: hundreds of thousands)."""
    root = os.path.abspath(path)
    kinds = {os.path.join(root, name, "c"): "rows" for name, arr in _row_arrays(group) if arr.chunks[0] == 1}
    kinds[os.path.join(root, "backbones")] = "models"
    kinds[os.path.join(root, "checkpoints")] = "transient"
    sums = dict(total=0, rows=0, models=0, saved=0, transient=0)
    kind_of = {root: None}
    for folder, dirs, files in os.walk(root):
        kind = kind_of.pop(folder, None)
        for d in dirs:  # a folder inside one of the priced folders is priced with it
            child = os.path.join(folder, d)
            kind_of[child] = kind or kinds.get(child)
        for name in (folder, *(os.path.join(folder, f) for f in files)):
            try:
                n = _blocks(os.lstat(name))
            except OSError:  # removed meanwhile
                continue
            sums["total"] += n
            if kind:
                sums[kind] += n
        if kind == "models":
            sums["saved"] += sum(f.endswith(".pt") for f in files)
    return Usage(**sums)


def info_bytes(device: str) -> int:
    """Bytes of a row's provenance text as this machine would write it now (store/provenance.py), plus zarr's
    length prefix."""
    from datatransfer.store.provenance import RowRun, record

    return len(record(RowRun(device=device))["info"].encode()) + 4


def new_store_bytes(spec, string_bytes: int) -> int:
    """Upper bound of the bytes the store of ``spec`` takes on disk when all of its rows are complete. Measured on a
    two-row copy made by the store's own creation code in a temporary folder: what it takes when created, plus what
    its second row adds (a row of random, so incompressible, values written into each array written one row at a
    time, with the files and folders of its chunks) and each row's uncompressed slice of the arrays written
    whole."""
    from datatransfer.store.spec import write_new

    two = dataclasses.replace(
        spec, num_rows=2,
        masks=spec.masks if callable(spec.masks) else np.asarray(spec.masks)[:2],
        extra_arrays={k: (np.asarray(v)[:2] if dims and dims[0] == "row" else v, dims, a)
                      for k, (v, dims, a) in spec.extra_arrays.items()})
    rows = int(spec.num_rows) if callable(spec.masks) else len(spec.masks)
    with tempfile.TemporaryDirectory(prefix="datatransfer-size-") as tmp:
        path = Path(tmp) / "store.zarr"
        write_new(path, two, "size projection")
        group = zarr.open_group(str(path), mode="r+")
        created = disk_bytes(path) or 0
        added = _random_row_bytes(path, group, string_bytes)
        whole = whole_row_bytes(group, string_bytes)
    return created + rows * (added + whole)


def row_bound(path, string_bytes: int) -> int:
    """Upper bound of the bytes a row adds to the existing store at ``path`` (one with no completed row to measure
    yet): its metadata copied to a temporary folder, without any chunk, and a row of random values written there
    as in ``new_store_bytes``. The arrays written whole (masks) are already in the store's size now."""
    root = Path(path)
    with tempfile.TemporaryDirectory(prefix="datatransfer-size-") as tmp:
        copy = Path(tmp) / "store.zarr"
        for meta in root.rglob("zarr.json"):  # zarr 3 keeps every group's and array's metadata in one such file
            rel = meta.relative_to(root)
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            (copy / rel).write_bytes(meta.read_bytes())
        return _random_row_bytes(copy, zarr.open_group(str(copy), mode="r+"), string_bytes)


def _random_row_bytes(path: Path, group: zarr.Group, string_bytes: int) -> int:
    """Bytes on disk a row of random values adds to the store at ``path`` with no row written (``group``: it,
    opened for writing): rows 0 and 1 are written, and the second measured (the first also makes each array's
    chunk folders)."""
    rng = np.random.default_rng(0)
    sizes = []
    for row in (0, 1):
        sizes.append(disk_bytes(path) or 0)
        for _, arr in _row_arrays(group):
            if arr.chunks[0] == 1:
                arr[row] = _random(arr, rng, string_bytes)
    return (disk_bytes(path) or 0) - sizes[1]


def _random(arr: zarr.Array, rng: np.random.Generator, string_bytes: int) -> np.ndarray:
    """One row of ``arr`` of random values (zstd cannot shrink them much: an upper bound of a real row)."""
    shape = arr.shape[1:]
    if _is_text(arr):
        text = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz0123456789"), size=max(0, string_bytes - 4)))
        return np.full(shape, text, dtype=object) if shape else np.asarray(text, dtype=object)
    dtype = np.dtype(arr.dtype)
    if dtype.kind == "b":  # not the fill value (False), which zarr would not store at all: a completed row's flag
        return np.ones(shape, dtype=bool)
    return rng.integers(0, 255, size=(*shape, dtype.itemsize), dtype=np.uint8).view(dtype).reshape(shape)


def backbone_bytes(cfg) -> int:
    """Bytes on disk of one saved source model (``store.save_backbones``): an untrained model of the sweep's
    architecture saved as a row saves it (train/backbones.py), into a temporary folder."""
    from datatransfer import data
    from datatransfer.train import backbones
    from datatransfer.train.models import build

    source = data.open_source(cfg)
    model = build(cfg.model, source.num_classes, in_channels=source.channels)
    with tempfile.TemporaryDirectory(prefix="datatransfer-size-") as tmp:
        file = Path(tmp) / "row-0.pt"
        backbones.save(file, model, cfg.model, source.channels, {"row": 0, "seed": 0, "source_accuracy": 0.0})
        return disk_bytes(file) or 0
