"""What a counterfactual sweep store is created with: the influence store read once, checked against the sweep,
and turned into keep-masks, per-row metadata and a record of the influence store's identity.

Everything read here is written into the sweep store (``store_extras``), so the sweep can be resumed, verified
and analysed even after the influence store is recomputed or deleted. Nothing here writes anything: a refusal
(ConfigError, exit 2) leaves no store behind.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from datatransfer.errors import ConfigError, StoreError
from datatransfer.influence.reader import Influence
from datatransfer.masks import counterfactual as cfmasks
from datatransfer.masks import handpicked as hp

GROUP = "counterfactual"  # the sweep store's group of per-row metadata (docs/store-format.md)


@dataclass
class Plan:
    masks: np.ndarray  # bool (rows, U)
    meta: cfmasks.RowMeta
    influence: np.ndarray  # (U,) the overall influence that ranked the units
    attrs: Dict[str, Any]  # the root attribute "counterfactual"


def _open(path: str) -> Influence:
    try:
        return Influence(path)
    except StoreError as e:
        raise ConfigError(f"counterfactual.influence: {e}") from e
    except Exception as e:  # not Zarr at all, damaged metadata
        raise ConfigError(f"counterfactual.influence: {path} cannot be read as an influence store ({e})") from e


def _check_match(inf: Influence, cf, unit_names: Sequence[str], labels: np.ndarray) -> None:
    """ConfigError unless the influence store is about this sweep's source units and has (target, mode, kind)."""
    if list(inf.unit_names) != list(unit_names):
        diff = [f"{a} != {b}" for a, b in zip(inf.unit_names, unit_names) if a != b][:3]
        raise ConfigError(f"counterfactual.influence: {inf.path} is about other source units ({len(inf.unit_names)} "
                          f"units; this sweep has {len(unit_names)}{'; e.g. ' + ', '.join(diff) if diff else ''}): "
                          f"its influences do not rank this sweep's classes")
    for key, value, have in (("target", cf.target, inf.targets), ("mode", cf.mode, inf.modes),
                             ("kind", cf.kind, inf.output_kinds)):
        if value not in have:
            raise ConfigError(f"counterfactual.{key}: {value!r} is not in {inf.path} (it has {list(have)})")
    if not np.array_equal(inf.labels(cf.target), labels):
        raise ConfigError(f"counterfactual.target: {cf.target!r} in {inf.path} has other test labels than this "
                          f"sweep's {cf.target!r}: another dataset of the same name")


def identity(inf: Influence, cf, overall: np.ndarray) -> Dict[str, Any]:
    """What identifies the influences used: the influence store's path and provenance, and a fingerprint of the
    exact values read (sha256 of the rows used and of the ranking vector)."""
    rows = inf.rows(cf.target)
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(overall, dtype=np.float64).tobytes())
    a = inf.attrs
    return {"path": str(Path(inf.path).resolve()), "fingerprint": h.hexdigest()[:20],
            "store": a.get("store"), "store_fingerprint": a.get("store_fingerprint"),
            "estimator": a.get("estimator"), "rows_used": int(len(rows)), "created": a.get("created")}


def auto_examples(per_example: np.ndarray, count: int, exclude: Sequence[int],
                  mistakes: np.ndarray | None = None) -> List[int]:
    """The ``count`` examples whose most negative influencer stands out most from the example's other influences:
    robust z = (median - min) / (1.4826 MAD) over the units, largest first (ties: lower index). ``mistakes`` (bool
    per example): those come first (the examples most models get wrong are the ones worth debugging)."""
    x = np.asarray(per_example, dtype=np.float64)
    med = np.median(x, axis=1)
    mad = 1.4826 * np.median(np.abs(x - med[:, None]), axis=1)
    z = (med - x.min(axis=1)) / np.where(mad > 0, mad, np.inf)
    z[list(exclude)] = -np.inf
    first = np.zeros(len(z), dtype=bool) if mistakes is None else np.asarray(mistakes, dtype=bool)
    return [int(j) for j in np.lexsort((-z, ~first))[:count] if np.isfinite(z[j])]


def _examples(inf: Influence, cf, num_examples: int) -> List[Tuple[int, int, float]]:
    """(example, its most negative influencer, that influence) for every debugged example."""
    wanted = [int(e) for e in cf.examples]
    if not wanted and not int(cf.auto_examples):
        return []
    bad = [e for e in wanted if e >= num_examples]
    if bad:
        raise ConfigError(f"counterfactual.examples: {bad} are not test examples of {cf.target!r} "
                          f"(it has {num_examples}: 0 .. {num_examples - 1})")
    per = inf.array(cf.target, cf.mode, cf.kind, "per_example")
    if int(cf.auto_examples) > num_examples - len(wanted):
        raise ConfigError(f"counterfactual.auto_examples: {cf.auto_examples} more examples asked for, "
                          f"{num_examples - len(wanted)} left")
    mistakes = None  # examples that most models of the influence sweep got wrong, when it recorded is_correct
    if "is_correct" in inf.output_kinds:
        mistakes = inf.array(cf.target, cf.mode, "is_correct", "mean_output") < 0.5
    chosen = wanted + auto_examples(per, int(cf.auto_examples), wanted, mistakes)
    return [(e, int(np.nanargmin(per[e])), float(np.nanmin(per[e]))) for e in chosen]


def make_plan(cfg, unit_names: Sequence[str], target_labels: np.ndarray, target_classes: Sequence[str]) -> Plan:
    """Read ``cfg.counterfactual.influence`` once and build the sweep's keep-masks (ConfigError on a mismatch)."""
    cf = cfg.counterfactual
    inf = _open(str(cf.influence))
    _check_match(inf, cf, unit_names, np.asarray(target_labels))
    overall = inf.array(cf.target, cf.mode, cf.kind, "overall")
    if not np.isfinite(overall).any():
        raise ConfigError(f"counterfactual.influence: {inf.path} has no finite influences for "
                          f"({cf.target}, {cf.mode}, {cf.kind})")
    picked, rule = (None, "")
    if "handpicked" in cf.baselines:
        picked, rule = hp.handpicked(cf.target, unit_names, target_classes, cf.handpicked_file or None)
    examples = _examples(inf, cf, len(target_labels))
    masks, meta = cfmasks.keep_masks(cf, overall, picked, [(e, u) for e, u, _ in examples])
    attrs = {
        "influence": identity(inf, cf, overall),
        "target": cf.target, "mode": cf.mode, "kind": cf.kind,
        "orders": list(cfmasks.ORDERS), "baselines": list(cfmasks.BASELINES),
        "handpicked": {"rule": rule, "units": hp.names(picked, unit_names) if picked is not None else []},
        "examples": [{"example": e, "influencer": unit_names[u], "unit": u, "influence": v} for e, u, v in examples],
    }
    return Plan(masks, meta, np.asarray(overall, dtype=np.float64), attrs)


def store_extras(plan: Plan) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(root attributes, arrays) a counterfactual sweep adds to its store (docs/store-format.md)."""
    arrays: Dict[str, Any] = {f"{GROUP}/{f}": (v, ("row",), {}) for f, v in plan.meta.arrays().items()}
    arrays[f"{GROUP}/order"][2]["names"] = list(cfmasks.ORDERS)
    arrays[f"{GROUP}/baseline"][2]["names"] = list(cfmasks.BASELINES)
    arrays[f"{GROUP}/unit_influence"] = (plan.influence, ("unit",), {})
    return {GROUP: plan.attrs}, arrays
