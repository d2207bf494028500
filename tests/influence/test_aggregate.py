"""Aggregation from a store: against plain loops over the store's arrays, planted truth, invariances, partial
stores, the output format, and the app's exits."""

import re

import numpy as np
import pytest
import zarr
from conftest import run_app
from planted import make_planted_store

from datatransfer.config import (
    ConfigError,
    DiagnosticsConfig,
    compose,
    validate_aggregate,
)
from datatransfer.errors import AggregationError, StoreError
from datatransfer.influence.aggregate import aggregate, default_out
from datatransfer.influence.diagnostics import spearman
from datatransfer.influence.reader import Influence
from datatransfer.masks import mask_matrix

FAST = DiagnosticsConfig(bootstrap=20, points=3, lds_examples=8)


def run(path, **kw):
    kw.setdefault("diagnostics", FAST)
    return aggregate(path, progress=False, **kw)


def loop_influences(store, t, rows):
    """Per (unit, example) difference of means by explicit loops over rows read one by one with zarr."""
    g = zarr.open_group(str(store.path), mode="r")
    masks = g["masks"][:][rows]
    y = np.stack([g[f"outputs/{t}"][int(i)] for i in rows]).astype(np.float64)  # (N, modes, kinds, n)
    out = np.zeros(y.shape[1:] + (masks.shape[1],))
    for c in range(masks.shape[1]):
        out[..., c] = y[masks[:, c]].mean(0) - y[~masks[:, c]].mean(0)
    return out, y.mean(0)  # (modes, kinds, n, U), mean output (modes, kinds, n)


def test_matches_loop_on_random_store(tmp_path):
    p = make_planted_store(tmp_path / "s.zarr", rows=60, units=7, n=(11, 4), noise=2.0, scheme="bernoulli")
    s = run(p.store.path, block_rows=9)
    assert s.out == tmp_path / "influence.zarr" == default_out(p.store.path) and s.rows_used == 60
    inf = Influence(s.out)
    for t in p.store.targets:
        ref, mean = loop_influences(p.store, t, np.arange(60))
        labels = p.store.labels(t)
        for m, mode in enumerate(p.store.modes):
            for k, kind in enumerate(p.store.output_kinds):
                pe = inf.array(t, mode, kind, "per_example")
                np.testing.assert_allclose(pe, ref[m, k], rtol=1e-5, atol=1e-5)
                pc = inf.array(t, mode, kind, "per_class")
                for c in range(3):
                    np.testing.assert_allclose(pc[c], ref[m, k][labels == c].mean(0), rtol=1e-5, atol=1e-5)
                np.testing.assert_allclose(inf.array(t, mode, kind, "overall"), ref[m, k].mean(0), rtol=1e-9,
                                           atol=1e-9)
                np.testing.assert_allclose(inf.array(t, mode, kind, "mean_output"), mean[m, k], rtol=1e-6)
    masks = p.store.masks
    np.testing.assert_array_equal(inf.group["n_in"][:], masks.sum(0))
    np.testing.assert_array_equal(inf.group["n_out"][:], (~masks).sum(0))


def test_planted_truth_recovered(tmp_path):
    p = make_planted_store(tmp_path / "s.zarr", rows=600, units=15, n=(6,), noise=0.5)
    inf = Influence(run(p.store.path).out)
    for mode in p.store.modes:
        for kind in p.store.output_kinds:
            pe = inf.array("t0", mode, kind, "per_example")
            for j in range(6):
                assert spearman(pe[j], p.w["t0"][:, j]) >= 0.95
    d = inf.diagnostics("t0", "fixed", "softmax_gt")
    assert d["rank_corr"][-1] > 0.9 and d["lds"][-1] > 0.9 and d["num_rows"][-1] == d["fit_rows"]


def test_invariant_to_row_order_block_size_and_passes(tmp_path):
    masks = mask_matrix(1, 80, 9, 0.5)
    perm = np.random.default_rng(0).permutation(80)
    a = make_planted_store(tmp_path / "a" / "s.zarr", masks=masks, n=(10,), seed=1)
    b = make_planted_store(tmp_path / "b" / "s.zarr", masks=masks[perm], n=(10,), seed=1,
                           effects={"t0": a.w["t0"]})
    # same (mask, output) pairs in another row order: overwrite b's outputs with a's, permuted
    b.store.outputs("t0")[:] = a.y["t0"][perm]
    ref = Influence(run(a.store.path, block_rows=80).out).array("t0", "full", "is_correct", "per_example")
    for path, kw in [(a.store.path, {"block_rows": 1}), (a.store.path, {"block_rows": 13}),
                     (a.store.path, {"memory_mb": 16, "block_rows": 5}), (b.store.path, {"block_rows": 7})]:
        got = Influence(run(path, diagnostics=None, **kw).out).array("t0", "full", "is_correct", "per_example")
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_partial_store_uses_only_completed_rows(tmp_path):
    done = np.array([0, 1, 2, 5, 6, 9, 10, 11, 12, 20, 21, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39])
    p = make_planted_store(tmp_path / "s.zarr", rows=45, units=5, n=(8,), completed=done, noise=1.0)
    # rows 3 and 40 hold data (a worker mid-row) but are not completed: they must be ignored
    p.store.outputs("t0")[3] = 1e6
    p.store.outputs("t0")[40] = np.nan
    s = run(p.store.path, block_rows=6)
    inf = Influence(s.out)
    assert s.rows_used == len(done) and s.rows_total == 45 and inf.attrs["rows_used"] == len(done)
    np.testing.assert_array_equal(inf.rows(), done)
    ref, _ = loop_influences(p.store, "t0", done)
    np.testing.assert_allclose(inf.array("t0", "fixed", "softmax_gt", "per_example"), ref[0, 0], rtol=1e-5,
                               atol=1e-5)
    assert inf.is_current(p.store)
    p.store.write_row(41, {"t0": p.y["t0"][41]}, {"t0": np.zeros((2, 8), np.int32)}, {})
    assert not inf.is_current(p.store)  # a new completed row makes it stale


def test_ridge_through_the_store_matches_lstsq(tmp_path):
    p = make_planted_store(tmp_path / "s.zarr", rows=90, units=6, n=(5,), modes=("fixed",), kinds=("softmax_gt",),
                           scheme="bernoulli")
    inf = Influence(run(p.store.path, estimator="ridge", estimator_settings={"lambdas": [0.02]}).out)
    x = p.store.masks.astype(float)
    y = p.y["t0"][:, 0, 0, :].astype(np.float64)
    a = np.vstack([np.hstack([np.ones((90, 1)), x]), np.hstack([np.zeros((6, 1)), np.sqrt(90 * 0.02) * np.eye(6)])])
    w = np.linalg.lstsq(a, np.vstack([y, np.zeros((6, 5))]), rcond=None)[0][1:]
    np.testing.assert_allclose(inf.array("t0", "fixed", "softmax_gt", "per_example"), w.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(inf.array("t0", "fixed", "softmax_gt", "lambda"), 0.02)
    est = inf.attrs["estimator"]
    assert est["name"] == "ridge" and est["settings"]["lambdas"] == [0.02]
    assert est["settings"]["holdout_fraction"] == 0.2


def test_output_format(tmp_path):
    p = make_planted_store(tmp_path / "s.zarr", rows=30, units=6, n=(9, 4))
    out = tmp_path / "elsewhere" / "infl.zarr"
    run(p.store.path, out=out)
    g = zarr.open_group(str(out), mode="r")
    a = g.attrs
    assert a["format"] == "datatransfer-influence" and a["format_version"] == 1
    assert a["store_fingerprint"] == p.store.fingerprint and a["rows_used"] == 30 and a["store_rows"] == 30
    assert a["estimator"] == {"name": "dim", "settings": {}} and a["unit_names"] == p.store.unit_names
    assert a["diagnostics"]["knockoff_seed"] == 0 + 1_000_003
    arr = g["t1/full/softmax_gt/per_example"]
    assert arr.shape == (4, 6) and arr.metadata.dimension_names == ("example", "unit")
    assert g["t1/full/softmax_gt/per_class"].shape == (3, 6)
    assert g["t1/full/softmax_gt/overall"].metadata.dimension_names == ("unit",)
    assert g["diagnostics/t0/rank_corr"].metadata.dimension_names == ("mode", "kind", "point")
    assert g["diagnostics/t0/rank_corr"].shape[:2] == (2, 2)
    assert g["diagnostics/knockoff_masks"].shape == (30, 6)
    assert list(g["t1"].attrs["class_names"]) == ["c0", "c1", "c2"]
    # rerunning replaces the result in place, leaving no temporary folders behind
    run(p.store.path, out=out, diagnostics=None)
    assert "diagnostics" not in zarr.open_group(str(out), mode="r")
    assert sorted(x.name for x in out.parent.iterdir()) == [".infl.zarr.lock", "infl.zarr"]  # no temporary folder left


def test_refusals(tmp_path):
    p = make_planted_store(tmp_path / "s.zarr", rows=10, units=4, n=(3,), completed=np.array([], dtype=int))
    with pytest.raises(AggregationError, match="no completed rows"):
        run(p.store.path)
    files = sorted(p.store.path.rglob("*"))
    with pytest.raises(AggregationError, match="inside the sweep store"):
        run(p.store.path, out=p.store.path / "x.zarr")
    assert sorted(p.store.path.rglob("*")) == files  # refused before anything is written (no lock file in it)
    with pytest.raises(StoreError, match="no store at"):
        run(tmp_path / "nothing.zarr")
    (tmp_path / "notinfl").mkdir()
    (tmp_path / "notinfl" / "zarr.json").write_text("{}")
    p2 = make_planted_store(tmp_path / "q" / "s.zarr", rows=10, units=4, n=(3,))
    with pytest.raises(AggregationError, match="not an influence store"):
        run(p2.store.path, out=tmp_path / "notinfl")
    # two sweep stores in one folder: the second may not replace the first's default influence store
    p3 = make_planted_store(tmp_path / "q" / "other.zarr", rows=10, units=4, n=(3,))
    first = run(p2.store.path).out
    before = sorted(str(f.relative_to(first)) for f in first.rglob("*"))
    with pytest.raises(AggregationError, match="influences of another sweep store"):
        run(p3.store.path)
    assert sorted(str(f.relative_to(first)) for f in first.rglob("*")) == before
    assert run(p3.store.path, out=tmp_path / "q" / "other-influence.zarr").rows_used == 10


def test_unit_never_left_out_is_a_clear_error(tmp_path):
    masks = mask_matrix(0, 20, 5, 0.5, "bernoulli")
    masks[:, 3] = True
    p = make_planted_store(tmp_path / "s.zarr", masks=masks, n=(4,))
    with pytest.raises(AggregationError, match=r"in every one of the 20 rows used \('u3'\)"):
        run(p.store.path)
    assert not (tmp_path / "influence.zarr").exists()


def test_nan_in_completed_row_is_named(tmp_path):
    p = make_planted_store(tmp_path / "s.zarr", rows=20, units=5, n=(4,))
    p.store.outputs("t0")[7, 1, 0, 2] = np.nan
    with pytest.raises(AggregationError, match=r"row 7 holds NaN or inf for mode 'full', kind 'softmax_gt'"):
        run(p.store.path)


def test_app_exits(tmp_path):
    r = run_app("aggregate", f"store.path={tmp_path / 'none.zarr'}")
    assert r.returncode == 2 and r.stderr.strip().startswith("error: no store at") and len(r.stderr.splitlines()) == 1
    p = make_planted_store(tmp_path / "s.zarr", rows=40, units=5, n=(6,), completed=np.arange(30))
    r = run_app("aggregate", f"store.path={p.store.path}", "estimator=ridge", "diagnostics.bootstrap=10")
    assert r.returncode == 0, r.stderr
    assert "30 of 40 rows" in r.stdout and f"wrote {tmp_path / 'influence.zarr'}" in r.stdout
    assert Influence(tmp_path / "influence.zarr").attrs["estimator"]["name"] == "ridge"
    assert "t0 (fixed, softmax_gt): most helpful" in r.stdout
    assert "every row read" in r.stdout and f"next: python -m aggregate.report store.path={p.store.path}\n" in r.stdout
    # the report recomputes when the command line asks for another estimator than the store holds (QA: it ignored
    # it); without estimator=..., the influences as they are
    from datatransfer.influence.aggregate import current_influence

    cfg = compose([f"store.path={p.store.path}", "diagnostics.enabled=false"], config_name="aggregate")
    assert current_influence(cfg)[0].attrs["estimator"]["name"] == "ridge"
    assert current_influence(cfg, estimator_asked=True)[0].attrs["estimator"]["name"] == "dim"
    r = run_app("aggregate", f"store.path={p.store.path}", f"out={tmp_path / 'o.zarr'}")
    assert r.returncode == 0 and f"out={tmp_path / 'o.zarr'}" in r.stdout.splitlines()[-1], r.stdout


@pytest.mark.parametrize("override, key", [
    ("diagnostics.points=0", "diagnostics.points"), ("estimator.lambdas=[0.1,-1]", "estimator.lambdas"),
    ("report.kind=bogus", "report.kind"), ("memory_mb=1", "memory_mb"), ("store.path=", "store.path"),
])
def test_config_values_are_checked(override, key):
    """What the apps run first (validate_aggregate): a clear ConfigError naming the key (exit 2 in the apps)."""
    cfg = compose([override] + (["estimator=ridge"] if "lambdas" in override else []), config_name="aggregate")
    with pytest.raises(ConfigError, match=f"^{re.escape(key)}: "):
        validate_aggregate(cfg)


def test_target_added_later_uses_its_own_completed_rows(tmp_path):
    """A target added to a store afterwards (transfer only) has its own completion record, and may lag behind."""
    from datatransfer.store.sweep_store import TargetSpec

    p = make_planted_store(tmp_path / "s.zarr", rows=40, units=5, n=(6,), modes=("fixed",), kinds=("softmax_gt",))
    p.store.add_targets([TargetSpec("late", np.arange(4) % 2, ["a", "b"])], {"late": {"note": "test"}})
    late = p.store.scoped(["late"])
    rng = np.random.default_rng(0)
    done = np.arange(3, 40, 2)
    y = rng.normal(size=(40, 1, 1, 4)).astype(np.float32)
    for i in done:
        late.write_row(int(i), {"late": y[i]}, {"late": np.zeros((1, 4), np.int32)}, {})
    inf = Influence(run(p.store.path).out)
    assert inf.targets == ["t0", "late"] and inf.attrs["rows_used"] == 40
    np.testing.assert_array_equal(inf.rows("late"), done)
    np.testing.assert_array_equal(inf.rows("t0"), np.arange(40))
    assert inf.group["late"].attrs["rows_used"] == len(done)
    ref, _ = loop_influences(p.store, "late", done)
    np.testing.assert_allclose(inf.array("late", "fixed", "softmax_gt", "per_example"), ref[0, 0], rtol=1e-5,
                               atol=1e-5)
    assert inf.is_current(p.store)
    late.write_row(4, {"late": y[4]}, {"late": np.zeros((1, 4), np.int32)}, {})
    assert not inf.is_current(p.store)


def test_summary_lines_carry_z_and_flag_noise(tmp_path):
    """The app's first-look lines judge each influence as the report does: z from the null level, "noise" where
    the interval covers it. One unit helps every example strongly; the others are null."""
    units, n = 30, (30,)
    effects = {"t0": np.zeros((units, n[0]))}
    effects["t0"][2] = 0.2
    p = make_planted_store(tmp_path / "s.zarr", rows=200, units=units, n=n, noise=0.1, effects=effects,
                           modes=("fixed",), kinds=("softmax_gt",))
    run(p.store.path)
    (line,) = Influence(tmp_path / "influence.zarr").top_lines("softmax_gt")
    helpful, harmful = line.split("; most harmful ")
    first = helpful.split("most helpful ")[1].split("), ")[0]
    assert first.startswith("u2 +") and "(z +" in first and "noise" not in first
    assert harmful.count("noise") == 3, line  # null units: inside their intervals (or the knockoff band)
