"""Row claims: a row is computed by at most one live writer, whichever launcher started it (docs/store-format.md,
"Row claims").

Before computing row i a worker creates ``<store>/claims/row-<i>.json`` (``layout.claim``) with O_CREAT | O_EXCL:
of several writers exactly one creates it. It records who holds it (:class:`Holder`). While the row computes, a
daemon thread touches it every ``launch.claim_heartbeat_s`` (its mtime is the heartbeat); once the row is committed,
or has failed, it is unlinked. An existing claim is respected unless its holder is provably gone
(:func:`gone_because`); one ``squeue`` call judges the Slurm claims of a batch.

Taking over is race-free: the taker hard-links the claim to ``row-<i>.json.gone-<inode>``, a name fixed by the claim
judged, so that of several takers one link succeeds; the winner checks that the link is the claim it judged (inode
and nonce), unlinks the claim, and then creates its own with O_EXCL like any claimer.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from datatransfer.config.validate import claim_settings
from datatransfer.errors import SlurmError
from datatransfer.store import layout

log = logging.getLogger(__name__)
_ATTEMPTS = 5  # create / judge / take over rounds before a contested row is left to the others
_SLURM_ENV = {"job_id": "SLURM_JOB_ID", "array_job_id": "SLURM_ARRAY_JOB_ID", "array_task_id": "SLURM_ARRAY_TASK_ID",
              "job_name": "SLURM_JOB_NAME"}


def _read(path: str) -> Optional[str]:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _proc_stat(pid: int) -> Optional[Tuple[str, int]]:
    """(state, start time in clock ticks since boot) of ``pid`` from /proc/<pid>/stat; None if there is none."""
    text = _read(f"/proc/{int(pid)}/stat")
    if text is None:
        return None
    rest = text.rsplit(")", 1)[1].split()  # the command name, in parentheses, may hold spaces
    return rest[0], int(rest[19])


def process_gone(pid: int, start: Optional[int]) -> Optional[str]:
    """Why process ``pid`` (started at ``start``, /proc ticks) no longer runs on this host, or None if it may
    (always None without /proc: then the heartbeat decides)."""
    stat = _proc_stat(pid)
    if stat is None:
        return f"process {pid} no longer exists" if os.path.isdir("/proc/self") else None
    if stat[0] in ("Z", "X"):
        return f"process {pid} has exited"
    if start is not None and stat[1] != start:
        return f"pid {pid} is now another process"
    return None


@dataclass(frozen=True)
class Holder:
    """Who holds a claim, as its file records it."""

    host: str
    pid: int
    pid_start: Optional[int] = None  # /proc/<pid>/stat start time: a reused pid is another process
    boot_id: Optional[str] = None  # the host's boot: pids of an earlier boot are gone
    job_id: Optional[str] = None  # SLURM_JOB_ID
    array_job_id: Optional[str] = None  # SLURM_ARRAY_JOB_ID
    array_task_id: Optional[str] = None  # SLURM_ARRAY_TASK_ID
    restarts: int = 0  # SLURM_RESTART_COUNT: a requeued task runs again with a higher count
    job_name: Optional[str] = None  # SLURM_JOB_NAME: a job id the controller reused names another job
    started: float = 0.0  # when the claim was made (Unix time)
    nonce: str = ""  # unique to the claim

    @classmethod
    def of_this_process(cls) -> "Holder":
        env = {k: os.environ.get(v) or None for k, v in _SLURM_ENV.items()}
        restarts, stat = os.environ.get("SLURM_RESTART_COUNT", "0"), _proc_stat(os.getpid())
        return cls(host=socket.gethostname(), pid=os.getpid(), pid_start=stat[1] if stat else None,
                   boot_id=_read("/proc/sys/kernel/random/boot_id"),
                   restarts=int(restarts) if restarts.isdigit() else 0, **env)

    @classmethod
    def parse(cls, text: bytes) -> Optional["Holder"]:
        """The holder a claim file records; None for an empty (being written) or damaged file."""
        try:
            d = json.loads(text)
            names = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in d.items() if k in names})
        except (ValueError, TypeError, AttributeError):
            return None

    @property
    def element(self) -> Optional[str]:
        """The Slurm element it runs in ('12_3', or '12'); None outside Slurm."""
        if self.array_job_id and self.array_task_id is not None:
            return f"{self.array_job_id}_{self.array_task_id}"
        return self.job_id

    def same_process(self, other: "Holder") -> bool:
        return (self.host, self.pid, self.pid_start) == (other.host, other.pid, other.pid_start)

    def describe(self) -> str:
        if self.array_job_id:
            return f"Slurm job {self.element} (pid {self.pid} on {self.host})"
        return f"process {self.pid} on {self.host}" + (f" (Slurm job {self.job_id})" if self.job_id else "")


@dataclass(frozen=True)
class Found:
    """A claim file as read: its holder (None: empty or damaged), heartbeat (mtime) and inode."""

    path: str
    holder: Optional[Holder]
    mtime: float
    ino: int

    def describe(self) -> str:
        who = self.holder.describe() if self.holder else "a writer whose claim file is empty or unreadable"
        return f"{who}, heartbeat {max(0.0, time.time() - self.mtime):.0f} s ago"

    def same_claim(self, other: "Found") -> bool:
        """The same file and claim (for a claim without a holder, being written: the same mtime)."""
        def key(f: Found) -> object:
            return f.holder.nonce if f.holder is not None else f.mtime
        return self.ino == other.ino and key(self) == key(other)


def read(path: str | os.PathLike) -> Optional[Found]:
    """The claim at ``path``, or None if there is none."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            text = f.read()
    except FileNotFoundError:
        return None
    return Found(str(path), Holder.parse(text), st.st_mtime, st.st_ino)


def gone_because(found: Found, me: Holder, stale_s: float, queue: Optional[Dict[str, tuple]]) -> Optional[str]:
    """Why the holder of ``found`` is provably gone, or None while it may be computing. ``me``: this process;
    ``queue``: squeue's answer for the claims' jobs (element -> (state, job name, ...)); None: no answer."""
    from datatransfer.launchers.slurm.queue import is_live  # a leaf module (imports only errors): no circle

    age = time.time() - found.mtime
    if age > stale_s:
        return f"its heartbeat is {age:.0f} s old (launch.claim_stale_s={stale_s:g})"
    h = found.holder
    if h is None:
        return None  # being written (or damaged): its heartbeat decides
    if h.host == me.host:
        if h.boot_id and me.boot_id and h.boot_id != me.boot_id:
            return "this host has rebooted since"
        return None if h.same_process(me) else process_gone(h.pid, h.pid_start)
    if h.element is not None and h.element == me.element and h.restarts < me.restarts:
        return f"it was an earlier run of this Slurm task {me.element}, requeued since"
    if h.element is None or queue is None:
        return None
    state = queue.get(h.element)
    if state is None:
        return f"Slurm job {h.element} has left the queue"
    if h.job_name and state[1] != h.job_name:
        return f"Slurm job id {h.element} now names another job ({state[1]})"
    return None if is_live(state[0]) else f"Slurm job {h.element} is {state[0]}"


def ranges(values: Iterable[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2,5,7-8'."""
    out: List[List[int]] = []
    for v in sorted(set(int(x) for x in values)):
        if out and v == out[-1][1] + 1:
            out[-1][1] = v
        else:
            out.append([v, v])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in out)


def describe_holders(held: Dict[int, Optional[Found]], meanwhile: bool = False) -> str:
    """'3 rows are being computed by Slurm job 1234_[0-2]; not run here (rows 0-2)' (``meanwhile``: 'were claimed
    by', for rows claimed after a launcher started)."""
    arrays: Dict[str, List[int]] = {}
    others = set()
    for found in held.values():
        h = found.holder if found is not None else None
        if h is not None and h.array_job_id and str(h.array_task_id).isdigit():
            arrays.setdefault(h.array_job_id, []).append(int(h.array_task_id))
        else:
            others.add(h.describe() if h else "a writer whose claim file is empty or unreadable")
    names = [f"Slurm job {job}_{ranges(t)}" if len(set(t)) == 1 else f"Slurm job {job}_[{ranges(t)}]"
             for job, t in arrays.items()]
    n, s = len(held), "" if len(held) == 1 else "s"
    verb = (f"{'was' if n == 1 else 'were'} claimed by" if meanwhile
            else f"{'is' if n == 1 else 'are'} being computed by")
    return f"{n} row{s} {verb} {' and '.join(names + sorted(others))}; not run here (row{s} {ranges(held)})"


@dataclass
class Claim:  # a claim this process holds
    row: int
    path: Path
    holder: Holder
    lost: bool = False  # taken over by another writer while held (it was judged gone)


class Claims:
    """This process's claims on the rows of a store (``scope``: targets added later), with one heartbeat thread."""

    def __init__(self, store_path: str | os.PathLike, scope: Optional[Sequence[str]], heartbeat_s: float,
                 stale_s: float):
        self.store_path, self.scope = Path(store_path), list(scope) if scope else None
        self.folder = layout.claims(store_path, self.scope)
        self.heartbeat_s, self.stale_s = float(heartbeat_s), float(stale_s)
        self.me = Holder.of_this_process()
        self._held: Dict[Path, Claim] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @classmethod
    def of(cls, cfg, store_path: str | os.PathLike, scope: Optional[Sequence[str]] = None) -> "Claims":
        return cls(store_path, scope, *claim_settings(cfg.launch))

    # ---- judging -------------------------------------------------------------------------------------------
    def verdicts(self, found: Sequence[Found]) -> List[Optional[str]]:
        """For each claim, why its holder is gone (None: it may be computing); one squeue call for them all."""
        jobs = {f.holder.array_job_id or f.holder.job_id for f in found if f.holder is not None and
                f.holder.host != self.me.host and f.holder.element and time.time() - f.mtime <= self.stale_s}
        queue = {}
        if jobs:
            from datatransfer.launchers.slurm import queue as slurm_queue  # a leaf module: no import circle

            try:
                queue = slurm_queue.squeue(jobs)
            except SlurmError as e:  # no squeue here, or it failed: heartbeats decide
                log.debug("claims of Slurm jobs %s judged by their heartbeats: %s", sorted(jobs), e)
                queue = None
        return [gone_because(f, self.me, self.stale_s, queue) for f in found]

    def held(self, rows: Iterable[int]) -> Dict[int, Found]:
        """Of ``rows``, those held by live writers (one folder listing, one squeue call) -> their claim."""
        wanted = {int(r) for r in rows}
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return {}
        found = {r: read(self.folder / n) for n in names if (r := layout.claim_row(n)) in wanted}
        found = {r: f for r, f in found.items() if f is not None}  # released meanwhile
        rows_found = sorted(found)
        verdicts = self.verdicts([found[r] for r in rows_found])
        return {r: found[r] for r, why in zip(rows_found, verdicts) if why is None}

    def clear_finished(self, completed) -> int:
        """Remove the claims left on completed rows (``completed``: bool per row) by writers that are gone: a writer
        killed between its row's commit and the release. Returns how many were removed."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return 0
        found = {r: read(self.folder / n) for n in names
                 if (r := layout.claim_row(n)) is not None and r < len(completed) and completed[r]}
        found = {r: f for r, f in found.items() if f is not None}
        rows = sorted(found)
        gone = [r for r, why in zip(rows, self.verdicts([found[r] for r in rows])) if why is not None]
        removed = sum(bool(self._take_over(found[r])) for r in gone)
        if removed:
            log.info("removed %d claims left on completed rows by writers that are gone", removed)
        return removed

    # ---- claiming ------------------------------------------------------------------------------------------
    def acquire(self, row: int) -> Tuple[Optional[Claim], Optional[Found]]:
        """(this process's claim on ``row``, None), or (None, the claim of the live writer that holds it)."""
        path = layout.claim(self.store_path, row, self.scope)
        found = None
        for attempt in range(_ATTEMPTS):
            claim = self._create(path, int(row))
            if claim is not None:
                return claim, None
            found = read(path)
            if found is None:
                continue  # released meanwhile: try again
            why = self.verdicts([found])[0]
            if why is None:
                return None, found
            if self._take_over(found):
                log.info("row %d: taking over the claim of %s: %s", row, found.describe(), why)
            else:
                time.sleep(0.01 * (attempt + 1))  # another taker is at it
        return None, read(path) or found

    def _create(self, path: Path, row: int) -> Optional[Claim]:
        holder = replace(self.me, started=time.time(), nonce=uuid.uuid4().hex)
        data = json.dumps({**asdict(holder), "row": row, "scope": self.scope}).encode()
        try:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileNotFoundError:  # the first claim of this folder
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        try:
            os.write(fd, data)
        except BaseException:
            os.close(fd)
            _unlink(path)
            raise
        os.close(fd)
        claim = Claim(row, path, holder)
        with self._lock:
            self._held[path] = claim
            if self._thread is None:
                self._thread = threading.Thread(target=self._heartbeats, name="claim-heartbeat", daemon=True)
                self._thread.start()
        return claim

    def _take_over(self, found: Found) -> bool:
        """Remove the claim ``found`` (judged gone) unless another taker is at it; True: try to create anew."""
        path = Path(found.path)
        gone = path.with_name(f"{path.name}.gone-{found.ino}")
        try:
            os.link(path, gone)  # of several takers of this claim, one link succeeds
        except FileExistsError:
            self._clear_stuck(gone)
            return False
        except FileNotFoundError:
            return True  # removed meanwhile
        except OSError:  # a filesystem without hard links: a plain unlink (two takers may both win: docs)
            _unlink(path)
            return True
        try:
            linked, now = read(gone), read(path)
            if linked is None or not linked.same_claim(found):
                return False  # the claim judged was replaced before the link: judge again
            if now is not None and now.same_claim(found):
                os.unlink(path)
            return True
        finally:
            _unlink(gone)

    def _clear_stuck(self, gone: Path) -> None:
        """A takeover link older than ``stale_s`` (its taker died half-way) is removed, so the next one can go on."""
        try:
            if time.time() - os.stat(gone).st_ctime > self.stale_s:
                log.warning("removing %s, left by a takeover that did not finish", gone)
                _unlink(gone)
        except FileNotFoundError:
            pass

    def _ours(self, claim: Claim) -> bool:
        found = read(claim.path)
        return bool(found and found.holder and found.holder.nonce == claim.holder.nonce)

    def release(self, claim: Claim) -> None:
        """Unlink ``claim`` (the row is committed, or failed), unless another writer has taken it over."""
        with self._lock:
            self._held.pop(claim.path, None)
        if self._ours(claim):
            _unlink(claim.path)
        elif not claim.lost:
            log.warning("row %d: its claim %s was taken over by another writer while this process computed it",
                        claim.row, claim.path)

    def _heartbeats(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with self._lock:
                held = list(self._held.values())
            for claim in held:
                try:
                    if self._ours(claim):
                        os.utime(claim.path)
                    elif not claim.lost:
                        claim.lost = True
                        log.warning("row %d: its claim %s was taken over by another writer (this process was judged "
                                    "gone); the row is computed twice, to the same values", claim.row, claim.path)
                except OSError as e:  # e.g. a shared filesystem hiccup: try again at the next beat
                    log.warning("row %d: could not touch its claim %s: %s", claim.row, claim.path, e)

    def close(self) -> None:
        """Stop the heartbeat thread (claims still held stay on disk)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
