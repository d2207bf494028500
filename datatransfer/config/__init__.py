"""Structured configuration: the schema behind every YAML file in ``conf/``, one module per app.

- ``sweep.py``: `python -m launch` (conf/config.yaml): ``Config`` and its sections, the ``sweep`` and ``row``
  groups, and which sections define a row (``row_defining``);
- ``recipe.py``: the optimiser ``Recipe`` shared by ``train``, ``transfer.fixed`` and ``transfer.full``;
- ``launchers.py``: the ``launcher`` group; ``validate.py``: the launch config's value checks;
- ``resume.py``, ``status.py``, ``prepare.py``, ``aggregate.py``, ``verify.py``: the other apps;
- ``register.py``: ``register()``, which the apps call to put every schema in Hydra's ConfigStore;
- ``multirun.py``: one default store per job of a multirun.

Every default lives in these dataclasses, once; the YAML files in ``conf/`` only select values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Sequence

from datatransfer.config.aggregate import (
    AggregateConfig,
    DiagnosticsConfig,
    DimEstimatorConfig,
    LassoEstimatorConfig,
    LassoFanoutConfig,
    ReportConfig,
    RidgeEstimatorConfig,
    validate_aggregate,
)
from datatransfer.config.launchers import LocalLauncherConfig, SlurmLauncherConfig, validate_slurm
from datatransfer.config.prepare import PrepareConfig
from datatransfer.config.recipe import SCHEDULES, Recipe
from datatransfer.config.register import register
from datatransfer.config.resume import ResumeConfig
from datatransfer.config.status import StatusConfig
from datatransfer.config.sweep import (
    OUTPUT_KINDS,
    SOURCE_DEFINING,
    SWEEP_DEFINING,
    TRANSFER_MODES,
    Config,
    PlantedRowConfig,
    RandomSubsetsSweepConfig,
    TrainedRowConfig,
    row_defining,
    row_kind,
    structured,
)
from datatransfer.config.validate import validate
from datatransfer.config.verify import VerifyConfig
from datatransfer.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose(overrides: Sequence[str] = (), config_name: str = "config") -> Any:
    """The config that `python -m launch <overrides>` would see (for tests, scripts and notebooks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register()
    if GlobalHydra.instance().is_initialized():  # inside one of our Hydra apps: they all read CONF_DIR
        return hydra_compose(config_name=config_name, overrides=list(overrides))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


def override_keys(overrides: Sequence[str]) -> List[str]:
    """Keys (or group names) that Hydra overrides set, e.g. ['launcher.timeout_min', 'launcher'] (``+``/``~``
    prefixes and values parsed by Hydra's own override parser)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return [o.key_or_group for o in OverridesParser.create().parse_overrides(list(overrides))]


__all__ = [
    "AggregateConfig", "CONF_DIR", "Config", "ConfigError", "DiagnosticsConfig", "DimEstimatorConfig",
    "LassoEstimatorConfig", "LassoFanoutConfig", "LocalLauncherConfig", "OUTPUT_KINDS", "PlantedRowConfig",
    "PrepareConfig", "RandomSubsetsSweepConfig",
    "Recipe", "ReportConfig", "ResumeConfig", "RidgeEstimatorConfig", "SCHEDULES", "SOURCE_DEFINING",
    "SWEEP_DEFINING", "SlurmLauncherConfig", "StatusConfig", "TRANSFER_MODES", "TrainedRowConfig", "VerifyConfig",
    "compose", "override_keys", "register", "row_defining", "row_kind", "structured", "validate", "validate_aggregate",
    "validate_slurm",
]
