"""xarray.open_zarr on the influence store's groups: labelled coordinates, not just dimension names."""

import numpy as np
import pytest
import zarr
from planted import make_planted_store

from datatransfer.config import DiagnosticsConfig
from datatransfer.influence.aggregate import aggregate
from datatransfer.influence.reader import Influence

xr = pytest.importorskip("xarray")


@pytest.mark.parametrize("estimator", ["dim", "ridge"])
def test_open_zarr_gives_labelled_coordinates(tmp_path, estimator):
    p = make_planted_store(tmp_path / "s.zarr", rows=40, units=5, n=(7,), completed=np.arange(2, 40),
                           unit_names=["cat", "dog", "car", "ship", "frog"])
    out = aggregate(p.store.path, estimator=estimator, progress=False,
                    diagnostics=DiagnosticsConfig(bootstrap=5, points=2, lds_examples=3)).out
    inf = Influence(out)
    ds = xr.open_zarr(out, group="t0/full/softmax_gt", consolidated=False)
    assert list(ds["unit"].values) == ["cat", "dog", "car", "ship", "frog"]
    assert list(ds["class"].values) == ["c0", "c1", "c2"] and list(ds["example"].values) == list(range(7))
    assert ds["per_example"].dims == ("example", "unit") and ds["per_class"].dims == ("class", "unit")
    np.testing.assert_array_equal(ds["overall"].sel(unit="ship").values,
                                  inf.array("t0", "full", "softmax_gt", "overall")[3])
    np.testing.assert_array_equal(ds["per_class"].sel({"class": "c2", "unit": "dog"}).values,
                                  inf.array("t0", "full", "softmax_gt", "per_class")[2, 1])
    # the example of docs/influence-format.md, as written there
    overall = inf.array("t0", "full", "softmax_gt", "overall")
    assert list(ds.overall.sortby(-ds.overall).unit[:2].values) == [inf.unit_names[u] for u in np.argsort(-overall)[:2]]
    best = ds.per_class.isel({"class": 2}).idxmax("unit", skipna=False).item()
    assert best == inf.unit_names[int(np.argmax(inf.array("t0", "full", "softmax_gt", "per_class")[2]))]
    if estimator == "dim":
        assert ds["per_example_se"].dims == ("example", "unit")
    # dense per-example arrays are stored raw (they hardly compress; docs/influence-format.md), the rest with zstd
    grp = zarr.open_group(str(out), mode="r")["t0/full/softmax_gt"]
    assert grp["per_example"].compressors == () and grp["per_class"].compressors != ()
    if estimator == "dim":
        assert grp["per_example_se"].compressors == ()
    dg = xr.open_zarr(out, group="diagnostics/t0", consolidated=False)
    assert list(dg["mode"].values) == ["fixed", "full"] and list(dg["kind"].values) == ["softmax_gt", "is_correct"]
    assert float(dg["lds"].sel(mode="full", kind="is_correct").isel(point=-1)) == \
        float(inf.diagnostics("t0", "full", "is_correct")["lds"][-1])
    tg = xr.open_zarr(out, group="t0", consolidated=False)
    assert list(tg["row"].values) == list(range(2, 40)) and list(tg["unit"].values)[0] == "cat"
    root = xr.open_zarr(out, consolidated=False)
    assert int(root["n_in"].sel(unit="frog")) == int(p.store.masks[2:40, 4].sum())
