"""The batched row runner end to end (compute.models_per_process=K): real trained rows of the mini data through the
worker, the store protocol and the local launcher; a killed batched worker; the cost lines of a dry run."""

import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
from conftest import REPO, TINY, run_app

from datatransfer.config import compose
from datatransfer.errors import StoreError
from datatransfer.store.sweep_store import Store


def _workers(pid):
    """The worker processes (multiprocessing spawn children) of process ``pid``, from /proc."""
    found = []
    try:
        for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                if b"spawn_main" in pathlib.Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(int(child))
    except OSError:  # the process or a child just exited
        return []
    return found


def test_batched_rows_are_committed_one_by_one_with_their_group_size(tmp_path):
    store_path = tmp_path / "store.zarr"
    r = run_app("launch", *TINY, "sweep.num_models=3", "compute.models_per_process=2", "launcher.workers=1",
                f"store.path={store_path}", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    store = Store.open(store_path)
    assert store.completed().all()
    sizes = [store.provenance(i)["models_per_process"] for i in range(3)]
    assert sizes == [2, 2, 1]  # rows 0, 1 trained together; row 2 alone
    seconds, _ = store.row_times()
    assert len(seconds) == 3 and (seconds > 0).all()
    acc = store.target_accuracy("digits", np.arange(3))
    assert (acc > 0.5).all(), acc  # real models, transferred: far above chance (0.1)


def test_a_killed_batched_worker_loses_no_completed_row_and_a_rerun_finishes(tmp_path):
    store_path = tmp_path / "store.zarr"
    args = [*TINY, "sweep.num_models=12", "compute.models_per_process=3", "launcher.workers=2",
            f"store.path={store_path}"]
    proc = subprocess.Popen([sys.executable, "-m", "launch", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        deadline, workers, before = time.time() + 400, [], None
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            workers = _workers(proc.pid)
            try:
                done = Store.open(store_path).completed()
            except StoreError:  # not created yet
                continue
            if len(workers) == 2 and done.sum() >= 1:
                before = done
                break
        assert proc.poll() is None and workers and before is not None, "the launcher ended before a kill"
        os.kill(workers[0], signal.SIGKILL)
        out, err = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 2, err[-3000:]
    lost = {int(m) for m in re.findall(rf"row (\d+): its worker process {workers[0]} killed by SIGKILL", err)}
    assert 1 <= len(lost) <= 3, err[-3000:]  # at most the group in flight
    after = Store.open(store_path).completed()
    assert after[before].all()  # no row completed before the kill was lost
    assert set(np.flatnonzero(~after)) == lost
    r = run_app("launch", *args, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"{12 - len(lost)} of 12 rows already complete, {len(lost)} to run" in r.stdout
    assert Store.open(store_path).completed().all()


def test_dry_run_and_status_print_the_cost(tmp_path):
    store_path = tmp_path / "store.zarr"
    r = run_app("launch", "launch.dry_run=true", f"store.path={store_path}", "compute.device=cpu")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = compose([]).sweep.num_models  # the schema's default
    assert re.search(rf"cost: {rows} rows to run x [\d.]+ s/row \((ESTIMATE, not measured here|measured by bench)",
                     r.stdout)
    assert "CPU-hours" in r.stdout and "wall time" in r.stdout and not store_path.exists()
    assert re.search(rf"store size on disk: new store: [\d.]+ MB projected when its {rows} rows are complete \(an "
                     r"upper bound", r.stdout), r.stdout
    r = run_app("launch", *TINY, "sweep.num_models=2", "launcher.workers=1", f"store.path={store_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_app("launch", *TINY, "sweep.num_models=2", "launch.dry_run=true", f"store.path={store_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"cost: 0 rows to run x [\d.]+ s/row \(measured: mean of this store's 2 completed rows", r.stdout)
    assert re.search(r"store size on disk: [\d.]+ MB now; [\d.]+ MB projected when its 2 rows are complete "
                     r"\(measured: [\d.]+ kB a written row, from its 2 completed rows\)", r.stdout), r.stdout
    r = run_app("launch.status", f"store.path={store_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ZarrUserWarning" not in r.stderr  # listing the arrays for the size skips the claims/ folder quietly
    assert re.search(r"cost: 2 rows completed x [\d.]+ s/row .* CPU-hours", r.stdout), r.stdout
