"""The ``launcher`` group (conf/launcher/): where a store's missing rows run. Not part of the store's fingerprint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List

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


def validate_slurm(launcher: Any) -> None:
    """Value checks of launcher=slurm. Raises ConfigError naming the key."""

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"launcher.{key}: {msg}")

    for key in ("cpus_per_task", "timeout_min", "array_parallelism", "rows_per_task"):
        need(launcher[key] >= 1, key, f"must be at least 1, got {launcher[key]}")
    for key in ("gpus_per_task", "mem_gb", "max_array_size", "max_num_timeout", "signal_delay_s"):
        need(launcher[key] >= 0, key, f"must be >= 0, got {launcher[key]}")


def validate_launcher(launcher: Any) -> None:
    """The checks of whichever launcher is selected."""
    check = {"local": validate_local, "slurm": validate_slurm}.get(launcher.get("name"))
    if check is not None:
        check(launcher)
