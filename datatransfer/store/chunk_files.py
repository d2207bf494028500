"""Rows of a per-row array read straight from a local store's chunk files, decoded by the array's own zarr codecs.

A sweep store has one chunk per row and array: 7,540 rows at paper scale are 7,540 chunk files per array. zarr reads
each chunk through its asynchronous pipeline, ~0.2-0.35 ms a chunk here; reading the file and running the same
codecs synchronously takes ~0.02 ms (the 7,540 completion flags: ~0.2 s against 1.5-2.6 s; docs/performance.md).
Only the reading is done here, not the format: the chunk's path comes from the array's chunk-key encoding and its
bytes are decoded by the codecs its metadata names.

:func:`rows` falls back to zarr's own read (``arr[r0:r1]``) for anything else: a store that is not a local folder,
an array not chunked one row a chunk, codecs other than a plain array-to-bytes codec followed by bytes-to-bytes
codecs (no sharding, no transposition), or a zarr whose internals differ from those checked on first use (each
array's first read is compared with zarr's own). A chunk that cannot be decoded raises, as zarr's read would: the
callers' damage handling (store/integrity.py) is the same for both.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import zarr

_lock = threading.Lock()
# (store root, array path and the metadata that decoding depends on) -> decoder; None: zarr reads that array
_decoders: Dict[Tuple, Optional["_Decoder"]] = {}


class _Decoder:
    """What decoding a chunk of one array needs: its folder, chunk-key encoding, codecs and chunk spec."""

    def __init__(self, arr: zarr.Array, root: Path):
        from zarr.abc.codec import ArrayBytesCodec, BytesBytesCodec
        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.buffer.cpu import Buffer

        meta = arr.metadata
        codecs = list(meta.codecs)
        if not (isinstance(codecs[0], ArrayBytesCodec) and type(codecs[0]).__name__ != "ShardingCodec"
                and all(isinstance(c, BytesBytesCodec) for c in codecs[1:])):
            raise TypeError(f"codecs {codecs}: not read here")
        self.folder = str(root / arr.path)
        self.encode = meta.encode_chunk_key
        self.array_codec, self.byte_codecs = codecs[0], codecs[:0:-1]  # bytes-to-bytes: decoded last first
        self.spec = meta.get_chunk_spec((0,) * arr.ndim, arr._async_array.config, default_buffer_prototype())
        self.row_shape = tuple(arr.shape[1:])
        self.dtype = np.dtype(arr.dtype)  # replaced by the type of zarr's own read when checked (_decoder)
        self.fill = arr.fill_value
        self.buffer = Buffer

    def row(self, r: int) -> Optional[np.ndarray]:
        """Row ``r``, or None if its chunk was never written (its fill value)."""
        try:
            with open(f"{self.folder}/{self.encode((r,) + (0,) * len(self.row_shape))}", "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        buf = self.buffer.from_bytes(data)
        for codec in self.byte_codecs:
            buf = codec._decode_sync(buf, self.spec)
        out = self.array_codec._decode_sync(buf, self.spec).as_numpy_array()
        return out.reshape(self.row_shape)

    def take(self, rows_) -> np.ndarray:
        """The rows ``rows_`` (a sequence of ints), unwritten ones as the fill value."""
        out = np.empty((len(rows_), *self.row_shape), dtype=self.dtype)
        for k, r in enumerate(rows_):
            got = self.row(r)
            out[k] = self.fill if got is None else got
        return out


def _decoder(arr: zarr.Array, wanted=()) -> Optional[_Decoder]:
    """The decoder of ``arr``, made and checked against zarr's own read of a written row on first use (and again if
    the array's metadata changes); None where zarr reads. The row checked is the first written of the rows
    ``wanted`` by the caller, else of the array's first 64: rows written anywhere are found by the reads that ask
    for them."""
    root = getattr(arr.store, "root", None)
    if not isinstance(arr.store, zarr.storage.LocalStore) or root is None or arr.ndim < 1:
        return None
    meta = arr.metadata
    key = (str(root), arr.path, tuple(arr.shape[1:]), tuple(arr.chunks), str(arr.dtype), repr(meta.codecs))
    with _lock:
        if key in _decoders:
            return _decoders[key]
    decoder = None
    if arr.chunks[0] == 1 and tuple(arr.chunks[1:]) == tuple(arr.shape[1:]):
        try:
            made = _Decoder(arr, Path(root))
            probe = _first_written(made, wanted, arr.shape[0])
            if probe is None:  # nothing written yet: zarr reads, and the check is made again next time
                return None
            theirs = np.asarray(arr[probe:probe + 1])
            made.dtype = theirs.dtype  # the array type zarr gives (numpy's StringDType for text)
            decoder = made if _same(made.take([probe]), theirs) else None
        except Exception:  # other zarr internals, or a damaged first chunk: zarr reads this array
            decoder = None
    with _lock:
        _decoders[key] = decoder
    return decoder


def _first_written(decoder: _Decoder, wanted, rows: int) -> Optional[int]:
    """The first of the first 64 rows of ``wanted`` (else of the array) whose chunk exists, or None."""
    for r in list(wanted[:64]) or range(min(rows, 64)):
        if decoder.row(int(r)) is not None:
            return int(r)
    return None


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a.astype(object), b.astype(object)))


def reads_files(arr: zarr.Array) -> bool:
    """Whether :func:`rows` and :func:`take` read ``arr`` from its chunk files (not through zarr)."""
    return _decoder(arr) is not None


def rows(arr: zarr.Array, r0: int, r1: int) -> np.ndarray:
    """``arr[r0:r1]`` for an array of a sweep store: from the chunk files where this module can, else by zarr."""
    r0, r1 = int(r0), int(r1)
    decoder = _decoder(arr, range(r0, r1))
    if decoder is None:
        return np.asarray(arr[r0:r1])
    return decoder.take(range(r0, r1))


def take(arr: zarr.Array, rows_: np.ndarray) -> np.ndarray:
    """``arr[rows_]`` for sorted row indices: only those rows' chunk files where this module reads, else one zarr
    slice over their span (much faster in zarr than a point selection) with the others dropped."""
    rows_ = np.asarray(rows_, dtype=np.int64)
    decoder = _decoder(arr, rows_)
    if decoder is None:
        r0, r1 = int(rows_[0]), int(rows_[-1]) + 1
        data = np.asarray(arr[r0:r1])
        return data if r1 - r0 == len(rows_) else data[rows_ - r0]
    return decoder.take(rows_.tolist())
