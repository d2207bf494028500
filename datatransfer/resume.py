"""`launch.resume`: the config to continue an existing store's sweep with, from the store itself.

What a row is (every section but ``launcher`` and ``launch``) comes from the store's ``config`` attrs; the launcher
from the latest Slurm submission's manifest (else the store's own, if it was Slurm, else ``launcher=slurm``'s
defaults), with the launcher keys given on the command line on top; ``launcher=local`` (a group choice) replaces
it. ``launch.*`` (dry run, fault injection) holds for this invocation only and is never inherited.
"""

from __future__ import annotations

from typing import Any, List, Sequence

from omegaconf import OmegaConf

from .config import SWEEP_DEFINING, Config, ConfigError, SlurmLauncherConfig
from .slurm_manifest import load_all
from .store import Store


def override_keys(overrides: Sequence[str]) -> List[str]:
    """Keys (or group names) that Hydra overrides set, e.g. ['launcher.timeout_min', 'launcher']."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return [o.key_or_group for o in OverridesParser.create().parse_overrides(list(overrides))]


def resume_config(store: Store, cli_cfg: Any, overrides: Sequence[str]) -> Any:
    """The config ``launch.resume`` runs with; ``cli_cfg`` is the composed ResumeConfig (conf/resume.yaml)."""
    stored = dict(store.attrs["config"])
    # the sections that define its rows (a planted sweep ignores source, model, train, ...), and its name
    defining = ("sweep", "planted") if stored.get("planted") is not None else SWEEP_DEFINING
    sweep = {k: stored[k] for k in ("name", *defining) if k in stored}
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(Config), sweep)
    except Exception as e:  # a type changed in the schema since the store was written
        version = store.attrs.get("code_version") or "unknown"
        raise ConfigError(f"the sweep config stored in {store.path} does not fit this code's schema "
                          f"({str(e).splitlines()[0]}); resume with the code that wrote the store "
                          f"(code_version {version})") from e
    keys = override_keys(overrides)
    if "launcher" in keys:
        launcher = cli_cfg.launcher
    else:
        previous = [m.launcher for m in load_all(store.path)]
        if previous:
            base = previous[-1]
        elif (stored.get("launcher") or {}).get("name") == "slurm":
            base = stored["launcher"]
        else:
            base = {}
        launcher = OmegaConf.merge(OmegaConf.structured(SlurmLauncherConfig), base)
        for key in keys:
            if key.startswith("launcher."):
                OmegaConf.update(launcher, key[len("launcher."):], OmegaConf.select(cli_cfg, key), merge=False)
    cfg.launcher = launcher
    cfg.launch = cli_cfg.launch
    cfg.store.path = str(store.path)
    return cfg
