"""The schema of `python -m launch.resume` (conf/resume.yaml): an existing store, and what to run its rows with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from datatransfer.config.sweep import ComputeConfig, LaunchConfig


@dataclass
class StorePathConfig:
    path: str = MISSING  # the sweep's store (required)


@dataclass
class ResumeConfig:
    """`python -m launch.resume store.path=PATH [launcher / compute overrides]`: the sweep, the compute settings and
    the launcher come from the store's latest submission (else the store), with the keys given here on top
    (launcher=local runs the rows here). datatransfer/launchers/resume.py."""

    store: StorePathConfig = field(default_factory=StorePathConfig)
    launcher: Any = MISSING  # conf/launcher/slurm.yaml unless launcher=local is given
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
