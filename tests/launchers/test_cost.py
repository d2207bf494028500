"""Seconds per row for launch.dry_run from saved bench results: this processor's when it was measured, else the
device kind's, labelled as measured on another processor."""

import json

from datatransfer.launchers.cost import bench_file, from_bench


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
