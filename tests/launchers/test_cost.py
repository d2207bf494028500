"""Seconds per row for launch.dry_run from saved bench results: this processor's when it was measured, else the
device kind's, labelled as measured on another processor; what the completed rows cost, with the wall time they
took and how many ran at a time."""

import json
import re
import time

from datatransfer.launchers.cost import bench_file, from_bench, spent
from datatransfer.launchers.slurm.status import RowCounts, _cost_lines
from datatransfer.store.provenance import RowRun
from datatransfer.store.sweep_store import Store
from tests.store.test_store import make_spec, row_payload


def _save(path, processor, seconds):
    result = {"threads": 1, "runners": {"K=8 amp": {"models_per_process": 8, "amp": True, "seconds_per_row": seconds},
                                        "K=1 fp32": {"models_per_process": 1, "amp": False, "seconds_per_row": 4.0}}}
    if processor is not None:
        result["processor"] = processor
    path.write_text(json.dumps(result))


def test_this_processors_result_is_preferred_and_another_is_labelled(tmp_path):
    assert from_bench("cpu", 8, True, tmp_path, model="Chip A") is None
    _save(bench_file("cpu", "", tmp_path), None, 2.8)  # saved before the processor was recorded
    seconds, threads, label = from_bench("cpu", 8, True, tmp_path, model="Chip A")
    assert (seconds, threads) == (2.8, 1)
    assert "a processor it did not record, not this machine's Chip A" in label
    _save(bench_file("cpu", "Chip A", tmp_path), "Chip A", 3.3)
    assert bench_file("cpu", "Chip A", tmp_path).name == "models_per_hour-cpu-chip-a.json"
    seconds, _, label = from_bench("cpu", 8, True, tmp_path, model="Chip A")
    assert seconds == 3.3 and label.endswith("on Chip A")
    seconds, _, label = from_bench("cpu", 8, True, tmp_path, model="Chip B")  # not measured: the kind's file
    assert seconds == 2.8 and "not this machine's Chip B" in label
    seconds, _, _ = from_bench("cpu", 2, False, tmp_path, model="Chip A")  # nearest K of the precision asked
    assert seconds == 4.0
    bench_file("cpu", "Chip A", tmp_path).write_text(json.dumps({"processor": "Chip A", "runners": {}}))
    seconds, _, label = from_bench("cpu", 8, True, tmp_path, model="Chip A")  # nothing of that precision: the kind's
    assert seconds == 2.8 and "not this machine's Chip A" in label


def test_a_bench_result_of_another_recipe_is_labelled_so(tmp_path):
    """QA: a dry run of train.epochs=1 was costed at the bench's 2-epoch seconds per row without a word."""
    from datatransfer.config import compose

    _save(bench_file("cpu", "Chip A", tmp_path), "Chip A", 3.3)  # recorded no overrides: the mini recipe
    _, _, label = from_bench("cpu", 8, True, tmp_path, model="Chip A", cfg=compose(["experiment=mini"]))
    assert label.endswith("on Chip A")
    _, _, label = from_bench("cpu", 8, True, tmp_path, model="Chip A",
                             cfg=compose(["experiment=mini", "train.epochs=1", "model.width=16"]))
    assert "for the mini recipe, not this sweep's (model.width: 10 -> 16; train.epochs: 3 -> 1)" in label


def test_status_cost_counts_the_rows_that_ran_at_once(tmp_path):
    store = Store.create_or_open(tmp_path / "s.zarr", make_spec(rows=12))
    t0 = time.time()
    for row in range(4):  # 4 rows at once, each ~20 s (its end is when it is written: now)
        outs, preds, stats = row_payload(store, row)
        store.write_row(row, outs, preds, {**stats, "total_seconds": 20.0}, run=RowRun(start_time=t0 - 20, threads=1))
    done = spent(store)
    assert done.rows == 4 and 19.9 < done.seconds_per_row < 21
    assert 19.9 < done.elapsed < 21 and 3.9 < done.concurrency < 4.1 and done.parallel == 4
    text = "\n".join(_cost_lines(store, RowCounts(12, 4, 0, 0, 0, 8, []), done))
    assert re.search(r"wall time 2\d s measured, the first row's start to the last row's end \(4\.0 rows at a "
                     r"time", text), text
    # the 8 rows left at ~20 s each: ~40 s four at a time, ~160 s (3 min) in one process
    assert re.search(r"cost of the 8 rows left: 0\.04 CPU-hours \(4\d s at the 4 row\(s\) at a time seen so far, "
                     r"3 min in one process\)", text), text


def test_a_batched_group_in_progress_is_costed_by_each_rows_share_of_the_training(tmp_path):
    """QA: with K rows trained together, the group's first committed row spans the whole training (the spans of a
    group sum to its wall time), so while the group is in progress the mean span overstated a row's cost."""
    store = Store.create_or_open(tmp_path / "s.zarr", make_spec(rows=12))
    t0 = time.time()
    # a group of 4: 40 s of training together, then 1 s of transfers each; 2 of its rows committed so far
    for row, (start, share) in enumerate([(t0 - 42, 11.0), (t0 - 1, 11.0)]):
        outs, preds, stats = row_payload(store, row)
        store.write_row(row, outs, preds, {**stats, "total_seconds": share}, run=RowRun(start_time=start, threads=1,
                                                                                       models=4))
    done = spent(store)
    assert done.rows == 2 and 10.9 < done.seconds_per_row < 11.1  # not (42 + 1) / 2
    assert 41.9 < done.elapsed < 43


def test_a_short_local_run_s_throughput_is_over_its_own_span(tmp_path):
    """QA: 8 rows done in 14 s showed '0.8 rows/min over the last 10 min'; a store never submitted to Slurm now
    measures from its first row's start."""
    from datatransfer.launchers.slurm.status import report

    store = Store.create_or_open(tmp_path / "s.zarr", make_spec(rows=12))
    t0 = time.time()
    for row in range(8):
        store.write_row(row, *row_payload(store, row), run=RowRun(start_time=t0 - 14 + row, threads=1))
    text = report(str(store.path))[0]
    rate = float(re.search(r"throughput: ([\d.]+) rows/min over the last (\d+) s", text).group(1))
    assert 25 < rate < 40, text  # 8 rows in ~14 s: ~34 rows/min


def test_a_slurm_sweep_is_costed_on_the_device_its_tasks_get_not_the_login_node_s(tmp_path):
    """QA: a dry run of a GPU sweep (launcher=slurm_gpu) from a CPU-only login node was costed in CPU-hours from the
    mini CPU bench, "8 thread(s) a process"."""
    import torch

    from datatransfer.config import compose
    from datatransfer.launchers.cost import estimate
    from datatransfer.train.loop import resolve_device

    assert not torch.cuda.is_available()  # this machine plans like a login node
    gpu = compose(["experiment=imagenet_transfer", "source.root=/data/betons", "launcher=slurm_gpu"])
    assert estimate(gpu, None, 100, 8, 10).device_type == "cuda"
    line = estimate(gpu, None, 100, 8, 10).lines()[0]
    assert "GPU-hours (one GPU a process)" in line and "CPU" not in line
    # its data is not on this machine: the size is not projected, and the cost is printed all the same
    assert "store size on disk: new store: not projected: " in estimate(gpu, None, 100, 8, 10).lines()[1]
    cpu = compose(["experiment=mini", "launcher=slurm"])  # no GPU asked: the tasks run on CPUs
    assert estimate(cpu, None, 100, 1, 10).device_type == "cpu"
    assert "CPU-hours (1 thread(s) a process)" in estimate(cpu, None, 100, 1, 10).lines()[0]
    assert estimate(compose(["experiment=mini"]), None, 10, 1, 2).device_type == resolve_device("auto").type


def test_status_reads_the_completion_flags_once(tmp_path, monkeypatch):
    """launch.status read every row's completion flag once per figure it printed (seven times: 10 s of a 22 s status
    at 7,540 planted rows); the cost and size lines reuse the flags the row counts read."""
    from datatransfer.launchers.slurm.status import report

    store = Store.create_or_open(tmp_path / "s.zarr", make_spec(rows=12))
    for row in range(4):
        store.write_row(row, *row_payload(store, row), run=RowRun(start_time=time.time() - 1, threads=1))
    reads = []
    completed = Store.completed
    monkeypatch.setattr(Store, "completed", lambda self: reads.append(1) or completed(self))
    text, counts, done = report(str(store.path))
    assert counts.completed == 4 and done.rows == 4 and "projected when its 12 rows are complete" in text, text
    assert len(reads) == 1, len(reads)


def test_planted_rows_are_costed_by_their_sleep_and_example_units_are_labelled(tmp_path):
    """QA: a planted dry run was costed at the mini bench's 2.7 s a row (its rows take ~0.01 s), and an
    example-level sweep took the class-level bench's rows without saying so."""
    from datatransfer.config import compose
    from datatransfer.launchers.cost import estimate

    planted = compose(["experiment=planted", "row.seconds_per_row=0.25", f"store.path={tmp_path / 'p.zarr'}"])
    c = estimate(planted, None, 400, 1, 2)
    assert c.seconds_per_row == 0.25 and "row.seconds_per_row: planted rows train nothing" in c.source
    _save(bench_file("cpu", "Chip A", tmp_path), "Chip A", 3.0)
    _, _, label = from_bench("cpu", 8, True, tmp_path, model="Chip A",
                             cfg=compose(["experiment=mini", "sweep=example_subsets"]))
    assert "not this sweep's (sweep.unit: 'class' -> 'example')" in label


def test_cpus_of_one_model_name_and_other_vector_extensions_keep_their_own_results(tmp_path):
    """QA: an AVX2-only AMD EPYC was costed from the AVX-512 BF16 AMD EPYC's file (both 'AMD EPYC'), whose rows
    ran 2x faster in a precision the AVX2 machine does not use."""
    import platform

    from datatransfer.launchers.cost import CPU_EXTENSIONS, processor

    name = processor("cpu")
    if platform.system() == "Linux" and platform.machine() == "x86_64":
        assert any(name.endswith(f", {label}") for _, label in CPU_EXTENSIONS), name
    assert bench_file("cpu", "AMD EPYC, AVX2").name == "models_per_hour-cpu-amd-epyc-avx2.json"
    assert bench_file("cpu", "AMD EPYC, AVX2") != bench_file("cpu", "AMD EPYC, AVX-512 BF16")
