"""`launch.resume`: the config to continue an existing store's sweep with, from the store and its submissions.

The base is the config the latest Slurm submission ran with (``<store>/launch/<id>/config.json``), else the store's
own ``config`` attrs. From it come what a row is, the compute settings and the launcher; the ``launcher.*`` and
``compute.*`` keys given on the command line go on top, and ``launcher=local`` (a group choice) replaces the
launcher. ``launch.*`` (dry run, fault injection) holds for this invocation only and is never inherited.
"""

from __future__ import annotations

import json
from typing import Any, List, Sequence

from omegaconf import OmegaConf

from datatransfer.config import Config, ConfigError, SlurmLauncherConfig
from datatransfer.launchers.slurm.manifest import load_all
from datatransfer.store.sweep_store import Store

# Sections a planted sweep does not use (its rows are defined by `sweep` and `planted` alone).
_UNUSED_WHEN_PLANTED = ("source", "targets", "model", "train", "transfer")


def override_keys(overrides: Sequence[str]) -> List[str]:
    """Keys (or group names) that Hydra overrides set, e.g. ['launcher.timeout_min', 'launcher']."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return [o.key_or_group for o in OverridesParser.create().parse_overrides(list(overrides))]


def _base(store: Store) -> tuple[dict, bool]:
    """(the config to continue from, whether it comes from a Slurm submission)."""
    for m in reversed(load_all(store.path)):
        if m.config_path.is_file():
            return json.loads(m.config_path.read_text()), True
    return dict(store.attrs["config"]), False


def resume_config(store: Store, cli_cfg: Any, overrides: Sequence[str]) -> Any:
    """The config ``launch.resume`` runs with; ``cli_cfg`` is the composed ResumeConfig (conf/resume.yaml)."""
    base, submitted = _base(store)
    skip = ("launcher", "launch") + (_UNUSED_WHEN_PLANTED if base.get("planted") is not None else ())
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(Config), {k: v for k, v in base.items() if k not in skip})
    except Exception as e:  # a type changed in the schema since the store was written
        version = store.attrs.get("code_version") or "unknown"
        raise ConfigError(f"the config of {store.path} does not fit this code's schema ({str(e).splitlines()[0]}); "
                          f"resume with the code that wrote it (code_version {version})") from e
    keys = override_keys(overrides)
    if "launcher" in keys:
        launcher = cli_cfg.launcher
    else:
        previous = base.get("launcher") or {}
        if not submitted and previous.get("name") != "slurm":
            previous = {}  # the store was made by another launcher: Slurm's defaults
        launcher = OmegaConf.merge(OmegaConf.structured(SlurmLauncherConfig), previous)
        for key in keys:
            if key.startswith("launcher."):
                OmegaConf.update(launcher, key[len("launcher."):], OmegaConf.select(cli_cfg, key), merge=False)
    for key in keys:
        if key.startswith("compute."):
            OmegaConf.update(cfg, key, OmegaConf.select(cli_cfg, key), merge=False)
    cfg.launcher = launcher
    cfg.launch = cli_cfg.launch
    cfg.store.path = str(store.path)
    return cfg
