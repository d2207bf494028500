"""`python -m launch.verify` on real stores with real damage (truncated and garbage chunks, a deleted masks chunk,
broken metadata), its invalidation and the rerun that repairs; and aggregation leaving an undecodable row out."""

import re
import subprocess

import numpy as np
import pytest
import zarr
from conftest import run_app
from test_store import make_spec, row_payload

from datatransfer.store.spec import TargetSpec
from datatransfer.store.sweep_store import Store
from datatransfer.store.verify import verify

PLANTED = ["experiment=planted", "sweep.num_models=8", "row.units=20", "row.examples=[6]", "launcher.workers=1"]


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory):
    """An 8-row planted store made by the app (seconds)."""
    path = tmp_path_factory.mktemp("planted") / "store.zarr"
    r = run_app("launch", *PLANTED, f"store.path={path}")
    assert r.returncode == 0, r.stderr[-3000:]
    return path


@pytest.fixture
def store(planted_store, tmp_path):
    path = tmp_path / "store.zarr"
    subprocess.run(["cp", "-r", str(planted_store), str(path)], check=True)
    return path


def chunk(path, row, target="t0"):
    return path / "outputs" / target / "c" / str(row) / "0" / "0" / "0"


def test_an_intact_store_passes(store):
    r = run_app("launch.verify", f"store.path={store}")
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "8 rows, 8 completed" in r.stdout and "damaged rows: 0" in r.stdout and "no damage found" in r.stdout
    assert "masks: as the sweep's config gives them" in r.stdout and "metadata: consistent" in r.stdout


def test_damaged_outputs_are_found_invalidated_and_recomputed(store, planted_store):
    truncated, garbage = chunk(store, 3), chunk(store, 6)
    truncated.write_bytes(truncated.read_bytes()[:7])  # cut short, as by a full disk
    garbage.write_bytes(b"\x00garbage\xff" * 5)
    r = run_app("launch.verify", f"store.path={store}")
    assert r.returncode == 1, r.stdout + r.stderr[-3000:]
    assert "damaged rows: 2 (3, 6)" in r.stdout
    assert re.search(rf"row 3: outputs/t0: {re.escape(str(truncated))}: cannot be decoded", r.stdout), r.stdout
    assert re.search(rf"row 6: outputs/t0: {re.escape(str(garbage))}: cannot be decoded", r.stdout), r.stdout
    assert "verify.invalidate=true" in r.stdout and Store.open(store).completed().all()  # nothing changed

    r = run_app("launch.verify", f"store.path={store}", "verify.invalidate=true")
    assert r.returncode == 1, r.stdout + r.stderr[-3000:]  # damage was found (and cleared)
    assert "invalidated: cleared completed of rows 3, 6" in r.stdout
    assert list(np.flatnonzero(~Store.open(store).completed())) == [3, 6]

    r = run_app("launch", *PLANTED, f"store.path={store}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "6 of 8 rows already complete, 2 to run" in r.stdout
    r = run_app("launch.verify", f"store.path={store}")
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    for row in (3, 6):  # recomputed: the same bytes as before the damage
        assert chunk(store, row).read_bytes() == chunk(planted_store, row).read_bytes()


def test_a_deleted_masks_chunk_is_found_rewritten_and_its_rows_recomputed(store, planted_store):
    masks = store / "masks" / "c" / "0" / "0"
    masks.unlink()  # the whole (8, 20) block: it reads back as all False
    assert not Store.open(store).masks.any()
    r = run_app("launch.verify", f"store.path={store}")
    assert r.returncode == 1, r.stdout + r.stderr[-3000:]
    assert "mask mismatches: 8 rows (0-7) differ from the masks of the sweep's config" in r.stdout
    assert f"{masks}: missing: reads as all False (rows 0-7)" in r.stdout

    r = run_app("launch.verify", f"store.path={store}", "verify.invalidate=true")
    assert r.returncode == 1 and "masks rewritten from the sweep's config" in r.stdout, r.stdout
    again = Store.open(store)
    assert np.array_equal(again.masks, Store.open(planted_store).masks) and not again.completed().any()
    r = run_app("launch", *PLANTED, f"store.path={store}")
    assert r.returncode == 0 and "0 of 8 rows already complete, 8 to run" in r.stdout, r.stdout + r.stderr[-3000:]
    assert run_app("launch.verify", f"store.path={store}").returncode == 0
    assert np.array_equal(Store.open(store).outputs("t0")[:], Store.open(planted_store).outputs("t0")[:])


def test_unreadable_metadata_is_an_error_naming_the_file(store):
    meta = store / "outputs" / "t0" / "zarr.json"
    meta.write_text(meta.read_text()[:50])
    r = run_app("launch.verify", f"store.path={store}")
    assert r.returncode == 2 and re.search(rf"^error: {re.escape(str(meta))} cannot be read", r.stderr, re.M), \
        r.stdout + r.stderr[-3000:]
    assert "Traceback" not in r.stderr


def test_inconsistent_metadata_is_damage(store):
    g = zarr.open_group(str(store), mode="r+")
    g.attrs.update({"unit_names": [*g.attrs["unit_names"], "extra"]})
    del g.attrs["created"]
    report = verify(store)
    assert report.damage_found and not report.damaged
    text = report.text()
    assert f"{store / 'masks'}: shape (8, 20), expected (8, 21)" in text
    assert "root attribute 'created' missing" in text and "not repaired by verify.invalidate" in text


def test_every_per_row_array_and_added_targets_are_checked(tmp_path):
    """row_stats, provenance, predictions, completion flags, and a target added later (its own flag)."""
    path = tmp_path / "s.zarr"
    store = Store.create_or_open(path, make_spec(rows=6))
    for r in range(6):
        store.write_row(r, *row_payload(store, r))
    store.add_targets([TargetSpec("late", np.arange(4) % 3, ["a", "b", "c"])], {"late": {"config": {}}})
    late = store.scoped(["late"])
    for r in (0, 1, 2):
        late.write_row(r, {"late": np.zeros((2, 2, 4), np.float32)}, {"late": np.zeros((2, 4), np.int32)}, {})
    (path / "row_stats" / "c" / "1" / "0").write_bytes(b"")
    (path / "provenance" / "info" / "c" / "2").write_bytes(b"junk")
    chunk(path, 4, "t1").unlink()  # a completed row whose outputs are gone: NaN
    (path / "completed" / "c" / "5").write_bytes(b"junk")
    (path / "outputs" / "late" / "c" / "1" / "0" / "0" / "0").write_bytes(b"junk")
    report = verify(path)
    found = {(d.row, d.array, d.flag) for d in report.damaged}
    assert found == {(1, "row_stats", "completed"), (2, "provenance/info", "completed"),
                     (4, "outputs/t1", "completed"), (5, "completed", "completed"),
                     (1, "outputs/late", "completed_targets/late")}
    text = report.text()
    assert "row 4: outputs/t1" in text and "its chunk file is missing" in text and "row 5: completed" in text

    verify(path, invalidate=True)
    again = Store.open(path)
    assert list(np.flatnonzero(~again.completed())) == [1, 2, 4, 5]
    assert list(again.target_completed("late")) == [True, False, True, False, False, False]
    assert not verify(path).damaged  # what is left completed is intact


def test_a_version_1_store_is_verified_without_provenance(tmp_path):
    from test_store import _as_version_1

    path = tmp_path / "s.zarr"
    store = Store.create_or_open(path, make_spec(rows=4))
    for r in range(4):
        store.write_row(r, *row_payload(store, r))
    _as_version_1(path)
    report = verify(path)
    assert report.format_version == 1 and not report.damage_found, report.text()


def test_aggregation_leaves_an_undecodable_row_out(store, tmp_path):
    masks = Store.open(store).masks
    # a row whose absence still leaves every unit in some rows and out of others
    row = next(r for r in range(8) if np.delete(masks, r, 0).any(0).all() and (~np.delete(masks, r, 0)).any(0).all())
    chunk(store, row).write_bytes(b"\x00garbage\xff" * 5)
    r = run_app("aggregate", f"store.path={store}", f"out={tmp_path / 'damaged.zarr'}")
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "used 7 of 8 rows" in r.stdout and "Traceback" not in r.stdout + r.stderr
    warned = [line for line in r.stdout.splitlines() if "left out of the rows used" in line]
    assert len(warned) == 1 and f"row {row} " in warned[0] and str(chunk(store, row)) in warned[0], r.stdout
    damaged = zarr.open_group(str(tmp_path / "damaged.zarr"), mode="r")
    assert damaged.attrs["rows_used"] == 7 and damaged.attrs["rows_unreadable"] == {"t0": [row]}
    assert row not in damaged["rows"][:] and row not in damaged["t0/rows"][:]

    # the same influences as from a store where that row simply is not completed
    zarr.open_group(str(store), mode="r+")["completed"][row] = False
    r = run_app("aggregate", f"store.path={store}", f"out={tmp_path / 'seven.zarr'}")
    assert r.returncode == 0, r.stderr[-3000:]
    seven = zarr.open_group(str(tmp_path / "seven.zarr"), mode="r")
    assert np.array_equal(seven["rows"][:], damaged["rows"][:])
    for name in ("fixed/softmax_gt/per_example", "full/is_correct/overall", "fixed/raw_margin/mean_output"):
        np.testing.assert_array_equal(seven[f"t0/{name}"][:], damaged[f"t0/{name}"][:])
    np.testing.assert_array_equal(seven["diagnostics/t0/aggregate_output"][:],
                                  damaged["diagnostics/t0/aggregate_output"][:])
