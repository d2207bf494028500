"""Can the partition ever run a task as asked? One ``sinfo`` call before submitting (and in a dry run).

Slurm accepts a request no node of the partition can satisfy (more CPUs, memory or GPUs than any node has, a time
limit above the partition's) and leaves it PENDING forever (reason PartitionConfig, PartitionTimeLimit). This module
reads what the partition's nodes offer (``sinfo``: CPUs, memory and GPUs per node, the partition's time limit) and
refuses such a request with a ConfigError naming the key to change. Anything sinfo cannot tell (a value with '+',
an unparsable field) is not checked: a request is refused only when no node can run it, never on a guess.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from datatransfer.errors import ConfigError, SlurmError
from datatransfer.launchers.slurm import queue as slurm_queue

log = logging.getLogger(__name__)
# partition (the default one marked '*') | CPUs per node | memory per node (MB) | generic resources | time limit
SINFO_FORMAT = "%P|%c|%m|%G|%l"


@dataclass
class Nodes:
    """One line of sinfo: nodes of one partition with the same configuration. None: not known."""

    partition: str
    default: bool
    cpus: Optional[int]
    mem_mb: Optional[int]
    gpus: Optional[int]
    time_limit_min: Optional[float]  # math.inf: no limit

    def describe(self) -> str:
        def n(v: Optional[float], unit: str) -> str:
            return f"{'?' if v is None else f'{v:g}'} {unit}"

        mem = None if self.mem_mb is None else round(self.mem_mb / 1024, 1)
        return f"{n(self.cpus, 'CPUs')}, {n(mem, 'GB')}, {n(self.gpus, 'GPUs')}"


def _int(text: str) -> Optional[int]:
    text = text.strip()
    return int(text) if text.isdigit() else None  # '2+' (nodes that differ), 'N/A': unknown


def gpu_count(gres: str) -> Optional[int]:
    """GPUs per node in sinfo's GRES field: 'gpu:4', 'gpu:a100:4(S:0-1)', 'gpu:a100:2,gpu:v100:2', '(null)'."""
    total = 0
    for item in re.sub(r"\([^)]*\)", "", gres).split(","):
        parts = item.strip().split(":")
        if parts[0] != "gpu":
            continue
        count = _int(parts[-1]) if len(parts) > 1 else None
        if count is None:
            return None  # 'gpu' without a count, or a count this parser cannot read
        total += count
    return total


def time_limit_minutes(text: str) -> Optional[float]:
    """sinfo's time limit: 'infinite' / 'UNLIMITED' -> inf; '[days-]hours:minutes:seconds', 'minutes',
    'minutes:seconds', 'days-hours[:minutes[:seconds]]' -> minutes; anything else (e.g. 'n/a') -> None."""
    text = text.strip().lower()
    if text in ("infinite", "unlimited"):
        return math.inf
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if m is None:
        return None
    days, a, b, c = (int(g) if g is not None else None for g in m.groups())
    if days is not None:  # days-hours[:minutes[:seconds]]
        hours, minutes, seconds = a, b or 0, c or 0
    elif c is not None:  # hours:minutes:seconds
        hours, minutes, seconds = a, b, c
    else:  # minutes[:seconds]
        hours, minutes, seconds = 0, a, b or 0
    return (days or 0) * 1440 + hours * 60 + minutes + seconds / 60


def parse_sinfo(text: str) -> List[Nodes]:
    out = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 5:
            continue
        name, cpus, mem, gres, limit = parts
        out.append(Nodes(name.rstrip("*"), name.endswith("*"), _int(cpus), _int(mem), gpu_count(gres),
                         time_limit_minutes(limit)))
    return out


def query(partition: str) -> List[Nodes]:
    """What the nodes of ``partition`` (comma-separated names; "" = every partition) offer: one ``sinfo`` call."""
    cmd = ["sinfo", "--noheader", "--exact", f"--format={SINFO_FORMAT}"]
    if partition:
        cmd.append(f"--partition={partition}")
    r = slurm_queue.run(cmd, timeout=60)
    if r.returncode != 0:
        raise SlurmError(f"sinfo failed: {r.stderr.strip() or r.stdout.strip()}")
    return parse_sinfo(r.stdout)


def check(launcher: Any, prefix: str = "launcher.", quiet: bool = False) -> None:
    """Refuse (ConfigError) a request no node of the partition can ever run; warn and go on when sinfo cannot be
    asked or does not list the partition. ``prefix``: where the settings sit, for the keys the message names;
    ``quiet``: refuse only, log nothing (a check before the one that submits, which logs)."""
    say = (lambda *a: None) if quiet else log.warning
    try:
        nodes = query(str(launcher.partition or ""))
    except SlurmError as e:
        say("the request (CPUs, memory, GPUs, time limit) is not checked against the partition: %s", e)
        return
    wanted = [p.strip() for p in str(launcher.partition or "").split(",") if p.strip()]
    nodes = [n for n in nodes if (n.partition in wanted if wanted else n.default)]
    if not nodes:
        which = f"partition {launcher.partition}" if launcher.partition else "a default partition"
        say("sinfo lists no node of %s: the request is not checked against it (sbatch will say if the "
            "partition does not exist)", which)
        return
    by_partition: Dict[str, List[Nodes]] = {}
    for n in nodes:
        by_partition.setdefault(n.partition, []).append(n)
    problems = [problem(launcher, p, group, prefix) for p, group in by_partition.items()]
    if all(problems):  # several partitions (partition=a,b): refused only if none of them can run a task
        raise ConfigError("; ".join(problems))
    if quiet:
        return
    for p, group in by_partition.items():
        limit = group[0].time_limit_min
        offers = " / ".join(sorted({n.describe() for n in group}))
        shown = "unknown" if limit is None else "none" if limit == math.inf else f"{limit:g} min"
        log.info("partition %s (sinfo): nodes of %s; time limit %s", p, offers, shown)


def problem(launcher: Any, partition: str, nodes: Sequence[Nodes], prefix: str = "launcher.") -> str:
    """Why no node of ``partition`` can ever run a task of ``launcher``, naming the key to change; "" if one can."""
    limit = nodes[0].time_limit_min  # the partition's, on every line
    if limit is not None and launcher.timeout_min > limit:
        return (f"{prefix}timeout_min={launcher.timeout_min}: partition {partition}'s time limit is {limit:g} min; "
                f"set {prefix}timeout_min<={math.floor(limit)}")
    asks = _asks(launcher)
    for key, (wanted, per_node, unit) in asks.items():
        known = [per_node(n) for n in nodes]
        if wanted and None not in known and max(known) < wanted:
            most = max(known)
            if not most:
                return (f"{prefix}{key}={_fmt(launcher[key])}: no node of partition {partition} has {unit}; "
                        f"set {prefix}{key}=0 or choose a {prefix}partition whose nodes have them")
            return (f"{prefix}{key}={_fmt(launcher[key])}: no node of partition {partition} has more than "
                    f"{most:g} {unit}; set {prefix}{key}<={_fmt(_key_value(key, most))}")
    if any(_fits(asks, n) is not False for n in nodes):
        return ""
    keys = ", ".join(f"{prefix}{k}={_fmt(launcher[k])}" for k, (wanted, _, _) in asks.items() if wanted)
    offers = "; ".join(sorted({n.describe() for n in nodes}))
    return (f"{keys}: no node of partition {partition} has all of them at once (its nodes: {offers}); lower one "
            f"of them or choose another {prefix}partition")


def _asks(launcher: Any) -> Dict[str, tuple]:
    """key -> (amount asked, what a node offers of it, unit); memory in MB as sinfo reports it."""
    return {
        "gpus_per_task": (int(launcher.gpus_per_task), lambda n: n.gpus, "GPUs"),
        "cpus_per_task": (int(launcher.cpus_per_task), lambda n: n.cpus, "CPUs"),
        "mem_gb": (_mem_mb(float(launcher.mem_gb)), lambda n: n.mem_mb, "MB of memory"),
    }


def _mem_mb(mem_gb: float) -> int:
    """The MB sbatch asks for (plan.mem_string: whole GB, else MB; Slurm's G is 1024 M)."""
    return int(mem_gb) * 1024 if mem_gb == int(mem_gb) else int(mem_gb * 1024)


def _key_value(key: str, offered: float) -> float:
    return math.floor(offered / 1024 * 100) / 100 if key == "mem_gb" else offered


def _fits(asks: Dict[str, tuple], node: Nodes) -> Optional[bool]:
    """Whether one node can hold a whole task; None when sinfo did not tell."""
    values = [(wanted, per_node(node)) for wanted, per_node, _ in asks.values() if wanted]
    if any(v is None for _, v in values):
        return None
    return all(v >= wanted for wanted, v in values)


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
