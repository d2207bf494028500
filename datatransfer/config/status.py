"""The schema of `python -m launch.status` (conf/status.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field

from datatransfer.config.resume import StorePathConfig


@dataclass
class StatusConfig:
    """`python -m launch.status store.path=PATH`."""

    store: StorePathConfig = field(default_factory=StorePathConfig)
    watch: float = 0.0  # seconds between polls until nothing is queued or running; 0 = print once
    failed: int = 10  # failed tasks listed
    tail: int = 5  # last lines of each failed task's stderr log
    convergence: bool = True  # per target: converged or not, rows the rule predicts (influence/convergence.py)
    influence: str = ""  # the influence store to judge; "" = <store's parent folder>/influence.zarr
    kind: str = "softmax_gt"  # output kind judged (the report's default)
