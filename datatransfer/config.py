"""Structured configuration: the schema behind every YAML file in ``conf/``.

Every default lives here, once. The YAML groups in ``conf/`` only select values for an experiment; because the
top-level schema is registered as ``base_config``, an unknown key or a wrong type anywhere fails at compose time
with a message naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

OUTPUT_KINDS = ("softmax_gt", "gt_logit", "raw_margin", "softmax_margin", "is_correct")
TRANSFER_MODES = ("fixed", "full")


@dataclass
class SourceConfig:
    """The dataset whose classes are switched on and off from row to row."""

    name: str = MISSING  # dataset name inside the data file, e.g. "source"
    # Where the data lives. "" = the embedded file shipped inside the package (datatransfer/data/<file>).
    root: str = ""
    file: str = "mini.npz"
    loader: str = "memory"  # memory | ffcv
    mean: float = 0.2  # input normalisation after scaling to [0, 1] (grey images: one value)
    std: float = 0.33


@dataclass
class TargetConfig:
    """One downstream dataset. Per-target recipe values override the transfer block when set."""

    name: str = MISSING  # dataset name inside the data file, e.g. "digits"
    root: str = ""
    file: str = "mini.npz"
    epochs: Optional[int] = None  # full fine-tuning epochs; None = transfer.full.epochs
    lr: Optional[float] = None  # full fine-tuning peak LR; None = transfer.full.lr


@dataclass
class ModelConfig:
    arch: str = "small_cnn"  # small_cnn (28x28 grey) | resnet18
    width: int = 16  # small_cnn channels of the first conv; features = 4 * width


@dataclass
class TrainConfig:
    """Source-model recipe."""

    epochs: int = 2
    batch_size: int = 128
    optimizer: str = "adam"  # adam | sgd
    lr: float = 1e-2  # peak learning rate
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    schedule: str = "onecycle"  # onecycle | cyclic (linear up to peak_epoch, linear down to 0) | constant
    peak_epoch: float = 0.6  # cyclic/onecycle: epoch at which the LR peaks
    label_smoothing: float = 0.0


@dataclass
class FixedTransferConfig:
    """Fixed-feature transfer: frozen backbone, a new linear head fitted on its features."""

    solver: str = "lbfgs"  # lbfgs: multinomial logistic regression to convergence on cached features
    iterations: int = 100
    weight_decay: float = 1e-3


@dataclass
class FullTransferConfig:
    """Full-network transfer: every weight trains, starting from the source model."""

    epochs: int = 4
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 3e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "onecycle"
    peak_epoch: float = 0.3


@dataclass
class TransferConfig:
    modes: List[str] = field(default_factory=lambda: list(TRANSFER_MODES))
    fixed: FixedTransferConfig = field(default_factory=FixedTransferConfig)
    full: FullTransferConfig = field(default_factory=FullTransferConfig)


@dataclass
class SweepConfig:
    """Which rows exist: row i's mask and seed are functions of (seed, i) alone."""

    unit: str = "class"
    alpha: float = 0.5  # fraction of units in each mask
    scheme: str = "fixed_size"  # fixed_size: exactly round(alpha * U) units | bernoulli: each unit in w.p. alpha
    num_models: int = 128
    seed: int = 0
    outputs: List[str] = field(default_factory=lambda: list(OUTPUT_KINDS))


@dataclass
class LocalLauncherConfig:
    name: str = "local"
    workers: int = 1  # worker processes; the machine's CPUs are split evenly between them


@dataclass
class StoreConfig:
    path: str = "runs/${name}/store.zarr"


@dataclass
class Config:
    name: str = "mini"  # experiment name; names the default store folder
    source: SourceConfig = field(default_factory=SourceConfig)
    targets: Dict[str, TargetConfig] = field(default_factory=dict)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    launcher: Any = field(default_factory=LocalLauncherConfig)
    store: StoreConfig = field(default_factory=StoreConfig)


# The parts of the config that define what a row *is*: two stores agree on these or cannot be merged.
SWEEP_DEFINING = ("source", "targets", "model", "train", "transfer", "sweep")


class ConfigError(ValueError):
    """A config value that composes (right key, right type) but cannot be run."""


def validate(cfg: Any) -> None:
    """Check value ranges that a type cannot express. Raises ConfigError naming the key."""

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {msg}")

    sw = cfg.sweep
    need(0.0 < sw.alpha < 1.0, "sweep.alpha", f"must lie strictly between 0 and 1, got {sw.alpha}")
    need(sw.num_models >= 1, "sweep.num_models", f"must be at least 1, got {sw.num_models}")
    need(sw.unit == "class", "sweep.unit", f"only 'class' is supported, got {sw.unit!r}")
    need(sw.scheme in ("fixed_size", "bernoulli"), "sweep.scheme",
         f"must be 'fixed_size' or 'bernoulli', got {sw.scheme!r}")
    bad = [k for k in sw.outputs if k not in OUTPUT_KINDS]
    need(not bad and len(sw.outputs) > 0, "sweep.outputs", f"unknown output kinds {bad}; choose from {list(OUTPUT_KINDS)}")
    bad = [m for m in cfg.transfer.modes if m not in TRANSFER_MODES]
    need(not bad and len(cfg.transfer.modes) > 0, "transfer.modes",
         f"unknown modes {bad}; choose from {list(TRANSFER_MODES)}")
    need(len(cfg.targets) > 0, "targets", "select at least one target, e.g. targets=[digits]")
    need(cfg.source.loader in ("memory", "ffcv"), "source.loader", f"must be 'memory' or 'ffcv', got {cfg.source.loader!r}")
    need(cfg.train.epochs >= 1, "train.epochs", f"must be at least 1, got {cfg.train.epochs}")
    need(cfg.train.batch_size >= 1, "train.batch_size", f"must be at least 1, got {cfg.train.batch_size}")
    need(cfg.train.lr > 0, "train.lr", f"must be positive, got {cfg.train.lr}")
    workers = getattr(cfg.launcher, "workers", 1)
    need(workers >= 1, "launcher.workers", f"must be at least 1, got {workers}")
    need(bool(str(cfg.store.path)), "store.path", "must not be empty")


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(group="launcher", name="base_local", node=LocalLauncherConfig)


register()
