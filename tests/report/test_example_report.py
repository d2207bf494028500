"""`python -m aggregate.report` on a store whose units are source images (sweep=example_subsets): a tiny real
sweep (12 rows trained on the mini_leakage source, whose 12 units include planted leaks and a misleading image),
aggregated with difference of means and with LASSO; the report's Fig. 7 section must show real source images
with their labels, planted tags and weights."""

import csv

import numpy as np
import pytest
from conftest import run_app

from datatransfer.data import leakage
from datatransfer.influence import sparse
from datatransfer.influence.reader import Influence
from datatransfer.report.examples import PLANTED
from datatransfer.report.inputs import EMBEDDED_DATA

# select_seed=18 picks 12 of the 1,120 mini_leakage images, 3 of them planted (2 exact leaks, 1 misleading); with
# 12 rows every unit is in some rows and out of others (what every estimator needs)
SWEEP = ["sweep=example_subsets", "source.file=mini_leakage.npz", "sweep.count=12", "sweep.select_seed=18",
         "sweep.num_models=12", "sweep.outputs=[softmax_gt]", "train.epochs=1", "targets=[digits]",
         "transfer.modes=[fixed]", "transfer.fixed.iterations=10", "launcher.workers=1"]
REPORT = ["diagnostics.enabled=false", "report.images=3", "report.hard_examples=4"]


@pytest.fixture(scope="module")
def example_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("examples") / "store.zarr"
    r = run_app("launch", *SWEEP, f"store.path={store}")
    assert r.returncode == 0, r.stderr[-3000:]
    return store


def _weights(inf: Influence) -> np.ndarray:
    if inf.has_sparse("digits", "fixed", "softmax_gt"):
        return sparse.to_dense(*inf.sparse("digits", "fixed", "softmax_gt"), len(inf.unit_names))
    return inf.array("digits", "fixed", "softmax_gt", "per_example")


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["dim", "lasso"])
def test_report_shows_source_images_with_the_largest_weights(example_store, estimator):
    root = example_store.parent
    out, report = root / f"{estimator}.zarr", root / f"{estimator}_report"
    r = run_app("aggregate.report", f"store.path={example_store}", f"estimator={estimator}", f"out={out}",
                f"report.out={report}", *REPORT)
    assert r.returncode == 0, r.stderr[-3000:]
    page = (report / "index.html").read_text()
    assert 'id="digits_fixed"' in page and "Source images with the largest weights (Fig. 7)" in page
    assert '<img src="examples_digits_fixed.png"' in page and "Source images not found" not in page
    assert (report / "examples_digits_fixed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(report / "examples_digits_fixed.csv", newline="") as f:
        shown = list(csv.DictReader(f))
    assert f"{len(shown)} source images shown, from mini_leakage" in page and len(shown) >= 4
    inf = Influence(out)
    assert inf.attrs["unit"] == "example" and inf.attrs["estimator"]["name"] == estimator
    w = _weights(inf)
    with np.load(leakage.path(EMBEDDED_DATA / "mini.npz")) as z:
        names, labels, planted = z["source_class_names"], z["source_train_y"], z["source_train_planted"]
        target_labels = z["digits_test_y"]
    examples = list(dict.fromkeys(int(s["target_example"]) for s in shown))
    peak = np.abs(w).max(axis=1)
    assert len(examples) == 4 and np.allclose(peak[examples], np.sort(peak)[::-1][:4])  # the strongest examples
    for s in shown:
        j, u, i = int(s["target_example"]), int(s["unit"]), int(s["source_index"])
        assert inf.unit_names[u] == f"#{i} {s['source_label']}"  # the unit is that source image ...
        assert s["source_label"] == names[labels[i]]  # ... under its (possibly planted) label in the data file
        assert s["planted"] == PLANTED.get(int(planted[i]), "")
        assert s["target_label"] == str(target_labels[j])
        sign = 1 if s["side"] == "positive" else -1
        assert sign * float(s["weight"]) > 0 and float(s["weight"]) == pytest.approx(w[j, u], rel=1e-5)
        ranked = np.sort(sign * w[j][sign * w[j] > 0])[::-1]
        assert sign * float(s["weight"]) == pytest.approx(ranked[int(s["rank"]) - 1], rel=1e-5)
    assert any(s["planted"] for s in shown)  # planted images of this selection are among those shown
