"""Row claims (datatransfer/store/claims.py): a row is computed by at most one live writer. Real processes, real
files; Slurm's squeue is a small script on PATH (it prints what the test says is in the queue)."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_app

from datatransfer.config import compose
from datatransfer.config.validate import claim_settings
from datatransfer.errors import ConfigError
from datatransfer.store import layout
from datatransfer.store.claims import Claims, Holder, describe_holders, read

# ---- helpers -----------------------------------------------------------------------------------------------------
ELSEWHERE = "node-elsewhere"  # a host that is not this one


def _proc_start(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def _write_claim(store: Path, row: int, age_s: float = 0.0, scope=None, **fields) -> Path:
    """A claim file as another writer would leave it (``fields`` of Holder), its heartbeat ``age_s`` old."""
    path = layout.claim(store, row, scope)
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = Holder(**{"host": ELSEWHERE, "pid": 1, "nonce": os.urandom(8).hex(), "started": time.time(), **fields})
    path.write_text(json.dumps(asdict(holder)))
    t = time.time() - age_s
    os.utime(path, (t, t))
    return path


def _claims(store: Path, stale_s: float = 900.0, heartbeat_s: float = 60.0) -> Claims:
    return Claims(store, None, heartbeat_s, stale_s)


@pytest.fixture
def sleeper():
    """A live process on this host (not this one): `sleep 60`."""
    p = subprocess.Popen(["sleep", "60"])
    yield p
    p.kill()
    p.wait()


@pytest.fixture
def fake_squeue(tmp_path, monkeypatch):
    """``squeue`` on PATH: prints the elements of $FAKE/queue.txt ('<id> <state> <name>' lines) in the --format it is
    asked for, and logs each call to $FAKE/calls."""
    fake = tmp_path / "fake-slurm"
    (fake / "bin").mkdir(parents=True)
    script = fake / "bin" / "squeue"
    script.write_text(f"""#!{sys.executable}
import os, sys
fake = os.environ["FAKE"]
open(os.path.join(fake, "calls"), "a").write(" ".join(sys.argv[1:]) + "\\n")
fmt = next(a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--format="))
path = os.path.join(fake, "queue.txt")
for line in (open(path).read().splitlines() if os.path.exists(path) else []):
    i, state, name = line.split()
    fields = {{"%i": i, "%T": state, "%r": "None", "%j": name}}
    print("|".join(fields[f] for f in fmt.split("|")))
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE", str(fake))
    return fake


def _squeue_calls(fake: Path) -> int:
    calls = fake / "calls"
    return len(calls.read_text().splitlines()) if calls.exists() else 0


# ---- (a) claim, release, heartbeat, and who may take a claim over ------------------------------------------------
def test_a_claim_records_its_holder_beats_and_is_released(tmp_path):
    claims = _claims(tmp_path, stale_s=5, heartbeat_s=0.1)
    claim, held = claims.acquire(7)
    assert held is None and claim.path == tmp_path / "claims" / "row-7.json"
    record = json.loads(claim.path.read_text())
    assert record["pid"] == os.getpid() and record["pid_start"] == _proc_start(os.getpid())
    assert record["row"] == 7 and record["started"] <= time.time() and record["nonce"]
    for key in ("host", "boot_id", "job_id", "array_job_id", "array_task_id", "restarts", "job_name"):
        assert key in record
    first = claim.path.stat().st_mtime
    time.sleep(0.5)
    assert claim.path.stat().st_mtime > first  # the heartbeat thread touches it
    again, held = _claims(tmp_path).acquire(7)  # another handle in this very process: still held
    assert again is None and held.holder.pid == os.getpid()
    claims.release(claim)
    assert not claim.path.exists()
    claims.close()


def test_a_claim_of_a_dead_process_on_this_host_is_taken_over(tmp_path, caplog):
    code = ("import os, sys; from datatransfer.store.claims import Claims; "
            "c, _ = Claims(sys.argv[1], None, 60, 900).acquire(3); print(os.getpid()); os._exit(0)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    dead = int(r.stdout.strip())
    assert read(layout.claim(tmp_path, 3)).holder.pid == dead  # left behind: its process exited mid-row
    caplog.set_level(logging.INFO)
    claim, held = _claims(tmp_path).acquire(3)
    assert claim is not None and held is None
    assert f"process {dead} no longer exists" in caplog.text
    assert read(claim.path).holder.nonce == claim.holder.nonce


def test_a_claim_of_a_live_process_is_respected_until_it_ends(tmp_path, sleeper):
    _write_claim(tmp_path, 2, host=Holder.of_this_process().host, pid=sleeper.pid,
                 pid_start=_proc_start(sleeper.pid), boot_id=Holder.of_this_process().boot_id)
    claims = _claims(tmp_path)
    claim, held = claims.acquire(2)
    assert claim is None and held.holder.pid == sleeper.pid
    assert list(claims.held([0, 1, 2, 3])) == [2]
    sleeper.kill()
    sleeper.wait()
    claim, held = claims.acquire(2)
    assert claim is not None and held is None


def test_claims_left_on_completed_rows_by_gone_writers_are_cleared(tmp_path, sleeper):
    """A writer killed between its row's commit and the release leaves a claim nobody would take over."""
    me = Holder.of_this_process()
    live = dict(host=me.host, pid=sleeper.pid, pid_start=_proc_start(sleeper.pid), boot_id=me.boot_id)
    _write_claim(tmp_path, 1, host=me.host, pid=2 ** 22 + 7, boot_id=me.boot_id)  # no such process
    _write_claim(tmp_path, 2, **live)  # still running (it has just committed and is about to release)
    _write_claim(tmp_path, 3, host=me.host, pid=2 ** 22 + 7, boot_id=me.boot_id)  # row 3 not completed: left alone
    completed = np.array([False, True, True, False])
    assert _claims(tmp_path).clear_finished(completed) == 1
    assert sorted(p.name for p in (tmp_path / "claims").iterdir()) == ["row-2.json", "row-3.json"]


@pytest.mark.parametrize("change, why", [
    ({"pid_start": 1}, "is now another process"),  # the pid was reused by another process
    ({"boot_id": "an-earlier-boot"}, "rebooted"),
])
def test_a_reused_pid_or_an_earlier_boot_is_taken_over(tmp_path, sleeper, caplog, change, why):
    me = Holder.of_this_process()
    _write_claim(tmp_path, 0, host=me.host, pid=sleeper.pid, **{"pid_start": _proc_start(sleeper.pid),
                                                                 "boot_id": me.boot_id, **change})
    caplog.set_level(logging.INFO)
    claim, _ = _claims(tmp_path).acquire(0)
    assert claim is not None and why in caplog.text


def test_a_stale_heartbeat_is_taken_over_even_from_a_live_process(tmp_path, sleeper, caplog):
    me = Holder.of_this_process()
    _write_claim(tmp_path, 1, age_s=100, host=me.host, pid=sleeper.pid, pid_start=_proc_start(sleeper.pid),
                 boot_id=me.boot_id)
    assert _claims(tmp_path, stale_s=1000).acquire(1)[0] is None
    caplog.set_level(logging.INFO)
    claim, _ = _claims(tmp_path, stale_s=30).acquire(1)
    assert claim is not None and "heartbeat is 100 s old (launch.claim_stale_s=30)" in caplog.text
    assert [p.name for p in (tmp_path / "claims").iterdir()] == ["row-1.json"]  # no takeover link left


def test_slurm_claims_follow_squeue_in_one_call(tmp_path, fake_squeue, caplog):
    slurm = {"array_job_id": "777", "job_id": "780", "job_name": "dt-planted"}
    for task in (0, 1, 2):
        _write_claim(tmp_path, task, array_task_id=str(task), **slurm)
    _write_claim(tmp_path, 5, job_id="900", job_name="dt-other")  # a plain (non-array) job
    (fake_squeue / "queue.txt").write_text("777_0 RUNNING dt-planted\n777_1 PENDING dt-planted\n"
                                           "777_2 RUNNING someone-else\n")
    claims = _claims(tmp_path)
    held = claims.held(range(10))
    assert sorted(held) == [0, 1] and _squeue_calls(fake_squeue) == 1  # one call for every claim judged
    assert "--jobs=777,900" in (fake_squeue / "calls").read_text()
    assert describe_holders(held) == "2 rows are being computed by Slurm job 777_[0-1]; not run here (rows 0-1)"
    assert claims.acquire(0)[0] is None  # listed as running: respected
    caplog.set_level(logging.INFO)
    assert claims.acquire(2)[0] is not None and "777_2 now names another job" in caplog.text
    assert claims.acquire(5)[0] is not None and "Slurm job 900 has left the queue" in caplog.text
    (fake_squeue / "queue.txt").write_text("")  # the array has left the queue
    assert claims.acquire(0)[0] is not None and claims.acquire(1)[0] is not None


def test_without_squeue_a_remote_slurm_claim_is_judged_by_its_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no squeue (nor anything else) on PATH
    _write_claim(tmp_path, 0, array_job_id="777", array_task_id="0", job_id="777")
    _write_claim(tmp_path, 1, age_s=1000, array_job_id="777", array_task_id="1", job_id="778")
    claims = _claims(tmp_path, stale_s=900)
    assert list(claims.held([0, 1])) == [0]
    assert claims.acquire(0)[0] is None and claims.acquire(1)[0] is not None


def test_a_requeued_slurm_task_takes_over_the_claim_of_its_earlier_run(tmp_path, fake_squeue, monkeypatch):
    (fake_squeue / "queue.txt").write_text("777_3 RUNNING dt-planted\n")  # the task itself, running again
    _write_claim(tmp_path, 4, array_job_id="777", array_task_id="3", job_id="781", job_name="dt-planted")
    for key, value in {"SLURM_ARRAY_JOB_ID": "777", "SLURM_ARRAY_TASK_ID": "3", "SLURM_JOB_ID": "781",
                       "SLURM_JOB_NAME": "dt-planted", "SLURM_RESTART_COUNT": "1"}.items():
        monkeypatch.setenv(key, value)
    claim, _ = _claims(tmp_path).acquire(4)
    assert claim is not None and claim.holder.element == "777_3" and claim.holder.restarts == 1


def test_rows_of_added_targets_have_claims_of_their_own(tmp_path):
    assert layout.claim(tmp_path, 3, ["t9", "t8"]) == tmp_path / "claims" / "targets" / "t8+t9" / "row-3.json"
    own, _ = _claims(tmp_path).acquire(3)
    added, _ = Claims(tmp_path, ["t8", "t9"], 60, 900).acquire(3)
    assert own is not None and added is not None and added.path != own.path


def test_claim_settings_are_checked():
    assert claim_settings(compose([]).launch) == (60.0, 900.0)  # the schema's defaults
    assert claim_settings({}) == (60.0, 900.0)  # a config written before claims existed
    with pytest.raises(ConfigError, match="launch.claim_heartbeat_s: must be positive"):
        claim_settings(compose(["launch.claim_heartbeat_s=0"]).launch)
    with pytest.raises(ConfigError, match="launch.claim_stale_s: must be greater"):
        claim_settings(compose(["launch.claim_heartbeat_s=60", "launch.claim_stale_s=60"]).launch)


def test_the_worker_skips_a_held_row_and_releases_a_failed_one(tmp_path, sleeper, caplog):
    from datatransfer.rows.worker import Worker
    from datatransfer.store.open import open_store

    cfg = compose(["experiment=planted", "row.units=8", "row.examples=[4]", "sweep.num_models=3",
                   f"store.path={tmp_path / 's.zarr'}"])
    store = open_store(cfg)
    me = Holder.of_this_process()
    _write_claim(store.path, 1, host=me.host, pid=sleeper.pid, pid_start=_proc_start(sleeper.pid), boot_id=me.boot_id)
    worker = Worker(cfg, str(store.path), threads=1)
    caplog.set_level(logging.INFO)
    assert worker.run_row(0) is not None and not layout.claim(store.path, 0).exists()  # computed, released
    assert worker.run_row(1) is None and not store.row_done(1)  # held by the live `sleep`: skipped
    assert f"row 1: not run here: it is being computed by process {sleeper.pid} on {me.host}" in caplog.text
    assert worker.held[1].holder.pid == sleeper.pid

    class Failing:  # a row kind whose row raises (stands in for a crash inside training)
        def runnable(self, row):
            return True

        def run(self, row, mask, checkpoint):
            assert read(layout.claim(store.path, row)).holder.pid == os.getpid()  # claimed while it computes
            raise RuntimeError("boom")

    worker.rows = Failing()
    with pytest.raises(RuntimeError, match="boom"):
        worker.run_row(2)
    assert not layout.claim(store.path, 2).exists()  # released when the row failed
    worker.close()


# ---- (b) races: of many processes claiming (or taking over) one row at once, exactly one wins ------------------
def _race(store: str, rows, stale_s: float, start, done, results) -> None:
    claims = Claims(store, None, 60, stale_s)
    for row in rows:
        start.wait()
        claim, _ = claims.acquire(row)
        current = read(layout.claim(store, row))
        mine = claim is not None and current is not None and current.holder.nonce == claim.holder.nonce
        results.put((row, os.getpid(), claim is not None, mine))
        done.wait()  # every process has tried before the winner lets go
        if claim is not None:
            claims.release(claim)
    claims.close()


@pytest.mark.parametrize("left_by", ["nobody", "a dead process", "a stale heartbeat"])
def test_of_8_processes_claiming_one_row_at_once_exactly_one_wins(tmp_path, left_by):
    rows, n = list(range(6)), 8
    if left_by == "a dead process":
        p = subprocess.Popen(["true"])
        p.wait()
        me = Holder.of_this_process()
        for row in rows:
            _write_claim(tmp_path, row, host=me.host, pid=p.pid, pid_start=1, boot_id=me.boot_id)
    elif left_by == "a stale heartbeat":
        for row in rows:
            _write_claim(tmp_path, row, age_s=120, array_job_id="777", array_task_id=str(row), job_id="1")
    ctx = mp.get_context("spawn")
    start, done, results = ctx.Barrier(n), ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), rows, 60.0, start, done, results)) for _ in range(n)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in range(n * len(rows))]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    winners = Counter(row for row, _, won, _ in got if won)
    assert winners == Counter({row: 1 for row in rows}), got
    assert all(mine for _, _, won, mine in got if won)  # the claim on disk is the winner's
    assert sorted(os.listdir(tmp_path / "claims")) == []  # released; no takeover link left behind


# ---- (c) two launchers on one store: no row is computed twice -----------------------------------------------------
def test_a_second_local_launcher_leaves_the_first_ones_rows_alone(tmp_path):
    store = tmp_path / "s.zarr"
    args = ["experiment=planted", "row.seconds_per_row=3", "sweep.num_models=4", "row.units=20", "row.examples=[6]",
            "launcher.workers=1", f"store.path={store}", "hydra.verbose=[datatransfer.rows.worker]"]
    first = subprocess.Popen([sys.executable, "-m", "launch", *args], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        deadline = time.time() + 120
        while not list((store / "claims").glob("row-*.json")) and time.time() < deadline and first.poll() is None:
            time.sleep(0.05)
        assert list((store / "claims").glob("row-*.json")), "the first launcher never claimed a row"
        second = run_app("launch", *args, timeout=300)
        out1, err1 = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 0 and second.returncode == 0, (err1[-2000:], second.stderr[-2000:])
    # the second names a row it left alone and its holder, the first launcher's process
    holder = rf"being computed by process {first.pid} on "
    assert re.search(rf"{holder}[^\n]*; not run here \(rows? [\d,-]+\)|row \d+: not run here: it is {holder}",
                     second.stdout), second.stdout
    done = [(int(r), int(p)) for r, p in re.findall(r"row (\d+): computed and committed by process (\d+)",
                                                     out1 + second.stdout)]
    assert sorted(r for r, _ in done) == [0, 1, 2, 3], done  # every row computed exactly once
    ran = [int(n) for n in re.findall(r"ran (\d+) rows", out1 + second.stdout)]
    assert sum(ran) == 4 and len(ran) == 2
    from datatransfer.store.sweep_store import Store

    assert Store.open(store).completed().all() and not list((store / "claims").glob("row-*"))


def test_the_local_launcher_leaves_rows_slurm_tasks_compute_and_exits_0(tmp_path, fake_squeue):
    from datatransfer.store.open import open_store

    args = ["experiment=planted", "sweep.num_models=5", "row.units=8", "row.examples=[4]", "launcher.workers=1",
            f"store.path={tmp_path / 's.zarr'}"]
    store = open_store(compose(args))
    for task in (0, 1, 2):
        _write_claim(store.path, task, array_job_id="1234", array_task_id=str(task), job_id=str(1240 + task),
                     job_name="dt-planted")
    (fake_squeue / "queue.txt").write_text("".join(f"1234_{t} RUNNING dt-planted\n" for t in (0, 1, 2)))
    r = run_app("launch", *args, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "0 of 5 rows already complete, 2 to run" in r.stdout
    assert "3 rows are being computed by Slurm job 1234_[0-2]; not run here (rows 0-2)" in r.stdout
    assert list(store.completed()) == [False, False, False, True, True] and _squeue_calls(fake_squeue) == 1
