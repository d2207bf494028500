"""Extending a sweep: raising ``sweep.num_models`` on an existing store adds rows N..N'-1.

Row i's mask and seed are functions of (sweep seed, i) alone, so the first N rows of the longer sweep are the rows
already in the store: nothing computed changes. Extension grows every per-row array (those whose first dimension
is named ``row``) along that dimension, writes the masks of the new rows, then records the new row count in the
root attributes (``config.sweep.num_models``, ``fingerprint``, ``extended``), which commits the extension. Chunks
of existing rows are not rewritten (one chunk per row; ``masks`` may rewrite its last, partly filled chunk with the
same values of its existing rows plus the new ones).

An interrupted extension is finished by running it again (each step is idempotent). A config that differs from the
store's in anything else than ``sweep.num_models``, or that lowers it, is still another sweep and is refused.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from typing import Any, Dict, Mapping, Optional

import numpy as np
import zarr

from datatransfer.errors import StoreError
from datatransfer.store import layout, mask_bits
from datatransfer.store.lock import exclusive
from datatransfer.store.spec import StoreSpec, fingerprint

log = logging.getLogger(__name__)


def _with_rows(sweep_defining: Mapping[str, Any], rows: int) -> Dict[str, Any]:
    out = copy.deepcopy(dict(sweep_defining))
    if isinstance(out.get("sweep"), dict) and "num_models" in out["sweep"]:
        out["sweep"]["num_models"] = int(rows)
    return out


def requested_rows(spec: StoreSpec) -> Optional[int]:
    """``sweep.num_models`` of the spec, or None if its sweep section has none."""
    sweep = spec.sweep_defining.get("sweep")
    return int(sweep["num_models"]) if isinstance(sweep, Mapping) and "num_models" in sweep else None


def differs_only_in_rows(stored_fingerprint: str, stored_rows: int, spec: StoreSpec) -> bool:
    """Whether ``spec`` is the stored sweep with another ``sweep.num_models``: its sweep-defining config with the
    stored row count hashes to the stored fingerprint."""
    return requested_rows(spec) is not None and \
        fingerprint(_with_rows(spec.sweep_defining, stored_rows)) == stored_fingerprint


def stored_rows(attrs: Mapping[str, Any], default: int) -> int:
    """The row count the store's fingerprint was taken with: its config's ``sweep.num_models`` (``default`` if
    absent). It differs from the arrays' length only while an extension is being committed."""
    sweep = (attrs.get("config") or {}).get("sweep") or {}
    return int(sweep.get("num_models", default))


def row_arrays(group: zarr.Group):
    """(path, array) of every array whose first dimension is ``row`` (per-row data, and the ``row`` coordinate)."""
    with warnings.catch_warnings():  # lock and claim files beside the arrays are not Zarr nodes
        warnings.simplefilter("ignore")
        members = list(group.members(max_depth=None))
    for path, node in members:
        if isinstance(node, zarr.Array) and node.metadata.dimension_names and \
                node.metadata.dimension_names[0] == "row":
            yield path, node


def rows_added(store, spec: StoreSpec) -> int:
    """How many rows extending ``store`` (a handle) to the spec would add: > 0 if the spec is its sweep with a higher
    ``sweep.num_models``, 0 for any other difference (the caller refuses it). A lower one is a StoreError."""
    had = stored_rows(store.attrs, store.num_rows)
    if not differs_only_in_rows(store.fingerprint, had, spec):
        return 0
    wanted = requested_rows(spec)
    if wanted < had:
        raise StoreError(f"{store.path} holds {had} rows of this sweep and sweep.num_models={wanted} asks for "
                         f"fewer; a sweep is extended, never shortened: use sweep.num_models={had} (or more). "
                         f"It is left untouched.")
    return wanted - had


def if_longer(store, fp: str, spec: StoreSpec) -> bool:
    """Extend ``store`` (a handle) to the spec's rows if the spec is its sweep with a higher ``sweep.num_models``;
    whether it did (:func:`rows_added`)."""
    if not rows_added(store, spec):
        return False
    extend(store.path, spec, fp)
    return True


def fingerprint_rows(attrs: Mapping[str, Any], fingerprint: str, rows: int) -> Dict[str, int]:
    """Fingerprint -> row count of every state a store has had: the current one (``fingerprint``, ``rows``) and
    each before an extension (its root ``attrs``' ``extended`` history). What was computed from an earlier state
    (an influence store's row-block sums, its completion flags) still describes the store's first rows."""
    states = {e["previous_fingerprint"]: int(e["from_rows"]) for e in attrs.get("extended", [])
              if "previous_fingerprint" in e and "from_rows" in e}
    states[fingerprint] = int(rows)
    return states


def extend(path, spec: StoreSpec, new_fp: str) -> None:
    """Grow the store at ``path`` to the spec's row count (see the module doc). Callers checked that the spec
    differs from the store's sweep only in ``sweep.num_models`` and raises it."""
    get = _mask_rows(spec)
    new_rows = int(spec.num_rows) if callable(spec.masks) else int(spec.masks.shape[0])
    with exclusive(layout.add_targets_lock(path)):  # no target is added while arrays grow
        group = zarr.open_group(store=str(path), mode="r+")
        old_rows = stored_rows(group.attrs, int(group["completed"].shape[0]))
        if group.attrs.get("fingerprint") == new_fp:
            return  # another process extended it meanwhile
        masks = group["masks"]
        for lo, hi in _blocks(masks, 0, old_rows):  # bool or bit-packed (format 3): compared decoded, a block at a time
            if not np.array_equal(mask_bits.read(masks, slice(lo, hi)), get(lo, hi)):
                raise StoreError(f"{path}: the masks of its {old_rows} rows differ from the first {old_rows} rows "
                                 f"of the extended sweep; it is left untouched (run `python -m launch.verify "
                                 f"store.path={path}`)")
        _grow(group, old_rows, new_rows, get)
        config = copy.deepcopy(dict(group.attrs["config"]))
        config.setdefault("sweep", {})["num_models"] = new_rows
        history = list(group.attrs.get("extended", []))
        history.append({"from_rows": old_rows, "to_rows": new_rows, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        "previous_fingerprint": group.attrs["fingerprint"]})
        group.attrs.update({"config": config, "fingerprint": new_fp, "extended": history})  # the commit point
    log.info("extended %s from %d to %d rows (rows %d..%d added; existing rows unchanged)", path, old_rows, new_rows,
             old_rows, new_rows - 1)


def _mask_rows(spec: StoreSpec):
    """(lo, hi) -> the spec's bool masks of rows lo..hi-1 (its masks are a matrix or such a function)."""
    if callable(spec.masks):
        return lambda lo, hi: np.asarray(spec.masks(lo, hi), dtype=bool)
    return lambda lo, hi: np.asarray(spec.masks[lo:hi], dtype=bool)


def _blocks(arr: zarr.Array, lo: int, hi: int):
    """(lo, hi) blocks of rows that follow the array's row chunks (bounded memory for a large packed store)."""
    step = int(arr.chunks[0])
    edges = [lo, *range((lo // step + 1) * step, hi, step), hi]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _grow(group: zarr.Group, old_rows: int, new_rows: int, masks) -> None:
    """Resize every per-row array to ``new_rows`` (``completed`` last: it defines the store's row count) and fill the
    masks and row coordinate of the new rows."""
    arrays = sorted(row_arrays(group), key=lambda pa: pa[0] == "completed")
    for path, arr in arrays:
        if arr.shape[0] != new_rows:
            arr.resize((new_rows, *arr.shape[1:]))
        if path == "masks":
            for lo, hi in _blocks(arr, old_rows, new_rows):  # encoded as the array is (bit-packed or bool)
                mask_bits.write(arr, lo, masks(lo, hi))
        elif path.rsplit("/", 1)[-1] == "row":  # a row coordinate (store/coords.py)
            arr[old_rows:new_rows] = np.arange(old_rows, new_rows, dtype=arr.dtype)
