"""The schema of `python -m launch` (conf/config.yaml): a sweep, what each of its rows is, and where they run.

Every default of the launch config lives here (the shared recipe defaults in ``recipe.py``, the launchers' in
``launchers.py``). ``sweep`` and ``row`` are config groups: their node is chosen by ``sweep=...`` / ``row=...``
(conf/sweep/, conf/row/), and ``kind`` says which schema a stored config was written with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from omegaconf import MISSING, DictConfig, OmegaConf

from datatransfer.config.recipe import Recipe
from datatransfer.errors import ConfigError

OUTPUT_KINDS = ("softmax_gt", "gt_logit", "raw_margin", "softmax_margin", "is_correct")
TRANSFER_MODES = ("fixed", "full")
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
class TrainConfig(Recipe):
    """Source-model recipe (schedule: onecycle | cyclic | constant)."""

    # 3 (2 until 2026-12-07): a third epoch doubles the weak digit matches' influence on the mini demo while the rows'
    # noise stays: 224 three-epoch rows answer more clearly than 352 two-epoch ones (docs/configuration.md)
    epochs: int = 3
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-2
    weight_decay: float = 0.0
    schedule: str = "onecycle"
    peak_epoch: float = 0.6
    label_smoothing: float = 0.0
    # Progressive resolution (ffcv loader, RGB): min_res px up to epoch start_ramp, then linear to max_res at
    # end_ramp, rounded to a multiple of res_step (ffcv-imagenet's schedule). Evaluation: eval_res px centre crop.
    min_res: int = 160
    max_res: int = 192
    start_ramp: int = 11
    end_ramp: int = 13
    res_step: int = 32
    eval_res: int = 224
    # Mixed precision for the whole row: on CUDA fp16 autocast + grad scaler + fp16 inputs; on the CPU bf16 autocast
    # (1.3-1.6x the models per CPU-hour where the CPU has AMX / AVX-512 BF16; docs/performance.md). false: float32.
    # auto: true on CUDA and for GPU architectures, for the small CNN on a CPU only where bf16 is native (emulated
    # bf16 costs ~7x a float32 row); resolved once when the store is created, which records the bool
    # (train/precision.py). true | false | auto.
    amp: Any = "auto"


@dataclass
class FixedTransferConfig(Recipe):
    """Fixed-feature transfer: frozen backbone, a new linear head fitted on its features.

    solver=newton: multinomial logistic regression to convergence (float64, Newton-CG) on cached features
    (eval-mode backbone); uses ``iterations`` (Newton steps at most) and ``weight_decay`` (L2 on the head).
    solver=lbfgs: the same problem by torch's L-BFGS in float32 (the default until 2026-12-06: stores made
    before then used it). solver=sgd: the paper's recipe, the head trained by
    minibatch SGD through the frozen backbone with the recipe fields (per-target epochs/lr/schedule override
    them); ``batchnorm`` says whether the backbone's batch-norm layers run in train mode (their running statistics
    keep adapting to the target, as in the authors' release) or stay frozen in eval mode.
    """

    epochs: int = 2  # sgd
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.1
    weight_decay: float = 1e-3  # newton, lbfgs: L2 penalty on the head; sgd: SGD weight decay of the head
    schedule: str = "cyclic"
    peak_epoch: float = 0.5
    solver: str = "newton"  # newton | lbfgs | sgd
    iterations: int = 100  # newton, lbfgs: steps at most
    batchnorm: str = "train"  # sgd: train (release: running statistics adapt) | frozen (eval mode)


@dataclass
class FullTransferConfig(Recipe):
    """Full-network transfer: every weight trains, starting from the source model."""

    epochs: int = 1  # mini: one LP-FT epoch keeps the demo within its time budget (docs/configuration.md)
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "onecycle"
    peak_epoch: float = 0.3
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


# ---- sweep kinds (group `sweep`, conf/sweep/): which rows exist ------------------------------------------------
@dataclass
class RandomSubsetsSweepConfig:
    """sweep=random_subsets: row i's mask and seed are functions of (seed, i) alone."""

    kind: str = "random_subsets"
    unit: str = "class"
    alpha: float = 0.5  # fraction of units in each mask
    scheme: str = "fixed_size"  # fixed_size: exactly round(alpha * U) units | bernoulli: each unit in w.p. alpha
    # 224: what fits the mini demo (3-epoch rows, bf16, 8 models per process) in ~9 min on 2 quiet cores; its digits
    # answer is at z >= 3 for 8-9 of 10 classes (two sweep seeds); docs/configuration.md, "Why 3 epochs and 224 models"
    num_models: int = 224
    seed: int = 0
    # Repeated rows, for the noise ceiling of the diagnostics (docs/estimators.md): 0 = none; k >= 2 = every k-th
    # row (i % k == k - 1) trains on the mask of row i - 1 with its own seed, so 1/k of the rows are repeats.
    # A function of the row index alone: extending the sweep keeps the layout.
    repeats: int = 0
    # Where a row's initial weights come from. per_row (the paper): its own training seed, like its data order.
    # shared: every row starts from one initialisation drawn from `seed` (masks/seeds.py:init_seed) and keeps its own
    # data order (common random numbers). Measured on the mini demo (docs/configuration.md, "Shared initialisation"):
    # it lowers the rows' noise little and changes the influences beyond their errors (they become those of that one
    # initialisation), so per_row stays the default; shared is there to study one initialisation's influences.
    init: str = "per_row"
    outputs: List[str] = field(default_factory=lambda: list(OUTPUT_KINDS))


@dataclass
class ExampleSubsetsSweepConfig:
    """sweep=example_subsets: the units are source training images (Sec. 4.3: LASSO datamodels); row i's mask is a
    random subset of them, a function of (seed, i) alone, as for classes. Which images are units: ``select``."""

    kind: str = "example_subsets"
    unit: str = "example"
    alpha: float = 0.5
    scheme: str = "fixed_size"
    num_models: int = 128
    seed: int = 0
    outputs: List[str] = field(default_factory=lambda: list(OUTPUT_KINDS))
    select: str = "all"  # all: every source training image | classes: those of the source classes in `classes`
    classes: List[str] = field(default_factory=list)  # select=classes: source class names
    count: int = 0  # > 0: a random subset of this many of the selected images (drawn with select_seed)
    select_seed: int = 0


@dataclass
class CounterfactualSweepConfig:
    """sweep=counterfactual: keep-lists derived from an influence store (settings in the top-level
    ``counterfactual`` section, CounterfactualConfig; datatransfer/masks/counterfactual.py). The rows follow from
    that section; row i's training seed is a function of (seed, i), as in every sweep kind."""

    kind: str = "counterfactual"
    unit: str = "class"
    seed: int = 0  # training seeds of the rows (the random removal order draws from counterfactual.seed)
    outputs: List[str] = field(default_factory=lambda: list(OUTPUT_KINDS))


COUNTERFACTUAL_ORDERS = ("bottom", "top", "random")
COUNTERFACTUAL_BASELINES = ("full", "handpicked")


@dataclass
class CounterfactualConfig:
    """What a ``sweep=counterfactual`` store removes and why (docs/counterfactual.md). Read only by that sweep kind
    (and then part of the store's fingerprint); with any other kind it must stay at its defaults."""

    influence: str = ""  # path of an influence.zarr (python -m aggregate) computed on the same source units
    target: str = ""  # the target whose influences rank the units; must be among `targets`
    mode: str = ""  # fixed | full: the transfer mode of those influences
    kind: str = "softmax_gt"  # the output kind of those influences
    orders: List[str] = field(default_factory=lambda: list(COUNTERFACTUAL_ORDERS))  # subset of bottom, top, random
    k: List[int] = field(default_factory=lambda: [1, 2, 4])  # numbers of units removed; each in [0, U)
    runs: int = 5  # rows per (order, k) point, per baseline, per example (they differ only in training seed)
    baselines: List[str] = field(default_factory=lambda: list(COUNTERFACTUAL_BASELINES))  # subset of full, handpicked
    seed: int = 0  # draws the random order's removed units, per (k, run)
    # Target test examples whose most negative influencer is removed (runs rows each; full-source rows compare)
    examples: List[int] = field(default_factory=list)
    # Also pick this many examples automatically: those whose most negative influencer stands out most from the
    # example's other influences (robust z-score); 0 = only `examples`.
    auto_examples: int = 0
    handpicked_file: str = ""  # ImageNet source: the class lists; "" = datatransfer/masks/handpicked_imagenet.json


# ---- row kinds (group `row`, conf/row/): what a row is ------------------------------------------------------------
@dataclass
class TrainedRowConfig:
    """row=trained: a source model trained on the mask's units (`source`, `model`, `train`), transferred to each of
    `targets` (`transfer`); datatransfer/rows/trained.py."""

    kind: str = "trained"


@dataclass
class PlantedRowConfig:
    """row=planted (experiment=planted): rows skip training and write  b + mask . w + noise
    (datatransfer/rows/planted.py). A known truth for the aggregator and a cheap sweep to validate a cluster;
    docs/slurm.md."""

    kind: str = "planted"
    units: int = 1000  # source units (u0000 ...)
    examples: List[int] = field(default_factory=lambda: [50, 20])  # one target per entry (t0, t1, ...): its examples
    modes: List[str] = field(default_factory=lambda: list(TRANSFER_MODES))
    classes: int = 10  # labels of target example j: j % classes
    noise: float = 0.5  # sd of the per-row noise (the signal mask . w has sd ~1)
    seed: int = 0  # draws the truth w and the per-example bias b; the rows' noise follows sweep.seed
    seconds_per_row: float = 0.0  # sleep per row, to emulate work


# ---- where rows go and run ------------------------------------------------------------------------------------------
# The default store folder: runs/<name>/, and under `python -m launch -m ...` one folder per job, named after the
# job's overrides (the `dt_multirun_subdir` resolver, config/multirun.py).
RUNS_DIR = "runs/${name}/"


@dataclass
class StoreConfig:
    path: str = RUNS_DIR + "${dt_multirun_subdir:}store.zarr"
    # Keep each row's trained source model at <store>/backbones/row-<i>.pt, so that launch.add_targets can add
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
    # Rows whose source models one worker process trains at once (the batched row runner, docs/performance.md):
    # 0 = auto (measured per device and precision: AUTO_MODELS_PER_PROCESS in rows/worker.py); 1 = one row at a
    # time. Only the small CNN stacks; other architectures run one row at a time whatever this says.
    models_per_process: int = 0


@dataclass
class LaunchConfig:
    """Options of one `python -m launch` / `launch.resume` invocation; never part of the store's fingerprint."""

    dry_run: bool = False  # print the plan (arrays, tasks, rows, resources), submit nothing
    # For tests only (fault injection): a row in this list fails when a worker reaches it (local and Slurm).
    fail_rows: List[int] = field(default_factory=list)
    # Row claims (docs/store-format.md, "Row claims"): a writer touches its row's claim file this often while it
    # computes the row; a claim untouched for claim_stale_s is taken over by another writer. Checked: both > 0,
    # heartbeat < stale (config/validate.py:claim_settings).
    claim_heartbeat_s: float = 60.0
    claim_stale_s: float = 900.0


@dataclass
class Config:
    name: str = "mini"  # experiment name; names the default store folder
    source: SourceConfig = field(default_factory=SourceConfig)
    targets: Dict[str, TargetConfig] = field(default_factory=dict)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    sweep: Any = MISSING  # a group: conf/sweep/{random_subsets,example_subsets}.yaml (SWEEP_KINDS)
    row: Any = MISSING  # a group: conf/row/{trained,planted}.yaml (ROW_KINDS)
    launcher: Any = MISSING  # a group: conf/launcher/{local,slurm}.yaml (config/launchers.py)
    store: StoreConfig = field(default_factory=StoreConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    # sweep=counterfactual's settings; a top-level section so that its keys read `counterfactual.k=[...]`
    counterfactual: CounterfactualConfig = field(default_factory=CounterfactualConfig)


# ---- what defines a row: the one place that says which sections make a store's fingerprint -----------------------
# Every section that can define a row; two stores agree on a row kind's sections or cannot be merged.
SWEEP_DEFINING = ("source", "targets", "model", "train", "transfer", "sweep", "row")
# What a trained row's source model is: targets can be added to a store whose rows agree on these.
SOURCE_DEFINING = ("source", "model", "train", "sweep", "row")

SWEEP_KINDS = {"random_subsets": RandomSubsetsSweepConfig, "example_subsets": ExampleSubsetsSweepConfig,
               "counterfactual": CounterfactualSweepConfig}
# row kind -> (its schema, the sections that define such a row: a planted row reads no data and trains nothing)
ROW_KINDS = {
    "trained": (TrainedRowConfig, SWEEP_DEFINING),
    "planted": (PlantedRowConfig, ("sweep", "row")),
}


def _kind(cfg: Any, section: str, default: str, kinds: Mapping[str, Any]) -> str:
    node = cfg.get(section) if cfg is not None else None
    kind = str(node.get("kind", default)) if node is not None else default
    if kind not in kinds:
        raise ConfigError(f"{section}.kind: unknown {section} kind {kind!r}; choose from {list(kinds)}")
    return kind


def row_kind(cfg: Any) -> str:
    """``row.kind`` of a config or of a plain dict (a store's config attrs)."""
    return _kind(cfg, "row", "trained", ROW_KINDS)


def sweep_kind(cfg: Any) -> str:
    """``sweep.kind`` of a config or of a plain dict (a store's config attrs)."""
    return _kind(cfg, "sweep", "random_subsets", SWEEP_KINDS)


def row_defining(cfg: Any) -> Tuple[str, ...]:
    """The sections that define ``cfg``'s rows (a config or a plain dict): what its store's fingerprint covers.
    A counterfactual sweep adds its ``counterfactual`` section (other kinds leave it out, so their fingerprints
    are what they were before the section existed)."""
    extra = ("counterfactual",) if sweep_kind(cfg) == "counterfactual" else ()
    return ROW_KINDS[row_kind(cfg)][1] + extra


def structured(values: Mapping[str, Any]) -> DictConfig:
    """A plain dict (a store's or a submission's config) typed by the schema again: ``sweep`` and ``row`` by their
    ``kind``. ``launcher``, if present, stays as given (the caller types it)."""
    cfg = OmegaConf.structured(Config)
    cfg.sweep = OmegaConf.structured(SWEEP_KINDS[_kind(values, "sweep", "random_subsets", SWEEP_KINDS)])
    cfg.row = OmegaConf.structured(ROW_KINDS[row_kind(values)][0])
    return OmegaConf.merge(cfg, values)
