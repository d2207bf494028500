"""What defines a store before any row exists: its fingerprint (the sweep-defining config, hashed), the
differences between two configs, the specs a store is created from, and the layout created from a spec (format
version, root attributes, arrays)."""

from __future__ import annotations

import copy
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import zarr

from datatransfer.errors import StoreError
from datatransfer.store import coords, layout, mask_bits, provenance


def fingerprint(sweep_defining: Mapping[str, Any]) -> str:
    """Hash of the sweep-defining config sections (canonical JSON)."""
    blob = json.dumps(sweep_defining, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _flatten(d: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(d, Mapping):
        out: Dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): d}


# Keys added to the schema after stores were written, with the value that gives the rows those stores hold: at that
# value a key is left out of the fingerprinted sections, so the older stores keep their fingerprint.
LATER_KEYS = {("sweep", "repeats"): 0, ("sweep", "init"): "per_row"}


def defining(resolved: dict, sections) -> dict:
    """The fingerprinted sections, without ``LATER_KEYS`` at their old value (e.g. ``sweep.repeats`` counts only
    when set: stores made before it existed, and any sweep without repeated rows, keep their fingerprint)."""
    out = {k: copy.deepcopy(resolved.get(k)) for k in sections}
    for (section, key), old in LATER_KEYS.items():
        if isinstance(out.get(section), dict) and out[section].get(key, old) == old:
            out[section].pop(key, None)
    return out


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> List[str]:
    """Dotted keys whose values differ, as 'key: old -> new' lines."""
    a, b = _flatten(old), _flatten(new)
    lines = []
    for k in sorted(set(a) | set(b)):
        if a.get(k, "<absent>") != b.get(k, "<absent>"):
            lines.append(f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}")
    return lines


@dataclass
class TargetSpec:
    """What the store needs to know of a target before any row is written."""

    name: str
    labels: np.ndarray  # (n_t,) test-split labels
    class_names: Sequence[str]


@dataclass
class StoreSpec:
    """Everything that defines a store's layout; built from the resolved config by the caller."""

    config: Dict[str, Any]  # resolved config, as plain containers
    sweep_defining: Dict[str, Any]
    unit_names: Sequence[str]
    targets: Sequence[TargetSpec]
    modes: Sequence[str]
    output_kinds: Sequence[str]
    masks: Any  # bool (M, U), or a function (lo, hi) -> bool rows lo..hi-1 (with num_rows)
    unit: str = "class"
    code_version: str = ""
    num_rows: int = -1  # with a mask function: M
    pack_masks: Optional[bool] = None  # None: bit-packed when units >= mask_bits.PACK_MIN_UNITS
    unit_index: Optional[np.ndarray] = None  # example units: each unit's index in the source's train split
    # What a sweep kind adds (optional parts of the format, docs/store-format.md): root attributes, and arrays by
    # path ("group/name") -> (data, dimension names, attributes). A counterfactual sweep's metadata goes here.
    extra_attrs: Dict[str, Any] = field(default_factory=dict)
    extra_arrays: Dict[str, Tuple[np.ndarray, Tuple[str, ...], Dict[str, Any]]] = field(default_factory=dict)


# ---- the layout a spec creates (docs/store-format.md) ---------------------------------------------------------------
FORMAT = "datatransfer-store"
FORMAT_VERSION = 3  # 3: masks may be bit-packed; 2: store_id and per-row provenance
READABLE_VERSIONS = (1, 2, 3)
WRITABLE_VERSIONS = (2, 3)  # rows of a version 2 store are written as they always were (its masks stay bool)
ROW_STAT_FIELDS = ("source_accuracy", "train_seconds", "total_seconds")
# Root attributes a handle needs, by format version (the others are informative; launch.verify checks them all)
NEEDED_ATTRS = {1: ("fingerprint", "unit_names", "targets", "modes", "output_kinds"),
                2: ("fingerprint", "unit_names", "targets", "modes", "output_kinds", "store_id"),
                3: ("fingerprint", "unit_names", "targets", "modes", "output_kinds", "store_id")}


def older_format(path: Path, attrs: Mapping[str, Any]) -> str:
    """Why this code writes nothing into the store at ``path`` (root attributes ``attrs``, an older format), and
    what to do."""
    version = attrs.get("format_version")
    return (f"{path} is a store of format version {version} (written by code_version "
            f"{attrs.get('code_version') or 'unknown'}); this code writes versions "
            f"{', '.join(map(str, WRITABLE_VERSIONS))} (store identity, row provenance) and only reads version "
            f"{version}: start a new store (another store.path), or continue this one with the code that wrote it")


def write_new(path: Path, spec: StoreSpec, fp: str) -> None:
    """Create the store of ``spec`` at ``path`` (which must not exist), in the current format version."""
    if callable(spec.masks):
        masks, m, u = spec.masks, int(spec.num_rows), len(spec.unit_names)
    else:
        masks = np.asarray(spec.masks, dtype=bool)
        m, u = masks.shape
    if u != len(spec.unit_names):
        raise StoreError(f"masks have {u} units but {len(spec.unit_names)} unit names were given")
    modes, kinds = list(spec.modes), list(spec.output_kinds)
    root = zarr.open_group(store=str(path), mode="w-")
    root.attrs.update(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "store_id": uuid.uuid4().hex,  # a store deleted and created again at the same path is another store
            "fingerprint": fp,
            "config": spec.config,
            "unit": spec.unit,
            "unit_names": list(spec.unit_names),
            "targets": [t.name for t in spec.targets],
            "modes": modes,
            "output_kinds": kinds,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "code_version": spec.code_version,
            **spec.extra_attrs,
        }
    )
    for name, (values, dims, attributes) in spec.extra_arrays.items():
        group, _, leaf = name.rpartition("/")
        parent = root.require_group(group) if group else root
        values = np.asarray(values)
        parent.create_array(leaf, data=values, chunks=values.shape, dimension_names=dims, attributes=attributes)
    mask_bits.create(root, m, u, masks, spec.pack_masks)
    if spec.unit_index is not None:
        root.create_array("unit_index", data=np.asarray(spec.unit_index, dtype=np.int64), dimension_names=("unit",))
    root.create_array("completed", shape=(m,), dtype="bool", chunks=(1,), fill_value=False, dimension_names=("row",))
    root.create_array(
        "row_stats", shape=(m, len(ROW_STAT_FIELDS)), dtype="float32", chunks=(1, len(ROW_STAT_FIELDS)),
        fill_value=np.nan, dimension_names=("row", "field"), attributes={"fields": list(ROW_STAT_FIELDS)},
    )
    provenance.create_arrays(root, m)
    for g in ("targets", "outputs", "predictions"):
        root.create_group(g)
    for name, what in layout.AUX_FOLDERS.items():  # folders of files, described as such to zarr and xarray
        root.create_group(name, attributes={"datatransfer": what})
    coords.create(root, m, spec.unit_names, modes, kinds, ROW_STAT_FIELDS)
    for t in spec.targets:
        create_target_arrays(root, t, m, modes, kinds)


def create_target_arrays(root: zarr.Group, t: TargetSpec, m: int, modes: List[str], kinds: List[str],
                         overwrite: bool = False) -> None:
    """``targets/<t>/labels``, ``outputs/<t>`` and ``predictions/<t>`` of one target (and its coordinates, in a
    store that has coordinates: store/coords.py)."""
    n = int(len(t.labels))
    labelled = coords.labelled(root)
    example = coords.example_dim(t.name) if labelled else "example"
    root.require_group("targets").require_group(t.name).create_array(
        "labels", data=np.asarray(t.labels, dtype=np.int64), chunks=(n,), dimension_names=("example",),
        attributes={"class_names": list(t.class_names)}, overwrite=overwrite,
    )
    root.require_group("outputs").create_array(
        t.name, shape=(m, len(modes), len(kinds), n), dtype="float32", chunks=(1, len(modes), len(kinds), n),
        fill_value=np.nan, dimension_names=("row", "mode", "kind", example),
        attributes={"modes": modes, "kinds": kinds}, overwrite=overwrite,
    )
    root.require_group("predictions").create_array(
        t.name, shape=(m, len(modes), n), dtype="int32", chunks=(1, len(modes), n), fill_value=-1,
        dimension_names=("row", "mode", example), attributes={"modes": modes}, overwrite=overwrite,
    )
    if labelled:
        coords.create_target(root, t.name, n, overwrite)
