"""Submission plan: rows -> tasks (``rows_per_task`` rows each) -> job arrays of at most ``MaxArraySize`` tasks.

Pure functions, no Slurm needed: the submitter (``slurm.py``) feeds them the rows to run and the cluster's limit,
the dry run prints them, and the unit tests check them. ``MaxArraySize`` caps the array *index* (a task index must
be below it), so every array is indexed from 0 and holds at most ``MaxArraySize`` tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence


@dataclass
class ArrayPlan:
    """One job array: task i (Slurm's array index i) runs rows ``tasks[i]``."""

    tasks: List[List[int]]

    @property
    def num_rows(self) -> int:
        return sum(len(t) for t in self.tasks)


@dataclass
class Plan:
    arrays: List[ArrayPlan] = field(default_factory=list)
    rows_per_task: int = 1
    max_array_size: int = 0

    @property
    def num_tasks(self) -> int:
        return sum(len(a.tasks) for a in self.arrays)

    @property
    def num_rows(self) -> int:
        return sum(a.num_rows for a in self.arrays)


def pack(rows: Sequence[int], rows_per_task: int) -> List[List[int]]:
    """Consecutive groups of ``rows_per_task`` rows in increasing order (the last group may be shorter)."""
    if rows_per_task < 1:
        raise ValueError(f"rows_per_task must be >= 1, got {rows_per_task}")
    rows = sorted(int(r) for r in rows)
    return [rows[i:i + rows_per_task] for i in range(0, len(rows), rows_per_task)]


def split(tasks: Sequence[List[int]], max_array_size: int) -> List[ArrayPlan]:
    """Arrays of at most ``max_array_size`` tasks, each indexed from 0."""
    if max_array_size < 1:
        raise ValueError(f"max_array_size must be >= 1, got {max_array_size}")
    tasks = list(tasks)
    return [ArrayPlan(tasks[i:i + max_array_size]) for i in range(0, len(tasks), max_array_size)]


def make_plan(rows: Sequence[int], rows_per_task: int, max_array_size: int) -> Plan:
    return Plan(split(pack(rows, rows_per_task), max_array_size), rows_per_task, max_array_size)


def executor_parameters(launcher: Any, job_name: str) -> Dict[str, Any]:
    """``SlurmExecutor.update_parameters`` arguments (submitit's Slurm names) from ``launcher=slurm``.

    Empty strings and zeros leave a setting to the cluster's defaults."""
    p: Dict[str, Any] = {
        "job_name": job_name,
        "time": int(launcher.timeout_min),
        "cpus_per_task": int(launcher.cpus_per_task),
        "array_parallelism": int(launcher.array_parallelism),
        "signal_delay_s": int(launcher.signal_delay_s),
    }
    for key in ("partition", "account", "qos", "constraint"):
        if launcher[key]:
            p[key] = str(launcher[key])
    if launcher.gpus_per_task:
        p["gpus_per_task"] = int(launcher.gpus_per_task)
    if launcher.mem_gb:
        p["mem"] = mem_string(float(launcher.mem_gb))
    if launcher.setup:
        p["setup"] = [str(line) for line in launcher.setup]
    if launcher.additional_parameters:
        p["additional_parameters"] = {str(k): v for k, v in launcher.additional_parameters.items()}
    return p


def mem_string(mem_gb: float) -> str:
    """sbatch --mem value, as submitit writes it: whole GB, else MB."""
    return f"{int(mem_gb)}GB" if mem_gb == int(mem_gb) else f"{int(mem_gb * 1024)}MB"


def _ranges(rows: Sequence[int]) -> str:
    """'0-9,12,15-17' (for short human-readable row lists)."""
    rows = sorted(int(r) for r in rows)
    if not rows:
        return "-"
    out, start, prev = [], rows[0], rows[0]
    for r in rows[1:] + [None]:
        if r is not None and r == prev + 1:
            prev = r
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if r is not None:
            start = prev = r
    return ",".join(out)


def describe_rows(rows: Sequence[int], limit: int = 60) -> str:
    text = _ranges(rows)
    return text if len(text) <= limit else text[:limit].rsplit(",", 1)[0] + ",..."


def plural(count: int, what: str) -> str:
    return f"{count} {what}" + ("" if count == 1 else "s")


def format_plan(plan: Plan, params: Dict[str, Any], store: str, skipped: Dict[str, int],
                limit_source: str = "MaxArraySize") -> str:
    """The dry-run / pre-submit summary: arrays, tasks, rows, resources."""
    res = [plural(params["cpus_per_task"], "CPU")]
    if "gpus_per_task" in params:
        res.append(plural(params["gpus_per_task"], "GPU"))
    res.append(f"mem {params.get('mem', 'cluster default')}")
    res.append(f"time limit {params['time']} min")
    for key in ("partition", "account", "qos", "constraint"):
        if key in params:
            res.append(f"{key} {params[key]}")
    done = ", ".join(f"{n} {what}" for what, n in skipped.items() if n)
    lines = [
        f"store {store}: {plural(plan.num_rows, 'row')} to run" + (f" ({done})" if done else ""),
        f"plan: {plural(plan.num_rows, 'row')} -> {plural(plan.num_tasks, 'task')} of "
        f"<= {plural(plan.rows_per_task, 'row')} -> {plural(len(plan.arrays), 'array')} of "
        f"<= {plan.max_array_size} tasks ({limit_source})",
        "per task: " + ", ".join(res) + f"; at most {params['array_parallelism']} running per array",
    ]
    for i, a in enumerate(plan.arrays):
        lines.append(f"  array {i}: tasks 0-{len(a.tasks) - 1}, {plural(a.num_rows, 'row')} "
                     f"({describe_rows([r for t in a.tasks for r in t])})")
    return "\n".join(lines)
