"""Asking Slurm: its array-size limit, and the states of our array tasks (one ``squeue`` / one ``sacct`` per poll).

Every query covers all of a store's arrays at once: one call per poll, never one per element (per-element sacct
storms overload controllers). ``squeue`` is the controller's live truth (pending, running, requeued, completing);
``sacct`` adds the final state of finished tasks and may be unavailable (no accounting storage) or lag squeue by a
few seconds; a cancelled *pending* element leaves no sacct record at all.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Dict, Iterable, List, NamedTuple, Optional

from datatransfer.errors import SlurmError

# Final job states: a task in one of these will write nothing more. Any other state squeue or sacct reports,
# including ones this list has never heard of (Slurm adds states between versions), counts as live: a row is never
# given to a second writer because its first one was in an unfamiliar state.
FINISHED_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE",
    "OUT_OF_MEMORY", "REVOKED",
})
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "RESIZING"})



class State(NamedTuple):
    state: str
    name: str  # the job name
    reason: str = ""  # squeue's pending reason (%r), "" when there is none ("None") or it was not asked


def run(cmd: List[str], timeout: float = 120) -> subprocess.CompletedProcess:
    if shutil.which(cmd[0]) is None:
        raise SlurmError(f"'{cmd[0]}' not found: run this on a Slurm login node (or use launcher=local)")
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise SlurmError(f"'{' '.join(cmd[:2])} ...' did not answer within {timeout:.0f} s") from e


def max_array_size() -> int:
    """The cluster's MaxArraySize (``scontrol show config``): array indices must be below it."""
    r = run(["scontrol", "show", "config"])
    if r.returncode != 0:
        raise SlurmError(f"scontrol show config failed: {r.stderr.strip() or r.stdout.strip()}")
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", r.stdout, re.MULTILINE)
    if m is None:
        raise SlurmError("scontrol show config printed no MaxArraySize; set launcher.max_array_size")
    n = int(m.group(1))
    if n < 1:
        raise SlurmError("job arrays are disabled on this cluster (MaxArraySize=0)")
    return n


def expand_ids(job_id: str) -> List[str]:
    """'12_[0-3,7%2]' -> ['12_0', '12_1', '12_2', '12_3', '12_7']; '12_4' -> ['12_4']; '12' -> ['12']."""
    m = re.fullmatch(r"(\d+)_\[([\d,\-]+)(?:%\d+)?\]", job_id)
    if m is None:
        return [job_id]
    main, out = m.group(1), []
    for part in m.group(2).split(","):
        lo, _, hi = part.partition("-")
        out.extend(f"{main}_{i}" for i in range(int(lo), int(hi or lo) + 1))
    return out


def is_live(state: str) -> bool:
    return state not in FINISHED_STATES


def _parse(text: str, reason: bool = False) -> Dict[str, State]:
    """Lines 'id|state|name' ('id|state|reason|name' with ``reason``); the job name is the last field and may itself
    contain '|'."""
    fields = 4 if reason else 3
    out: Dict[str, State] = {}
    for line in text.splitlines():
        parts = line.strip().split("|", fields - 1)
        if len(parts) < fields or "." in parts[0]:
            continue  # job steps (12_3.batch) and blank lines
        state = parts[1].split()[0] if parts[1].strip() else "UNKNOWN"  # "CANCELLED by 0"
        why = parts[2].strip() if reason else ""
        for jid in expand_ids(parts[0]):
            out[jid] = State(state.rstrip("+"), parts[-1], "" if why == "None" else why)
    return out


def squeue(job_ids: Iterable[str]) -> Dict[str, State]:
    """Live elements of the given jobs/arrays (one ``squeue`` call): element id ('12_3', or '12') -> state, job name
    and pending reason."""
    ids = sorted({str(j) for j in job_ids})
    if not ids:
        return {}
    r = run(["squeue", "--noheader", "--array", "--format=%i|%T|%r|%j", f"--jobs={','.join(ids)}"])
    if r.returncode != 0:
        if "Invalid job id" in r.stderr:  # none of them is known any more
            return {}
        raise SlurmError(f"squeue failed: {r.stderr.strip()}")
    return _parse(r.stdout, reason=True)


def sacct(job_ids: Iterable[str]) -> Optional[Dict[str, State]]:
    """Latest accounting state of every element of the given jobs (one ``sacct`` call); None when accounting is
    unavailable. Elements absent from the answer were never started or were cancelled while pending."""
    ids = sorted({str(j) for j in job_ids})
    if not ids:
        return {}
    if shutil.which("sacct") is None:
        return None
    try:
        r = run(["sacct", "--noheader", "--parsable2", "--allocations", "--format=JobID,State,JobName",
                  f"--jobs={','.join(ids)}"], timeout=60)
    except SlurmError:
        return None
    if r.returncode != 0:
        return None  # e.g. "Slurm accounting storage is disabled"
    return _parse(r.stdout)
