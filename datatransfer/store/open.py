"""A sweep is a mask matrix x a training recipe -> store rows. This module turns a config into its store."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from datatransfer import data
from datatransfer.config import row_defining, validate
from datatransfer import masks
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


def store_spec(cfg) -> StoreSpec:
    validate(cfg)
    if cfg.row.kind == "planted":
        return _planted_spec(cfg)
    source = data.open_source(cfg)
    targets = []
    for key in cfg.targets:
        t = data.open_target(cfg, key)
        targets.append(TargetSpec(key, t.labels("test"), t.class_names))
    resolved = resolved_config(cfg)
    sw = cfg.sweep
    return StoreSpec(
        config=resolved,
        sweep_defining={k: resolved[k] for k in row_defining(cfg)},
        unit_names=source.class_names,
        targets=targets,
        modes=list(cfg.transfer.modes),
        output_kinds=list(sw.outputs),
        masks=masks.matrix(sw, source.num_classes),
        unit=sw.unit,
        code_version=code_version(),
    )


def _planted_spec(cfg) -> StoreSpec:
    """row=planted (experiment=planted): units and targets come from the row section; no data file is read."""
    from datatransfer.rows import planted

    p, sw = cfg.row, cfg.sweep
    resolved = OmegaConf.to_container(cfg, resolve=True)
    names = planted.class_names(p)
    return StoreSpec(
        config=resolved,
        sweep_defining={k: resolved[k] for k in row_defining(cfg)},
        unit_names=planted.unit_names(p),
        targets=[TargetSpec(t, planted.labels(p, t), names) for t in planted.target_names(p)],
        modes=list(p.modes),
        output_kinds=list(sw.outputs),
        masks=masks.matrix(sw, int(p.units)),
        unit=sw.unit,
        code_version=code_version(),
    )


def open_store(cfg) -> Store:
    """Create the sweep's store, or reopen it if it already holds this sweep (refusing another sweep's store)."""
    return Store.create_or_open(cfg.store.path, store_spec(cfg))
