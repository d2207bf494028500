"""Structured configuration: the schema behind every YAML file in ``conf/``.

Every default lives here, once. The YAML groups in ``conf/`` only select values for an experiment; because the
top-level schema is registered as ``base_config``, an unknown key or a wrong type anywhere fails at compose time
with a message naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

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

    epochs: int = 2
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "onecycle"
    peak_epoch: float = 0.3
    head_init: str = "linear_probe"  # random (the paper) | linear_probe (start from the fixed-feature head: LP-FT)


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
class SlurmLauncherConfig:
    """Slurm job arrays through submitit (docs/slurm.md). Empty strings / 0 leave a setting to the cluster."""

    name: str = "slurm"
    partition: str = ""
    account: str = ""
    qos: str = ""
    constraint: str = ""  # node features, e.g. a100 or "a100|v100"
    gpus_per_task: int = 0
    cpus_per_task: int = 4  # the worker's torch threads follow this (SLURM_CPUS_PER_TASK)
    mem_gb: float = 8.0  # per task; 0 = the cluster's default
    timeout_min: int = 120  # per task; a task near its limit is requeued and resumes its row (max_num_timeout)
    array_parallelism: int = 256  # at most this many tasks of one array run at once (%N)
    rows_per_task: int = 1  # rows packed into one array task, to amortise start-up (docs/slurm.md)
    max_array_size: int = 0  # tasks per array; 0 = the cluster's MaxArraySize (scontrol show config)
    max_num_timeout: int = 3  # requeues after hitting the time limit (preemptions do not count)
    signal_delay_s: int = 90  # the requeue signal comes this long before the time limit
    job_name: str = ""  # "" = dt-<experiment name>
    python: str = ""  # command that runs python on the nodes; "" = this interpreter (sys.executable)
    setup: List[str] = field(default_factory=list)  # shell lines run before the task, e.g. module load ...
    additional_parameters: Dict[str, Any] = field(default_factory=dict)  # any other sbatch option: {mail-type: END}


@dataclass
class StoreConfig:
    path: str = "runs/${name}/store.zarr"


@dataclass
class LaunchConfig:
    """Options of one `python -m launch` / `launch.resume` invocation; never part of the store's fingerprint."""

    dry_run: bool = False  # print the plan (arrays, tasks, rows, resources), submit nothing
    # For tests only (fault injection): Slurm tasks raise when they reach one of these rows.
    fail_rows: List[int] = field(default_factory=list)


@dataclass
class PlantedConfig:
    """experiment=planted: rows skip training and write  b + mask . w + noise  (datatransfer/planted.py).

    A known truth for the aggregator and a cheap sweep to validate a cluster; docs/slurm.md."""

    units: int = 1000  # source units (u0000 ...)
    targets: Dict[str, int] = field(default_factory=lambda: {"a": 50, "b": 20})  # target -> test examples
    modes: List[str] = field(default_factory=lambda: list(TRANSFER_MODES))
    classes: int = 10  # labels of target example j: j % classes
    noise: float = 0.5  # sd of the per-row noise (the signal mask . w has sd ~1)
    seed: int = 0  # draws the truth w and the per-example bias b; the rows' noise follows sweep.seed
    seconds_per_row: float = 0.0  # sleep per row, to emulate work


@dataclass
class Config:
    name: str = "mini"  # experiment name; names the default store folder
    source: SourceConfig = field(default_factory=SourceConfig)
    targets: Dict[str, TargetConfig] = field(default_factory=dict)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    launcher: Any = MISSING  # a group: conf/launcher/{local,slurm}.yaml (LocalLauncherConfig, SlurmLauncherConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    planted: Optional[PlantedConfig] = None  # set by experiment=planted: rows are planted, not trained


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
    planted = cfg.get("planted")
    if planted is not None:
        _validate_planted(planted, need)
    else:
        need(len(cfg.targets) > 0, "targets", "select at least one target, e.g. targets=[digits]")
    need(cfg.source.loader in ("memory", "ffcv"), "source.loader", f"must be 'memory' or 'ffcv', got {cfg.source.loader!r}")
    need(cfg.train.epochs >= 1, "train.epochs", f"must be at least 1, got {cfg.train.epochs}")
    need(cfg.train.batch_size >= 1, "train.batch_size", f"must be at least 1, got {cfg.train.batch_size}")
    need(cfg.train.lr > 0, "train.lr", f"must be positive, got {cfg.train.lr}")
    need(cfg.transfer.full.head_init in ("random", "linear_probe"), "transfer.full.head_init",
         f"must be 'random' or 'linear_probe', got {cfg.transfer.full.head_init!r}")
    need(cfg.model.arch in ("small_cnn", "resnet18"), "model.arch",
         f"unknown architecture {cfg.model.arch!r} (small_cnn | resnet18)")
    workers = getattr(cfg.launcher, "workers", 1)
    need(workers >= 1, "launcher.workers", f"must be at least 1, got {workers}")
    if cfg.launcher.get("name") == "slurm":
        validate_slurm(cfg.launcher)
    need(bool(str(cfg.store.path)), "store.path", "must not be empty")


def _validate_planted(p: Any, need) -> None:
    need(p.units >= 2, "planted.units", f"must be at least 2, got {p.units}")
    need(len(p.targets) > 0 and all(n >= 1 for n in p.targets.values()), "planted.targets",
         f"needs at least one target with >= 1 example, got {dict(p.targets)}")
    need(len(p.modes) > 0, "planted.modes", "must not be empty")
    need(p.classes >= 2, "planted.classes", f"must be at least 2, got {p.classes}")
    need(p.noise >= 0, "planted.noise", f"must be >= 0, got {p.noise}")
    need(p.seconds_per_row >= 0, "planted.seconds_per_row", f"must be >= 0, got {p.seconds_per_row}")


def validate_slurm(launcher: Any) -> None:
    """Value checks of launcher=slurm. Raises ConfigError naming the key."""

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"launcher.{key}: {msg}")

    for key in ("cpus_per_task", "timeout_min", "array_parallelism", "rows_per_task"):
        need(launcher[key] >= 1, key, f"must be at least 1, got {launcher[key]}")
    for key in ("gpus_per_task", "mem_gb", "max_array_size", "max_num_timeout", "signal_delay_s"):
        need(launcher[key] >= 0, key, f"must be >= 0, got {launcher[key]}")


CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def compose(overrides: Sequence[str] = (), config_name: str = "config") -> Any:
    """The config that `python -m launch <overrides>` would see (for tests, scripts and notebooks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


# ---- launch.resume / launch.status: an existing store's sweep, from its attrs -------------------------------
@dataclass
class StorePathConfig:
    path: str = MISSING  # the sweep's store (required)


@dataclass
class ResumeConfig:
    """`python -m launch.resume store.path=PATH [launcher overrides]`: the sweep comes from the store; the launcher
    from its latest Slurm submission, with the launcher keys given here on top (launcher=local runs here)."""

    store: StorePathConfig = field(default_factory=StorePathConfig)
    launcher: Any = MISSING  # conf/launcher/slurm.yaml unless launcher=local is given
    launch: LaunchConfig = field(default_factory=LaunchConfig)


@dataclass
class StatusConfig:
    """`python -m launch.status store.path=PATH`."""

    store: StorePathConfig = field(default_factory=StorePathConfig)
    watch: float = 0.0  # seconds between polls until nothing is queued or running; 0 = print once
    failed: int = 10  # failed tasks listed
    tail: int = 5  # last lines of each failed task's stderr log


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(group="launcher", name="base_local", node=LocalLauncherConfig)
    cs.store(group="launcher", name="base_slurm", node=SlurmLauncherConfig)
    cs.store(name="base_resume", node=ResumeConfig)
    cs.store(name="base_status", node=StatusConfig)


register()


# ---- aggregate: influences, diagnostics and report (`python -m aggregate`, `python -m aggregate.report`) -------
@dataclass
class DimEstimatorConfig:
    """Difference of means, the paper's Eq. 1 / Algorithm 1 (no settings)."""

    name: str = "dim"


@dataclass
class RidgeEstimatorConfig:
    """Datamodels variant (Appendix B): ridge regression of the output on the mask, with an unpenalised bias.
    Objective (1/N) sum (y - b - x.w)^2 + lambda |w|^2; lambda per output column, the grid value with the least
    squared error on held-out rows; then refitted on all rows."""

    name: str = "ridge"
    lambdas: List[float] = field(default_factory=lambda: [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0])
    holdout_fraction: float = 0.2  # rows held out (picked by a hash of the row index) to choose lambda


@dataclass
class DiagnosticsConfig:
    """Convergence curves vs the number of rows N (Appendix A.5 and F), computed with difference of means."""

    enabled: bool = True
    holdout_fraction: float = 0.2  # rows held out for rank correlation and LDS (paper: 1,540 of 7,540)
    bootstrap: int = 500  # resamples per N (paper: 500)
    points: int = 6  # values of N, geometric, up to all fit rows
    top_k: int = 0  # knockoff FDR among the top k influences; 0 = U / 10 (paper: 100 of 1,000)
    lds_examples: int = 256  # target examples sampled for LDS (per target)
    seed: int = 0  # bootstrap resampling and LDS example sample


@dataclass
class ReportConfig:
    out: str = ""  # "" = <store's parent folder>/report
    kind: str = "softmax_gt"  # output kind of the figures (the paper's default); CSVs cover every kind
    top: int = 10  # source classes per side in the bar charts
    sources: int = 4  # source classes shown in the image grids (Figs. 4-5)
    images: int = 8  # images per side in each grid row
    hard_examples: int = 8  # most often misclassified target examples (Fig. 6 left)
    negatives: int = 3  # most negative source classes listed for each of them
    headline_top: int = 3  # digits headline: matching MNIST digit among the top this many


@dataclass
class AggregateConfig:
    name: str = "mini"  # experiment name; names the default store folder
    store: StoreConfig = field(default_factory=StoreConfig)
    out: str = ""  # influence store; "" = <store's parent folder>/influence.zarr
    estimator: Any = MISSING  # a group: conf/estimator/{dim,ridge}.yaml (DimEstimatorConfig, RidgeEstimatorConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    block_rows: int = 0  # rows per read; 0 = from memory_mb
    memory_mb: int = 1024  # budget for blocks and accumulators (a rough bound, not a hard limit)
    progress: bool = True  # tqdm bar on stderr for long runs


def validate_aggregate(cfg: Any) -> None:
    """Value checks for `python -m aggregate` / `aggregate.report`. Raises ConfigError naming the key."""

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {msg}")

    need(bool(str(cfg.store.path)), "store.path", "must not be empty")
    need(cfg.estimator.name in ("dim", "ridge"), "estimator", f"must be dim or ridge, got {cfg.estimator.name!r}")
    if cfg.estimator.name == "ridge":
        need(len(cfg.estimator.lambdas) > 0 and min(cfg.estimator.lambdas) > 0, "estimator.lambdas",
             f"must be positive values, got {list(cfg.estimator.lambdas)}")
        need(0 < cfg.estimator.holdout_fraction < 1, "estimator.holdout_fraction", "must lie strictly in (0, 1)")
    d = cfg.diagnostics
    need(0 < d.holdout_fraction < 1, "diagnostics.holdout_fraction", "must lie strictly in (0, 1)")
    need(d.bootstrap >= 0, "diagnostics.bootstrap", f"must be >= 0, got {d.bootstrap}")
    need(d.points >= 1, "diagnostics.points", f"must be >= 1, got {d.points}")
    need(d.top_k >= 0, "diagnostics.top_k", f"must be >= 0, got {d.top_k}")
    need(d.lds_examples >= 1, "diagnostics.lds_examples", f"must be >= 1, got {d.lds_examples}")
    need(cfg.block_rows >= 0, "block_rows", f"must be >= 0, got {cfg.block_rows}")
    need(cfg.memory_mb >= 16, "memory_mb", f"must be >= 16, got {cfg.memory_mb}")
    r = cfg.report
    need(r.kind in OUTPUT_KINDS, "report.kind", f"must be one of {list(OUTPUT_KINDS)}, got {r.kind!r}")
    for key in ("top", "sources", "images", "hard_examples", "negatives", "headline_top"):
        need(getattr(r, key) >= 1, f"report.{key}", f"must be >= 1, got {getattr(r, key)}")


def register_aggregate() -> None:
    cs = ConfigStore.instance()
    cs.store(name="base_aggregate", node=AggregateConfig)
    cs.store(group="estimator", name="base_dim", node=DimEstimatorConfig)
    cs.store(group="estimator", name="base_ridge", node=RidgeEstimatorConfig)


register_aggregate()
