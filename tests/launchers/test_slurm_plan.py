"""Slurm launcher without a cluster: packing, array splitting, the sbatch text (golden files), manifests, dry run,
resume's config, queue parsing, and the planted experiment. Slurm's commands are faked at the subprocess boundary
(small scripts on PATH); tests/launchers/test_slurm_cluster.py runs the same code against a real Slurm."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_app
from slurm_fakes import fake_slurm  # noqa: F401  (a fixture)

from datatransfer.config import ConfigError, compose, validate
from datatransfer.launchers.slurm import queue as slurm_queue
from datatransfer.launchers.slurm.manifest import load_all
from datatransfer.launchers.slurm.plan import (
    Plan,
    describe_rows,
    executor_parameters,
    make_plan,
    pack,
    split,
)
from datatransfer.launchers.slurm.status import QueueView, count_rows
from datatransfer.launchers.slurm.submit import submit
from datatransfer.store.open import open_store

GOLDEN = Path(__file__).parent / "golden"


def row_set(plan: Plan) -> np.ndarray:
    """Every row of the plan, sorted."""
    return np.array(sorted(r for a in plan.arrays for t in a.tasks for r in t), dtype=np.int64)


PLANTED = ["experiment=planted", "row.units=12", "row.examples=[5]", "launcher=slurm"]


# ---- packing and splitting ---------------------------------------------------------------------------------
def test_pack_groups_consecutive_rows_in_order():
    assert pack([5, 0, 3, 1, 2, 4, 6], 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert pack(range(4), 1) == [[0], [1], [2], [3]]
    assert pack([], 5) == []
    with pytest.raises(ValueError):
        pack([1], 0)


def test_split_respects_max_array_size_and_indexes_every_array_from_zero():
    plan = make_plan(range(10_000), rows_per_task=1, max_array_size=1001)
    sizes = [len(a.tasks) for a in plan.arrays]
    assert sizes == [1001] * 9 + [991]
    assert plan.num_tasks == 10_000 and plan.num_rows == 10_000
    np.testing.assert_array_equal(row_set(plan), np.arange(10_000))  # every row exactly once
    assert plan.arrays[3].tasks[0] == [3003]  # array 3's index 0 is the 3004th task
    assert split([[1]] * 5, 5)[0].tasks == [[1]] * 5 and len(split([[1]] * 6, 5)) == 2


def test_sparse_rows_packed_then_split():
    rows = [2, 3, 7, 8, 9, 20, 21, 40]
    plan = make_plan(rows, rows_per_task=3, max_array_size=2)
    assert [a.tasks for a in plan.arrays] == [[[2, 3, 7], [8, 9, 20]], [[21, 40]]]
    assert describe_rows(rows) == "2-3,7-9,20-21,40"


# ---- executor parameters and the sbatch text ----------------------------------------------------------------
FULL = ["launcher.partition=gpu", "launcher.account=lab", "launcher.qos=high", "launcher.constraint=a100",
        "launcher.gpus_per_task=1", "launcher.cpus_per_task=8", "launcher.mem_gb=30.5", "launcher.timeout_min=240",
        "launcher.array_parallelism=64", "launcher.rows_per_task=4", "launcher.signal_delay_s=120",
        "launcher.setup=[module load cuda/12.1,source /opt/env/bin/activate]",
        "+launcher.additional_parameters.mail-type=END", "+launcher.additional_parameters.exclude='node[01-02]'"]


def test_executor_parameters_from_the_launcher_config():
    p = executor_parameters(compose(["launcher=slurm"]).launcher, "dt-mini")
    assert p == {"job_name": "dt-mini", "time": 120, "cpus_per_task": 4, "array_parallelism": 256,
                 "signal_delay_s": 90, "mem": "8GB"}  # empty strings and zeros are left to the cluster
    p = executor_parameters(compose(["launcher=slurm", *FULL]).launcher, "dt-mini")
    assert p["partition"] == "gpu" and p["constraint"] == "a100" and p["gpus_per_task"] == 1
    assert p["mem"] == "31232MB" and p["time"] == 240
    assert p["setup"] == ["module load cuda/12.1", "source /opt/env/bin/activate"]
    assert p["additional_parameters"] == {"mail-type": "END", "exclude": "node[01-02]"}


def _normalised(text: str, manifest_folder: str) -> str:
    return text.replace(manifest_folder, "<SUBMISSION>").replace(sys.executable, "<PYTHON>")


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"sbatch text differs from {path} (UPDATE_GOLDEN=1 rewrites it)"


@pytest.mark.parametrize("golden,overrides", [("sbatch_defaults.txt", []), ("sbatch_full.txt", FULL)])
def test_sbatch_text_matches_golden(fake_slurm, tmp_path, golden, overrides):
    cfg = compose([*PLANTED, "sweep.num_models=9", f"store.path={tmp_path / 's.zarr'}", *overrides])
    manifest = submit(cfg, open_store(cfg))
    text = (fake_slurm / "sbatch-4242.sh").read_text()
    _check_golden(golden, _normalised(text, manifest.folder))


def test_submit_splits_writes_manifest_and_task_pickles(fake_slurm, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    store_path = tmp_path / "s.zarr"
    cfg = compose([*PLANTED, "sweep.num_models=23", f"store.path={store_path}", "launcher.rows_per_task=2"])
    store = open_store(cfg)
    m = submit(cfg, store, ["experiment=planted", "launcher.rows_per_task=2"])
    out = caplog.text
    # 23 rows -> 12 tasks -> MaxArraySize 5 (from scontrol) -> arrays of 5, 5, 2, each indexed from 0
    assert "12 tasks of <= 2 rows -> 3 arrays of <= 5 tasks (MaxArraySize)" in out
    assert [a.job_id for a in m.arrays] == ["4242", "4243", "4244"] and m.state == "submitted"
    arrays = [re.search(r"--array=(\S+)", (fake_slurm / f"sbatch-{j}.sh").read_text()).group(1)
              for j in ("4242", "4243", "4244")]
    assert arrays == ["0-4%5", "0-4%5", "0-1%2"]
    assert "4242 (5 tasks)" in out and f"python -m launch.status store.path={store_path}" in out
    # the manifest maps array job id + task index -> rows, with the overrides and the submitit folder
    (loaded,) = load_all(store_path)
    assert loaded.arrays[1].tasks[0] == [10, 11] and loaded.overrides == m.overrides
    elements = dict(loaded.elements())
    assert elements["4244_1"] == [22] and sorted(r for rows in elements.values() for r in rows) == list(range(23))
    assert Path(loaded.folder).parent == store_path.resolve() / "submissions"
    assert len(list(loaded.submitit_folder.glob("4243_*_submitted.pkl"))) == 5
    task_cfg = json.loads(loaded.config_path.read_text())
    assert task_cfg["store"]["path"] == str(store_path.resolve()) and task_cfg["row"]["units"] == 12
    assert f"--chdir={loaded.folder}" in (fake_slurm / "sbatch-4242.sh").read_text()  # a neutral cwd


def test_submit_skips_rows_live_in_the_queue_and_completed_rows(fake_slurm, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    store_path = tmp_path / "s.zarr"
    cfg = compose([*PLANTED, "sweep.num_models=6", f"store.path={store_path}", "launcher.rows_per_task=2"])
    store = open_store(cfg)
    submit(cfg, store)  # one array 4242: tasks [0,1] [2,3] [4,5]
    # task 0 running, task 1 gone (finished or cancelled), task 2 pending; row 2 completed meanwhile
    (fake_slurm / "squeue.txt").write_text("4242_0|RUNNING|None|dt-planted\n4242_2|PENDING|Priority|dt-planted\n")
    store.group["completed"][2] = True
    caplog.clear()
    m = submit(cfg, store)
    assert [a.tasks for a in m.arrays] == [[[3]]]  # only row 3: neither completed nor live
    assert "1 row to run (1 already completed, 4 already queued or running)" in caplog.text
    # a job id reused by someone else's job does not count as ours
    (fake_slurm / "squeue.txt").write_text("4243|RUNNING|None|someone-else\n4242_0|RUNNING|None|dt-planted\n"
                                           "4242_2|PENDING|Resources|dt-planted\n")
    m = submit(cfg, store)
    assert [a.tasks for a in m.arrays] == [[[3]]]
    # nothing left: nothing submitted, no new manifest
    (fake_slurm / "squeue.txt").write_text("4242_[0-2]|PENDING|Priority|dt-planted\n4244|PENDING|None|dt-planted\n")
    assert submit(cfg, store) is None and len(load_all(store_path)) == 3
    # one squeue call per later submission, for all arrays at once (the first had nothing to ask about)
    calls = (fake_slurm / "squeue-calls").read_text().splitlines()
    assert len(calls) == 3 and calls[-1].endswith("--jobs=4242,4243,4244")


def test_dry_run_prints_the_plan_and_creates_nothing(fake_slurm, tmp_path):
    store_path = tmp_path / "s.zarr"
    r = run_app("launch", *PLANTED, "sweep.num_models=12", f"store.path={store_path}", "launcher.rows_per_task=2",
                "launcher.gpus_per_task=1", "launcher.partition=gpu", "launch.dry_run=true", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "12 rows -> 6 tasks of <= 2 rows -> 2 arrays of <= 5 tasks (MaxArraySize)" in r.stdout
    assert "per task: 4 CPUs, 1 GPU, mem 8GB, time limit 120 min, partition gpu;" in r.stdout
    assert "array 1: tasks 0-0, 2 rows (10-11)" in r.stdout and "dry run: nothing submitted" in r.stdout
    assert not store_path.exists() and not list(fake_slurm.glob("sbatch-*"))


def test_bad_slurm_values_name_the_key():
    for override, key in (("launcher.rows_per_task=0", "launcher.rows_per_task"),
                          ("launcher.timeout_min=0", "launcher.timeout_min"),
                          ("launcher.mem_gb=-1", "launcher.mem_gb")):
        with pytest.raises(ConfigError, match=key):
            validate(compose(["launcher=slurm", override]))


# ---- resume: the stored sweep, the latest launcher, the overrides on top ---------------------------------------
def test_resume_config_takes_the_sweep_from_the_store_and_the_launcher_from_the_last_submission(fake_slurm, tmp_path,
                                                                                                caplog):
    from datatransfer.launchers.resume import resume_config

    caplog.set_level(logging.INFO)

    store_path = tmp_path / "s.zarr"
    cfg = compose([*PLANTED, "sweep.num_models=4", f"store.path={store_path}", "launcher.partition=big",
                   "launcher.timeout_min=30", "launch.fail_rows=[1]"])
    store = open_store(cfg)
    submit(cfg, store)
    given = [f"store.path={store_path}", "launcher.timeout_min=240", "compute.device=cpu"]
    r, _ = resume_config(store, compose(given, config_name="resume"), given)
    assert r.launcher.partition == "big" and r.launcher.timeout_min == 240  # inherited + overridden
    # the log names what is inherited, not "none beyond the defaults"
    assert "inherited launcher settings: {'partition': 'big', 'timeout_min': 30}" in caplog.text
    assert r.compute.device == "cpu" and str(r.store.path) == str(store.path)
    assert list(r.launch.fail_rows) == [] and r.row.units == 12 and r.sweep.num_models == 4
    validate(r)
    assert open_store(r).fingerprint == store.fingerprint  # the same sweep
    cli = compose([f"store.path={store_path}", "launcher=local", "launcher.workers=2"], config_name="resume")
    r, _ = resume_config(store, cli, [f"store.path={store_path}", "launcher=local", "launcher.workers=2"])
    assert r.launcher.name == "local" and r.launcher.workers == 2


# ---- queue answers -------------------------------------------------------------------------------------------
def test_queue_id_parsing():
    assert slurm_queue.expand_ids("12_[0-2,7%3]") == ["12_0", "12_1", "12_2", "12_7"]
    assert slurm_queue.expand_ids("12_4") == ["12_4"] and slurm_queue.expand_ids("12") == ["12"]
    parsed = slurm_queue._parse("12_0|CANCELLED by 0|dt\n12_[1-2]|PENDING|dt\n12_0.batch|CANCELLED|batch\n")
    assert parsed == {"12_0": ("CANCELLED", "dt", ""), "12_1": ("PENDING", "dt", ""), "12_2": ("PENDING", "dt", "")}
    # a '|' in the job name stays in the name; a state this code has never heard of counts as live
    assert slurm_queue._parse("13_0|RUNNING|dt|a|b\n") == {"13_0": ("RUNNING", "dt|a|b", "")}
    # squeue's lines carry the pending reason before the name ("None": no reason)
    parsed = slurm_queue._parse("14_[0-1]|PENDING|ReqNodeNotAvail, UnavailableNodes:n1|dt|x\n14_2|RUNNING|None|dt\n"
                                "14_3|PENDING|dt\n", reason=True)
    assert parsed == {"14_0": ("PENDING", "dt|x", "ReqNodeNotAvail, UnavailableNodes:n1"),
                      "14_1": ("PENDING", "dt|x", "ReqNodeNotAvail, UnavailableNodes:n1"),
                      "14_2": ("RUNNING", "dt", "")}  # 14_3: too few fields, skipped
    assert parsed["14_0"].reason.startswith("ReqNodeNotAvail") and parsed["14_2"].name == "dt"
    assert slurm_queue.is_live("SOME_NEW_STATE") and slurm_queue.is_live("PENDING")
    assert not slurm_queue.is_live("TIMEOUT") and not slurm_queue.is_live("OUT_OF_MEMORY")


def test_status_counts_from_one_squeue_and_one_sacct_call(fake_slurm, tmp_path):
    store_path = tmp_path / "s.zarr"
    cfg = compose([*PLANTED, "sweep.num_models=10", f"store.path={store_path}", "launcher.rows_per_task=2"])
    store = open_store(cfg)
    submit(cfg, store)  # 4242: [0,1] [2,3] [4,5] [6,7] [8,9]
    store.group["completed"][0:2] = True
    store.group["completed"][4] = True
    (fake_slurm / "squeue.txt").write_text("4242_3|RUNNING|None|dt-planted\n4242_4|PENDING|Priority|dt-planted\n")
    # sacct: task 1 failed, task 2 finished in accounting's view (lag) but row 5 is missing -> failed
    (fake_slurm / "sacct.txt").write_text("4242_0|COMPLETED|dt-planted\n4242_1|FAILED|dt-planted\n"
                                          "4242_2|RUNNING|dt-planted\n4242_3|RUNNING|dt-planted\n")
    view = QueueView.poll(store_path)
    c = count_rows(view, store.completed())
    assert (c.completed, c.running, c.queued, c.failed, c.unsubmitted) == (3, 2, 2, 3, 0)
    assert [t.element for t in c.failed_tasks] == ["4242_1", "4242_2"]
    assert [t.state for t in c.failed_tasks] == ["FAILED", "ENDED"]
    assert len((fake_slurm / "sacct-calls").read_text().splitlines()) == 1
    r = run_app("launch.status", f"store.path={store_path}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "rows: 3 completed, 2 in running tasks, 2 queued, 3 failed, 0 never submitted" in r.stdout
    assert "4242_1 FAILED: rows 2-3" in r.stdout and "python -m launch.resume" in r.stdout


def test_status_without_accounting_falls_back_to_squeue(fake_slurm, tmp_path):
    store_path = tmp_path / "s.zarr"
    cfg = compose([*PLANTED, "sweep.num_models=4", f"store.path={store_path}", "launcher.rows_per_task=2"])
    store = open_store(cfg)
    submit(cfg, store)  # 4242: [0,1] [2,3]
    store.group["completed"][0:2] = True
    (fake_slurm / "bin" / "sacct").write_text("#!/bin/sh\necho 'Slurm accounting storage is disabled' >&2\nexit 1\n")
    (fake_slurm / "squeue.txt").write_text("")
    view = QueueView.poll(store_path)
    assert not view.accounting and [t.state for t in view.tasks] == ["ENDED", "ENDED"]
    c = count_rows(view, store.completed())
    assert (c.completed, c.failed) == (2, 2) and [t.element for t in c.failed_tasks] == ["4242_1"]
    r = run_app("launch.status", f"store.path={store_path}", cwd=tmp_path)
    assert r.returncode == 0 and "squeue only: Slurm accounting unavailable" in r.stdout, r.stderr


def test_task_requeues_itself_unchanged():
    from datatransfer.launchers.slurm.task import RowsTask

    task = RowsTask("/store/launch/x/config.json", [3, 4])
    again = task.checkpoint()
    assert again.function is task and again.args == () and task.rows == [3, 4]


def test_status_without_store_path_or_store_is_a_clean_error(tmp_path):
    r = run_app("launch.status", cwd=tmp_path)
    assert r.returncode == 2 and "store.path" in r.stderr and "Traceback" not in r.stderr
    r = run_app("launch.status", f"store.path={tmp_path / 'none.zarr'}", cwd=tmp_path)
    assert r.returncode == 2 and "no store" in r.stderr


# ---- experiment=planted ---------------------------------------------------------------------------------------
def test_planted_rows_are_reproducible_and_follow_the_truth(tmp_path):
    from datatransfer.rows import planted
    from datatransfer.rows.worker import run_rows

    cfg = compose(["experiment=planted", "sweep.num_models=240", "row.units=8", "row.examples=[6,3]",
                   "row.noise=0.1", f"store.path={tmp_path / 's.zarr'}"])
    store = open_store(cfg)
    assert store.unit_names == [f"u{i}" for i in range(8)] and store.targets == ["t0", "t1"]
    assert store.attrs["config"]["targets"] == {}  # no data file is read for a planted sweep
    run_rows(cfg, str(store.path), range(240), threads=1)
    w, b = planted.truth(cfg.row)["t0"]
    y = store.outputs("t0")[:][:, 0, 0, :].astype(np.float64)
    np.testing.assert_allclose(y.mean(0) - store.masks.mean(0) @ w, b, atol=0.05)
    masks = store.masks
    dim = np.stack([y[masks[:, u]].mean(0) - y[~masks[:, u]].mean(0) for u in range(8)])
    centred = w - w.mean(0)  # fixed-size masks identify w up to a constant per example
    assert np.corrcoef(dim.ravel(), centred.ravel())[0, 1] > 0.95
    again = planted.PlantedRows(cfg).run(5, masks[5])
    np.testing.assert_array_equal(again.outputs["t0"], store.outputs("t0")[5])
    np.testing.assert_array_equal(planted.truth(cfg.row)["t1"][0], planted.truth(cfg.row)["t1"][0])


def test_a_dry_run_projects_the_size_of_the_whole_store_with_the_rows_queued(fake_slurm, tmp_path, caplog):
    """The size projection is for all the store's rows, not only those the dry run would submit (it said 'when its
    4 rows are complete' of a 6-row store with 2 rows queued)."""
    caplog.set_level(logging.INFO)
    store_path = tmp_path / "s.zarr"
    base = [*PLANTED[:-1], f"store.path={store_path}"]
    r = run_app("launch", *base, "sweep.num_models=2", "launcher.workers=1")  # rows 0, 1 written here
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = compose([*PLANTED, "sweep.num_models=6", f"store.path={store_path}", "launcher.rows_per_task=2"])
    submit(cfg, open_store(cfg))  # extended to 6 rows; one array 4242: tasks [2,3] [4,5]
    (fake_slurm / "squeue.txt").write_text("4242_0|PENDING|Priority|dt-planted\n")  # task 1 cancelled
    caplog.clear()
    dry = compose([*PLANTED, "sweep.num_models=6", f"store.path={store_path}", "launcher.rows_per_task=2",
                   "launch.dry_run=true"])
    assert submit(dry, open_store(dry)) is None
    assert "2 rows to run (2 already completed, 2 already queued or running)" in caplog.text
    m = re.search(r"store size on disk: ([\d.]+) MB now; ([\d.]+) MB projected when its 6 rows are complete "
                  r"\(measured: ([\d.]+) kB a written row", caplog.text)
    assert m, caplog.text
    now, projected, per = float(m.group(1)), float(m.group(2)), float(m.group(3)) / 1e3
    assert abs(projected - (now + 4 * per)) <= 0.1 + 1e-9, (now, projected, per)  # the four rows left, rounded
