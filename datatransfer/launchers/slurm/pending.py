"""Pending reasons that Slurm never resolves by itself, and what to do about the tasks that wait on them.

``squeue``'s reason (%r) for a pending task is usually transient (Priority, Resources, JobArrayTaskLimit, a held
job). Some say the request can never run as it is: more than the partition's nodes or the QOS / association allow,
an invalid account or QOS, a constraint no node has. Those tasks sit in the queue until cancelled; ``launch.status``
lists them with the key to change (``never_start_lines``).
"""

from __future__ import annotations

from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

_CPUS, _MEM, _GPUS, _TIME = ("launcher.cpus_per_task", "launcher.mem_gb", "launcher.gpus_per_task",
                             "launcher.timeout_min")
# reason -> (keys to change, what it means)
NEVER: Dict[str, Tuple[str, str]] = {
    "PartitionConfig": (f"{_CPUS}, {_MEM}, {_GPUS} or launcher.partition",
                        "no node of the partition has the CPUs, memory or GPUs a task asks for"),
    "PartitionTimeLimit": (_TIME, "the time limit asked is above the partition's"),
    "PartitionNodeLimit": ("launcher.partition", "the partition's node limits exclude a one-node task"),
    "BadConstraints": ("launcher.constraint", "no node has the features asked for"),
    "InvalidQOS": ("launcher.qos", "the QOS is not valid for this account"),
    "QOSNotAllowed": ("launcher.qos", "the QOS is not allowed in this partition or account"),
    "InvalidAccount": ("launcher.account", "the account is not valid"),
    "AccountNotAllowed": ("launcher.account", "the account is not allowed in this partition"),
    "DependencyNeverSatisfied": ("launcher.additional_parameters", "a dependency that can no longer be met"),
    "ReqNodeNotAvail": ("launcher.partition, launcher.constraint or launcher.additional_parameters.exclude",
                        "the only nodes that could run a task are down, drained or not usable by it"),
}


def _per_job_limits() -> Dict[str, Tuple[str, str]]:
    """The QOS's and the association's per-job / per-node limits."""
    out = {}
    for who, key in (("QOS", "launcher.qos"), ("Assoc", "launcher.account")):
        limit = f"above the {'QOS' if who == 'QOS' else 'association'}'s limit"
        out.update({
            f"{who}MaxWallDurationPerJobLimit": (f"{_TIME} (or {key})", f"the time limit asked is {limit}"),
            f"{who}MaxCpuMinutesPerJobLimit": (f"{_TIME} or {_CPUS} (or {key})", f"CPUs x time limit is {limit}"),
            f"{who}MaxCpuPerJobLimit": (f"{_CPUS} (or {key})", f"the CPUs asked are {limit}"),
            f"{who}MaxNodePerJobLimit": (key, f"one node is {limit}"),
            f"{who}MaxGRESPerJob": (f"{_GPUS} (or {key})", f"the GPUs asked are {limit}"),
            f"{who}MaxGRESPerNode": (f"{_GPUS} (or {key})", f"the GPUs asked are {limit} per node"),
            f"{who}MaxCpuPerNode": (f"{_CPUS} (or {key})", f"the CPUs asked are {limit} per node"),
        })
    return out


NEVER.update(_per_job_limits())
NEVER.update({
    "QOSMaxMemoryPerJob": (f"{_MEM} (or launcher.qos)", "the memory asked is above the QOS's per-job limit"),
    "QOSMaxMemoryPerNode": (f"{_MEM} (or launcher.qos)", "the memory asked is above the QOS's per-node limit"),
    "AssocMaxMemPerJob": (f"{_MEM} (or launcher.account)", "the memory asked is above the association's limit"),
    "AssocMaxMemPerNode": (f"{_MEM} (or launcher.account)", "the memory asked is above the association's limit"),
    "QOSMinCpuNotSatisfied": (_CPUS, "fewer CPUs than the QOS's minimum"),
    "QOSMinMemory": (_MEM, "less memory than the QOS's minimum"),
    "QOSMinGRES": (_GPUS, "fewer GPUs than the QOS's minimum"),
})


def never_starts(reason: str) -> Optional[Tuple[str, str]]:
    """(keys to change, meaning) when ``reason`` (squeue's %r) never resolves by itself, else None.
    'ReqNodeNotAvail, Reserved for maintenance' does (the reservation ends); 'ReqNodeNotAvail, UnavailableNodes:...'
    does not."""
    name = reason.split(",")[0].strip()
    if name == "ReqNodeNotAvail" and "reserved" in reason.lower():
        return None
    return NEVER.get(name)


def never_start_lines(tasks: Sequence, store_path: str) -> List[str]:
    """Lines for ``launch.status``: per array, its pending tasks whose reason never resolves, and what to do.
    ``tasks``: status.Task objects (element id, live, running, state, reason)."""
    groups: Counter = Counter()
    for t in tasks:
        if t.live and not t.running and t.reason and never_starts(t.reason):
            groups[(t.element.split("_")[0], t.state, t.reason)] += 1
    if not groups:
        return []
    lines = ["tasks that will never start (their pending reason is not one Slurm resolves by itself):"]
    for (job, state, reason), n in groups.items():
        change, meaning = never_starts(reason)
        lines.append(f"  {job}: {n} task{'s' if n != 1 else ''} {state} ({reason}): {meaning}; change {change}")
    jobs = " ".join(dict.fromkeys(job for job, _, _ in groups))
    lines.append(f"  they wait until cancelled: scancel --state=PENDING {jobs}, then rerun their rows with the "
                 f"request fixed: python -m launch.resume store.path={store_path} launcher.<key>=<value> "
                 f"(resume keeps the other launcher settings)")
    return lines
