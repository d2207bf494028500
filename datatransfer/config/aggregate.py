"""The schema of `python -m aggregate` and `python -m aggregate.report` (conf/aggregate.yaml): influences,
diagnostics and the report. The ``estimator`` group (conf/estimator/) picks the estimator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List

from omegaconf import MISSING

from datatransfer.config.launchers import SlurmLauncherConfig
from datatransfer.config.sweep import OUTPUT_KINDS, RUNS_DIR, StoreConfig
from datatransfer.errors import ConfigError


@dataclass
class BootstrapConfig:
    """Settings every estimator has: standard errors by the (Poisson) bootstrap over rows."""

    bootstrap: int = 0  # replicates; 0 = none (difference of means still gets Welch standard errors)
    bootstrap_seed: int = 0  # row i's count in replicate b is Poisson(1) drawn from (bootstrap_seed, i)


@dataclass
class DimEstimatorConfig(BootstrapConfig):
    """Difference of means, the paper's Eq. 1 / Algorithm 1, with Welch standard errors."""

    name: str = "dim"


@dataclass
class RidgeEstimatorConfig(BootstrapConfig):
    """Datamodels variant (Appendix B): ridge regression of the output on the mask, with an unpenalised bias.
    Objective (1/N) sum (y - b - x.w)^2 + lambda |w|^2; lambda per output column, the grid value with the least
    squared error on held-out rows; then refitted on all rows."""

    name: str = "ridge"
    lambdas: List[float] = field(default_factory=lambda: [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0])
    holdout_fraction: float = 0.2  # rows held out (picked by a hash of the row index) to choose lambda


@dataclass
class LassoFanoutConfig:
    """Where the LASSO solves of blocks of target examples run (the statistics are read once, here)."""

    launcher: str = "none"  # none (this process), local (worker processes) or slurm (a job array, submitit)
    examples_per_task: int = 256  # target examples (output columns) solved by one process / array task
    workers: int = 0  # launcher=local: processes at once; 0 = one per CPU
    folder: str = ""  # files exchanged with the tasks (shared with the nodes); "" = a temporary folder in the cwd
    slurm: SlurmLauncherConfig = field(default_factory=SlurmLauncherConfig)  # launcher=slurm: as launcher=slurm


@dataclass
class LassoEstimatorConfig(BootstrapConfig):
    """LASSO datamodels (Sec. 4.3, Appendix D): per target example, an L1 path on the fit rows, lambda chosen on
    held-out rows, refitted on all rows. Objective (1/2N) sum (y - b - x.w)^2 + lambda |w|_1. Results are sparse."""

    name: str = "lasso"
    path_length: int = 30  # lambdas on the path, geometric from lambda_max (w = 0) down to eps * lambda_max
    eps: float = 1e-3
    holdout_fraction: float = 0.2  # rows held out (a hash of the row index) to choose lambda
    tol: float = 1e-4  # stop when the duality gap <= tol * var(y) (scikit-learn's criterion)
    max_iter: int = 1000  # outer iterations per solve
    patience: int = 5  # stop an example's path once its held-out error has not improved for this many lambdas; 0=all
    # auto: cd when the Gram form fits gram_max_mb (8 (U+1)^2 float64 matrices), else stream. cd: coordinate descent
    # on the Gram matrix (numba, CPU; measured fastest, docs/estimators.md); torch: FISTA on the Gram matrix;
    # stream: FISTA on row blocks of the masks themselves (memory ~ U x examples, never U^2; for 1.28 M units)
    solver: str = "auto"
    device: str = "cpu"  # solver=torch or stream: cpu, cuda, cuda:N or auto
    gram_max_mb: float = 4096.0  # solver=auto: the largest Gram form to hold (4 GB: up to 8,190 units)
    block_rows: int = 1024  # solver=stream: mask rows per block (one block unpacked to 0/1 at a time)
    cache_mb: float = 2048.0  # solver=stream: keep the packed masks on the device between passes when they fit
    dense_max_mb: float = 256.0  # per_example also written dense when n_t x U float32 fits this; else CSR only
    fanout: LassoFanoutConfig = field(default_factory=LassoFanoutConfig)


# estimator name -> schema: the nodes of the `estimator` group (conf/estimator/<name>.yaml selects base_<name>)
ESTIMATOR_KINDS = {"dim": DimEstimatorConfig, "ridge": RidgeEstimatorConfig, "lasso": LassoEstimatorConfig}


@dataclass
class DiagnosticsConfig:
    """Convergence curves vs the number of rows N (Appendix A.5 and F), computed with difference of means."""

    enabled: bool = True
    holdout_fraction: float = 0.2  # rows held out for rank correlation and LDS (paper: 1,540 of 7,540)
    bootstrap: int = 500  # resamples per N (paper: 500)
    points: int = 6  # values of N, geometric, up to all fit rows
    # knockoff FDR (and the convergence rule) among the top k influences; 0 = U / 10 (paper: 100 of 1,000), at
    # least 10 (or U): diagnostics.default_top_k
    top_k: int = 0
    lds_examples: int = 256  # target examples sampled for LDS (per target)
    seed: int = 0  # bootstrap resampling and LDS example sample
    # Convergence rule (influence/convergence.py, docs/estimators.md): converged when the median relative standard
    # error of the top-k overall influences is at most converge_rel_se and at least converge_overlap of the top k
    # of all rows are also the top k of the first half of the rows.
    converge_rel_se: float = 0.2
    converge_overlap: float = 0.8


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
class AggregateStoreConfig(StoreConfig):
    # The store of a single `python -m launch` run; a multirun job's store is named by store.path=...
    path: str = RUNS_DIR + "store.zarr"


@dataclass
class AggregateConfig:
    name: str = "mini"  # experiment name; names the default store folder
    store: AggregateStoreConfig = field(default_factory=AggregateStoreConfig)
    out: str = ""  # influence store; "" = <store's parent folder>/influence.zarr
    estimator: Any = MISSING  # a group: conf/estimator/{dim,ridge,lasso}.yaml (ESTIMATOR_KINDS)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    block_rows: int = 0  # rows per read; 0 = from memory_mb
    # Difference of means keeps its sums per block of this many store rows (in the influence store); a rerun reads
    # only rows completed since and recomputes only blocks whose rows changed. Fewer rows per block: less to
    # recompute after a repair, more disk (docs/influence-format.md, "Row-block sums"). 4,096: the paper's 7,540
    # rows make 2 blocks, whose sums (written, then read back for the totals) cost a quarter of 1,024's.
    sums_block_rows: int = 4096
    incremental: bool = True  # false: read every row again (the result is the same to float64 rounding)
    # A group (conf/launcher/): where the row blocks are summed. local: launcher.workers processes (0 or 1: this
    # process, whose matrix products use every CPU); slurm: one Slurm array through submitit, as for sweeps.
    launcher: Any = MISSING
    memory_mb: int = 1024  # budget for blocks and accumulators (a rough bound, not a hard limit)
    progress: bool = True  # tqdm bar on stderr for long runs


def validate_aggregate(cfg: Any) -> None:
    """Value checks for `python -m aggregate` / `aggregate.report`. Raises ConfigError naming the key."""

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {msg}")

    from datatransfer.config.validate import check_known_keys

    check_known_keys(cfg)
    need(bool(str(cfg.store.path)), "store.path", "must not be empty")
    need(cfg.estimator.name in ESTIMATOR_KINDS, "estimator",
         f"must be {' or '.join(ESTIMATOR_KINDS)}, got {cfg.estimator.name!r}")
    if cfg.estimator.name == "ridge":
        need(len(cfg.estimator.lambdas) > 0 and min(cfg.estimator.lambdas) > 0, "estimator.lambdas",
             f"must be positive values, got {list(cfg.estimator.lambdas)}")
        need(0 < cfg.estimator.holdout_fraction < 1, "estimator.holdout_fraction", "must lie strictly in (0, 1)")
    need(cfg.estimator.bootstrap == 0 or cfg.estimator.bootstrap >= 2, "estimator.bootstrap",
         f"must be 0 (off) or >= 2 replicates, got {cfg.estimator.bootstrap}")
    if cfg.estimator.name == "lasso":
        _validate_lasso(cfg.estimator, need)
    d = cfg.diagnostics
    need(0 < d.holdout_fraction < 1, "diagnostics.holdout_fraction", "must lie strictly in (0, 1)")
    need(d.bootstrap >= 0, "diagnostics.bootstrap", f"must be >= 0, got {d.bootstrap}")
    need(d.points >= 1, "diagnostics.points", f"must be >= 1, got {d.points}")
    need(d.top_k >= 0, "diagnostics.top_k", f"must be >= 0, got {d.top_k}")
    need(d.converge_rel_se > 0, "diagnostics.converge_rel_se", f"must be > 0, got {d.converge_rel_se}")
    need(0 < d.converge_overlap <= 1, "diagnostics.converge_overlap", "must lie in (0, 1]")
    need(d.lds_examples >= 1, "diagnostics.lds_examples", f"must be >= 1, got {d.lds_examples}")
    need(cfg.block_rows >= 0, "block_rows", f"must be >= 0, got {cfg.block_rows}")
    need(cfg.sums_block_rows >= 1, "sums_block_rows", f"must be >= 1, got {cfg.sums_block_rows}")
    from datatransfer.config.launchers import validate_launcher

    validate_launcher(cfg.launcher)
    need(cfg.memory_mb >= 16, "memory_mb", f"must be >= 16, got {cfg.memory_mb}")
    r = cfg.report
    need(r.kind in OUTPUT_KINDS, "report.kind", f"must be one of {list(OUTPUT_KINDS)}, got {r.kind!r}")
    for key in ("top", "sources", "images", "hard_examples", "negatives", "headline_top"):
        need(getattr(r, key) >= 1, f"report.{key}", f"must be >= 1, got {getattr(r, key)}")


def _validate_lasso(e: Any, need) -> None:
    need(e.path_length >= 1, "estimator.path_length", f"must be >= 1, got {e.path_length}")
    need(0 < e.eps < 1, "estimator.eps", f"must lie strictly in (0, 1), got {e.eps}")
    need(0 < e.holdout_fraction < 1, "estimator.holdout_fraction", "must lie strictly in (0, 1)")
    need(e.tol > 0, "estimator.tol", f"must be > 0, got {e.tol}")
    need(e.max_iter >= 1, "estimator.max_iter", f"must be >= 1, got {e.max_iter}")
    need(e.patience >= 0, "estimator.patience", f"must be >= 0, got {e.patience}")
    need(e.solver in ("auto", "cd", "torch", "stream"), "estimator.solver",
         f"must be auto, cd, torch or stream, got {e.solver!r}")
    need(e.gram_max_mb >= 0, "estimator.gram_max_mb", f"must be >= 0, got {e.gram_max_mb}")
    need(e.block_rows >= 1, "estimator.block_rows", f"must be >= 1, got {e.block_rows}")
    need(e.cache_mb >= 0, "estimator.cache_mb", f"must be >= 0, got {e.cache_mb}")
    need(e.dense_max_mb >= 0, "estimator.dense_max_mb", f"must be >= 0, got {e.dense_max_mb}")
    f = e.fanout
    need(f.launcher in ("none", "local", "slurm"), "estimator.fanout.launcher",
         f"must be none, local or slurm, got {f.launcher!r}")
    need(f.examples_per_task >= 1, "estimator.fanout.examples_per_task", f"must be >= 1, got {f.examples_per_task}")
    need(f.workers >= 0, "estimator.fanout.workers", f"must be >= 0, got {f.workers}")
