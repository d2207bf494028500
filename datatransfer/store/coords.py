"""Coordinate arrays, so that ``xarray.open_zarr`` reads a store with labels (docs/store-format.md, "Reading with
xarray"): an array named like a dimension, with that one dimension, is that dimension's coordinate.

    <store>/row, unit, field                     row indices, source unit names, row_stats field names
    <store>/outputs/row, mode, kind, example_<t> the same for the outputs group (one example dimension per target:
    <store>/predictions/row, mode, example_<t>   targets differ in length, and one xarray Dataset has one size per
                                                 dimension name)
    <store>/targets/<t>/example                  example indices beside the target's labels

Stores created before coordinates existed have none; they are read as before. Extension (store/extend.py) grows the
``row`` coordinates with the other per-row arrays.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import zarr

ROW_CHUNK = 65536


def example_dim(target: str) -> str:
    """The example dimension of target ``target`` in the outputs and predictions groups."""
    return f"example_{target}"


def _coord(group: zarr.Group, name: str, values, overwrite: bool = False) -> None:
    values = np.asarray(values)
    if values.dtype.kind == "U":
        group.create_array(name, shape=values.shape, dtype=str, dimension_names=(name,), overwrite=overwrite)
        group[name][:] = values
    else:
        chunks = (min(max(len(values), 1), ROW_CHUNK),)
        group.create_array(name, data=values, chunks=chunks, dimension_names=(name,), overwrite=overwrite)


def create(root: zarr.Group, m: int, unit_names: Sequence[str], modes: Sequence[str], kinds: Sequence[str],
           fields: Sequence[str]) -> None:
    """The coordinates of a new store of ``m`` rows (before its targets' own)."""
    rows = np.arange(m, dtype=np.int64)
    _coord(root, "row", rows)
    _coord(root, "unit", np.array(list(unit_names), dtype=str))
    _coord(root, "field", np.array(list(fields), dtype=str))
    for name in ("outputs", "predictions"):
        g = root.require_group(name)
        _coord(g, "row", rows)
        _coord(g, "mode", np.array(list(modes), dtype=str))
    _coord(root["outputs"], "kind", np.array(list(kinds), dtype=str))


def create_target(root: zarr.Group, target: str, n: int, overwrite: bool = False) -> None:
    """The example coordinates of target ``target`` (``n`` test examples)."""
    examples = np.arange(n, dtype=np.int64)
    for name in ("outputs", "predictions"):
        _coord(root.require_group(name), example_dim(target), examples, overwrite)
    _coord(root["targets"][target], "example", examples, overwrite)


def labelled(root: zarr.Group) -> bool:
    """Whether the store was created with coordinates (its targets get them too when added)."""
    return "row" in root and "outputs" in root and "row" in root["outputs"]
