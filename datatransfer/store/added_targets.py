"""Targets added to an existing store later (``python -m launch.add_targets``): from the rows' saved source models,
without retraining them (docs/store-format.md, "Targets added later")."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from datatransfer import data
from datatransfer.config import SOURCE_DEFINING, validate
from datatransfer.errors import StoreError
from datatransfer.store import layout
from datatransfer.store.lock import exclusive
from datatransfer.store.open import defining, resolved_config
from datatransfer.store.provenance import code_version
from datatransfer.store.spec import TargetSpec, config_diff, fingerprint
from datatransfer.store.sweep_store import Store

log = logging.getLogger(__name__)


def add_targets(cfg, dry_run: bool = False) -> Optional[Store]:
    """Add ``cfg.targets`` to the existing store at ``store.path`` (docs/store-format.md, "Targets added later").

    The store's rows must have been trained as this config says (``SOURCE_DEFINING`` sections equal, same transfer
    modes); the targets must be new to it, or added before with the same target and transfer config (then this
    continues them). Returns a handle scoped to those targets whose missing rows are those with a saved source
    model (``store.save_backbones``) and no outputs yet for them. ``dry_run``: check and say what would happen,
    write nothing, return None.
    """
    validate(cfg)
    if dry_run:
        store, resolved = _open_compatible(cfg)
        _require_saved_models(store)
        specs, _ = _new_targets(cfg, store, resolved)
        log.info(f"dry run: would add targets {[t.name for t in specs]} to {store.path} and transfer the "
                 f"{int(layout.saved_backbones(store.path, store.num_rows).sum())} saved source models of its "
                 f"{store.num_rows} rows; nothing written")
        return None
    # One addition at a time: a second one waits, then reads the store as the first left it (and continues the
    # target it added instead of replacing its arrays).
    _require_store(Path(cfg.store.path))  # before the lock, which would create the folder
    with exclusive(layout.add_targets_lock(cfg.store.path)):
        store, resolved = _open_compatible(cfg)
        _require_saved_models(store)
        specs, records = _new_targets(cfg, store, resolved)
        if specs:
            store.add_targets(specs, records)
    saved = layout.saved_backbones(store.path, store.num_rows)
    scoped = store.scoped(list(cfg.targets), runnable=saved)
    done = scoped.completed()
    log.info(f"add_targets: targets {list(cfg.targets)} ({'added now' if specs else 'added before'}) from saved "
             f"source models: {int(saved.sum())} of {store.num_rows} rows have one, {int(done.sum())} done, "
             f"{len(scoped.missing_rows())} to run; rows without a saved model (store.save_backbones) are skipped")
    return scoped


def _require_saved_models(store: Store) -> None:
    """A StoreError, before anything is written, when no row of ``store`` has a saved source model and none ever
    will (made without store.save_backbones): a target added then could never get a row."""
    if layout.saved_backbones(store.path, store.num_rows).any():
        return
    if (store.attrs["config"].get("store") or {}).get("save_backbones", False):
        return  # rows still to run will save theirs
    raise StoreError(f"{store.path} was made without store.save_backbones=true and no row has a saved source model: "
                     f"there is nothing to transfer to new targets, and nothing was added. Add targets to a store "
                     f"made with store.save_backbones=true, or give all targets when making the store")


def _require_store(path: Path) -> None:
    if not (path / "zarr.json").is_file():
        raise StoreError(f"add_targets adds targets to an existing store, and there is none at {path}")


def _open_compatible(cfg) -> Tuple[Store, dict]:
    """The store at store.path, if its rows were trained as ``cfg`` says; and the resolved config."""
    path = Path(cfg.store.path)
    _require_store(path)
    store = Store.open(path, mode="r+")
    resolved = resolved_config(cfg)
    stored = store.attrs["config"]
    diff = config_diff(defining({k: stored.get(k) for k in SOURCE_DEFINING}, SOURCE_DEFINING),
                       defining(resolved, SOURCE_DEFINING))
    if list(cfg.transfer.modes) != store.modes:
        diff.append(f"transfer.modes: {store.modes!r} -> {list(cfg.transfer.modes)!r}")
    if diff:
        shown = "\n  ".join(diff[:30]) + ("\n  ..." if len(diff) > 30 else "")
        raise StoreError(f"{path} holds rows trained otherwise; adding targets needs the settings its source models "
                         f"were trained with. Differing keys:\n  {shown}")
    original = [t for t in cfg.targets if t in store.attrs["targets"]]
    if original:
        raise StoreError(f"{original} are original targets of {path}, written with every row; add_targets adds "
                         f"new targets: name only those (targets=[...])")
    return store, resolved


def _new_targets(cfg, store: Store, resolved: dict) -> Tuple[List[TargetSpec], Dict[str, dict]]:
    """Specs and records of the targets not yet added (a target added before must match its first settings)."""
    stored = store.attrs["config"]
    specs, records = [], {}
    for key in cfg.targets:
        config = {"targets": {key: resolved["targets"][key]}, "transfer": resolved["transfer"]}
        if key in store.added_targets:  # added before: continue it, if it is the same transfer
            before = store.attrs["added_targets"][key]["config"]
            if before != config:
                shown = "\n  ".join(config_diff(before, config)[:30])
                raise StoreError(f"target {key!r} was added to {store.path} with other settings; use another target "
                                 f"name, or the same settings to continue it. Differing keys:\n  {shown}")
            continue
        if f"completed_targets/{key}" in store.group and store.group[f"completed_targets/{key}"][:].any():
            raise StoreError(f"{store.path} has completed rows of target {key!r} but no record of adding it; "
                             f"refusing to replace them (run `python -m launch.verify store.path={store.path}`)")
        t = data.open_target(cfg, key)
        specs.append(TargetSpec(key, t.labels("test"), t.class_names))
        records[key] = {"config": config,
                        "fingerprint": fingerprint({**{k: stored.get(k) for k in SOURCE_DEFINING}, **config}),
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "code_version": code_version()}
    return specs, records
