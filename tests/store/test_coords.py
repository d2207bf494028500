"""xarray reads a sweep store with labels: rows, units, modes, kinds, each target's examples."""

import numpy as np
import pytest
import zarr

from datatransfer.store.sweep_store import Store
from tests.store.test_store import make_spec, row_payload

xr = pytest.importorskip("xarray")


def test_xarray_open_zarr_gives_labelled_coordinates_and_extension_keeps_them(tmp_path):
    path = tmp_path / "s.zarr"
    store = Store.create_or_open(path, make_spec(rows=6, units=5, n=(7, 4)))
    store.write_row(2, *row_payload(store, 2))
    root = xr.open_zarr(path, consolidated=False)
    assert root["row"].values.tolist() == list(range(6))
    assert root["unit"].values.tolist() == [f"u{i}" for i in range(5)]
    assert root["masks"].dims == ("row", "unit") and bool(root["completed"].sel(row=2))
    assert root["row_stats"].sel(field="source_accuracy", row=2) == pytest.approx(0.02)
    out = xr.open_zarr(path, group="outputs", consolidated=False)
    assert out["mode"].values.tolist() == ["fixed", "full"] and out["kind"].values.tolist() == ["softmax_gt",
                                                                                                 "is_correct"]
    assert out["t0"].dims == ("row", "mode", "kind", "example_t0") and out["t1"].sizes["example_t1"] == 4
    np.testing.assert_array_equal(out["t0"].sel(row=2, mode="full", kind="is_correct").values,
                                  store.outputs("t0")[2, 1, 1])
    pred = xr.open_zarr(path, group="predictions", consolidated=False)
    assert pred["t1"].sel(row=2, mode="fixed").values.tolist() == [2] * 4
    labels = xr.open_zarr(path, group="targets/t0", consolidated=False)
    assert labels["example"].values.tolist() == list(range(7))
    # extension grows the row coordinates with the rows
    Store.create_or_open(path, make_spec(rows=9, units=5, n=(7, 4)))
    assert xr.open_zarr(path, consolidated=False)["row"].values.tolist() == list(range(9))
    assert xr.open_zarr(path, group="outputs", consolidated=False)["row"].values.tolist() == list(range(9))


def test_a_store_that_ran_rows_and_grew_opens_without_zarr_warnings(tmp_path):
    """A real run leaves claims/ and checkpoints/ folders, an extension the add_targets lock: folders of files, not
    arrays. zarr and xarray listed them with "not recognized as a component of a Zarr hierarchy"; they are groups
    now, and no file lies beside the arrays."""
    import warnings

    from conftest import TINY, run_app

    path = tmp_path / "store.zarr"
    for rows in (2, 3):  # the second run extends the sweep, under the lock
        r = run_app("launch", *TINY, f"sweep.num_models={rows}", "launcher.workers=1", f"store.path={path}")
        assert r.returncode == 0, r.stderr[-3000:]
    assert (path / "claims" / ".add_targets.lock").is_file() and (path / "checkpoints").is_dir()
    assert [p.name for p in path.iterdir() if p.is_file()] == ["zarr.json"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert xr.open_zarr(path, consolidated=False)["row"].values.tolist() == [0, 1, 2]
        groups = dict(zarr.open_group(str(path), mode="r").groups())
    assert groups["claims"].attrs["datatransfer"].startswith("not array data")
