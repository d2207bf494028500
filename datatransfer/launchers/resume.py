"""`launch.resume`: the config to continue an existing store's sweep with, from the store and its submissions.

The base is the config the latest Slurm submission ran with (``<store>/submissions/<id>/config.json``), else the store's
own ``config`` attrs. From it come what a row is, the compute settings and the launcher (a store that never went to
Slurm continues with the local launcher it was made with); the ``launcher.*`` and
``compute.*`` keys given on the command line go on top, and ``launcher=local`` (a group choice) replaces the
launcher. ``launch.*`` (dry run, fault injection) holds for this invocation only and is never inherited. When the
latest submission ran the rows of targets added later (``launch.add_targets``), resume continues those.
"""

from __future__ import annotations

import json
import logging
from typing import Any, List, Sequence, Tuple

from omegaconf import OmegaConf

from datatransfer.config import (
    SWEEP_DEFINING,
    ConfigError,
    LocalLauncherConfig,
    SlurmLauncherConfig,
    override_keys,
    row_defining,
    structured,
)
from datatransfer.launchers.slurm.manifest import load_all
from datatransfer.store.sweep_store import Store

log = logging.getLogger(__name__)


def _base(store: Store) -> tuple[dict, bool, List[str]]:
    """(the config to continue from, whether it comes from a Slurm submission, the targets added later that the
    submission ran: empty for the store's own rows). Only manifests inside the store are read."""
    for m in reversed(load_all(store.path)):
        if m.config_path.is_file():
            defaults = OmegaConf.to_container(OmegaConf.structured(SlurmLauncherConfig))
            # every setting the rows will be resubmitted with that is not Slurm's default (partition, CPUs, ...)
            differ = {k: v for k, v in m.launcher.items() if k != "name" and k in defaults and v != defaults[k]}
            log.info("resume: continuing submission %s (%s); inherited launcher settings: %s", m.id, m.config_path,
                     differ or "none beyond the defaults")
            return json.loads(m.config_path.read_text()), True, list(m.added_targets)
    return dict(store.attrs["config"]), False, []


def resume_config(store: Store, cli_cfg: Any, overrides: Sequence[str]) -> Tuple[Any, List[str]]:
    """The config ``launch.resume`` runs with (``cli_cfg`` is the composed ResumeConfig, conf/resume.yaml), and the
    targets added later whose rows it continues (empty: the store's own rows)."""
    base, submitted, added = _base(store)
    try:
        # the sections this row kind does not use come from the schema (e.g. a planted sweep's source, train ...)
        unused = [k for k in SWEEP_DEFINING if k not in row_defining(base)]
        skip = ["launcher", "launch", *unused]
        cfg = structured({k: v for k, v in base.items() if k not in skip})
    except Exception as e:  # a type changed in the schema since the store was written
        version = store.attrs.get("code_version") or "unknown"
        raise ConfigError(f"the config of {store.path} does not fit this code's schema ({str(e).splitlines()[0]}); "
                          f"resume with the code that wrote it (code_version {version})") from e
    keys = override_keys(overrides)
    if "launcher" in keys:
        launcher = cli_cfg.launcher
    else:
        previous = base.get("launcher") or {}
        if not submitted and previous.get("name") == "local":  # made by the local launcher: continue it here
            launcher = OmegaConf.merge(OmegaConf.structured(LocalLauncherConfig), previous)
        else:
            if not submitted and previous.get("name") != "slurm":
                previous = {}  # the store was made by another launcher: Slurm's defaults
            launcher = OmegaConf.merge(OmegaConf.structured(SlurmLauncherConfig), previous)
        for key in keys:
            if key.startswith("launcher."):
                if key[len("launcher."):].split(".")[0] not in launcher:
                    raise ConfigError(f"{key}: not a setting of the {launcher.name} launcher that {store.path} ran "
                                      f"with; give launcher=slurm or launcher=local to choose another")
                OmegaConf.update(launcher, key[len("launcher."):], OmegaConf.select(cli_cfg, key), merge=False)
    for key in keys:
        if key.startswith("compute."):
            OmegaConf.update(cfg, key, OmegaConf.select(cli_cfg, key), merge=False)
    cfg.launcher = launcher
    cfg.launch = cli_cfg.launch
    cfg.store.path = str(store.path)
    # a sweep extended after its latest submission (a higher sweep.num_models) continues with all its rows
    if "num_models" in cfg.sweep:
        cfg.sweep.num_models = max(int(cfg.sweep.num_models), store.num_rows)
    return cfg, added
