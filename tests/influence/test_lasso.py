"""LASSO datamodels: against scikit-learn's lasso_path / Lasso (an independent solver) on small data, support
recovery on planted stores with a sparse truth, the CSR output through the store, and fan-out."""

import numpy as np
import pytest
from planted import make_planted_store, sparse_effects

from datatransfer.errors import EstimatorError
from datatransfer.influence.aggregate import aggregate
from datatransfer.influence.estimators import holdout_rows, make
from datatransfer.influence.lasso import Lasso, solve
from datatransfer.influence.reader import Influence

sklearn_lm = pytest.importorskip("sklearn.linear_model")


def fed(est, x, y, block=37):
    rows = np.arange(len(x))
    for i in range(0, len(x), block):
        est.update(rows[i:i + block], x[i:i + block], y[i:i + block])
    return est


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(1)
    x = rng.random((300, 40)) < 0.5
    w = sparse_effects(rng, 40, 4, strong=4)
    y = x @ w + 0.8 * rng.normal(size=(300, 4))
    return x, y


@pytest.mark.parametrize("solver", ["cd", "torch"])
def test_path_and_choice_match_sklearn(small, solver):
    x, y = small
    est = fed(Lasso(path_length=15, eps=1e-2, tol=1e-10, max_iter=100000, solver=solver), x, y)
    problem = est.problem()
    out = solve(problem, solver, tol=1e-10, max_iter=100000)
    held = holdout_rows(np.arange(len(x)), 0.2)
    xf, yf = x[~held].astype(float), y[~held]
    xh, yh = x[held].astype(float), y[held]
    xm, ym = xf.mean(0), yf.mean(0)
    for k in range(y.shape[1]):
        alphas, coefs, _ = sklearn_lm.lasso_path(xf - xm, yf[:, k] - ym[k], eps=1e-2, alphas=15, tol=1e-12,
                                                 max_iter=100000)
        np.testing.assert_allclose(alphas, problem.lambdas[:, k], rtol=1e-10)  # the same grid
        sse = ((yh[:, [k]] - ym[k] - (xh - xm) @ coefs) ** 2).sum(0)
        np.testing.assert_allclose(out["path_sse"][:, k], sse, rtol=1e-6)
        assert np.argmin(out["path_sse"][:, k]) == np.argmin(sse)  # the same held-out choice
        ref = sklearn_lm.Lasso(alpha=alphas[np.argmin(sse)], tol=1e-12, max_iter=100000).fit(x.astype(float), y[:, k])
        np.testing.assert_allclose(out["w"][k], ref.coef_, atol=1e-7)  # the refit on all rows


def test_invariant_to_blocks_and_order(small):
    x, y = small
    perm = np.random.default_rng(0).permutation(len(x))
    a = fed(Lasso(tol=1e-8), x, y, block=300).result()
    b = Lasso(tol=1e-8)
    for i in range(0, len(x), 11):  # rows travel with their data
        idx = perm[i:i + 11]
        b.update(idx, x[idx], y[idx])
    b = b.result()
    np.testing.assert_allclose(a.influence, b.influence, atol=1e-6)
    np.testing.assert_allclose(a.extras["lambda"], b.extras["lambda"], rtol=1e-9)


@pytest.mark.parametrize("background", [0.0, 0.05])
def test_recovers_sparse_truth_on_planted_store(tmp_path, background):
    rng = np.random.default_rng(3)
    units, n, strong = 150, 12, 5
    w = sparse_effects(rng, units, n, strong, background)
    p = make_planted_store(tmp_path / "s.zarr", rows=800, units=units, n=(n,), noise=1.0, scheme="bernoulli",
                           modes=("full",), kinds=("softmax_gt",), effects={"t0": w})
    s = aggregate(p.store.path, estimator="lasso", diagnostics=None, progress=False)
    inf = Influence(s.out)
    indptr, unit, weight = inf.sparse("t0", "full", "softmax_gt")
    assert indptr.shape == (n + 1,) and len(unit) == len(weight) == indptr[-1]
    found = total = 0
    for j in range(n):
        truth = set(np.flatnonzero(np.abs(w[:, j]) >= 1.0))
        u, wt = unit[indptr[j]:indptr[j + 1]], weight[indptr[j]:indptr[j + 1]]
        largest = set(u[np.argsort(-np.abs(wt))[:len(truth)]])
        found += len(truth & largest)
        total += len(truth)
    assert found / total >= 0.9, f"recovered {found} of {total} strong weights"
    dense = inf.array("t0", "full", "softmax_gt", "per_example")
    assert dense.shape == (n, units) and (dense != 0).sum() == len(unit)
    for name in ("lambda", "heldout_r2", "heldout_mse", "nnz"):
        assert inf.array("t0", "full", "softmax_gt", name).shape == (n,)
    assert (inf.array("t0", "full", "softmax_gt", "heldout_r2") > 0.5).all()
    assert inf.attrs["estimator"]["name"] == "lasso"


def test_dense_left_out_when_large(tmp_path):
    p = make_planted_store(tmp_path / "s.zarr", rows=120, units=10, n=(6,), scheme="bernoulli",
                           modes=("full",), kinds=("softmax_gt",))
    s = aggregate(p.store.path, estimator="lasso", estimator_settings={"dense_max_mb": 0}, diagnostics=None,
                  progress=False)
    inf = Influence(s.out)
    assert "t0/full/softmax_gt/per_example" not in inf.group
    rebuilt = inf.array("t0", "full", "softmax_gt", "per_example")  # from the CSR
    assert rebuilt.shape == (6, 10)
    np.testing.assert_allclose(rebuilt.mean(0), inf.array("t0", "full", "softmax_gt", "overall"), atol=1e-6)


def test_bad_settings():
    with pytest.raises(EstimatorError, match="solver"):
        make("lasso", solver="magic")
    with pytest.raises(EstimatorError, match="holdout_fraction"):
        Lasso(holdout_fraction=1.0)


def test_constant_column_gets_zero_weights():
    rng = np.random.default_rng(0)
    x = rng.random((100, 8)) < 0.5
    y = np.column_stack([np.ones(100), x @ np.arange(8.0)])
    e = fed(Lasso(), x, y).result()
    assert (e.influence[:, 0] == 0).all() and e.extras["lambda"][0] == 0
    assert (e.influence[:, 1] != 0).sum() >= 6


def test_local_fanout_equals_single_process(tmp_path):
    rng = np.random.default_rng(5)
    w = sparse_effects(rng, 30, 10, strong=3)
    p = make_planted_store(tmp_path / "s.zarr", rows=300, units=30, n=(10,), scheme="bernoulli", noise=0.5,
                           modes=("full",), kinds=("softmax_gt",), effects={"t0": w})
    one = Influence(aggregate(p.store.path, out=tmp_path / "one.zarr", estimator="lasso", diagnostics=None,
                              progress=False).out)
    fan = {"launcher": "local", "examples_per_task": 3, "workers": 2, "folder": str(tmp_path / "fan")}
    many = Influence(aggregate(p.store.path, out=tmp_path / "many.zarr", estimator="lasso",
                               estimator_settings={"fanout": fan}, diagnostics=None, progress=False).out)
    for a, b in zip(one.sparse("t0", "full", "softmax_gt"), many.sparse("t0", "full", "softmax_gt")):
        np.testing.assert_array_equal(a, b)  # bitwise: each column's solve depends only on its own data
    np.testing.assert_array_equal(one.array("t0", "full", "softmax_gt", "lambda"),
                                  many.array("t0", "full", "softmax_gt", "lambda"))


def test_fanout_through_a_runner_passed_in_equals_single_process(tmp_path):
    """launcher=slurm's example blocks go through the runner the app passes in (a Slurm array's in the app:
    tests/launchers/test_slurm_cluster.py); the influence package runs them through any such runner, here the
    in-process one of influence/fanout.py, and refuses launcher=slurm without one."""
    from datatransfer.errors import AggregationError
    from datatransfer.influence.fanout import serial_map

    rng = np.random.default_rng(7)
    p = make_planted_store(tmp_path / "s.zarr", rows=300, units=30, n=(8,), scheme="bernoulli", noise=0.5,
                           modes=("full",), kinds=("softmax_gt",), effects={"t0": sparse_effects(rng, 30, 8, 3)})
    one = Influence(aggregate(p.store.path, out=tmp_path / "one.zarr", estimator="lasso", diagnostics=None,
                              progress=False).out)
    fan = {"launcher": "slurm", "examples_per_task": 3, "folder": str(tmp_path / "fan")}
    calls = []

    def runner(fn, items, on_done=None):
        calls.append(len(items))
        return serial_map(fn, items, on_done)

    many = Influence(aggregate(p.store.path, out=tmp_path / "many.zarr", estimator="lasso",
                               estimator_settings={"fanout": fan}, diagnostics=None, progress=False,
                               fanout_tasks=runner).out)
    assert calls == [3]  # 8 examples in blocks of 3
    for a, b in zip(one.sparse("t0", "full", "softmax_gt"), many.sparse("t0", "full", "softmax_gt")):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(AggregationError, match="fanout.launcher=slurm needs the Slurm array runner"):
        aggregate(p.store.path, out=tmp_path / "none.zarr", estimator="lasso", estimator_settings={"fanout": fan},
                  diagnostics=None, progress=False)
    assert not (tmp_path / "none.zarr").exists()


def test_influence_package_imports_nothing_of_slurm():
    """The LASSO fan-out, like the row-block aggregation, gets its Slurm runner from the app (docs/architecture.md)."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; import datatransfer.influence.aggregate, datatransfer.influence.lasso, "
            "datatransfer.influence.lasso_fanout; "
            "print(sorted(m for m in sys.modules if m.startswith('datatransfer.launchers') or m == 'submitit'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.stdout.strip() == "[]", r.stdout


def test_diagnostics_with_lasso_on_few_rows(tmp_path):
    """The convergence curves fit the LASSO on small prefixes with knockoff units, some of them in none of a
    prefix's rows: that point is left empty (NaN) instead of failing the aggregation."""
    from datatransfer.config import DiagnosticsConfig

    p = make_planted_store(tmp_path / "s.zarr", rows=40, units=20, n=(6,), noise=0.5, modes=("fixed",),
                           kinds=("softmax_gt",))
    s = aggregate(p.store.path, estimator="lasso", diagnostics=DiagnosticsConfig(bootstrap=5, points=4,
                                                                                 lds_examples=4), progress=False)
    d = Influence(s.out).diagnostics("t0", "fixed", "softmax_gt")
    assert d is not None and len(d["num_rows"]) >= 1
