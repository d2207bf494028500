"""Damage-tolerant reading of a store's per-row arrays, and the checks a row passes before it is written: its
values (:func:`row_problem`) and the store's identity (:func:`identity_problem`).

A per-row array has one chunk per row. A chunk that cannot be decoded (a zero-length file left by a node crash,
garbage bytes, a chunk being written right now) must not make a whole read fail: :func:`read_rows` reads the array
in one fast read and, only where that fails, in halves until the undecodable chunks are found (a few reads per
damaged chunk, not one per row); those rows keep the fill value and are reported through ``on_error``. Local
stores are read from their chunk files (store/chunk_files.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import zarr

from datatransfer.store import chunk_files

OnError = Callable[[zarr.Array, int, Exception], None]


def brief(e: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters)."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:300]}" if text else type(e).__name__


def read_rows(arr: zarr.Array, on_error: OnError) -> np.ndarray:
    """The whole array ``arr`` (chunks of one row); rows whose chunk cannot be decoded read as the fill value,
    each passed to ``on_error(arr, row, error)``."""
    out = np.full(arr.shape, arr.fill_value, dtype=arr.dtype)
    todo = [(0, arr.shape[0])]
    while todo:
        lo, hi = todo.pop()
        try:
            out[lo:hi] = chunk_files.rows(arr, lo, hi)
        except Exception as e:  # decoding errors are codec-specific (RuntimeError of zstd, ValueError, ...)
            if hi - lo == 1:
                on_error(arr, lo, e)
            else:
                mid = (lo + hi) // 2
                todo += [(mid, hi), (lo, mid)]
    return out


def read_row(arr: zarr.Array, row: int, on_error: OnError) -> Optional[np.ndarray]:
    """Row ``row`` of ``arr``, or None (after ``on_error(arr, row, error)``) if its chunk cannot be decoded."""
    try:
        return chunk_files.rows(arr, int(row), int(row) + 1)[0]
    except Exception as e:
        on_error(arr, int(row), e)
        return None


def chunk_file(store: Path, arr: zarr.Array, row: int) -> Path:
    """The file holding row ``row`` of ``arr`` (an array of the store at ``store`` chunked along rows only: one
    chunk per row, or ``masks``' blocks of rows)."""
    key = arr.metadata.encode_chunk_key((int(row) // int(arr.chunks[0]),) + (0,) * (arr.ndim - 1))
    return Path(store) / arr.path / key


def stored_id(store: Path) -> str:
    """The ``store_id`` in the root metadata of the store at ``store`` now ('' if it has none); OSError if the
    file cannot be read, ValueError (or KeyError, TypeError) if it is not a store's metadata."""
    return json.loads((Path(store) / "zarr.json").read_text())["attributes"].get("store_id") or ""


def identity_problem(store: Path, expected: str) -> Optional[str]:
    """Why the store at ``store`` is not (any more) the store whose ``store_id`` is ``expected``, or None."""
    meta = Path(store) / "zarr.json"
    try:
        found = stored_id(store)
    except FileNotFoundError:
        return f"the store at {store} is gone ({meta} does not exist): it was deleted after this process opened it"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"{meta} cannot be read ({brief(e)})"
    if found != expected:
        return (f"the store at {store} is not the store this process opened (store_id {found or 'none'}, opened "
                f"{expected}): it was deleted and created again")
    return None


def row_problem(out: np.ndarray, pred: np.ndarray, out_shape: tuple, pred_shape: tuple,
                classes: int) -> Optional[str]:
    """What is wrong with one target's outputs and predictions of a row, or None: shapes as the store's, dtypes
    that cast (float32 outputs, int32 class indices), every output finite, every prediction in [0, classes)."""
    if out.shape != tuple(out_shape):
        return f"outputs of shape {out.shape}, store expects {tuple(out_shape)}"
    if not np.can_cast(out.dtype, np.float32, casting="same_kind"):
        return f"outputs of dtype {out.dtype} cannot be stored as float32"
    if pred.shape != tuple(pred_shape):
        return f"predictions of shape {pred.shape}, store expects {tuple(pred_shape)}"
    if not np.can_cast(pred.dtype, np.int32, casting="same_kind"):
        return f"predictions of dtype {pred.dtype} are not class indices (integers)"
    bad = ~np.isfinite(out.astype(np.float32))
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        return f"{int(bad.sum())} of {out.size} outputs are NaN or infinite (the first at index {first})"
    outside = (pred < 0) | (pred >= classes)
    if outside.any():
        first = tuple(int(i) for i in np.argwhere(outside)[0])
        return (f"{int(outside.sum())} predictions outside the {classes} classes [0, {classes}) (the first: "
                f"{int(pred[first])} at index {first})")
    return None
