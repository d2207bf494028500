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
_decoders: Dict[Tuple[str, str], Optional["_Decoder"]] = {}  # (store root, array path) -> decoder, None: use zarr


class _Decoder:
    """What decoding a chunk of one array needs: its folder, chunk-key encoding, codecs and chunk spec."""

    def __init__(self, arr: zarr.Array, root: Path):
        from zarr.abc.codec import ArrayBytesCodec, BytesBytesCodec
        from zarr.core.buffer import default_buffer_prototype

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

    def row(self, r: int) -> Optional[np.ndarray]:
        """Row ``r``, or None if its chunk was never written (its fill value)."""
        from zarr.core.buffer.cpu import Buffer

        try:
            with open(f"{self.folder}/{self.encode((r,) + (0,) * len(self.row_shape))}", "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        buf = Buffer.from_bytes(data)
        for codec in self.byte_codecs:
            buf = codec._decode_sync(buf, self.spec)
        out = self.array_codec._decode_sync(buf, self.spec).as_numpy_array()
        return out.reshape(self.row_shape)

    def rows(self, r0: int, r1: int) -> np.ndarray:
        out = np.empty((r1 - r0, *self.row_shape), dtype=self.dtype)
        for r in range(r0, r1):
            got = self.row(r)
            out[r - r0] = self.fill if got is None else got
        return out


def _decoder(arr: zarr.Array) -> Optional[_Decoder]:
    """The decoder of ``arr``, made and checked against zarr's own read of its first written row on first use
    (and again if the array's metadata changes); None where zarr reads."""
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
            probe = _first_written(made, arr.shape[0])
            if probe is None:  # nothing written yet: zarr reads, and the check is made again next time
                return None
            theirs = np.asarray(arr[probe:probe + 1])
            made.dtype = theirs.dtype  # the array type zarr gives (numpy's StringDType for text)
            decoder = made if _same(made.rows(probe, probe + 1), theirs) else None
        except Exception:  # other zarr internals, or a damaged first chunk: zarr reads this array
            decoder = None
    with _lock:
        _decoders[key] = decoder
    return decoder


def _first_written(decoder: _Decoder, rows: int) -> Optional[int]:
    """The first of the first 64 rows whose chunk exists, or None."""
    for r in range(min(rows, 64)):
        if decoder.row(r) is not None:
            return r
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
    decoder = _decoder(arr)
    if decoder is None:
        return np.asarray(arr[r0:r1])
    return decoder.rows(int(r0), int(r1))


def take(arr: zarr.Array, rows_: np.ndarray) -> np.ndarray:
    """``arr[rows_]`` for sorted row indices: only those rows' chunk files where this module reads, else one zarr
    slice over their span (much faster in zarr than a point selection) with the others dropped."""
    rows_ = np.asarray(rows_, dtype=np.int64)
    decoder = _decoder(arr)
    if decoder is None:
        r0, r1 = int(rows_[0]), int(rows_[-1]) + 1
        data = np.asarray(arr[r0:r1])
        return data if r1 - r0 == len(rows_) else data[rows_ - r0]
    out = np.empty((len(rows_), *decoder.row_shape), dtype=decoder.dtype)
    for k, r in enumerate(rows_.tolist()):
        got = decoder.row(r)
        out[k] = decoder.fill if got is None else got
    return out
