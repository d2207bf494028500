"""Targets added later: the store format (docs/store-format.md, "Targets added later") and launch.add_targets,
which adds a target to an existing store's rows from their saved source models, training none."""

import hashlib
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import TINY, run_app
from test_store import make_spec, row_payload

from datatransfer.config import compose
from datatransfer.errors import StoreError
from datatransfer.launchers.slurm.status import added_target_lines
from datatransfer.masks import row_seed
from datatransfer.rows import trained
from datatransfer.rows.targets import TargetTransfer
from datatransfer.rows.worker import cpus_allotted, run_rows
from datatransfer.store import layout
from datatransfer.store.added_targets import add_targets
from datatransfer.store.lock import exclusive
from datatransfer.store.spec import TargetSpec
from datatransfer.store.sweep_store import Store
from datatransfer.train import backbones
from datatransfer.train.loop import make_runtime
from datatransfer.train.precision import resolve_amp


def _files(root: Path, skip=()) -> dict:
    """sha256 of every file under root (relative path -> digest), except under the ``skip`` prefixes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not str(p.relative_to(root)).startswith(skip)}


def g_example(path: Path) -> list:
    return zarr.open_group(str(path), mode="r")["outputs/example_new"][:].tolist()


def test_add_target_layout_scope_and_untouched_arrays(tmp_path):
    store = Store.create_or_open(tmp_path / "s.zarr", make_spec(rows=6))
    for row in (0, 2, 3):
        store.write_row(row, *row_payload(store, row))
    before = _files(store.path, skip=("zarr.json",))

    labels = np.array([0, 1, 1, 0, 2, 3, 3, 1, 0])
    record = {"config": {"targets": {"new": {"name": "new"}}}, "fingerprint": "f"}
    store.add_targets([TargetSpec("new", labels, ["w", "x", "y", "z"])], {"new": record})
    assert _files(store.path, skip=("zarr.json", "outputs/new", "predictions/new", "targets/new",
                                    "completed_targets", "outputs/example_new", "predictions/example_new")) \
        == before  # nothing old rewritten (the new target's example coordinates are new files)
    assert g_example(store.path) == list(range(9))

    g = zarr.open_group(str(store.path), mode="r")
    assert g.attrs["targets"] == ["t0", "t1"]  # the original targets, as format v1 readers know them
    assert g.attrs["added_targets"] == {"new": record}
    assert g["outputs/new"].shape == (6, 2, 2, 9) and g["outputs/new"].chunks == (1, 2, 2, 9)
    assert g["predictions/new"].shape == (6, 2, 9) and (g["targets/new/labels"][:] == labels).all()
    assert g["completed_targets/new"].chunks == (1,) and not g["completed_targets/new"][:].any()
    assert g["completed_targets/new"].metadata.dimension_names == ("row",)

    reopened = Store.open(store.path, mode="r+")
    assert reopened.targets == ["t0", "t1"] and reopened.all_targets == ["t0", "t1", "new"]
    assert list(np.flatnonzero(reopened.completed())) == [0, 2, 3]

    runnable = np.array([1, 1, 1, 1, 0, 1], dtype=bool)  # row 4 has no saved source model
    scoped = reopened.scoped(["new"], runnable)
    assert scoped.targets == ["new"] and list(scoped.missing_rows()) == [0, 1, 2, 3, 5]
    outs = {"new": np.full((2, 2, 9), 0.5, np.float32)}
    scoped.write_row(3, outs, {"new": np.ones((2, 9), np.int32)}, {"total_seconds": 1.0})
    assert scoped.row_done(3) and not scoped.row_done(2)
    assert list(scoped.missing_rows()) == [0, 1, 2, 5]
    assert list(np.flatnonzero(reopened.target_completed("new"))) == [3]
    assert added_target_lines(Store.open(store.path))[0].startswith("added target new: 1 of 6 rows completed")
    assert list(np.flatnonzero(Store.open(store.path).completed())) == [0, 2, 3]  # `completed` untouched
    assert Store.open(store.path).row_stats()[3][0] == pytest.approx(0.03)  # the row's stats too
    np.testing.assert_array_equal(g["outputs/new"][3], outs["new"])
    assert np.isnan(g["outputs/new"][0]).all() and (g["predictions/new"][0] == -1).all()

    with pytest.raises(StoreError, match="already has"):
        reopened.add_targets([TargetSpec("t1", labels, ["a"])], {"t1": record})
    with pytest.raises(StoreError, match="not added targets"):
        reopened.scoped(["t0"])


def test_uncommitted_addition_is_replaced(tmp_path):
    """Arrays of an addition whose attrs entry was never written (a crash in between) are made again."""
    store = Store.create_or_open(tmp_path / "s.zarr", make_spec(rows=3))
    group = zarr.open_group(str(store.path), mode="r+")
    group.require_group("outputs").create_array("new", shape=(3, 1), dtype="float32", fill_value=7.0)  # debris
    store.add_targets([TargetSpec("new", np.arange(4) % 2, ["a", "b"])], {"new": {"config": {}}})
    assert Store.open(store.path).outputs("new").shape == (3, 2, 2, 4)


# ---- launch.add_targets through the real app (in-memory mini data) -----------------------------------------------

# files an addition of target coarse creates (the original sweep's other files stay byte-identical)
ADDED_FILES = ("zarr.json", "claims/.add_targets.lock", "outputs/coarse", "predictions/coarse", "targets/coarse",
               "outputs/example_coarse", "predictions/example_coarse")  # the new target's coordinates


def test_add_targets_without_training(tmp_path, monkeypatch):
    store_path = tmp_path / "store.zarr"
    base = [*TINY, "sweep.num_models=2", "launcher.workers=1", f"store.path={store_path}"]
    r = run_app("launch", *base, "targets=[digits]", "store.save_backbones=true")
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in (store_path / "backbones").glob("row-*")) == ["row-0.pt", "row-1.pt"]
    # the dry run's projection prices a saved model as these are saved (within a file-system block)
    from datatransfer.config import compose
    from datatransfer.store.size import backbone_bytes, disk_bytes

    projected = backbone_bytes(compose([*base, "targets=[digits]", "store.save_backbones=true"]))
    assert abs(projected - disk_bytes(store_path / "backbones" / "row-0.pt")) <= 4096
    before = _files(store_path, skip=("zarr.json",))
    stats_before = Store.open(store_path).row_stats()[:]

    # a dry run checks and writes nothing
    r = run_app("launch.add_targets", *base, "targets=[coarse]", "launch.dry_run=true")
    assert r.returncode == 0 and "dry run: would add targets ['coarse']" in r.stdout, r.stdout + r.stderr[-3000:]
    # what it will cost: 2 transfers at the store's own transfer time per target (total - train seconds)
    stats = Store.open(store_path).row_stats()[:]
    per_target = float(np.mean(stats[:, 2].astype(float) - stats[:, 1]))
    assert (f"cost: 2 rows to run x {per_target:.1f} s/row (measured: this store's 2 completed rows transferred to "
            f"its 1 target(s) in {per_target:.2f} s a target, 1 target(s) added") in r.stdout, r.stdout
    assert "store size on disk: " in r.stdout
    assert "coarse" not in Store.open(store_path).all_targets and not (store_path / "outputs" / "coarse").exists()
    r = run_app("launch.add_targets", *base, "targets=[coarse]")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "add_targets: targets ['coarse'] (added now)" in r.stdout and "rows completed: 2 / 2" in r.stdout
    # every file of the original sweep is byte-identical: outputs, predictions, row_stats, completed, backbones
    after = _files(store_path, skip=ADDED_FILES + ("completed_targets",))
    assert after == before
    store = Store.open(store_path)
    np.testing.assert_array_equal(store.row_stats()[:], stats_before)  # train_seconds etc.: no new training
    assert store.targets == ["digits"] and store.all_targets == ["digits", "coarse"]
    assert store.target_completed("coarse").all()
    out = store.outputs("coarse")[:]
    assert np.isfinite(out).all()
    acc = store.target_accuracy("coarse", np.arange(2))
    assert (acc > 2 * 0.125).all(), acc  # 8 coarse classes
    record = store.attrs["added_targets"]["coarse"]
    assert record["config"]["targets"]["coarse"]["name"] == "coarse" and record["fingerprint"]

    # The added target's outputs are what the row would have computed had coarse been there from the start:
    # the source model is the saved one, and the transfer seed follows the target's position in the store.
    cfg = compose(base + ["targets=[digits,coarse]"])
    rt = make_runtime("cpu", resolve_amp(cfg), cpus_allotted())  # as the app's one worker process (same numbers)
    transfer = TargetTransfer(cfg, rt, {"digits": 0, "coarse": 1})
    transfer.datasets.pop("digits")
    outputs, predictions = transfer(backbones.load(layout.backbone(store_path, 1)), row_seed(0, 1))
    np.testing.assert_allclose(outputs["coarse"], out[1], rtol=1e-4, atol=1e-5)

    # Again: nothing to do. A different recipe for the same name, an original target, or source models trained
    # otherwise are refused, and nothing changes.
    again = add_targets(compose(base + ["targets=[coarse]"]))
    assert again.targets == ["coarse"] and len(again.missing_rows()) == 0
    for overrides, needle in ((["targets=[coarse]", "transfer.full.epochs=2"], "transfer.full.epochs"),
                              (["targets=[digits]"], "original targets"),
                              (["targets=[coarse]", "train.epochs=2"], "train.epochs")):
        with pytest.raises(StoreError, match=needle):
            add_targets(compose(base + overrides))
    assert _files(store_path, skip=ADDED_FILES + ("completed_targets",)) == before

    # A worker running added targets never trains a source model; rows without a saved one are skipped.
    def no_training(*args, **kwargs):
        raise AssertionError("adding targets trained a source model")

    monkeypatch.setattr(trained, "train_source", no_training)
    zarr.open_group(str(store_path), mode="r+")["completed_targets/coarse"][1] = False
    (store_path / "backbones" / "row-0.pt").unlink()
    zarr.open_group(str(store_path), mode="r+")["completed_targets/coarse"][0] = False
    cfg = compose(base + ["targets=[coarse]"])
    # row 1 is rerun; row 0 has no source model
    assert run_rows(cfg, str(store_path), [0, 1], threads=1, added_targets=["coarse"]) == 1
    assert list(Store.open(store_path).target_completed("coarse")) == [False, True]


def test_add_targets_needs_a_store(tmp_path):
    with pytest.raises(StoreError, match="existing store"):
        add_targets(compose(["targets=[coarse]", f"store.path={tmp_path / 'none.zarr'}"]))
    assert not (tmp_path / "none.zarr").exists()


def test_add_targets_refuses_a_store_that_can_never_have_a_saved_model(tmp_path):
    """QA: a store made without store.save_backbones got the target for good (0 of N rows, exit 0)."""
    store_path = tmp_path / "store.zarr"
    base = [*TINY, "sweep.num_models=2", "launcher.workers=1", "transfer.modes=[fixed]", f"store.path={store_path}"]
    assert run_app("launch", *base, "targets=[digits]").returncode == 0
    before = _files(store_path)
    for dry in (["launch.dry_run=true"], []):
        r = run_app("launch.add_targets", *base, "targets=[coarse]", *dry)
        assert r.returncode == 2 and "made without store.save_backbones=true and no row has a saved source model" \
            in r.stderr, r.stderr
    assert _files(store_path, skip=("claims/.add_targets.lock",)) == before
    assert "coarse" not in Store.open(store_path).all_targets


def _add_coarse(overrides, barrier, queue):
    from datatransfer.config import compose
    from datatransfer.store.added_targets import add_targets

    barrier.wait()
    try:
        store = add_targets(compose(overrides))
        queue.put(("ok", bool(store.targets == ["coarse"])))
    except Exception as e:  # reported to the test
        queue.put(("error", repr(e)))


def test_concurrent_additions_are_serialised(tmp_path, caplog):
    import logging
    import multiprocessing as mp

    store_path = tmp_path / "store.zarr"
    base = [*TINY, "sweep.num_models=2", "launcher.workers=1", f"store.path={store_path}"]
    r = run_app("launch", *base, "targets=[digits]", "transfer.modes=[fixed]", "store.save_backbones=true")
    assert r.returncode == 0, r.stderr[-3000:]
    overrides = base + ["targets=[coarse]", "transfer.modes=[fixed]"]
    ctx = mp.get_context("spawn")
    # an addition waits while another holds the store's addition lock, and writes nothing meanwhile
    barrier, queue = ctx.Barrier(1), ctx.Queue()
    with exclusive(layout.add_targets_lock(store_path)):
        waiting = ctx.Process(target=_add_coarse, args=(overrides, barrier, queue))
        waiting.start()
        time.sleep(5)
        assert queue.empty() and "coarse" not in Store.open(store_path).all_targets
    assert queue.get(timeout=120) == ("ok", True)
    waiting.join(timeout=60)
    shutil.rmtree(store_path / "outputs" / "coarse")  # undo that addition for the race below
    g = zarr.open_group(str(store_path), mode="r+")
    g.attrs.update({"added_targets": {}})
    barrier, queue = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_add_coarse, args=(overrides, barrier, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert results == [("ok", True)] * 4, results
    store = Store.open(store_path, mode="r+")
    assert store.added_targets == ["coarse"] and not store.target_completed("coarse").any()
    # a row of the added target completes; adding it again continues it and never wipes the row
    shape = store.outputs("coarse").shape
    store.scoped(["coarse"]).write_row(0, {"coarse": np.zeros(shape[1:], np.float32)},
                                       {"coarse": np.zeros((shape[1], shape[3]), np.int32)}, {})
    caplog.set_level(logging.INFO)
    add_targets(compose(overrides))
    assert "(added before)" in caplog.text and list(Store.open(store_path).target_completed("coarse")) == [True, False]
