"""sweep=counterfactual end to end on planted rows (instant, with a known truth): the keep-lists, what the store
records, resume, refusals, and aggregate.counterfactual's results."""

import csv
import json
import shutil

import numpy as np
import pytest
import zarr
from conftest import run_app

from datatransfer.config import compose
from datatransfer.rows.planted import truth
from datatransfer.store.spec import FORMAT_VERSION
from datatransfer.store.sweep_store import Store

UNITS, EXAMPLES = 20, 40
PLANTED = ["row=planted", "targets=[]", f"row.units={UNITS}", f"row.examples=[{EXAMPLES}]", "row.modes=[fixed]",
           "sweep.outputs=[softmax_gt,is_correct]", "launcher.workers=1"]


@pytest.fixture(scope="module")
def influence(tmp_path_factory):
    """A planted random-subsets sweep (300 rows) and its influence store."""
    d = tmp_path_factory.mktemp("rs")
    r = run_app("launch", *PLANTED, "sweep.num_models=300", f"store.path={d / 'store.zarr'}")
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_app("aggregate", f"store.path={d / 'store.zarr'}", "diagnostics.enabled=false")
    assert r.returncode == 0, r.stderr[-2000:]
    return d / "influence.zarr"


def cf_args(influence, store, *more):
    return [*PLANTED, "sweep=counterfactual", f"counterfactual.influence={influence}", "counterfactual.target=t0",
            "counterfactual.mode=fixed", "counterfactual.baselines=[full]", f"store.path={store}", *more]


def test_removing_the_classes_that_hurt_raises_the_planted_output(influence, tmp_path):
    store = tmp_path / "cf" / "store.zarr"
    r = run_app("launch", *cf_args(influence, store, "counterfactual.orders=[bottom,top]", "counterfactual.k=[4]",
                                   "counterfactual.runs=4", "counterfactual.baselines=[full]"))
    assert r.returncode == 0, r.stderr[-2000:]
    s = Store.open(store)
    assert s.completed().all() and s.num_rows == 3 * 4
    g = zarr.open_group(str(store), mode="r")
    order, base = g["counterfactual/order"][:], g["counterfactual/baseline"][:]
    y = np.stack([s.outputs("t0")[i][0, 0].mean() for i in range(s.num_rows)])  # mean softmax_gt-slot output
    bottom, top, full = y[order == 0], y[order == 1], y[base == 0]
    assert bottom.mean() > full.mean() > top.mean()
    # against the truth: removing S changes the expected mean output by -sum_{u in S} mean_j w[u, j]
    cfg = compose(cf_args(influence, store))
    w, _ = truth(cfg.row)["t0"]
    removed = np.flatnonzero(~g["masks"][:][order == 0][0])
    expected = -w[removed].mean(axis=1).sum()
    assert expected > 0  # the influence store's bottom units are ones the truth says hurt
    se = np.sqrt(bottom.var(ddof=1) / 4 + full.var(ddof=1) / 4)
    assert abs((bottom.mean() - full.mean()) - expected) < 4 * se + 0.02


def test_keep_masks_equal_an_independent_ranking_and_the_store_records_its_inputs(influence, tmp_path):
    store = tmp_path / "store.zarr"
    r = run_app("launch", *cf_args(influence, store, "counterfactual.k=[0,3,7]", "counterfactual.runs=2",
                                   "counterfactual.baselines=[full]", "counterfactual.examples=[5]",
                                   "counterfactual.auto_examples=1"))
    assert r.returncode == 0, r.stderr[-2000:]
    g = zarr.open_group(str(store), mode="r")
    inf = zarr.open_group(str(influence), mode="r")
    overall = inf["t0/fixed/softmax_gt/overall"][:]
    per_example = inf["t0/fixed/softmax_gt/per_example"][:]
    masks = g["masks"][:]
    meta = {f: g[f"counterfactual/{f}"][:] for f in ("order", "k", "run", "baseline", "example")}
    for f in meta:
        assert g[f"counterfactual/{f}"].metadata.dimension_names == ("row",)
    assert g["counterfactual/unit_influence"].metadata.dimension_names == ("unit",)
    np.testing.assert_array_equal(g["counterfactual/unit_influence"][:], overall)
    names = g["counterfactual/order"].attrs["names"]
    for i in range(len(masks)):
        if meta["order"][i] < 0:
            continue
        k, removed = int(meta["k"][i]), set(np.flatnonzero(~masks[i]))
        if names[meta["order"][i]] == "bottom":
            assert removed == set(sorted(range(UNITS), key=lambda u: (overall[u], u))[:k])
        elif names[meta["order"][i]] == "top":
            assert removed == set(sorted(range(UNITS), key=lambda u: (-overall[u], u))[:k])
        else:
            assert len(removed) == k
    ex_rows = np.flatnonzero(meta["example"] >= 0)
    assert len(ex_rows) == 2 * 2 and set(meta["example"][ex_rows]) >= {5}
    for i in ex_rows:
        assert set(np.flatnonzero(~masks[i])) == {int(np.argmin(per_example[meta["example"][i]]))}
    a = g.attrs["counterfactual"]
    assert a["influence"]["path"] == str(influence.resolve()) and a["influence"]["rows_used"] == 300
    assert a["influence"]["estimator"]["name"] == "dim" and len(a["influence"]["fingerprint"]) == 20
    assert a["influence"]["store_fingerprint"] == inf.attrs["store_fingerprint"]
    assert (a["target"], a["mode"], a["kind"]) == ("t0", "fixed", "softmax_gt")
    assert [e["example"] for e in a["examples"]][0] == 5 and len(a["examples"]) == 2
    assert g.attrs["format_version"] == FORMAT_VERSION
    # launch.verify recomputes the keep-masks from what the store recorded, and repairs them
    w = zarr.open_group(str(store), mode="r+")
    w["masks"][0] = ~masks[0]
    r = run_app("launch.verify", f"store.path={store}")
    assert "mask mismatches: 1 rows (0) differ" in r.stdout, r.stdout[-2000:]
    r = run_app("launch.verify", f"store.path={store}", "verify.invalidate=true")
    assert "masks rewritten" in r.stdout, r.stdout[-2000:]
    assert (zarr.open_group(str(store), mode="r")["masks"][:] == masks).all()


def test_interrupted_sweep_resumes_with_its_recorded_masks_even_without_the_influence_store(influence, tmp_path):
    store = tmp_path / "store.zarr"
    moved = tmp_path / "influence.zarr"
    shutil.copytree(influence, moved)
    args = cf_args(moved, store, "counterfactual.k=[2,5]", "counterfactual.runs=2")
    r = run_app("launch", *args, "launch.fail_rows=[3,7]")
    assert r.returncode == 2 and "rows failed" in r.stderr, r.stderr[-2000:]
    s = Store.open(store)
    assert list(np.flatnonzero(~s.completed())) == [3, 7]
    masks = s.masks.copy()
    shutil.rmtree(moved)  # recomputed or deleted since: the sweep needs only what it recorded
    r = run_app("launch.resume", f"store.path={store}", "launcher=local")
    assert r.returncode == 0, r.stderr[-2000:]
    s = Store.open(store)
    assert s.completed().all() and (s.masks == masks).all()
    r = run_app("launch", *args)  # the same command again: reopened, nothing to run
    assert r.returncode == 0 and "rows already complete, 0 to run" in r.stdout, r.stderr[-2000:]


@pytest.mark.parametrize("override,message", [
    (f"row.units={UNITS + 1}", "is about other source units"),
    ("counterfactual.kind=gt_logit", "counterfactual.kind: 'gt_logit' is not in"),
    ("counterfactual.target=", "counterfactual.target: set it"),
    ("counterfactual.k=[20]", "counterfactual.k: [20] would remove all 20"),
    ("counterfactual.target=t1", "counterfactual.target: 't1' is not in"),
])
def test_a_mismatch_is_refused_and_nothing_written(influence, tmp_path, override, message):
    store = tmp_path / "store.zarr"
    extra = ["sweep.outputs=[softmax_gt,gt_logit]"] if "kind" in override else []
    extra += [f"row.examples=[{EXAMPLES},9]"] if "t1" in override else []
    r = run_app("launch", *cf_args(influence, store, override, *extra))
    assert r.returncode == 2 and message in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and not store.exists() and not store.parent.joinpath(".store.zarr").exists()


def test_a_mode_the_influence_store_lacks_is_refused(influence, tmp_path):
    store = tmp_path / "store.zarr"
    r = run_app("launch", *cf_args(influence, store, "row.modes=[fixed,full]", "counterfactual.mode=full"))
    assert r.returncode == 2 and "counterfactual.mode: 'full' is not in" in r.stderr, r.stderr[-2000:]
    assert not store.exists()


def test_no_influence_store_and_keys_without_the_sweep_kind_are_refused(tmp_path):
    store = tmp_path / "store.zarr"
    r = run_app("launch", *cf_args(tmp_path / "absent.zarr", store))
    assert r.returncode == 2 and "counterfactual.influence: no influence store at" in r.stderr
    r = run_app("launch", *PLANTED, "counterfactual.k=[3]", f"store.path={store}")
    assert r.returncode == 2 and "counterfactual.k: is read only by sweep=counterfactual" in r.stderr
    assert not store.exists()


def test_aggregate_counterfactual_writes_the_tables_and_figures_and_the_report_shows_them(influence):
    store = influence.parent / "cf" / "store.zarr"  # beside the sweep the influences came from
    r = run_app("launch", *cf_args(influence, store, "counterfactual.k=[0,4]", "counterfactual.runs=3",
                                   "counterfactual.baselines=[full]", "counterfactual.examples=[0,1]"))
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_app("aggregate.counterfactual", f"store.path={store}")
    assert r.returncode == 0, r.stderr[-2000:]
    out = influence.parent / "cf" / "counterfactual"
    for name in ("accuracy.csv", "summary.csv", "best_k.csv", "accuracy_vs_k.png", "examples.csv",
                 "example_predictions.png", "example_shares.csv", "about.json"):
        assert (out / name).is_file(), name
    assert f"wrote 8 files to {out}" in r.stdout and len(list(out.iterdir())) == 8  # every file it wrote counted
    acc = list(csv.DictReader(open(out / "accuracy.csv")))
    assert len(acc) == Store.open(store).num_rows == (3 * 2 + 1 + 2) * 3
    summ = list(csv.DictReader(open(out / "summary.csv")))
    full = [x for x in summ if x["point"] == "full" and x["mode"] == "fixed"][0]
    fixed_full = [float(a["accuracy_fixed"]) for a in acc if a["point"] == "full"]
    assert float(full["mean"]) == pytest.approx(np.mean(fixed_full), abs=1e-5) and full["n"] == "3"
    for x in summ:  # k = 0 removes nothing: every order is the full source, up to training noise
        if x["k"] == "0" and x["point"] in ("bottom", "top", "random"):
            assert float(x["ci_low"]) <= float(x["diff_to_full"]) <= float(x["ci_high"])
    about = json.loads((out / "about.json").read_text())
    assert about["target"] == "t0" and about["rows_completed"] == len(acc)
    assert "best bottom" in r.stdout and "debugged examples: 2" in r.stdout
    r = run_app("aggregate.report", f"store.path={influence.parent / 'store.zarr'}", "diagnostics.enabled=false")
    assert r.returncode == 0, r.stderr[-2000:]
    page = (influence.parent / "report" / "index.html").read_text()
    assert "Counterfactual experiments" in page and "Table 2b" in page and "Fig. 6 right" in page
    assert '<a href="#counterfactual">' in page  # listed in the contents
    assert (influence.parent / "report" / "counterfactual1_accuracy_vs_k.png").is_file()


def test_aggregate_counterfactual_refuses_another_kind_of_store(influence):
    r = run_app("aggregate.counterfactual", f"store.path={influence.parent / 'store.zarr'}")
    assert r.returncode == 2 and "is not a counterfactual sweep store" in r.stderr
