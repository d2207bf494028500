"""The row-block sums inside an influence store (``sums/<t>/``, docs/influence-format.md), and what tells whether a
block's rows changed since they were summed.

Store rows are cut into fixed blocks of ``block_rows`` (block j holds rows j*B .. (j+1)*B - 1). Every array here has
the block (or the row, chunked by block) as its first axis, and its chunks of block j live under ``c/<j>/``: a new
influence store takes the blocks that did not change from the previous one by hard-linking those files (zarr
replaces a file it writes instead of writing into it, so the previous store is never modified), and writes only the
blocks that did. Absent chunks read as zeros: an empty block.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import zarr

from datatransfer.influence.sums import RowData, Sums
from datatransfer.store.integrity import chunk_file

# 3: row_pending (rows counted in the totals but not in their block's sums); 2: the U x 2K sums in chunks of ~16 MB
# (1: one chunk per block and pair)
SUMS_VERSION = 3
# Arrays whose first axis is the block or the row, by that axis.
BLOCK_ARRAYS = ("block_s_in", "block_total", "block_n_in", "block_count", "block_mask_hash")
ROW_ARRAYS = ("row_stamp", "row_pending", "row_aggregate", "row_samples")


@dataclass
class Layout:
    """What the sums of one target are laid out for; sums laid out otherwise cannot be reused."""

    block_rows: int
    rows: int  # M, store rows
    units: int
    pairs: int  # (mode, kind) pairs, mode-major
    cols: int  # K = n + C + 1
    sample: np.ndarray  # (S,) example indices kept per row for the diagnostics
    store_fingerprint: str
    store_id: str

    @property
    def blocks(self) -> int:
        return -(-self.rows // self.block_rows)

    def key(self) -> Dict[str, Any]:
        return {"version": SUMS_VERSION, "block_rows": self.block_rows, "rows": self.rows, "units": self.units,
                "pairs": self.pairs, "cols": self.cols, "sample": [int(i) for i in self.sample],
                "store_fingerprint": self.store_fingerprint, "store_id": self.store_id}

    def block(self, j: int) -> slice:
        return slice(j * self.block_rows, min((j + 1) * self.block_rows, self.rows))


def create(g: zarr.Group, lay: Layout) -> None:
    """The empty arrays of ``sums/<t>`` in the new influence store ``g`` (that group)."""
    g.attrs["layout"] = lay.key()
    nb, p, u, k, b, s = lay.blocks, lay.pairs, lay.units, lay.cols, lay.block_rows, len(lay.sample)
    raw = {"compressors": None, "fill_value": 0}  # float sums do not compress; raw keeps reads and writes cheap
    # ~16 MB chunks of units: zarr writes one 160 MB chunk ~4x slower than ten of 16 MB (measured, bench size)
    uc = int(np.clip(2 ** 24 // (16 * k), 1, u))
    g.create_array("block_s_in", shape=(nb, p, u, 2 * k), chunks=(1, 1, uc, 2 * k), dtype="float64", **raw,
                   dimension_names=("block", "pair", "unit", "column"))
    g.create_array("block_total", shape=(nb, p, 2 * k), chunks=(1, 1, 2 * k), dtype="float64", **raw,
                   dimension_names=("block", "pair", "column"))
    g.create_array("block_n_in", shape=(nb, u), chunks=(1, u), dtype="int64", **raw, dimension_names=("block", "unit"))
    for name in ("block_count", "block_mask_hash"):
        g.create_array(name, shape=(nb,), chunks=(1,), dtype="int64", **raw, dimension_names=("block",))
    g.create_array("row_stamp", shape=(lay.rows,), chunks=(b,), dtype="int64", **raw, dimension_names=("row",))
    g.create_array("row_pending", shape=(lay.rows,), chunks=(b,), dtype="int8", **raw, dimension_names=("row",))
    g.create_array("row_aggregate", shape=(lay.rows, p), chunks=(b, 1), dtype="float64", **raw,
                   dimension_names=("row", "pair"))
    g.create_array("row_samples", shape=(lay.rows, p, max(s, 1)), chunks=(b, 1, max(s, 1)), dtype="float32", **raw,
                   dimension_names=("row", "pair", "sample"))
    g.create_array("total_s_in", shape=(p, u, 2 * k), chunks=(1, uc, 2 * k), dtype="float64", **raw,
                   dimension_names=("pair", "unit", "column"))
    g.create_array("total_total", shape=(p, 2 * k), chunks=(1, 2 * k), dtype="float64", **raw,
                   dimension_names=("pair", "column"))
    g.create_array("total_n_in", shape=(u,), chunks=(u,), dtype="int64", **raw, dimension_names=("unit",))
    g.create_array("total_count", shape=(1,), dtype="int64", **raw)
    g.create_array("sample", data=np.asarray(lay.sample, dtype=np.int64), dimension_names=("sample",))


def open_previous(out: Path, t: str, lay: Layout, states: Dict[str, int]) -> Optional[zarr.Group]:
    """The previous influence store's ``sums/<t>``, if it exists and is laid out like ``lay`` for one of the sweep
    store's states (``states``: fingerprint -> rows, ``extend.fingerprint_rows``; the current one is ``lay``
    itself): sums taken before an extension hold the first rows, and blocks past them are new. Else None."""
    if not (out / "sums" / t / "zarr.json").is_file():
        return None
    try:
        g = zarr.open_group(str(out / "sums" / t), mode="r")
    except Exception:  # unreadable: recompute, the new store replaces it
        return None
    key = g.attrs.get("layout")
    for fingerprint, rows in states.items():
        if key == dataclasses.replace(lay, rows=rows, store_fingerprint=fingerprint).key():
            return g
    return None


def link_block(old: Path, new: Path, j: int, arrays=BLOCK_ARRAYS + ROW_ARRAYS) -> None:
    """Hard-link every chunk of block ``j`` of the block/row ``arrays`` of ``old`` (a sums group folder) into
    ``new``."""
    for name in arrays:
        src = old / name / "c" / str(j)
        if not src.exists():
            continue
        if src.is_file():  # a 1-D array: the chunk is the file c/<j>
            _link(src, new / name / "c" / str(j))
            continue
        for folder, _, files in os.walk(src):
            for f in files:
                rel = Path(folder, f).relative_to(old)
                _link(Path(folder, f), new / rel)


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # a filesystem without hard links: copy
        shutil.copy2(src, dst)


def row_stamps(store_path: Path, outputs: zarr.Array, rows: np.ndarray) -> np.ndarray:
    """(len(rows),) int64 stamp of each row's outputs: the modification time (ns) of its chunk file, 1 when the
    chunk is absent (all fill values). Any rewrite of a row changes it."""
    out = np.ones(len(rows), dtype=np.int64)
    folder = str(chunk_file(store_path, outputs, 0).parent).rsplit(outputs.path, 1)[0] + outputs.path
    encode, rest = outputs.metadata.encode_chunk_key, (0,) * (outputs.ndim - 1)
    for i, r in enumerate(rows):  # plain strings: pathlib per row took longer than the stat itself
        try:
            out[i] = max(os.stat(f"{folder}/{encode((int(r), *rest))}").st_mtime_ns, 2)
        except FileNotFoundError:
            pass
    return out


def mask_hash(masks: np.ndarray, rows: np.ndarray) -> int:
    """A 63-bit hash of the rows' indices and masks (a mask rewritten by ``launch.verify`` changes it)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(np.asarray(rows, dtype=np.int64).tobytes())
    h.update(np.packbits(np.asarray(masks, dtype=bool), axis=1).tobytes())
    return int.from_bytes(h.digest(), "little") >> 1


def read_block(g: zarr.Group, j: int, pairs: List[int]) -> Sums:
    """Block ``j``'s sums for the pairs at ``pairs`` (consecutive indices: one read, no copy)."""
    p0, p1 = pairs[0], pairs[-1] + 1
    return Sums(np.asarray(g["block_s_in"][j, p0:p1]), np.asarray(g["block_total"][j, p0:p1]),
                np.asarray(g["block_n_in"][j]), int(g["block_count"][j]))


def write_block(g: zarr.Group, j: int, pairs: List[int], s: Sums) -> None:
    p0, p1 = pairs[0], pairs[-1] + 1
    g["block_s_in"][j, p0:p1] = s.s_in
    g["block_total"][j, p0:p1] = s.total
    g["block_n_in"][j] = s.n_in
    g["block_count"][j] = s.count


def read_total(g: zarr.Group, p: int) -> Sums:
    """Pair ``p``'s sums over every block (as one pair)."""
    return Sums(np.asarray(g["total_s_in"][p])[None], np.asarray(g["total_total"][p])[None],
                np.asarray(g["total_n_in"][:]), int(g["total_count"][0]))


def write_total(g: zarr.Group, p: int, s: Sums) -> None:
    g["total_s_in"][p] = s.s_in[0]
    g["total_total"][p] = s.total[0]
    g["total_n_in"][:] = s.n_in
    g["total_count"][0] = s.count


def pending_rows(g: zarr.Group, lay: Layout, j: int) -> np.ndarray:
    """The rows of block ``j`` that the sums group ``g`` counts in its totals but not in the block's sums (``g`` may
    hold fewer rows than ``lay``: sums taken before the store was extended)."""
    blk = lay.block(j)
    blk = slice(blk.start, min(blk.stop, g["row_pending"].shape[0]))
    return np.flatnonzero(np.asarray(g["row_pending"][blk])) + blk.start


def read_rowdata(g: zarr.Group, lay: Layout, j: int, pairs: List[int], rows: np.ndarray) -> RowData:
    """The diagnostics data of ``rows`` (all in block ``j``) for ``pairs``; ``g`` may hold fewer rows than ``lay``
    (sums taken before the store was extended)."""
    blk = lay.block(j)
    blk = slice(blk.start, min(blk.stop, g["row_aggregate"].shape[0]))
    agg = np.stack([g["row_aggregate"][blk, p] for p in pairs], axis=1)
    smp = np.stack([g["row_samples"][blk, p, :len(lay.sample)] for p in pairs], axis=1)
    at = rows - blk.start
    return RowData(rows, agg[at], smp[at])


def write_rowdata(g: zarr.Group, lay: Layout, j: int, pairs: List[int], d: RowData) -> None:
    """Block ``j``'s diagnostics data (rows not in ``d`` get zeros) for ``pairs``: whole chunks."""
    blk = lay.block(j)
    at = d.rows - blk.start
    for i, p in enumerate(pairs):
        agg = np.zeros(blk.stop - blk.start)
        agg[at] = d.aggregate[:, i]
        g["row_aggregate"][blk, p] = agg
        if len(lay.sample):
            smp = np.zeros((blk.stop - blk.start, len(lay.sample)), dtype=np.float32)
            smp[at] = d.samples[:, i]
            g["row_samples"][blk, p, :] = smp
