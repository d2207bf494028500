"""A sweep is a mask matrix x a training recipe -> store rows. This module turns a config into its store."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
from omegaconf import OmegaConf

from datatransfer import data, masks
from datatransfer.config import row_defining, validate
from datatransfer.errors import ConfigError, DataError
from datatransfer.masks import examples
from datatransfer.store.provenance import code_version
from datatransfer.store.spec import LATER_KEYS, StoreSpec, TargetSpec, defining  # noqa: F401 (re-exported)
from datatransfer.store.sweep_store import Store
from datatransfer.train.precision import resolve_amp

log = logging.getLogger(__name__)


def resolved_config(cfg) -> dict:
    """The config as plain containers, interpolations resolved and data roots made absolute: what a store records
    and fingerprints, so that the same sweep named from another working directory (a Slurm task, a resume) is
    recognised as the same sweep. ``train.amp=auto`` is resolved first (in ``cfg`` too): a store records, and is
    compared by, the precision its rows train in, never "auto"."""
    resolve_amp(cfg)
    d = OmegaConf.to_container(cfg, resolve=True)
    if d.get("source", {}).get("root"):
        d["source"]["root"] = str(Path(d["source"]["root"]).resolve())
    for t in (d.get("targets") or {}).values():
        if t.get("root"):
            t["root"] = str(Path(t["root"]).resolve())
    return d


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
    source = _naming("source", lambda: data.open_source(cfg))
    unit_names, unit_index = list(source.class_names), None
    if cfg.sweep.unit == "example":
        labels = source.labels("train")
        unit_index = examples.select(cfg.sweep, labels, source.class_names)
        unit_names = examples.unit_names(unit_index, labels, source.class_names)
    targets = []
    for key in cfg.targets:
        t = _naming(f"targets.{key}", lambda: data.open_target(cfg, key))
        targets.append(TargetSpec(key, t.labels("test"), t.class_names))
    return unit_names, targets, list(cfg.transfer.modes), unit_index


def _naming(section: str, open_data):
    """``open_data()``, a missing or unreadable data file named with the config section whose ``root``/``file`` say
    where it is (``error: <key>: <reason>``, like every refused value)."""
    try:
        return open_data()
    except DataError as e:
        if str(e).startswith(f"{section}."):  # it names its key already (source.loader=ffcv needs ffcv ...)
            raise
        raise DataError(f"{section}: {e}") from e


def open_store(cfg) -> Store:
    """Create the sweep's store, or reopen it if it already holds this sweep (refusing another sweep's store)."""
    return Store.create_or_open(cfg.store.path, store_spec(cfg))


def open_to_plan(cfg) -> Optional[Store]:
    """A dry run's store (``launch.dry_run``): None while it does not exist (nothing is created), else the store
    opened read-only, refused if it holds another sweep; an extension (a higher ``sweep.num_models``) is reported,
    not made: the launchers count its new rows as to run (``launchers.rows_to_add``)."""
    if not Path(cfg.store.path).exists():
        validate(cfg)
        Store.check_creatable(Path(cfg.store.path))
        if cfg.sweep.kind == "counterfactual":  # its masks come from the influence store: check it as a run would
            store_spec(cfg)
        return None
    store, added = Store.open_to_plan(cfg.store.path, store_spec(cfg))
    if added:
        log.info("dry run: would extend %s from %d to %d rows (rows %d..%d added; existing rows unchanged)",
                 store.path, store.num_rows, store.num_rows + added, store.num_rows, store.num_rows + added - 1)
    return store
