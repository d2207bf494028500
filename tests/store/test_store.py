import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from importlib import metadata

import numpy as np
import pytest
import zarr

from datatransfer.masks import mask_matrix
from datatransfer.store.provenance import RowRun, code_version
from datatransfer.store.sweep_store import (
    Store,
    StoreError,
    StoreSpec,
    TargetSpec,
    fingerprint,
)

MODES, KINDS = ["fixed", "full"], ["softmax_gt", "is_correct"]


def make_spec(rows=12, units=10, n=(7, 5), **sweep) -> StoreSpec:
    sweep_cfg = {"alpha": 0.5, "num_models": rows, "seed": 0, **sweep}
    cfg = {"sweep": sweep_cfg, "model": {"arch": "x"}, "launcher": {"name": "local"}}
    targets = [TargetSpec(f"t{i}", np.arange(k) % 3, ["a", "b", "c"]) for i, k in enumerate(n)]
    return StoreSpec(
        config=cfg, sweep_defining={"sweep": sweep_cfg, "model": cfg["model"]},
        unit_names=[f"u{i}" for i in range(units)], targets=targets, modes=MODES, output_kinds=KINDS,
        masks=mask_matrix(0, rows, units, 0.5),
    )


def row_payload(store: Store, row: int):
    """Deterministic, row-specific data, so a reader can tell whose data a row holds."""
    outs, preds = {}, {}
    for t in store.targets:
        n = store.outputs(t).shape[-1]
        outs[t] = np.full((len(MODES), len(KINDS), n), row, np.float32) + np.arange(n, dtype=np.float32) / 1000
        preds[t] = np.full((len(MODES), n), row % 3, np.int32)
    return outs, preds, {"source_accuracy": row / 100, "train_seconds": 1.0, "total_seconds": 2.0}


def test_create_layout_and_attrs(tmp_path):
    spec = make_spec()
    store = Store.create_or_open(tmp_path / "s.zarr", spec)
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    a = g.attrs
    assert a["format"] == "datatransfer-store" and a["format_version"] == 3
    assert re.fullmatch(r"[0-9a-f]{32}", a["store_id"]) and store.store_id == a["store_id"]
    assert a["fingerprint"] == fingerprint(spec.sweep_defining)
    assert a["targets"] == ["t0", "t1"] and a["modes"] == MODES and a["output_kinds"] == KINDS
    assert a["unit_names"] == [f"u{i}" for i in range(10)] and a["unit"] == "class"
    assert (g["masks"][:] == spec.masks).all() and g["masks"].metadata.dimension_names == ("row", "unit")
    assert g["outputs/t0"].shape == (12, 2, 2, 7) and g["outputs/t0"].chunks == (1, 2, 2, 7)
    assert g["outputs/t0"].metadata.dimension_names == ("row", "mode", "kind", "example_t0")  # store/coords.py
    assert g["predictions/t1"].shape == (12, 2, 5) and g["predictions/t1"].chunks == (1, 2, 5)
    assert g["completed"].chunks == (1,) and not g["completed"][:].any()
    assert list(g["targets/t0/labels"].attrs["class_names"]) == ["a", "b", "c"]
    assert "source_accuracy" in g["row_stats"].attrs["fields"]
    assert len(store.missing_rows()) == 12


def test_write_row_then_reopen_continues(tmp_path):
    spec = make_spec()
    store = Store.create_or_open(tmp_path / "s.zarr", spec)
    for r in (0, 5):
        store.write_row(r, *row_payload(store, r))
    again = Store.create_or_open(tmp_path / "s.zarr", spec)  # same fingerprint: reopen, nothing lost
    assert list(np.flatnonzero(again.completed())) == [0, 5]
    assert list(again.missing_rows()) == [1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    assert again.outputs("t0")[5, 1, 0, 0] == 5.0
    # rewriting a row is idempotent
    again.write_row(5, *row_payload(again, 5))
    assert again.outputs("t0")[5, 1, 0, 2] == pytest.approx(5.002)
    acc = again.target_accuracy("t0", np.array([0, 5]))
    assert acc.shape == (2, 2)


def test_different_sweep_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "s.zarr"
    store = Store.create_or_open(path, make_spec())
    store.write_row(3, *row_payload(store, 3))
    before = sorted(p.relative_to(path) for p in path.rglob("*"))
    with pytest.raises(StoreError) as e:
        Store.create_or_open(path, make_spec(alpha=0.25))
    assert "sweep.alpha: 0.5 -> 0.25" in str(e.value) and "untouched" in str(e.value)
    assert sorted(p.relative_to(path) for p in path.rglob("*")) == before
    assert Store.open(path).completed()[3]


def test_failed_creation_leaves_nothing(tmp_path):
    spec = make_spec()
    spec.unit_names = ["only-one"]  # inconsistent with the masks: creation fails part-way
    with pytest.raises(StoreError):
        Store.create_or_open(tmp_path / "s.zarr", spec)
    assert list(tmp_path.iterdir()) == []


def test_open_rejects_non_store(tmp_path):
    with pytest.raises(StoreError, match="no store"):
        Store.open(tmp_path / "nothing")
    zarr.open_group(str(tmp_path / "other"), mode="w")
    with pytest.raises(StoreError, match="not a datatransfer-store"):
        Store.open(tmp_path / "other")


def test_write_row_rejects_wrong_shapes(tmp_path):
    store = Store.create_or_open(tmp_path / "s.zarr", make_spec())
    outs, preds, stats = row_payload(store, 1)
    outs["t0"] = outs["t0"][:, :, :3]
    with pytest.raises(StoreError, match="shape"):
        store.write_row(1, outs, preds, stats)
    assert not store.completed()[1]


WRITER = textwrap.dedent(
    """
    import sys, json, time
    sys.path.insert(0, {tests!r})
    from test_store import row_payload
    from datatransfer.store.sweep_store import Store
    store = Store.open({path!r}, mode="r+")
    rows, hang_at = json.loads(sys.argv[1]), int(sys.argv[2])

    class HangBeforeCommit:  # the row's data is written; the writer stops before setting completed
        def __init__(self, group):
            self.group, self.shape = group, group["completed"].shape
        def __getitem__(self, key):
            return self if key == "completed" else self.group[key]
        def __setitem__(self, key, value):
            print("mid-row", flush=True)
            time.sleep(600)

    for i, r in enumerate(rows):
        if i == hang_at:
            store.group = HangBeforeCommit(store.group)
            store._arrays.clear()  # the handle caches opened arrays: look "completed" up through the hook
        store.write_row(r, *row_payload(store, r))
    """
)


def test_concurrent_writers_and_a_killed_writer(tmp_path):
    rows, n = 80, (2000, 1500)
    path = str(tmp_path / "s.zarr")
    Store.create_or_open(path, make_spec(rows=rows, n=n))
    order = np.random.default_rng(0).permutation(rows)
    shards = [order[i::5].tolist() for i in range(5)]  # 4 healthy writers + 1 to be killed, disjoint rows
    script = WRITER.format(tests=os.path.dirname(__file__), path=path)
    procs = [subprocess.Popen([sys.executable, "-c", script, json.dumps(s), str(2 if i == 4 else -1)],
                              stdout=subprocess.PIPE, text=True) for i, s in enumerate(shards)]
    victim = procs[4]
    assert victim.stdout.readline().strip() == "mid-row"  # its third row's data is written, not committed
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    for p in procs[:4]:
        assert p.wait(timeout=300) == 0
    store = Store.open(path)
    completed = store.completed()
    # healthy writers: every row complete
    assert all(completed[r] for s in shards[:4] for r in s)
    # victim: its first two rows are done; the one it was killed in, and all later ones, are missing
    assert [r for r in shards[4] if completed[r]] == shards[4][:2]
    assert sorted(store.missing_rows()) == sorted(shards[4][2:])
    assert store.outputs("t0")[shards[4][2], 0, 0, 0] == shards[4][2]  # its data was there, uncommitted
    # every completed row holds exactly its own data
    for r in np.flatnonzero(completed):
        expect, preds, stats = row_payload(store, int(r))
        for t in store.targets:
            np.testing.assert_array_equal(store.outputs(t)[r], expect[t])
            np.testing.assert_array_equal(store.predictions(t)[r], preds[t])
        assert store.row_stats()[r][0] == pytest.approx(stats["source_accuracy"])


def files(path):
    """Every file under ``path`` and its bytes."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_store_deleted_and_created_again_is_never_written_by_an_old_handle(tmp_path):
    path, spec = tmp_path / "s.zarr", make_spec()
    old = Store.create_or_open(path, spec)
    old.write_row(0, *row_payload(old, 0))
    shutil.rmtree(path)  # `rm -r STORE`
    with pytest.raises(StoreError, match=rf"row 1 not committed: the store at {re.escape(str(path))} is gone"):
        old.write_row(1, *row_payload(old, 1))
    assert not path.exists()  # nothing of the row was written: the folder is not made again
    new = Store.create_or_open(path, spec)  # the same sweep, at the same path: another store
    assert new.store_id != old.store_id and new.fingerprint == old.fingerprint
    new.write_row(2, *row_payload(new, 2))
    before = files(path)
    with pytest.raises(StoreError) as e:
        old.write_row(3, *row_payload(old, 3))
    assert str(path) in str(e.value) and "deleted and created again" in str(e.value)
    assert files(path) == before  # the new store is untouched
    assert list(np.flatnonzero(Store.open(path).completed())) == [2]
    new.write_row(3, *row_payload(new, 3))  # its own handles write as before


def test_each_row_records_its_provenance(tmp_path, monkeypatch):
    store = Store.create_or_open(tmp_path / "s.zarr", make_spec())
    monkeypatch.setenv("SLURM_JOB_ID", "4242_7")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    t0 = time.time()
    store.write_row(4, *row_payload(store, 4), run=RowRun(start_time=t0 - 5, device="cuda:1", threads=3))
    monkeypatch.delenv("SLURM_JOB_ID")
    store.write_row(6, *row_payload(store, 6))  # no run given: what the store can gather itself
    t1 = time.time()

    again = Store.open(tmp_path / "s.zarr")
    p = again.provenance(4)
    assert p["start_time"] == t0 - 5 and t0 <= p["end_time"] <= t1
    assert p["device"] == "cuda:1" and p["threads"] == 3 and p["host"] == socket.gethostname()
    assert (p["slurm_job_id"], p["slurm_array_job_id"], p["slurm_array_task_id"]) == ("4242_7", "4242", "7")
    assert p["code_version"] == code_version() and p["code_version"]  # this checkout's commit
    assert p["libraries"]["numpy"] == metadata.version("numpy") and p["libraries"]["zarr"] == zarr.__version__
    assert "torch" in p["libraries"]
    q = again.provenance(6)
    assert np.isnan(q["start_time"]) and q["device"] == "" and q["slurm_job_id"] == ""
    unwritten = again.provenance(5)  # a row not written: every value unknown
    assert np.isnan(unwritten["start_time"]) and np.isnan(unwritten["end_time"]) and unwritten["threads"] == -1
    assert unwritten["host"] == unwritten["code_version"] == "" and unwritten["libraries"] == {}

    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")  # plain zarr: named dims, JSON text per row
    info = g["provenance/info"]
    assert info.metadata.dimension_names == ("row",) and info.chunks == (1,) and info[5] == ""
    assert json.loads(str(info[4]))["device"] == "cuda:1" and g["provenance/threads"][4] == 3
    assert g["provenance/start_time"].dtype == np.float64 and g["provenance/threads"].dtype == np.int32
    times = again.completion_times()  # the rows' end times
    assert sorted(times) == sorted([p["end_time"], q["end_time"]])


def _as_version_1(path):
    """Make the store at ``path`` what format version 1 wrote: no store_id, no provenance arrays."""
    g = zarr.open_group(str(path), mode="r+")
    del g.attrs["store_id"]
    g.attrs.update({"format_version": 1})
    shutil.rmtree(path / "provenance")


def test_a_version_1_store_is_read_but_not_written(tmp_path):
    path, spec = tmp_path / "s.zarr", make_spec()
    store = Store.create_or_open(path, spec)
    for r in (0, 3, 5):
        store.write_row(r, *row_payload(store, r))
    _as_version_1(path)
    (path / "completed" / "c" / "5").write_bytes(b"")  # a crash's empty chunk: not a completion time
    before = files(path)
    old = Store.open(path)
    assert old.format_version == 1 and list(np.flatnonzero(old.completed())) == [0, 3]
    assert old.outputs("t0")[3, 0, 0, 0] == 3.0 and np.isnan(old.provenance(3)["end_time"])
    assert len(old.completion_times()) == 2  # the non-empty completed chunks' modification times
    with pytest.raises(StoreError, match=r"row 1 not written: .* format version 1 .*start a new store"):
        Store.open(path, mode="r+").write_row(1, *row_payload(old, 1))
    with pytest.raises(StoreError) as e:  # reopening it for the sweep: refused, naming the version
        Store.create_or_open(path, spec)
    assert "format version 1" in str(e.value) and "code that wrote it" in str(e.value) and str(path) in str(e.value)
    assert files(path) == before
