"""What defines a store before any row exists: its fingerprint (the sweep-defining config, hashed), the
differences between two configs, and the specs a store is created from."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np


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
    masks: np.ndarray  # bool (M, U)
    unit: str = "class"
    code_version: str = ""
