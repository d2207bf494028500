"""The ``launcher`` group (conf/launcher/): where a store's missing rows run. Not part of the store's fingerprint."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List

from datatransfer.config.sweep import row_kind
from datatransfer.errors import ConfigError


@dataclass
class LocalLauncherConfig:
    """launcher=local: rows run on this machine (datatransfer/launchers/local.py)."""

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


# launcher name -> schema: the nodes of the `launcher` group (conf/launcher/<name>.yaml selects base_<name>)
LAUNCHER_KINDS = {"local": LocalLauncherConfig, "slurm": SlurmLauncherConfig}


def validate_local(launcher: Any) -> None:
    """Value checks of launcher=local. Raises ConfigError naming the key."""
    if launcher.workers < 0:
        raise ConfigError(f"launcher.workers: must be at least 1 (or 0: one per CPU), got {launcher.workers}")


JOB_NAME = re.compile(r"[A-Za-z0-9._+-]+")  # what Slurm, submitit's sbatch script and squeue's output all keep intact
# What launcher=slurm_gpu (conf/launcher/slurm_gpu.yaml) asks for; named in the refusal of a CUDA recipe without a GPU
GPU_PRESET = "1 GPU, 8 CPUs, 32 GB, 120 min a task"


def job_name(cfg: Any) -> str:
    """The Slurm job name of a launch config: ``launcher.job_name``, or ``dt-<name>``. Raises ConfigError naming the
    key when it has characters that sbatch scripts or ``squeue``'s '|'-separated output would not keep intact."""
    given = str(cfg.launcher.job_name or "")
    if given:
        _check_job_name(given)
        return given
    _check_job_name(f"dt-{cfg.name}", default_of=str(cfg.name))
    return f"dt-{cfg.name}"


def _check_job_name(name: str, default_of: str = "") -> None:
    if JOB_NAME.fullmatch(name):
        return
    bad = "".join(sorted({c for c in name if not JOB_NAME.fullmatch(c)}))
    what = (f"launcher.job_name: the default name dt-<name> = {name!r} (from name={default_of!r})" if default_of
            else f"launcher.job_name={name!r}")
    fixed = re.sub(r"[^A-Za-z0-9._+-]+", "-", name).strip("-") or "dt"
    raise ConfigError(f"{what} has characters a Slurm job name cannot have here ({bad!r}): use only letters, digits "
                      f"and . _ + -, e.g. launcher.job_name={fixed}")


def validate_slurm(launcher: Any, prefix: str = "launcher.") -> None:
    """Value checks of launcher=slurm. Raises ConfigError naming the key (``prefix``: where the settings sit, e.g.
    ``estimator.fanout.slurm.``)."""

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"{prefix}{key}: {msg}")

    for key in ("cpus_per_task", "timeout_min", "array_parallelism", "rows_per_task"):
        need(launcher[key] >= 1, key, f"must be at least 1, got {launcher[key]}")
    for key in ("gpus_per_task", "mem_gb", "max_array_size", "max_num_timeout", "signal_delay_s"):
        need(launcher[key] >= 0, key, f"must be >= 0, got {launcher[key]}")
    limit_s = int(launcher.timeout_min) * 60
    need(launcher.signal_delay_s < limit_s, "signal_delay_s",
         f"{launcher.signal_delay_s} s is not shorter than the time limit ({prefix}timeout_min={launcher.timeout_min}"
         f" = {limit_s} s): the requeue signal would come before the task starts working; set "
         f"{prefix}signal_delay_s<{limit_s} (90 is the default) or raise {prefix}timeout_min")
    if launcher.job_name:
        _check_job_name(str(launcher.job_name))


def needs_gpu(cfg: Any) -> str:
    """Why the config's rows need a CUDA device, and what happens to them without one; "" if they do not."""
    if row_kind(cfg) != "trained":
        return ""  # planted rows train nothing
    device = str(cfg.compute.device)
    if device.startswith("cuda"):
        return f"compute.device={device}: on a node without a GPU every row fails"
    # mixed precision runs on CPUs too (bf16), so it marks a CUDA recipe only for models too large for CPUs
    if device == "auto" and cfg.train.amp and cfg.model.arch != "small_cnn":
        amp = str(cfg.train.amp).lower()  # true, or auto (which means true for architectures other than the small CNN)
        return (f"train.amp={amp}, model.arch={cfg.model.arch}: on a node without a GPU the rows would silently train "
                "on its CPUs, in bf16 instead of fp16")
    return ""


def validate_slurm_run(cfg: Any) -> None:
    """Checks of launcher=slurm that need the rest of the launch config: the job name (``dt-<name>`` by default)
    and a GPU for a recipe that runs on CUDA. Raises ConfigError naming the key."""
    job_name(cfg)
    why = needs_gpu(cfg)
    if why and not cfg.launcher.gpus_per_task and not _gpus_asked_otherwise(cfg.launcher):
        raise ConfigError(
            f"launcher.gpus_per_task=0, but this recipe runs on CUDA ({why}). Pick launcher=slurm_gpu ({GPU_PRESET}; "
            f"add launcher.partition=<your GPU partition>) or set launcher.gpus_per_task=1; to train on CPUs on "
            f"purpose, set compute.device=cpu")


def _gpus_asked_otherwise(launcher: Any) -> bool:
    """GPUs requested through additional_parameters (--gpus, --gpus-per-node, --gres=gpu:...) instead."""
    for key, value in (launcher.additional_parameters or {}).items():
        key = str(key).replace("_", "-")
        if key.startswith("gpus") or (key == "gres" and "gpu" in str(value)):
            return True
    return False


def validate_launcher(launcher: Any, cfg: Any = None) -> None:
    """The checks of whichever launcher is selected; ``cfg``: the launch config holding it, for the checks that need
    more than the launcher's own keys (job name, a GPU for a CUDA recipe)."""
    name = launcher.get("name")
    if name == "local":
        validate_local(launcher)
    elif name == "slurm":
        validate_slurm(launcher)
        if cfg is not None:
            validate_slurm_run(cfg)
