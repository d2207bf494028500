"""The Slurm launcher against a real single-node Slurm (scripts/slurm_local.sh): submit, watch, resume, preemption,
scale, and aggregation as an array. The cluster is brought up once for this module and taken down at the end if
this module started it.

Every test that needs the real cluster belongs in this module: `make test` runs test files side by side (pytest-xdist,
one file per worker), and one module keeps them on one worker, in order, so no other test's jobs meet this module's
restart of the cluster (test_d) or its teardown.

Without root or apt the tests skip, saying why; under CI (CI=true) they never skip: they fail.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, TINY, run_app

from datatransfer.launchers.slurm.manifest import load_all
from datatransfer.launchers.slurm.status import QueueView
from datatransfer.store.sweep_store import Store

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SCRIPT = REPO / "scripts" / "slurm_local.sh"
# Small tasks: one CPU (two threads for trained rows, as the local launcher uses here), little memory.
TASK = ["launcher=slurm", "launcher.cpus_per_task=1", "launcher.mem_gb=0.5", "launcher.timeout_min=60"]


def _cluster_cmd(verb: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), verb], capture_output=True, text=True, timeout=timeout, cwd="/",
                          env=dict(os.environ, **(env or {})))


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the Slurm tests cannot run under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster():
    """A usable Slurm; started here (and stopped at the end) unless one is already up."""
    if os.geteuid() != 0:
        _unavailable("needs root to start a single-node Slurm (scripts/slurm_local.sh up)")
    if _cluster_cmd("status", timeout=120).returncode == 0:
        yield {"started": False}
        return
    r = _cluster_cmd("up")
    if r.returncode != 0:
        _unavailable(f"scripts/slurm_local.sh up failed (no apt or no network?):\n{r.stderr[-2000:]}")
    try:
        yield {"started": True}
    finally:
        _cluster_cmd("down", timeout=300)


def _launch(*args: str, module: str = "launch", tmp: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    r = run_app(module, *args, cwd=tmp, timeout=timeout)  # a neutral cwd, as users' jobs should have
    assert r.returncode == 0, f"{module} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _wait(store_path: Path, timeout: float, poll: float = 2.0) -> None:
    """Until no task of the store is live in the queue."""
    deadline = time.monotonic() + timeout
    while QueueView.poll(store_path, accounting=False).live_rows():
        if time.monotonic() > deadline:
            subprocess.run(["squeue"], check=False)
            raise AssertionError(f"tasks of {store_path} still queued or running after {timeout:.0f} s")
        time.sleep(poll)


def _wait_live(store_path: Path, element: str, states: set, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        live = {t.element: t.state for t in QueueView.poll(store_path, accounting=False).tasks if t.live}
        if live.get(element) in states:
            return
        assert time.monotonic() < deadline, f"{element} not in {states} after {timeout} s: {live}"
        time.sleep(0.3)


def _outputs(path: Path, rows) -> dict:
    s = Store.open(path)
    return {t: (s.outputs(t)[:][rows], s.predictions(t)[:][rows]) for t in s.targets}


def _assert_same_rows(a: Path, b: Path, rows) -> None:
    for t, (out_a, pred_a) in _outputs(a, rows).items():
        out_b, pred_b = _outputs(b, rows)[t]
        np.testing.assert_array_equal(out_a, out_b, err_msg=f"target {t}")
        np.testing.assert_array_equal(pred_a, pred_b, err_msg=f"target {t}")


# ---- a. a reduced mini sweep as job arrays = the local launcher --------------------------------------------------
def test_a_mini_sweep_on_slurm_equals_the_local_launcher(cluster, tmp_path):
    from datatransfer.config import compose
    from datatransfer.launchers.local import local_workers, run_local
    from datatransfer.rows.worker import cpus_allotted
    from datatransfer.store.open import open_store

    slurm_store, local_store = tmp_path / "slurm.zarr", tmp_path / "local.zarr"
    # one row a time on both sides: a batched group (compute.models_per_process) sums in another order than a row
    # alone, so bitwise equality needs the same groups (docs/configuration.md, "Determinism")
    sweep = [*TINY, "sweep.num_models=2", "model.width=8", "compute.models_per_process=1"]
    cfg = compose([*sweep, f"store.path={local_store}"])
    # the torch threads of the local launcher's workers here (its CPUs split between them) = Slurm's CPUs per task
    threads = max(1, cpus_allotted() // min(local_workers(cfg), 2))
    # one array of 2 single-row tasks
    r = _launch(*sweep, *TASK, f"launcher.cpus_per_task={threads}", "launcher.mem_gb=2", f"store.path={slurm_store}",
                tmp=tmp_path)
    assert re.search(r"submitted 2 rows as 1 array in [\d.]+ s: \d+ \(2 tasks\)", r.stdout), r.stdout
    assert "python -m launch.status" in r.stdout
    assert run_local(cfg, open_store(cfg)) == 2  # meanwhile, the local launcher
    _wait(slurm_store, timeout=600)
    assert Store.open(slurm_store).completed().all()
    _assert_same_rows(slurm_store, local_store, [0, 1])
    status = _launch(f"store.path={slurm_store}", module="launch.status", tmp=tmp_path).stdout
    assert "rows: 2 completed, 0 in running tasks, 0 queued, 0 failed, 0 never submitted" in status
    assert "2 COMPLETED" in status


# ---- b. cancelled and failing tasks, then resume: only those rows rerun -------------------------------------------
PLANTED_B = ["experiment=planted", "sweep.num_models=16", "row.units=40", "row.examples=[10,4]"]


def test_b_cancel_and_failures_then_resume_reruns_exactly_the_missing_rows(cluster, tmp_path):
    store_path = tmp_path / "store.zarr"
    # 8 tasks of 2 rows, 2 at a time; the task holding row 5 fails after row 4 (injected fault)
    _launch(*PLANTED_B, *TASK, "launcher.rows_per_task=2", "launcher.array_parallelism=2", "launch.fail_rows=[5]",
            f"store.path={store_path}", tmp=tmp_path)
    (m,) = load_all(store_path)
    job = m.arrays[0].job_id
    subprocess.run(["scancel", f"{job}_6", f"{job}_7"], check=True)  # pending: they leave no accounting record
    _wait_live(store_path, f"{job}_1", {"RUNNING"})
    subprocess.run(["scancel", f"{job}_1"], check=True)  # running: killed wherever it is
    _wait(store_path, timeout=300)

    store = Store.open(store_path)
    missing = set(store.missing_rows().tolist())
    assert {5, 12, 13, 14, 15} <= missing and 4 in set(np.flatnonzero(store.completed()).tolist())
    status = _launch(f"store.path={store_path}", module="launch.status", tmp=tmp_path).stdout
    assert f"{len(missing)} failed" in status and f"{job}_2 FAILED" in status
    assert "injected fault" in status  # the end of the failed task's stderr log
    assert f"{job}_6 NO_RECORD" in status or f"{job}_7 NO_RECORD" in status
    chunk = {r: (store_path / "completed" / "c" / str(r)).stat().st_mtime_ns for r in range(16) if r not in missing}

    _launch(f"store.path={store_path}", "launcher.timeout_min=30", module="launch.resume", tmp=tmp_path)
    retry = load_all(store_path)[-1]
    assert sorted(r for _, rows in retry.elements() for r in rows) == sorted(missing)  # exactly the missing rows
    assert retry.launcher["rows_per_task"] == 2 and retry.launcher["timeout_min"] == 30  # inherited + overridden
    assert "--time=30" in next(retry.submitit_folder.glob("*_submission.sh")).read_text()
    again = _launch(f"store.path={store_path}", module="launch.resume", tmp=tmp_path)
    assert "nothing to submit" in again.stdout and len(load_all(store_path)) == 2  # twice: nothing the 2nd time
    assert "store size on disk: " in again.stdout and "projected when its 16 rows are complete" in again.stdout
    _wait(store_path, timeout=300)

    assert Store.open(store_path).completed().all()
    for row, mtime in chunk.items():  # rows completed before the resume were not rerun
        assert (store_path / "completed" / "c" / str(row)).stat().st_mtime_ns == mtime
    reference = tmp_path / "reference.zarr"  # the same sweep, uninterrupted, here
    _launch(*PLANTED_B, f"store.path={reference}", tmp=tmp_path)
    _assert_same_rows(store_path, reference, list(range(16)))


# ---- c. the requeue signal mid-row: the row resumes from its checkpoint -------------------------------------------
def test_c_requeue_signal_mid_row_resumes_from_the_checkpoint(cluster, tmp_path):
    import torch

    from datatransfer.config import compose
    from datatransfer.rows.worker import run_rows
    from datatransfer.store.open import open_store

    store_path = tmp_path / "store.zarr"
    # source training is what checkpoints; fixed-feature outputs depend on every weight of the source model
    sweep = ["sweep.num_models=2", "train.epochs=2", "model.width=8", "transfer.modes=[fixed]",
             "transfer.fixed.iterations=30"]
    # one array of 2 single-row tasks, one at a time; 2 CPUs = 2 torch threads, as the reference below
    _launch(*sweep, *TASK, "launcher.cpus_per_task=2", "launcher.mem_gb=2", "launcher.array_parallelism=1",
            f"store.path={store_path}", tmp=tmp_path)
    (m,) = load_all(store_path)
    element = m.arrays[0].element_id(0)
    subprocess.run(["scancel", m.arrays[0].element_id(1)], check=True)  # only row 0 matters here
    ckpt = store_path / "checkpoints" / "row-0.pt"
    deadline = time.monotonic() + 300
    while not ckpt.exists():  # row 0 has finished its first epoch
        assert time.monotonic() < deadline, "no checkpoint of row 0 after 300 s"
        time.sleep(0.1)
    epoch = torch.load(ckpt, weights_only=False)["epoch"]
    subprocess.run(["scancel", "--signal=USR2", element], check=True)  # what Slurm sends before preempting
    assert epoch == 1 and not Store.open(store_path).completed()[0]  # the signal landed mid-row
    _wait(store_path, timeout=600)

    assert Store.open(store_path).completed()[0] and not ckpt.exists()  # deleted once the row completed
    log = m.log_path(element, "out").read_text() + m.log_path(element, "err").read_text()  # both runs (appended)
    assert "Caught signal SIGUSR2" in log and f"Requeued job {element}" in log
    assert re.search(r"row 0: resuming from its checkpoint after epoch 1\b", log), log
    reference = tmp_path / "reference.zarr"  # row 0 uninterrupted, same thread count
    cfg = compose([*sweep, f"store.path={reference}"])
    open_store(cfg)
    run_rows(cfg, str(reference), [0], threads=2)
    _assert_same_rows(store_path, reference, [0])


# ---- d. scale: 10,000 planted rows, MaxArraySize 1,001 --------------------------------------------------------------
def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def test_d_ten_thousand_planted_rows_split_at_max_array_size(cluster, tmp_path):
    from datatransfer.config import compose
    from datatransfer.rows import planted

    r = _cluster_cmd("up", {"SLURM_LOCAL_MAX_ARRAY_SIZE": "1001"})
    if r.returncode != 0:
        _unavailable(f"cannot set MaxArraySize=1001 on this cluster:\n{r.stderr[-1500:]}")
    try:
        _scale(tmp_path, planted, compose)
    finally:
        _cluster_cmd("up")  # restore the default MaxArraySize for whoever shares the cluster


def _scale(tmp_path: Path, planted, compose) -> None:
    store_path = tmp_path / "store.zarr"
    sweep = ["experiment=planted", "sweep.num_models=10000", "row.examples=[20]"]
    # 1. Submit one task per row: 10 arrays of <= 1001 tasks, each indexed from 0. Held (sbatch --hold, through
    #    additional_parameters), so that 10,000 start-ups do not compete with this test for the 2 CPUs.
    start = time.monotonic()
    r = _launch(*sweep, *TASK, "launcher.rows_per_task=1", "+launcher.additional_parameters.hold=true",
                f"store.path={store_path}", tmp=tmp_path)
    seconds = time.monotonic() - start
    assert seconds <= 60, f"planning and submitting 10,000 rows took {seconds:.0f} s"
    assert "10000 rows -> 10000 tasks of <= 1 row -> 10 arrays of <= 1001 tasks (MaxArraySize)" in r.stdout
    (m,) = load_all(store_path)
    assert [len(a.tasks) for a in m.arrays] == [1001] * 9 + [991] and len(set(m.job_ids)) == 10
    assert sorted(r for _, rows in m.elements() for r in rows) == list(range(10_000))
    view = QueueView.poll(store_path, accounting=False)
    assert len(view.live_rows()) == 10_000 and {t.state for t in view.tasks} == {"PENDING"}
    print(f"\nplanned + submitted 10,000 rows (10 arrays) in {seconds:.1f} s, python start-up included")

    # 2. Submitting again submits nothing: every row is completed or live.
    again = _launch(*sweep, *TASK, f"store.path={store_path}", tmp=tmp_path)
    assert "nothing to submit" in again.stdout and len(load_all(store_path)) == 1
    status = _launch(f"store.path={store_path}", module="launch.status", tmp=tmp_path).stdout
    assert "rows: 0 completed, 0 in running tasks, 10000 queued" in status and "1001 PENDING" in status

    # 3. Repack: cancel everything, resume with 2,500 rows per task (start-up amortised) and without the hold
    #    (resume inherits the last submission's launcher settings, additional parameters included).
    subprocess.run(["scancel", *m.job_ids], check=True)
    _wait(store_path, timeout=120, poll=1)
    start = time.monotonic()
    r = _launch(f"store.path={store_path}", "launcher.rows_per_task=2500", "launcher.array_parallelism=4",
                "launcher.additional_parameters={}", module="launch.resume", tmp=tmp_path)
    retry = load_all(store_path)[-1]
    assert len(retry.arrays) == 1 and len(retry.arrays[0].tasks) == 4
    assert retry.launcher["additional_parameters"] == {} and retry.launcher["cpus_per_task"] == 1
    _wait(store_path, timeout=900, poll=5)
    seconds = time.monotonic() - start
    store = Store.open(store_path)
    assert store.completed().all()
    print(f"ran {retry.num_rows} rows in 4 tasks in {seconds:.0f} s ({retry.num_rows / seconds:.0f} rows/s)")

    # 4. Aggregate and compare with the planted truth.
    _launch(f"store.path={store_path}", "diagnostics.enabled=false", "progress=false", module="aggregate",
            tmp=tmp_path, timeout=600)
    from datatransfer.influence.aggregate import Influence, default_out

    inf = Influence(default_out(store_path))
    w, _ = planted.truth(compose(sweep).row)["t0"]
    per_example = inf.array("t0", "fixed", "softmax_gt", "per_example")  # (n, U)
    rho = [_spearman(per_example[j], w[:, j]) for j in range(w.shape[1])]
    print(f"Spearman(influence, planted w) per example: min {min(rho):.3f}, mean {np.mean(rho):.3f}")
    assert np.mean(rho) >= 0.9 and min(rho) >= 0.85, rho


# ---- e. a request no node can run: refused before sbatch; submitted anyway, launch.status flags it ----------------
def _node_cpus() -> int:
    r = subprocess.run(["sinfo", "--noheader", "--format=%c"], capture_output=True, text=True, check=True)
    return max(int(line.strip().rstrip("+")) for line in r.stdout.split())


def test_e_a_request_beyond_the_node_is_refused_before_submission(cluster, tmp_path):
    cpus = _node_cpus()
    store_path = tmp_path / "store.zarr"
    # the reproduction: launcher=slurm's default 4 CPUs on this cluster's node (2 CPUs unless SLURM_LOCAL_CPUS)
    asked = ["launcher.cpus_per_task=4"] if cpus < 4 else [f"launcher.cpus_per_task={cpus + 1}"]
    r = run_app("launch", "experiment=planted", "launcher=slurm", *asked, f"store.path={store_path}", cwd=tmp_path,
                timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    wanted = asked[0].split("=")[1]
    assert (f"error: launcher.cpus_per_task={wanted}: no node of partition debug has more than {cpus} CPUs; "
            f"set launcher.cpus_per_task<={cpus}") in r.stderr
    assert load_all(store_path) == [] and not store_path.exists()  # no submission, and no store made for it
    dry = _launch("experiment=planted", "launcher=slurm", f"store.path={tmp_path / 'dry.zarr'}",
                  "launch.dry_run=true", "launcher.cpus_per_task=1", "launcher.mem_gb=0.5", tmp=tmp_path)
    assert f"partition debug (sinfo): nodes of {cpus} CPUs" in dry.stdout and "dry run: nothing submitted" in dry.stdout


def test_f_tasks_pending_forever_are_flagged_by_status(cluster, tmp_path):
    cpus = _node_cpus()
    store_path = tmp_path / "store.zarr"
    # sinfo unavailable: the submission goes on with a warning, and the tasks can never start (PartitionConfig)
    blind = tmp_path / "no-sinfo"
    blind.mkdir()
    (blind / "sinfo").write_text("#!/bin/sh\necho 'sinfo: error: not here' >&2\nexit 1\n")
    (blind / "sinfo").chmod(0o755)
    r = run_app("launch", "experiment=planted", "sweep.num_models=4", "launcher=slurm", "launcher.mem_gb=0.5",
                f"launcher.cpus_per_task={cpus + 2}", "launcher.rows_per_task=2", f"store.path={store_path}",
                cwd=tmp_path, timeout=300, env={"PATH": f"{blind}:{os.environ['PATH']}"})
    assert r.returncode == 0, r.stderr
    assert "not checked against the partition: sinfo failed: sinfo: error: not here" in r.stdout
    (m,) = load_all(store_path)
    job = m.arrays[0].job_id
    try:
        deadline = time.monotonic() + 60
        while True:
            status = _launch(f"store.path={store_path}", module="launch.status", tmp=tmp_path).stdout
            if "will never start" in status or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert "2 PENDING (PartitionConfig)" in status, status
        assert f"{job}: 2 tasks PENDING (PartitionConfig): no node of the partition has the CPUs" in status
        assert f"scancel --state=PENDING {job}" in status and "python -m launch.resume" in status
        subprocess.run(["scancel", "--state=PENDING", job], check=True)  # what the status line says to do
        _wait(store_path, timeout=60)
        r = _launch(f"store.path={store_path}", "launcher.cpus_per_task=1", module="launch.resume", tmp=tmp_path)
        assert "submitted 4 rows" in r.stdout
        _wait(store_path, timeout=300)
        assert Store.open(store_path).completed().all()
    finally:
        subprocess.run(["scancel", *load_all(store_path)[-1].job_ids, job], check=False)


# ---- g. an extended sweep: a higher sweep.num_models submits only the new rows; resume and status know them ------
def test_g_extending_a_sweep_on_slurm_runs_only_the_new_rows(cluster, tmp_path):
    store_path = tmp_path / "store.zarr"
    sweep = ["experiment=planted", "row.units=8", "row.examples=[6]", *TASK, f"store.path={store_path}"]
    _launch(*sweep, "sweep.num_models=3", tmp=tmp_path)
    _wait(store_path, timeout=300)
    before = Store.open(store_path)
    first = {t: before.outputs(t)[:3] for t in before.targets}
    r = _launch(*sweep, "sweep.num_models=5", "launch.fail_rows=[4]", tmp=tmp_path)
    assert "submitted 2 rows" in r.stdout, r.stdout
    _wait(store_path, timeout=300)
    status = _launch(f"store.path={store_path}", module="launch.status", tmp=tmp_path).stdout
    assert "extended from 3 to 5 rows" in status and "4 completed" in status and "1 failed" in status, status
    # resume inherits the last submission's config (5 rows) and reruns the failed row of the extension
    r = _launch(f"store.path={store_path}", module="launch.resume", tmp=tmp_path)
    assert "submitted 1 row" in r.stdout, r.stdout
    _wait(store_path, timeout=300)
    after = Store.open(store_path)
    assert after.completed().all() and after.num_rows == 5
    for t in after.targets:
        np.testing.assert_array_equal(after.outputs(t)[:3], first[t])


def test_h_lasso_fanout_as_a_slurm_array_equals_one_process(cluster, tmp_path, caplog):
    """estimator=lasso with estimator.fanout.launcher=slurm: blocks of target examples solved by the tasks of one
    Slurm array, through the runner the app passes in (launchers/slurm/array_map.py), as aggregation's row blocks."""
    import logging

    from omegaconf import OmegaConf
    from planted import make_planted_store, sparse_effects

    from datatransfer.config.launchers import SlurmLauncherConfig
    from datatransfer.errors import AggregationError
    from datatransfer.influence.aggregate import aggregate
    from datatransfer.influence.reader import Influence
    from datatransfer.launchers.slurm.array_map import mapper

    rng = np.random.default_rng(6)
    p = make_planted_store(tmp_path / "s.zarr", rows=300, units=30, n=(9,), scheme="bernoulli", noise=0.5,
                           modes=("full",), kinds=("softmax_gt",), effects={"t0": sparse_effects(rng, 30, 9, 3)})
    one = Influence(aggregate(p.store.path, out=tmp_path / "one.zarr", estimator="lasso", diagnostics=None,
                              progress=False).out)
    slurm = {"cpus_per_task": 1, "mem_gb": 1.0, "timeout_min": 20, "job_name": "dt-lasso-test"}
    fan = {"launcher": "slurm", "examples_per_task": 4, "folder": str(tmp_path / "fan"), "slurm": slurm}
    runner = mapper(OmegaConf.merge(OmegaConf.structured(SlurmLauncherConfig), slurm), tmp_path / "many.zarr",
                    "LASSO example-block tasks")
    with caplog.at_level(logging.INFO, logger="datatransfer.launchers.slurm.array_map"):
        many = Influence(aggregate(p.store.path, out=tmp_path / "many.zarr", estimator="lasso",
                                   estimator_settings={"fanout": fan}, diagnostics=None, progress=False,
                                   fanout_tasks=runner).out)
    assert re.search(r"submitted 3 LASSO example-block tasks as Slurm array \d+", caplog.text), caplog.text
    for a, b in zip(one.sparse("t0", "full", "softmax_gt"), many.sparse("t0", "full", "softmax_gt")):
        np.testing.assert_array_equal(a, b)
    # without a runner, launcher=slurm is refused by name (influence/ submits nothing itself)
    with pytest.raises(AggregationError, match="fanout.launcher=slurm needs the Slurm array runner"):
        aggregate(p.store.path, out=tmp_path / "none.zarr", estimator="lasso", estimator_settings={"fanout": fan},
                  diagnostics=None, progress=False)


def test_i_aggregation_as_a_slurm_array_equals_the_local_one(cluster, tmp_path):
    """`python -m aggregate launcher=slurm`: the row blocks summed as a Slurm array (submitit), then reduced: the
    same influences as summing them in this process; a refresh submits only the blocks with new rows."""
    from planted import make_planted_store

    from datatransfer.influence.aggregate import aggregate
    from datatransfer.influence.reader import Influence

    p = make_planted_store(tmp_path / "s.zarr", rows=50, units=6, n=(8, 5), noise=1.0, scheme="bernoulli",
                           completed=np.arange(45))
    local = aggregate(p.store.path, out=tmp_path / "local.zarr", progress=False, sums_block_rows=10).out
    common = [f"store.path={p.store.path}", f"out={tmp_path / 'slurm.zarr'}", "sums_block_rows=10", "launcher=slurm",
              "launcher.cpus_per_task=1", "launcher.mem_gb=0.5", "launcher.timeout_min=10", "progress=false"]
    r = run_app("aggregate", *common, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "submitted 10 row-block tasks as Slurm array" in r.stdout + r.stderr  # 5 blocks x 2 targets
    a, b = Influence(local), Influence(tmp_path / "slurm.zarr")
    for t in a.targets:
        for mode in a.modes:
            for kind in a.output_kinds:
                for name in ("per_example", "per_class", "overall", "per_example_se", "overall_se"):
                    np.testing.assert_array_equal(a.array(t, mode, kind, name), b.array(t, mode, kind, name))
    np.testing.assert_array_equal(a.diagnostics("t0", "full", "is_correct")["lds"],
                                  b.diagnostics("t0", "full", "is_correct")["lds"])
    assert not list(tmp_path.glob(".slurm.zarr.slurm-*"))  # the array's logs are removed once it succeeded
    # a refresh on Slurm after new rows: only their block is submitted
    for i in (45, 46):
        p.store.write_row(i, {t: p.y[t][i] for t in p.y}, {t: np.zeros((2, p.y[t].shape[-1]), np.int32) for t in p.y},
                          {})
    r = run_app("aggregate", *common, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "submitted 2 row-block tasks" in r.stdout + r.stderr and "read 4 target rows" in r.stdout


def test_j_an_aggregation_array_that_will_never_start_is_cancelled_and_refused(cluster, tmp_path):
    """QA: an array pending for a reason Slurm never resolves (here a dependency on a failed job; in practice a QOS
    or association limit the up-front partition check cannot see) made `aggregate` wait for good, silently."""
    from planted import make_planted_store

    failed = subprocess.run(["sbatch", "--parsable", "-o", "/dev/null", "--wrap", "exit 1"], capture_output=True,
                            text=True, check=True).stdout.strip().split(";")[0]
    deadline = time.time() + 120
    while subprocess.run(["squeue", "--noheader", "-j", failed], capture_output=True, text=True).stdout.strip():
        assert time.time() < deadline
        time.sleep(1)
    p = make_planted_store(tmp_path / "s.zarr", rows=20, units=4, n=(6,))
    r = run_app("aggregate", f"store.path={p.store.path}", "sums_block_rows=10", "launcher=slurm",
                "launcher.cpus_per_task=1", "launcher.mem_gb=0.5", "launcher.timeout_min=10", "progress=false",
                f"+launcher.additional_parameters.dependency=afterok:{failed}", cwd=tmp_path, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout[-2000:] + r.stderr[-3000:]
    assert "are PENDING (DependencyNeverSatisfied) and will never start" in r.stderr
    assert "change launcher.additional_parameters" in r.stderr
    assert not (tmp_path / "influence.zarr").exists()
    array = re.search(r"array (\d+): ", r.stderr).group(1)
    deadline = time.time() + 60  # the array was cancelled, not left in the queue
    while subprocess.run(["squeue", "--noheader", "-j", array], capture_output=True, text=True).stdout.strip():
        assert time.time() < deadline
        time.sleep(1)
