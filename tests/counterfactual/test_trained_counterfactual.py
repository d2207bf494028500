"""sweep=counterfactual with trained rows on the mini data: a variable number of kept classes (one class: k = U - 1;
ten: the hand-picked digits), and what a row records (source accuracy over the kept classes only). k = 0 keeps
every class, the mask of an ordinary full-source row (tests/masks/test_counterfactual_masks.py)."""

import importlib.resources

import numpy as np
import pytest
import zarr
from conftest import run_app
from planted import make_planted_store

from datatransfer.influence.aggregate import aggregate
from datatransfer.store.sweep_store import Store

FAST = ["train.epochs=1", "transfer.modes=[fixed]", "transfer.fixed.iterations=30", "targets=[digits]",
        "launcher.workers=1"]


@pytest.mark.slow
def test_trained_rows_with_one_class_and_with_the_handpicked_digits(tmp_path):
    d = np.load(str(importlib.resources.files("datatransfer") / "data" / "mini.npz"))
    units = [str(u) for u in d["source_class_names"]]
    labels, names = d["digits_test_y"], [str(c) for c in d["digits_class_names"]]
    # an influence store over the mini source classes and the digits target (planted outputs: only the ranking
    # matters here)
    make_planted_store(tmp_path / "rs" / "store.zarr", rows=40, unit_names=units, modes=("fixed",),
                       kinds=("softmax_gt",), targets={"digits": (labels, names)})
    inf = aggregate(tmp_path / "rs" / "store.zarr", diagnostics=None, progress=False).out
    store = tmp_path / "cf" / "store.zarr"
    r = run_app("launch", *FAST, "sweep=counterfactual", f"counterfactual.influence={inf}",
                "counterfactual.target=digits", "counterfactual.mode=fixed", "counterfactual.orders=[bottom]",
                f"counterfactual.k=[{len(units) - 1}]", "counterfactual.runs=1",
                "counterfactual.baselines=[handpicked]", f"store.path={store}")
    assert r.returncode == 0, r.stderr[-3000:]
    s = Store.open(store)
    assert s.completed().all() and list(s.masks.sum(axis=1)) == [1, 10]
    g = zarr.open_group(str(store), mode="r")
    assert g.attrs["counterfactual"]["handpicked"]["units"] == [f"mnist:{i}" for i in range(10)]
    acc = s.target_accuracy("digits", np.arange(2))[:, 0]
    assert np.isfinite(acc).all() and (acc > 0.1).all()  # every row transferred (one source class still trains)
    src = s.row_stats_of(np.arange(2))[:, s.row_stat_fields.index("source_accuracy")]
    assert src[0] == pytest.approx(1.0, abs=0.05)  # one kept class: its own validation images, all that class
