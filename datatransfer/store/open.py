"""A sweep is a mask matrix x a training recipe -> store rows. This module turns a config into its store."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from omegaconf import OmegaConf

from datatransfer import data
from datatransfer.config import SWEEP_DEFINING, validate
from datatransfer.masks import mask_matrix
from datatransfer.store.sweep_store import (
    Store,
    StoreError,
    StoreSpec,
    TargetSpec,
    config_diff,
    fingerprint,
)
from datatransfer.train import backbones

# What a row's source model is: a target can be added to a store whose rows agree on these (transfer_only).
SOURCE_DEFINING = ("source", "model", "train", "sweep")


def code_version() -> str:
    """The git commit of the code that wrote a store (with '-dirty' if modified), or '' outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{sha}-dirty" if sha and dirty else sha


def store_spec(cfg) -> StoreSpec:
    validate(cfg)
    if cfg.get("planted") is not None:
        return _planted_spec(cfg)
    source = data.open_source(cfg)
    targets = []
    for key in cfg.targets:
        t = data.open_target(cfg, key)
        targets.append(TargetSpec(key, t.labels("test"), t.class_names))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    sw = cfg.sweep
    return StoreSpec(
        config=resolved,
        sweep_defining={k: resolved[k] for k in SWEEP_DEFINING},
        unit_names=source.class_names,
        targets=targets,
        modes=list(cfg.transfer.modes),
        output_kinds=list(sw.outputs),
        masks=mask_matrix(sw.seed, sw.num_models, source.num_classes, sw.alpha, sw.scheme),
        unit=sw.unit,
        code_version=code_version(),
    )


def _planted_spec(cfg) -> StoreSpec:
    """experiment=planted: units and targets come from the planted section; no data file is read.
    What defines its rows is the sweep and planted sections alone."""
    from datatransfer.rows import planted

    p, sw = cfg.planted, cfg.sweep
    resolved = OmegaConf.to_container(cfg, resolve=True)
    names = planted.class_names(p)
    return StoreSpec(
        config=resolved,
        sweep_defining={k: resolved[k] for k in ("sweep", "planted")},
        unit_names=planted.unit_names(p),
        targets=[TargetSpec(t, planted.labels(p, t), names) for t in planted.target_names(p)],
        modes=list(p.modes),
        output_kinds=list(sw.outputs),
        masks=mask_matrix(sw.seed, sw.num_models, int(p.units), sw.alpha, sw.scheme),
        unit=sw.unit,
        code_version=code_version(),
    )


def open_store(cfg) -> Store:
    """Create the sweep's store, or reopen it if it already holds this sweep (refusing another sweep's store).

    With ``transfer_only=true``: add ``targets`` to the existing store instead (``add_targets``)."""
    if cfg.get("transfer_only"):
        return add_targets(cfg)
    return Store.create_or_open(cfg.store.path, store_spec(cfg))


def add_targets(cfg) -> Store:
    """Add ``cfg.targets`` to the existing store at ``store.path`` (docs/store-format.md, "Targets added later").

    The store's rows must have been trained as this config says (``SOURCE_DEFINING`` sections equal, same transfer
    modes); the targets must be new to it, or added before with the same target and transfer config (then this
    continues them). Returns a handle scoped to those targets whose missing rows are those with a saved source
    model (``store.save_backbones``) and no outputs yet for them.
    """
    validate(cfg)
    path = Path(cfg.store.path)
    if not (path / "zarr.json").is_file():
        raise StoreError(f"transfer_only=true adds targets to an existing store, and there is none at {path}")
    store = Store.open(path, mode="r+")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    stored = store.attrs["config"]
    diff = config_diff({k: stored.get(k) for k in SOURCE_DEFINING}, {k: resolved[k] for k in SOURCE_DEFINING})
    if list(cfg.transfer.modes) != store.modes:
        diff.append(f"transfer.modes: {store.modes!r} -> {list(cfg.transfer.modes)!r}")
    if diff:
        shown = "\n  ".join(diff[:30]) + ("\n  ..." if len(diff) > 30 else "")
        raise StoreError(f"{path} holds rows trained otherwise; transfer_only needs the settings its source models "
                         f"were trained with. Differing keys:\n  {shown}")
    original = [t for t in cfg.targets if t in store.attrs["targets"]]
    if original:
        raise StoreError(f"{original} are original targets of {path}, written with every row; transfer_only adds "
                         f"new targets: name only those (targets=[...])")
    specs, records = [], {}
    for key in cfg.targets:
        config = {"targets": {key: resolved["targets"][key]}, "transfer": resolved["transfer"]}
        if key in store.added_targets:  # added before: continue it, if it is the same transfer
            before = store.attrs["added_targets"][key]["config"]
            if before != config:
                shown = "\n  ".join(config_diff(before, config)[:30])
                raise StoreError(f"target {key!r} was added to {path} with other settings; use another target "
                                 f"name, or the same settings to continue it. Differing keys:\n  {shown}")
            continue
        t = data.open_target(cfg, key)
        specs.append(TargetSpec(key, t.labels("test"), t.class_names))
        records[key] = {"config": config,
                        "fingerprint": fingerprint({**{k: stored.get(k) for k in SOURCE_DEFINING}, **config}),
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "code_version": code_version()}
    if specs:
        store.add_targets(specs, records)
    saved = backbones.saved(store.path, store.num_rows)
    scoped = store.scoped(list(cfg.targets), runnable=saved)
    done = scoped.completed()
    print(f"transfer_only: targets {list(cfg.targets)} ({'added now' if specs else 'added before'}) from saved "
          f"source models: {int(saved.sum())} of {store.num_rows} rows have one, {int(done.sum())} done, "
          f"{len(scoped.missing_rows())} to run; rows without a saved model (store.save_backbones) are skipped",
          flush=True)
    return scoped
