"""A sweep is a mask matrix x a training recipe -> store rows. This module turns a config into its store."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
from omegaconf import OmegaConf

from datatransfer import data, masks
from datatransfer.config import row_defining, validate
from datatransfer.errors import ConfigError
from datatransfer.masks import examples
from datatransfer.store.provenance import code_version
from datatransfer.store.spec import StoreSpec, TargetSpec
from datatransfer.store.sweep_store import Store


def resolved_config(cfg) -> dict:
    """The config as plain containers, interpolations resolved and data roots made absolute: what a store records
    and fingerprints, so that the same sweep named from another working directory (a Slurm task, a resume) is
    recognised as the same sweep."""
    d = OmegaConf.to_container(cfg, resolve=True)
    if d.get("source", {}).get("root"):
        d["source"]["root"] = str(Path(d["source"]["root"]).resolve())
    for t in (d.get("targets") or {}).values():
        if t.get("root"):
            t["root"] = str(Path(t["root"]).resolve())
    return d


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


def store_spec(cfg) -> StoreSpec:
    validate(cfg)
    unit_names, targets, modes, unit_index = _units_and_targets(cfg)
    resolved = resolved_config(cfg)
    sw = cfg.sweep
    if sw.kind == "counterfactual":
        return _counterfactual_spec(cfg, resolved, unit_names, targets, modes)
    return StoreSpec(
        config=resolved,
        sweep_defining=defining(resolved, row_defining(cfg)),
        unit_names=unit_names,
        targets=targets,
        modes=modes,
        output_kinds=list(sw.outputs),
        masks=masks.blocks(sw, len(unit_names)),  # made a block at a time as the store is written
        num_rows=int(sw.num_models),
        unit=sw.unit,
        code_version=code_version(),
        unit_index=unit_index,
    )


def _counterfactual_spec(cfg, resolved, unit_names, targets, modes) -> StoreSpec:
    """A counterfactual sweep's spec: its keep-masks come from the influence store, read only when the store is
    created (an existing store keeps the masks it was created with, whatever the influence store holds now).
    The counterfactual package is imported here, at call time: it reads influence stores, a later stage."""
    spec = StoreSpec(config=resolved, sweep_defining={k: resolved[k] for k in row_defining(cfg)},
                     unit_names=unit_names, targets=targets, modes=modes, output_kinds=list(cfg.sweep.outputs),
                     masks=np.zeros((0, len(unit_names)), dtype=bool), unit=cfg.sweep.unit,
                     code_version=code_version())
    if Path(cfg.store.path).exists():
        return spec  # reopened: only its fingerprint is compared
    from datatransfer.counterfactual.plan import make_plan, store_extras

    names = [t.name for t in targets]
    if cfg.counterfactual.target not in names:
        raise ConfigError(f"counterfactual.target: {cfg.counterfactual.target!r} is not one of this sweep's "
                          f"targets {names}; add it to targets")
    t = targets[names.index(cfg.counterfactual.target)]
    plan = make_plan(cfg, unit_names, t.labels, t.class_names)
    spec.masks = plan.masks
    spec.extra_attrs, spec.extra_arrays = store_extras(plan)
    return spec


def _units_and_targets(cfg) -> Tuple[List[str], List[TargetSpec], List[str], Optional[np.ndarray]]:
    """(unit names, target specs, transfer modes, example units' train indices or None): from the data, or for
    row=planted from the row section (no data file is read)."""
    if cfg.row.kind == "planted":
        from datatransfer.rows import planted

        p = cfg.row
        names = planted.class_names(p)
        return (planted.unit_names(p), [TargetSpec(t, planted.labels(p, t), names) for t in planted.target_names(p)],
                list(p.modes), None)
    source = data.open_source(cfg)
    unit_names, unit_index = list(source.class_names), None
    if cfg.sweep.unit == "example":
        labels = source.labels("train")
        unit_index = examples.select(cfg.sweep, labels, source.class_names)
        unit_names = examples.unit_names(unit_index, labels, source.class_names)
    targets = []
    for key in cfg.targets:
        t = data.open_target(cfg, key)
        targets.append(TargetSpec(key, t.labels("test"), t.class_names))
    return unit_names, targets, list(cfg.transfer.modes), unit_index


def open_store(cfg) -> Store:
    """Create the sweep's store, or reopen it if it already holds this sweep (refusing another sweep's store)."""
    return Store.create_or_open(cfg.store.path, store_spec(cfg))
