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

from datatransfer.errors import ConfigError

OUTPUT_KINDS = ("softmax_gt", "gt_logit", "raw_margin", "softmax_margin", "is_correct")
TRANSFER_MODES = ("fixed", "full")
SCHEDULES = ("constant", "cyclic", "onecycle", "step")
TRAIN_DECODERS = ("random_resized_crop", "center_crop", "upsample")
EVAL_DECODERS = ("center_crop", "upsample")


@dataclass
class SourceConfig:
    """The dataset whose classes are switched on and off from row to row."""

    name: str = MISSING  # dataset name inside the data file, e.g. "source"; with loader=ffcv, its folder
    # Where the data lives. memory: the folder of `file`; "" = the file shipped inside the package
    # (datatransfer/data/<file>). ffcv: the folder of prepared datasets, read from <root>/<name>/ (docs/paper-scale.md).
    root: str = ""
    file: str = "mini.npz"  # memory loader only
    loader: str = "memory"  # memory (tensors in RAM) | ffcv (.beton files through FFCV loaders)
    # Input normalisation after scaling to [0, 1]: one value per channel (grey: one value). ImageNet: its statistics.
    mean: List[float] = field(default_factory=lambda: [0.2])
    std: List[float] = field(default_factory=lambda: [0.33])


@dataclass
class TargetConfig:
    """One downstream dataset and its own transfer recipe.

    ``epochs``, ``lr`` and ``schedule`` override the transfer block (``transfer.full``, and ``transfer.fixed`` when
    its solver is sgd) where set. Decoders, resolution and normalisation apply to the ffcv loader (RGB betons);
    in-memory and grey data keep their stored size.
    """

    name: str = MISSING  # dataset name inside the data file, e.g. "digits"; with loader=ffcv, its folder
    root: str = ""  # as source.root; with loader=ffcv, "" = source.root
    file: str = "mini.npz"  # memory loader only
    epochs: Optional[int] = None  # transfer epochs; None = transfer.<mode>.epochs
    lr: Optional[float] = None  # transfer peak LR; None = transfer.<mode>.lr
    schedule: Optional[str] = None  # None = transfer.<mode>.schedule; e.g. step (Food-101)
    # Train decoder: random_resized_crop | center_crop (224/256 of the short side, resized) | upsample (stored
    # size, nearest-neighbour upsampled to `resolution`: CIFAR's 32 px). A random horizontal flip follows it.
    train_decoder: str = "random_resized_crop"
    eval_decoder: str = "center_crop"  # center_crop | upsample
    resolution: int = 224  # side of the images the model sees, train and eval
    # Normalisation used when transfer.normalization=target (the release's choice); [] = not given.
    mean: List[float] = field(default_factory=list)
    std: List[float] = field(default_factory=list)


@dataclass
class ModelConfig:
    arch: str = "small_cnn"  # small_cnn (28x28 grey) | resnet18
    # small_cnn channels of the first conv; features = 4 * width. 10: the widest that keeps the mini demo within
    # 10 minutes on 2 CPU cores (docs/configuration.md, "The mini recipe").
    width: int = 10


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
    # Progressive resolution (ffcv loader, RGB): min_res px up to epoch start_ramp, then linear to max_res at
    # end_ramp, rounded to a multiple of res_step (ffcv-imagenet's schedule). Evaluation: eval_res px centre crop.
    min_res: int = 160
    max_res: int = 192
    start_ramp: int = 11
    end_ramp: int = 13
    res_step: int = 32
    eval_res: int = 224
    amp: bool = False  # mixed precision (fp16 autocast + grad scaler, fp16 inputs) for the whole row; CUDA only


@dataclass
class FixedTransferConfig:
    """Fixed-feature transfer: frozen backbone, a new linear head fitted on its features.

    solver=lbfgs: multinomial logistic regression to convergence on cached features (eval-mode backbone); uses
    ``iterations`` and ``weight_decay`` (L2 on the head). solver=sgd: the paper's recipe, the head trained by
    minibatch SGD through the frozen backbone with the recipe fields below (per-target epochs/lr/schedule override
    them); ``batchnorm`` says whether the backbone's batch-norm layers run in train mode (their running statistics
    keep adapting to the target, as in the authors' release) or stay frozen in eval mode.
    """

    solver: str = "lbfgs"  # lbfgs | sgd
    iterations: int = 100  # lbfgs
    weight_decay: float = 1e-3  # lbfgs: L2 penalty on the head; sgd: SGD weight decay of the head
    batchnorm: str = "train"  # sgd: train (release: running statistics adapt) | frozen (eval mode)
    epochs: int = 2  # sgd recipe from here on
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    schedule: str = "cyclic"
    peak_epoch: float = 0.5
    step_every: int = 5  # schedule=step: epochs between LR drops
    step_gamma: float = 0.1  # schedule=step: LR factor at each drop


@dataclass
class FullTransferConfig:
    """Full-network transfer: every weight trains, starting from the source model."""

    epochs: int = 1  # mini: one LP-FT epoch keeps the demo within its time budget (docs/configuration.md)
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "onecycle"
    peak_epoch: float = 0.3
    step_every: int = 5  # schedule=step: epochs between LR drops
    step_gamma: float = 0.1  # schedule=step: LR factor at each drop
    head_init: str = "linear_probe"  # random (the paper) | linear_probe (start from the fixed-feature head: LP-FT)


@dataclass
class TransferConfig:
    modes: List[str] = field(default_factory=lambda: list(TRANSFER_MODES))
    # source: every target normalised with source.mean/std (what the source model was trained on; the default).
    # target: each target with its own targets.<t>.mean/std (the release: CIFAR statistics for CIFAR-10/100,
    # plain [0, 1] scaling for the other targets).
    normalization: str = "source"
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
    # Worker processes; the machine's CPUs are split evenly between them. 0 = auto: one single-threaded worker per
    # CPU when rows run on the CPU (faster than fewer multi-threaded ones for small models), one on a GPU.
    workers: int = 0


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
    # Keep each row's trained source model at <store>/backbones/row-<i>.pt, so that transfer_only=true can add
    # targets later without retraining (ResNet-18: 45 MB a row; docs/paper-scale.md).
    save_backbones: bool = False


@dataclass
class ComputeConfig:
    """Where rows run. Not part of the fingerprint: one sweep may run on A100s, V100s and CPUs."""

    device: str = "auto"  # auto (cuda if available, else cpu) | cpu | cuda | cuda:<index>
    loader_workers: int = 0  # FFCV decoding threads per worker process; 0 = the process's torch threads
    # FFCV: read betons through the OS page cache in random order (data that fits in RAM); false: process cache,
    # quasi-random order (data larger than RAM, as FFCV advises).
    os_cache: bool = True


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
    examples: List[int] = field(default_factory=lambda: [50, 20])  # one target per entry (t0, t1, ...): its examples
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
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    planted: Optional[PlantedConfig] = None  # set by experiment=planted: rows are planted, not trained
    # Add `targets` to the existing store at store.path from its rows' saved source models (store.save_backbones),
    # training no source model: docs/store-format.md, "Targets added later".
    transfer_only: bool = False


# The parts of the config that define what a row *is*: two stores agree on these or cannot be merged.
SWEEP_DEFINING = ("source", "targets", "model", "train", "transfer", "sweep")


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
    if planted is None:
        _validate_recipes(cfg, need)
    if cfg.launcher.get("name") == "local":
        workers = cfg.launcher.workers
        need(workers >= 0, "launcher.workers", f"must be at least 1 (or 0: one per CPU), got {workers}")
    if cfg.launcher.get("name") == "slurm":
        validate_slurm(cfg.launcher)
    need(bool(str(cfg.store.path)), "store.path", "must not be empty")


def _validate_recipes(cfg: Any, need) -> None:
    """Data, resolution and transfer-recipe values of a trained sweep."""
    from omegaconf import OmegaConf

    src = cfg.source
    if src.loader == "ffcv":
        need(not OmegaConf.is_missing(src, "root") and bool(src.root), "source.root",
             "loader=ffcv reads prepared datasets from <source.root>/<name>/: set it to the folder that "
             "`python -m launch.prepare ... out=FOLDER` wrote (docs/paper-scale.md)")
    need(len(src.mean) in (1, 3) and len(src.std) == len(src.mean), "source.mean",
         f"mean and std need one value per channel (1 or 3), got {list(src.mean)} and {list(src.std)}")
    need(all(v > 0 for v in src.std), "source.std", f"must be positive, got {list(src.std)}")
    tr = cfg.train
    need(tr.schedule in SCHEDULES[:3], "train.schedule", f"must be one of {list(SCHEDULES[:3])}, got {tr.schedule!r}")
    need(tr.optimizer in ("sgd", "adam"), "train.optimizer", f"must be sgd or adam, got {tr.optimizer!r}")
    need(0 < tr.min_res <= tr.max_res, "train.min_res", f"need 0 < min_res <= max_res, got {tr.min_res}, {tr.max_res}")
    need(tr.start_ramp <= tr.end_ramp, "train.start_ramp", f"must be <= train.end_ramp, got {tr.start_ramp}")
    need(tr.res_step >= 1 and tr.eval_res >= 1, "train.res_step", "res_step and eval_res must be positive")
    fx, fu = cfg.transfer.fixed, cfg.transfer.full
    need(fx.solver in ("lbfgs", "sgd"), "transfer.fixed.solver", f"must be lbfgs or sgd, got {fx.solver!r}")
    need(fx.batchnorm in ("train", "frozen"), "transfer.fixed.batchnorm",
         f"must be train or frozen, got {fx.batchnorm!r}")
    for key, r in (("transfer.fixed", fx), ("transfer.full", fu)):
        need(r.schedule in SCHEDULES, f"{key}.schedule", f"must be one of {list(SCHEDULES)}, got {r.schedule!r}")
        need(r.optimizer in ("sgd", "adam"), f"{key}.optimizer", f"must be sgd or adam, got {r.optimizer!r}")
        need(r.epochs >= 1 and r.batch_size >= 1 and r.lr > 0, key, "epochs, batch_size and lr must be positive")
        need(r.step_every >= 1, f"{key}.step_every", f"must be at least 1, got {r.step_every}")
    need(cfg.transfer.normalization in ("source", "target"), "transfer.normalization",
         f"must be source or target, got {cfg.transfer.normalization!r}")
    for name, t in cfg.targets.items():
        key = f"targets.{name}"
        need(t.schedule is None or t.schedule in SCHEDULES, f"{key}.schedule",
             f"must be one of {list(SCHEDULES)}, got {t.schedule!r}")
        need(t.epochs is None or t.epochs >= 1, f"{key}.epochs", f"must be at least 1, got {t.epochs}")
        need(t.lr is None or t.lr > 0, f"{key}.lr", f"must be positive, got {t.lr}")
        need(t.train_decoder in TRAIN_DECODERS, f"{key}.train_decoder",
             f"must be one of {list(TRAIN_DECODERS)}, got {t.train_decoder!r}")
        need(t.eval_decoder in EVAL_DECODERS, f"{key}.eval_decoder",
             f"must be one of {list(EVAL_DECODERS)}, got {t.eval_decoder!r}")
        need(t.resolution >= 1, f"{key}.resolution", f"must be positive, got {t.resolution}")
        if cfg.transfer.normalization == "target":
            need(len(t.mean) == len(src.mean) and len(t.std) == len(src.mean) and all(v > 0 for v in t.std),
                 f"{key}.mean", f"transfer.normalization=target needs {len(src.mean)} mean and std value(s) per "
                 f"channel for every target, got {list(t.mean)} and {list(t.std)}")
    dev = str(cfg.compute.device)
    need(dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit()), "compute.device",
         f"must be auto, cpu, cuda or cuda:<index>, got {dev!r}")
    need(cfg.compute.loader_workers >= 0, "compute.loader_workers", f"must be >= 0, got {cfg.compute.loader_workers}")


def _validate_planted(p: Any, need) -> None:
    need(p.units >= 2, "planted.units", f"must be at least 2, got {p.units}")
    need(len(p.examples) > 0 and all(n >= 1 for n in p.examples), "planted.examples",
         f"needs at least one target with >= 1 example, got {list(p.examples)}")
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


CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


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
    """`python -m launch.resume store.path=PATH [launcher / compute overrides]`: the sweep, the compute settings and
    the launcher come from the store's latest submission (else the store), with the keys given here on top
    (launcher=local runs the rows here). datatransfer/resume.py."""

    store: StorePathConfig = field(default_factory=StorePathConfig)
    launcher: Any = MISSING  # conf/launcher/slurm.yaml unless launcher=local is given
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)


@dataclass
class StatusConfig:
    """`python -m launch.status store.path=PATH`."""

    store: StorePathConfig = field(default_factory=StorePathConfig)
    watch: float = 0.0  # seconds between polls until nothing is queued or running; 0 = print once
    failed: int = 10  # failed tasks listed
    tail: int = 5  # last lines of each failed task's stderr log


@dataclass
class PrepareConfig:
    """`python -m launch.prepare dataset=... out=FOLDER`: write a dataset's FFCV betons to <out>/<name>/.

    Each dataset folder holds train.beton, val.beton (ImageNet, the mini source) or test.beton (targets), and
    meta.json (class names, sizes, provenance). Point source.root at ``out`` (docs/paper-scale.md).
    """

    dataset: str = MISSING  # mini | imagenet | cifar10 | cifar100 | folder
    out: str = MISSING  # folder of prepared datasets (what source.root names)
    # imagenet: ImageFolder root with train/ and val/; folder: with train/ and test/; cifar10/cifar100: the folder
    # of the python pickles (cifar-10-batches-py, cifar-100-python); mini: unused (the embedded file).
    src: str = ""
    name: str = ""  # the dataset's folder under out; "" = dataset (folder: required, e.g. pets)
    # Image storage, as ffcv-imagenet's ResNet-18 data (write_imagenet.sh 400 0.10 90): long side at most
    # max_resolution px; a compress_probability share stored as JPEG of jpeg_quality, the rest raw.
    # (ffcv-imagenet's ResNet-50 data: 500, 0.50, 90.)
    max_resolution: int = 400
    compress_probability: float = 0.10
    jpeg_quality: int = 90
    workers: int = 0  # writer processes; 0 = every CPU
    overwrite: bool = False  # replace betons that exist


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="base_prepare", node=PrepareConfig)
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
