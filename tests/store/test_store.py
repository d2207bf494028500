import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import zarr

from datatransfer.masks import mask_matrix
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
    assert a["format"] == "datatransfer-store" and a["format_version"] == 1
    assert a["fingerprint"] == fingerprint(spec.sweep_defining)
    assert a["targets"] == ["t0", "t1"] and a["modes"] == MODES and a["output_kinds"] == KINDS
    assert a["unit_names"] == [f"u{i}" for i in range(10)] and a["unit"] == "class"
    assert (g["masks"][:] == spec.masks).all() and g["masks"].metadata.dimension_names == ("row", "unit")
    assert g["outputs/t0"].shape == (12, 2, 2, 7) and g["outputs/t0"].chunks == (1, 2, 2, 7)
    assert g["outputs/t0"].metadata.dimension_names == ("row", "mode", "kind", "example")
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
