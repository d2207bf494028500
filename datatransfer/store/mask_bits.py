"""How the ``masks`` array of a store holds the masks (docs/store-format.md).

Format versions 1-2, and version 3 with few units: bool (rows, units), one byte per unit. Version 3 with
``units >= PACK_MIN_UNITS`` (example units: thousands to millions of source images): bit-packed, uint8
(rows, ceil(units / 8)), ``np.packbits(mask, axis=1, bitorder="little")`` (unit u of a row is bit u % 8 of byte
u // 8), with array attributes ``{"bitpacked": true, "units": U, "bitorder": "little"}``. 71,828 rows x 1.28 M
units take 11.5 GB instead of 92 GB. Chunks hold whole rows (a worker reads its row's mask in one chunk) and at most
~CHUNK_BYTES; masks are written at creation one chunk-aligned block of rows at a time, the blocks in parallel
(two writers never touch one chunk)."""

from __future__ import annotations

import concurrent.futures as cf
from typing import Callable

import numpy as np
import zarr

PACK_MIN_UNITS = 2048  # from this many units on, a new store's masks are bit-packed
CHUNK_BYTES = 16 * 2 ** 20  # target (uncompressed) chunk size of the masks array
BITORDER = "little"


def packed(arr: zarr.Array) -> bool:
    return bool(arr.attrs.get("bitpacked", False))


def units_of(arr: zarr.Array) -> int:
    return int(arr.attrs["units"]) if packed(arr) else int(arr.shape[1])


def encode(block: np.ndarray) -> np.ndarray:
    return np.packbits(np.asarray(block, dtype=bool), axis=-1, bitorder=BITORDER)


def decode(data: np.ndarray, units: int) -> np.ndarray:
    return np.unpackbits(np.asarray(data, dtype=np.uint8), axis=-1, count=units, bitorder=BITORDER).astype(bool)


def read(arr: zarr.Array, rows=slice(None)) -> np.ndarray:
    """Bool masks of ``rows`` (an int, a slice or an index array), whatever the encoding."""
    data = np.asarray(arr[rows] if not isinstance(rows, np.ndarray) else arr.get_orthogonal_selection((rows,)))
    return decode(data, units_of(arr)) if packed(arr) else data.astype(bool, copy=False)


def decoded_bytes(arr: zarr.Array) -> int:
    """Bytes of the whole mask matrix once decoded to bool."""
    return int(arr.shape[0]) * units_of(arr)


def blocks(arr: zarr.Array, rows: np.ndarray, max_bytes: int = CHUNK_BYTES):
    """(positions in ``rows``, bool masks of those rows) for sorted store rows ``rows``, a block at a time, each
    block decoded at most ~``max_bytes``: what reads every row's mask needs in memory, whatever the matrix's size
    (92 GB of bool at the paper's 71,828 x 1.28 M)."""
    per = max(1, int(max_bytes) // max(units_of(arr), 1))
    for i in range(0, len(rows), per):
        part = np.asarray(rows[i:i + per])
        r0, r1 = int(part[0]), int(part[-1]) + 1
        # one slice read (zarr is fast at slices), the used rows kept; rows far apart: only theirs
        data = np.asarray(arr[r0:r1])[part - r0] if r1 - r0 <= 2 * len(part) else \
            np.asarray(arr.get_orthogonal_selection((part,)))
        yield slice(i, i + len(part)), decode(data, units_of(arr)) if packed(arr) else data.astype(bool, copy=False)


def counts(arr: zarr.Array, rows: np.ndarray) -> tuple:
    """(rows whose mask holds each unit (U,) int64, units in each row's mask (len(rows),) int64), streamed by
    :func:`blocks`."""
    n_in = np.zeros(units_of(arr), dtype=np.int64)
    sizes = np.zeros(len(rows), dtype=np.int64)
    for pos, block in blocks(arr, np.asarray(rows, dtype=np.int64)):
        n_in += block.sum(axis=0)
        sizes[pos] = block.sum(axis=1)
    return n_in, sizes


def write(arr: zarr.Array, lo: int, block: np.ndarray) -> None:
    """Rows ``lo .. lo + len(block)`` from bool ``block`` (encoded as the array is)."""
    arr[lo:lo + len(block)] = encode(block) if packed(arr) else np.asarray(block, dtype=bool)


def create(root: zarr.Group, rows: int, units: int, masks: Callable[[int, int], np.ndarray] | np.ndarray,
           pack: bool | None = None, workers: int = 4) -> zarr.Array:
    """The ``masks`` array of a new store, filled from ``masks`` (bool (rows, units), or a function (lo, hi) -> the
    bool rows lo..hi-1, so that the whole matrix never needs to be in memory)."""
    pack = units >= PACK_MIN_UNITS if pack is None else bool(pack)
    width = -(-units // 8) if pack else units
    chunk_rows = int(np.clip(CHUNK_BYTES // max(width, 1), 1, 4096))
    attrs = {"bitpacked": True, "units": units, "bitorder": BITORDER} if pack else {}
    arr = root.create_array("masks", shape=(rows, width), dtype="uint8" if pack else "bool",
                            chunks=(min(max(rows, 1), chunk_rows), width), fill_value=0 if pack else False,
                            dimension_names=("row", "unit_byte" if pack else "unit"), attributes=attrs)
    get = masks if callable(masks) else (lambda lo, hi: masks[lo:hi])
    blocks = [(lo, min(lo + chunk_rows, rows)) for lo in range(0, rows, chunk_rows)]
    with cf.ThreadPoolExecutor(max_workers=max(1, min(workers, len(blocks)))) as pool:
        list(pool.map(lambda b: write(arr, b[0], get(b[0], b[1])), blocks))  # chunk-aligned: no two share a chunk
    return arr
