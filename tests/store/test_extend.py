"""Extending a sweep: a higher sweep.num_models adds rows and changes nothing already computed."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from datatransfer.masks import mask_matrix
from datatransfer.store.sweep_store import Store, StoreError
from tests.conftest import run_app
from tests.store.test_store import make_spec, row_payload


def _files(path: Path) -> dict:
    """Every file of the store but metadata (zarr.json) and the masks' chunks, with its bytes."""
    return {p.relative_to(path): p.read_bytes() for p in path.rglob("*")
            if p.is_file() and p.name != "zarr.json" and "masks" not in p.parts and not p.name.startswith(".")}


def test_raising_num_models_adds_rows_and_keeps_existing_ones_byte_identical(tmp_path):
    path = tmp_path / "s.zarr"
    store = Store.create_or_open(path, make_spec(rows=12))
    for r in (0, 3, 11):
        store.write_row(r, *row_payload(store, r))
    before, old_fp = _files(path), store.fingerprint
    bigger = Store.create_or_open(path, make_spec(rows=20))
    assert bigger.num_rows == 20 and bigger.fingerprint != old_fp
    after = _files(path)
    assert all(after[k] == v for k, v in before.items())  # every existing chunk byte-identical
    assert np.array_equal(bigger.masks, mask_matrix(0, 20, 10, 0.5))
    assert list(np.flatnonzero(bigger.completed())) == [0, 3, 11]
    assert list(bigger.missing_rows()) == [1, 2, *range(4, 11), *range(12, 20)]
    for name in ("outputs/t0", "predictions/t1", "row_stats", "provenance/info", "provenance/end_time"):
        assert bigger.array(name).shape[0] == 20
    assert bigger.attrs["config"]["sweep"]["num_models"] == 20
    assert bigger.attrs["extended"][0]["from_rows"] == 12 and bigger.attrs["extended"][0]["to_rows"] == 20
    bigger.write_row(15, *row_payload(bigger, 15))  # a new row is written like any other
    assert Store.open(path).completed()[15]
    # the same (extended) config reopens it; the old one asks for fewer rows and is refused, store untouched
    assert Store.create_or_open(path, make_spec(rows=20)).num_rows == 20
    snapshot = _files(path)
    with pytest.raises(StoreError, match="never shortened"):
        Store.create_or_open(path, make_spec(rows=12))
    assert _files(path) == snapshot


def test_extension_of_a_store_with_bit_packed_masks_writes_packed_masks(tmp_path, monkeypatch):
    """Format 3 with packed masks: the new rows' masks are packed like the old ones (chunks of 5 rows here, so the
    extension crosses chunk boundaries), existing rows keep their bytes, and xarray still reads the store."""
    from datatransfer.store import mask_bits

    monkeypatch.setattr(mask_bits, "CHUNK_BYTES", 10)  # 2 bytes a row (10 units) -> 5 rows a chunk
    path = tmp_path / "s.zarr"
    spec = make_spec(rows=12)
    spec.pack_masks = True
    store = Store.create_or_open(path, spec)
    store.write_row(3, *row_payload(store, 3))
    masks = zarr.open_array(str(path / "masks"), mode="r")
    assert masks.dtype == np.uint8 and masks.shape == (12, 2) and masks.chunks == (5, 2)
    before = _files(path)
    old_chunks = {str(p.relative_to(path / "masks")): p.read_bytes() for p in (path / "masks" / "c").rglob("*")
                  if p.is_file()}
    assert sorted(old_chunks) == ["c/0/0", "c/1/0", "c/2/0"]
    bigger_spec = make_spec(rows=23)
    bigger_spec.pack_masks = True
    bigger = Store.create_or_open(path, bigger_spec)
    assert bigger.num_rows == 23
    masks = zarr.open_array(str(path / "masks"), mode="r")
    assert masks.dtype == np.uint8 and masks.shape == (23, 2) and masks.attrs["bitpacked"] and \
        masks.attrs["units"] == 10
    want = mask_matrix(0, 23, 10, 0.5)
    np.testing.assert_array_equal(masks[:], np.packbits(want, axis=1, bitorder="little"))  # packed on disk
    np.testing.assert_array_equal(bigger.masks, want)
    np.testing.assert_array_equal(bigger.mask(17), want[17])
    assert all(_files(path)[k] == v for k, v in before.items())
    now = {str(p.relative_to(path / "masks")): p.read_bytes() for p in (path / "masks" / "c").rglob("*")
           if p.is_file()}
    assert now["c/0/0"] == old_chunks["c/0/0"] and now["c/1/0"] == old_chunks["c/1/0"]  # full old chunks untouched
    assert sorted(now) == [f"c/{i}/0" for i in range(5)]
    assert list(np.flatnonzero(bigger.completed())) == [3]
    xr = pytest.importorskip("xarray")
    root = xr.open_zarr(path, consolidated=False)
    assert root["row"].values.tolist() == list(range(23)) and root["masks"].dims == ("row", "unit_byte")


def test_any_other_change_is_still_refused(tmp_path):
    path = tmp_path / "s.zarr"
    store = Store.create_or_open(path, make_spec(rows=12))
    store.write_row(2, *row_payload(store, 2))
    before = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    for other in (make_spec(rows=20, alpha=0.25), make_spec(rows=20, seed=1), make_spec(rows=24, scheme="bernoulli")):
        with pytest.raises(StoreError, match="different sweep"):
            Store.create_or_open(path, other)
    assert {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()} == before


def test_an_interrupted_extension_is_finished_by_the_next_open(tmp_path):
    path = tmp_path / "s.zarr"
    Store.create_or_open(path, make_spec(rows=6))
    group = zarr.open_group(str(path), mode="r+")
    group["masks"].resize((9, 10))  # a crash after the first resize: attrs still say 6 rows
    assert Store.open(path).num_rows == 6
    store = Store.create_or_open(path, make_spec(rows=9))
    assert store.num_rows == 9 and np.array_equal(store.masks, mask_matrix(0, 9, 10, 0.5))


def test_launch_extends_a_planted_sweep_and_status_counts_the_new_rows(tmp_path):
    path = tmp_path / "p.zarr"
    common = ["experiment=planted", "row.units=8", "row.examples=[6]", f"store.path={path}"]
    r = run_app("launch", *common, "sweep.num_models=4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    before = _files(path)
    first = np.asarray(zarr.open_group(str(path))["outputs/t0"][:])
    every = {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    r = run_app("launch", *common, "sweep.num_models=7", "launch.dry_run=true", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"would extend {path} from 4 to 7 rows (rows 4..6 added" in r.stdout, r.stdout
    assert "4 of 7 rows already complete, 3 to run" in r.stdout and "cost: 3 rows to run" in r.stdout, r.stdout
    assert {p: p.read_bytes() for p in path.rglob("*") if p.is_file()} == every  # a dry run writes nothing
    r = run_app("launch", *common, "sweep.num_models=7", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    after = _files(path)
    changed = [k for k, v in before.items() if after.get(k) != v and "provenance" not in k.parts
               and "claims" not in k.parts]
    assert changed == []
    store = Store.open(path)
    assert store.completed().all() and store.num_rows == 7
    assert np.array_equal(np.asarray(store.outputs("t0")[:4]), first)
    r = run_app("launch.status", f"store.path={path}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert ": 7 rows" in r.stdout and "7 completed" in r.stdout and "extended from 4" in r.stdout, r.stdout
    assert "convergence: no influence store at" in r.stdout
    for dry in ("false", "true"):  # refused alike; the keys listed are the ones that differ, nothing else
        r = run_app("launch", *common, "sweep.num_models=7", "row.noise=0.9", f"launch.dry_run={dry}", cwd=tmp_path)
        assert r.returncode == 2 and "different sweep" in r.stderr, r.stderr
        assert "row.noise" in r.stderr and "sweep.init" not in r.stderr and "sweep.repeats" not in r.stderr


def _aggregated_planted(tmp_path, noise: float, rows: int):
    """A planted sweep of ``rows`` rows (6 units, 5 examples, output noise ``noise``), aggregated with the rule
    judging the top 2 units; returns its launch arguments and store path."""
    path = tmp_path / "p.zarr"
    common = ["experiment=planted", "row.units=6", "row.examples=[5]", f"row.noise={noise}", f"store.path={path}"]
    assert run_app("launch", *common, f"sweep.num_models={rows}", cwd=tmp_path).returncode == 0
    r = run_app("aggregate", f"store.path={path}", "diagnostics.bootstrap=0", "diagnostics.top_k=2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return common, path


def test_status_judges_convergence_from_the_influence_store_and_counts_rows_it_has_not_seen(tmp_path):
    common, path = _aggregated_planted(tmp_path, 0.05, 60)
    r = run_app("launch", *common, "sweep.num_models=80", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run_app("launch.status", f"store.path={path}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "from 60 rows; 20 completed rows since: python -m aggregate" in r.stdout, r.stdout
    # low noise, 2 of 6 units judged: the rule is met at 60 rows, for both modes
    assert r.stdout.count("converged at 60 rows: median relative SE of the top 2") == 2, r.stdout
    assert "to meet the rule" not in r.stdout  # converged: nothing to extend


def test_status_says_how_far_to_extend_a_sweep_that_has_not_converged_and_what_it_costs(tmp_path):
    _, path = _aggregated_planted(tmp_path, 3.0, 40)
    r = run_app("launch.status", f"store.path={path}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    wanted = [int(n) for n in re.findall(r"not converged at 40 rows: .*needs about \d+ more rows \((\d+) in all",
                                         r.stdout)]
    assert wanted, r.stdout  # noisy rows: not converged, a row count predicted
    most = max(wanted)
    assert re.search(rf"to meet the rule for every target: about {most} rows in all, {most - 40} more than the store "
                     rf"holds \(python -m launch with sweep.num_models={most} extends it\); at the completed rows' "
                     rf"cost [\d.]+ CPU-hours, .+ at 1 row\(s\) at a time", r.stdout), r.stdout


def test_status_of_a_store_too_small_to_judge_another_sweeps_influences_and_a_kind_it_lacks(tmp_path):
    """Found by QA: a few rows leave the rule unjudged (NaN rows predicted) and status crashed; an influence store
    of another sweep store was trusted; an unknown kind silently fell back to the first."""
    common, path = _aggregated_planted(tmp_path, 3.0, 4)  # 2 rows in the first half: not every unit in and out
    r = run_app("launch.status", f"store.path={path}", cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "not judged yet" in r.stdout and "to meet the rule" not in r.stdout, r.stdout
    r = run_app("launch.status", f"store.path={path}", "kind=nosuch", cwd=tmp_path)
    assert r.returncode == 2 and "error: kind=nosuch: not an output kind of this store" in r.stderr, r.stderr
    other = tmp_path / "other" / "p.zarr"
    assert run_app("launch", *common[:-1], f"store.path={other}", "sweep.num_models=8", "sweep.seed=3",
                   cwd=tmp_path).returncode == 0
    r = run_app("launch.status", f"store.path={other}", f"influence={path.parent / 'influence.zarr'}", cwd=tmp_path)
    assert r.returncode == 0 and "holds the influences of another sweep store" in r.stdout, r.stdout
    assert "not judged yet" not in r.stdout


def test_a_copied_run_folder_is_aggregated_again(tmp_path):
    """The influence store belongs to the sweep store's identity (store_id), not to its path: a moved or copied
    run folder is aggregated again in place; another sweep store's influences are still refused."""
    _, path = _aggregated_planted(tmp_path, 0.05, 20)
    copy = tmp_path / "copy"
    shutil.copytree(path.parent, copy)
    r = run_app("aggregate", f"store.path={copy / path.name}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    other = tmp_path / "o.zarr"
    assert run_app("launch", "experiment=planted", "row.units=6", "row.examples=[5]", "sweep.num_models=4",
                   f"store.path={other}", cwd=tmp_path).returncode == 0
    r = run_app("aggregate", f"store.path={other}", f"out={copy / 'influence.zarr'}", cwd=tmp_path)
    assert r.returncode == 2 and "holds the influences of another sweep store" in r.stderr, r.stderr
