"""Requests Slurm would take and never run, caught before submission or named by launch.status, with Slurm's
commands faked (tests/launchers/slurm_fakes.py): the partition's nodes (one sinfo call), pending reasons that never
resolve, a GPU for a CUDA recipe (launcher=slurm_gpu), the time limit vs the requeue signal, job names."""

from __future__ import annotations

import logging
import math

import pytest
from conftest import run_app
from slurm_fakes import fake_slurm  # noqa: F401  (a fixture)

from datatransfer.config import ConfigError, compose, validate
from datatransfer.config.launchers import GPU_PRESET
from datatransfer.launchers.slurm import pending, resources
from datatransfer.launchers.slurm.manifest import load_all
from datatransfer.launchers.slurm.submit import submit
from datatransfer.store.open import open_store

PLANTED = ["experiment=planted", "row.units=12", "row.examples=[5]", "launcher=slurm"]
SMALL_NODE = "debug*|2|1937|(null)|infinite\nlong|2|1937|(null)|1-00:00:00\n"  # 2 CPUs, 1.9 GB, no GPU
GPU_NODES = "cpu*|64|512000|(null)|2-00:00:00\ngpu|16|64000|gpu:a100:4(S:0-1)|4:00:00\n"
IMAGENET = ["experiment=imagenet_transfer", "launch.dry_run=true"]


def _submit(tmp_path, *overrides: str, store: str = "s.zarr"):
    cfg = compose([*PLANTED, "sweep.num_models=4", f"store.path={tmp_path / store}", *overrides])
    return submit(cfg, open_store(cfg))


# ---- 1. the request against the partition's nodes: one sinfo call ------------------------------------------------
@pytest.mark.parametrize("overrides,message", [
    ([], "launcher.cpus_per_task=4: no node of partition debug has more than 2 CPUs; set launcher.cpus_per_task<=2"),
    (["launcher.cpus_per_task=2"], "launcher.mem_gb=8: no node of partition debug has more than 1937 MB of memory; "
                                   "set launcher.mem_gb<=1.89"),
    (["launcher.cpus_per_task=1", "launcher.mem_gb=1", "launcher.gpus_per_task=1"],
     "launcher.gpus_per_task=1: no node of partition debug has GPUs; set launcher.gpus_per_task=0"),
    (["launcher.cpus_per_task=1", "launcher.mem_gb=1", "launcher.partition=long", "launcher.timeout_min=1500"],
     "launcher.timeout_min=1500: partition long's time limit is 1440 min; set launcher.timeout_min<=1440"),
])
def test_a_request_no_node_can_run_is_refused_before_sbatch(fake_slurm, tmp_path, overrides, message):
    (fake_slurm / "sinfo.txt").write_text(SMALL_NODE)
    with pytest.raises(ConfigError) as e:
        _submit(tmp_path, *overrides)
    assert message in str(e.value)
    assert not list(fake_slurm.glob("sbatch-*")) and load_all(tmp_path / "s.zarr") == []  # nothing submitted
    (call,) = (fake_slurm / "sinfo-calls").read_text().splitlines()  # one sinfo call
    assert "--format=%P|%c|%m|%G|%l" in call
    assert ("--partition=long" in call) == ("launcher.partition=long" in overrides)


def test_a_refused_request_leaves_no_new_store_behind(fake_slurm, tmp_path):
    """QA: `launch launcher=slurm` with more CPUs than any node made the store, then refused to submit."""
    (fake_slurm / "sinfo.txt").write_text(SMALL_NODE)
    store = tmp_path / "new.zarr"
    r = run_app("launch", *PLANTED, "sweep.num_models=4", f"store.path={store}", cwd=tmp_path)
    assert r.returncode == 2 and "launcher.cpus_per_task=4: no node of partition debug" in r.stderr, r.stderr
    assert not store.exists() and not list(fake_slurm.glob("sbatch-*"))
    r = run_app("launch", *PLANTED, "sweep.num_models=4", "launcher.cpus_per_task=2", "launcher.mem_gb=1",
                f"store.path={store}", cwd=tmp_path)
    assert r.returncode == 0 and store.exists(), r.stderr
    # the partition's nodes are logged once, by the submission
    assert r.stdout.count("partition debug (sinfo)") == 1, r.stdout


def test_a_request_that_fits_is_submitted_and_the_partition_logged(fake_slurm, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    (fake_slurm / "sinfo.txt").write_text(SMALL_NODE)
    m = _submit(tmp_path, "launcher.cpus_per_task=2", "launcher.mem_gb=1.5")
    assert m is not None and [a.job_id for a in m.arrays] == ["4242"]
    assert "partition debug (sinfo): nodes of 2 CPUs, 1.9 GB, 0 GPUs; time limit none" in caplog.text
    # the default partition is the one sinfo marks '*': 'long' (1 day) does not limit a task of partition debug
    m = _submit(tmp_path, "launcher.cpus_per_task=2", "launcher.mem_gb=1", "launcher.timeout_min=2000",
                store="t.zarr")
    assert m is not None


def test_cpus_memory_and_gpus_must_fit_on_one_node(fake_slurm, tmp_path):
    (fake_slurm / "sinfo.txt").write_text(GPU_NODES + "mix|64|512000|(null)|infinite\nmix|16|64000|gpu:4|infinite\n")
    # partition mix: 32 CPUs exist, GPUs exist, never on the same node
    with pytest.raises(ConfigError, match=r"launcher.gpus_per_task=1, launcher.cpus_per_task=32, launcher.mem_gb=8: "
                                          r"no node of partition mix has all of them at once \(its nodes: 16 CPUs, "
                                          r"62.5 GB, 4 GPUs; 64 CPUs, 500 GB, 0 GPUs\)"):
        _submit(tmp_path, "launcher.partition=mix", "launcher.gpus_per_task=1", "launcher.cpus_per_task=32")
    with pytest.raises(ConfigError, match="no node of partition gpu has more than 4 GPUs"):
        _submit(tmp_path, "launcher.partition=gpu", "launcher.gpus_per_task=8")
    # partition=cpu,gpu: refused only if neither can run it; here gpu can
    assert _submit(tmp_path, "launcher.partition='cpu,gpu'", "launcher.gpus_per_task=2", "launcher.cpus_per_task=8",
                   "launcher.mem_gb=32", "launcher.timeout_min=240", store="t.zarr") is not None


def test_when_sinfo_cannot_tell_the_submission_goes_on_with_a_warning(fake_slurm, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    (fake_slurm / "bin" / "sinfo").write_text("#!/bin/sh\necho 'sinfo: error: Unable to contact slurm controller' >&2\n"
                                              "exit 1\n")
    assert _submit(tmp_path) is not None  # 4 CPUs asked: not checked, submitted
    assert "not checked against the partition: sinfo failed: sinfo: error: Unable to contact" in caplog.text
    (fake_slurm / "bin" / "sinfo").write_text("#!/bin/sh\ntrue\n")  # lists nothing (e.g. a hidden partition)
    assert _submit(tmp_path, "launcher.partition=hidden", store="t.zarr") is not None
    assert "sinfo lists no node of partition hidden" in caplog.text
    (fake_slurm / "bin" / "sinfo").write_text('#!/bin/sh\necho "debug*|2+|1937+|gpu|n/a"\n')  # not pinned down
    assert _submit(tmp_path, "launcher.cpus_per_task=64", "launcher.gpus_per_task=1", store="u.zarr") is not None
    assert "partition debug (sinfo): nodes of ? CPUs, ? GB, ? GPUs; time limit unknown" in caplog.text


def test_a_dry_run_asks_sinfo_and_is_refused_the_same_way(fake_slurm, tmp_path):
    (fake_slurm / "sinfo.txt").write_text(SMALL_NODE)
    r = run_app("launch", *PLANTED, f"store.path={tmp_path / 's.zarr'}", "launch.dry_run=true", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "error: launcher.cpus_per_task=4: no node of partition debug has more than 2 CPUs" in r.stderr
    assert not (tmp_path / "s.zarr").exists()


def test_sinfo_fields():
    assert resources.gpu_count("(null)") == 0 and resources.gpu_count("gpu:4") == 4
    assert resources.gpu_count("gpu:a100:2(S:0-1),gpu:v100:2,mps:400") == 4 and resources.gpu_count("gpu") is None
    minutes = resources.time_limit_minutes
    assert minutes("infinite") == math.inf and minutes("UNLIMITED") == math.inf and minutes("n/a") is None
    assert minutes("2:00:00") == 120 and minutes("1-00:00:00") == 1440 and minutes("30") == 30
    assert minutes("30:30") == 30.5 and minutes("2-12") == 3600 and minutes("1-2:30") == 1590
    (a, b) = resources.parse_sinfo("debug*|2|1937|(null)|infinite\nbig|8+|N/A|gpu:2|1:00:00\nnot a line\n")
    assert (a.partition, a.default, a.cpus, a.mem_mb, a.gpus) == ("debug", True, 2, 1937, 0)
    assert (b.partition, b.default, b.cpus, b.mem_mb, b.gpus, b.time_limit_min) == ("big", False, None, None, 2, 60)


# ---- 2. launch.status: pending reasons, and those that never resolve -------------------------------------------
def test_status_shows_pending_reasons_and_flags_those_that_never_resolve(fake_slurm, tmp_path):
    store_path = tmp_path / "s.zarr"
    cfg = compose([*PLANTED, "sweep.num_models=10", f"store.path={store_path}", "launcher.rows_per_task=2",
                   "launcher.cpus_per_task=2", "launcher.mem_gb=1"])
    submit(cfg, open_store(cfg))  # 4242: tasks 0-4
    (fake_slurm / "squeue.txt").write_text("4242_[0-1]|PENDING|Priority|dt-planted\n"
                                           "4242_[2-4]|PENDING|PartitionConfig|dt-planted\n")
    r = run_app("launch.status", f"store.path={store_path}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "3 PENDING (PartitionConfig), 2 PENDING (Priority)" in out
    assert "4242: 3 tasks PENDING (PartitionConfig): no node of the partition has the CPUs, memory or GPUs" in out
    assert "change launcher.cpus_per_task, launcher.mem_gb, launcher.gpus_per_task or launcher.partition" in out
    assert "scancel --state=PENDING 4242" in out and f"python -m launch.resume store.path={store_path}" in out
    assert "Priority):" not in out  # a transient reason is shown, not flagged
    calls = (fake_slurm / "squeue-calls").read_text().splitlines()
    assert len(calls) == 1 and "--format=%i|%T|%r|%j" in calls[0]  # one squeue call, the reason in it
    # nothing flagged when every reason resolves by itself
    (fake_slurm / "squeue.txt").write_text("4242_[0-4]|PENDING|ReqNodeNotAvail, Reserved for maintenance|dt-planted\n")
    out = run_app("launch.status", f"store.path={store_path}", cwd=tmp_path).stdout
    assert "5 PENDING (ReqNodeNotAvail, Reserved for maintenance)" in out and "never start" not in out


def test_never_starting_reasons():
    for reason, key in (("PartitionTimeLimit", "launcher.timeout_min"), ("BadConstraints", "launcher.constraint"),
                        ("QOSMaxWallDurationPerJobLimit", "launcher.timeout_min"), ("InvalidQOS", "launcher.qos"),
                        ("AssocMaxWallDurationPerJobLimit", "launcher.timeout_min"),
                        ("InvalidAccount", "launcher.account"), ("QOSMaxCpuPerJobLimit", "launcher.cpus_per_task"),
                        ("PartitionNodeLimit", "launcher.partition"), ("QOSMaxMemoryPerJob", "launcher.mem_gb"),
                        ("ReqNodeNotAvail, UnavailableNodes:node[01-02]", "launcher.partition")):
        assert key in pending.never_starts(reason)[0], reason
    for reason in ("Priority", "Resources", "JobArrayTaskLimit", "JobHeldUser", "QOSMaxJobsPerUserLimit",
                   "ReqNodeNotAvail, Reserved for maintenance", "AssocGrpCpuLimit", "BeginTime"):
        assert pending.never_starts(reason) is None, reason


# ---- 3. a CUDA recipe needs a GPU: launcher=slurm_gpu --------------------------------------------------------------
def test_a_cuda_recipe_without_a_gpu_is_refused_naming_the_fix(fake_slurm, tmp_path):
    store = tmp_path / "s.zarr"
    # source.root does not exist: a dry run reads no data
    r = run_app("launch", *IMAGENET, "launcher=slurm", f"source.root={tmp_path / 'no-betons'}", f"store.path={store}",
                cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "error: launcher.gpus_per_task=0, but this recipe runs on CUDA (train.amp=true" in r.stderr
    assert "launcher=slurm_gpu" in r.stderr and "launcher.gpus_per_task=1" in r.stderr
    assert not store.exists() and not list(fake_slurm.glob("sbatch-*"))
    for extra in (["compute.device=cuda"], ["train.amp=false", "compute.device=cuda:0"]):
        with pytest.raises(ConfigError, match="launcher.gpus_per_task=0, but this recipe runs on CUDA"):
            validate(compose(["launcher=slurm", *extra]))
    # CPUs on purpose, GPUs asked through sbatch options, planted rows (no training): accepted
    validate(compose(["launcher=slurm", "train.amp=true", "compute.device=cpu"]))
    validate(compose(["launcher=slurm", "train.amp=true", "+launcher.additional_parameters.gres=gpu:1"]))
    validate(compose(["launcher=slurm", "experiment=planted", "compute.device=cuda"]))


def test_slurm_gpu_plans_gpu_tasks_for_imagenet_transfer(fake_slurm, tmp_path):
    (fake_slurm / "sinfo.txt").write_text(GPU_NODES)
    store = tmp_path / "s.zarr"
    r = run_app("launch", *IMAGENET, "launcher=slurm_gpu", "launcher.partition=gpu",
                f"source.root={tmp_path / 'no-betons'}", f"store.path={store}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "7540 rows -> 7540 tasks of <= 1 row -> 1508 arrays of <= 5 tasks (MaxArraySize)" in r.stdout
    assert "per task: 8 CPUs, 1 GPU, mem 32GB, time limit 120 min, partition gpu;" in r.stdout
    assert "partition gpu (sinfo): nodes of 16 CPUs, 62.5 GB, 4 GPUs; time limit 240 min" in r.stdout
    assert "dry run: nothing submitted" in r.stdout and not store.exists()
    # the preset is what the refusal says it is
    launcher = compose(["launcher=slurm_gpu"]).launcher
    assert GPU_PRESET == (f"{launcher.gpus_per_task} GPU, {launcher.cpus_per_task} CPUs, {launcher.mem_gb:g} GB, "
                          f"{launcher.timeout_min} min a task")


# ---- 4. the requeue signal and the job name ------------------------------------------------------------------------
@pytest.mark.parametrize("overrides,message", [
    (["launcher.timeout_min=1", "launcher.signal_delay_s=90"],
     "launcher.signal_delay_s: 90 s is not shorter than the time limit (launcher.timeout_min=1 = 60 s)"),
    (["launcher.timeout_min=2", "launcher.signal_delay_s=120"], "set launcher.signal_delay_s<120"),
    (["launcher.job_name='my sweep'"], "launcher.job_name='my sweep' has characters a Slurm job name cannot have"),
    (["launcher.job_name='dt|x'"], "use only letters, digits and . _ + -, e.g. launcher.job_name=dt-x"),
    (["launcher.job_name=dt/x"], "('/')"),
    (["name='paper run'"], "the default name dt-<name> = 'dt-paper run' (from name='paper run')"),
])
def test_signal_delay_and_job_name_are_checked(overrides, message):
    with pytest.raises(ConfigError) as e:
        validate(compose(["launcher=slurm", *overrides]))
    assert message in str(e.value)


def test_good_job_names_pass(fake_slurm, tmp_path):
    validate(compose(["launcher=slurm", "launcher.job_name=dt-paper_v2.1+ft", "launcher.timeout_min=2",
                      "launcher.signal_delay_s=119"]))
    m = _submit(tmp_path, "name=planted.v2")  # the default name, dt-<name>
    assert m.job_name == "dt-planted.v2"


# ---- the same check before `python -m aggregate` submits its own arrays --------------------------------------------
@pytest.mark.parametrize("overrides,message", [
    (["launcher=slurm"], "error: launcher.cpus_per_task=4: no node of partition debug has more than 2 CPUs; "
                         "set launcher.cpus_per_task<=2"),
    (["estimator=lasso", "estimator.fanout.launcher=slurm", "estimator.fanout.slurm.cpus_per_task=1"],
     "error: estimator.fanout.slurm.mem_gb=8: no node of partition debug has more than 1937 MB of memory; "
     "set estimator.fanout.slurm.mem_gb<=1.89"),
])
def test_aggregate_on_slurm_refuses_a_request_no_node_can_run(fake_slurm, tmp_path, overrides, message):
    # such an array would wait PENDING (PartitionConfig) for good, and the aggregation with it
    from planted import make_planted_store

    (fake_slurm / "sinfo.txt").write_text(SMALL_NODE)
    p = make_planted_store(tmp_path / "s.zarr", rows=20, units=4, n=(5,))
    r = run_app("aggregate", f"store.path={p.store.path}", "diagnostics.enabled=false", *overrides, cwd=tmp_path,
                timeout=180)
    assert r.returncode == 2 and message in r.stderr, r.stderr[-2000:]
    assert not list(fake_slurm.glob("sbatch-*")) and not (tmp_path / "influence.zarr").exists()
    assert not list(tmp_path.glob(".influence.zarr.*"))  # nothing written, no submitit folder left
