"""A sweep is a mask matrix x a training recipe -> store rows. This module turns a config into its store."""

from __future__ import annotations

import subprocess
from pathlib import Path

from omegaconf import OmegaConf

from . import data
from .config import SWEEP_DEFINING, validate
from .masks import mask_matrix
from .store import Store, StoreSpec, TargetSpec


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
    source = data.load_source(cfg)
    targets = []
    for key in cfg.targets:
        t = data.load_target(cfg, key)
        targets.append(TargetSpec(key, t.test.y.numpy(), t.class_names))
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


def open_store(cfg) -> Store:
    """Create the sweep's store, or reopen it if it already holds this sweep (refusing another sweep's store)."""
    return Store.create_or_open(cfg.store.path, store_spec(cfg))
