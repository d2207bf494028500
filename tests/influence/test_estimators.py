"""Estimators and diagnostics on in-memory arrays, against direct (slow, obvious) computations."""

import numpy as np
import pytest

from datatransfer.config import DiagnosticsConfig
from datatransfer.errors import EstimatorError
from datatransfer.influence import diagnostics as diag
from datatransfer.influence.estimators import (
    DifferenceOfMeans,
    Ridge,
    holdout_rows,
    make,
)
from datatransfer.masks import mask_matrix


def fit(est, masks, y, rows=None, block_rows=4096):
    """Stream in-memory ``masks``/``y`` through ``est.update`` in blocks of ``block_rows``; return the result."""
    masks, y = np.asarray(masks, dtype=bool), np.asarray(y)
    y = y[:, None] if y.ndim == 1 else y
    rows = np.arange(len(masks)) if rows is None else np.asarray(rows)
    for i in range(0, len(masks), block_rows):
        est.update(rows[i:i + block_rows], masks[i:i + block_rows], y[i:i + block_rows])
    return est.result()


def loop_dim(x, y):
    """Algorithm 1 line 7, literally: for each unit c and column k."""
    out = np.zeros((x.shape[1], y.shape[1]))
    for c in range(x.shape[1]):
        for k in range(y.shape[1]):
            out[c, k] = y[x[:, c], k].mean() - y[~x[:, c], k].mean()
    return out


def ridge_lstsq(x, y, lam):
    """min ||y - b - Xw||^2 + N lam |w|^2 by an augmented least-squares solve (bias unpenalised)."""
    n, u = x.shape
    a = np.vstack([np.hstack([np.ones((n, 1)), x]), np.hstack([np.zeros((u, 1)), np.sqrt(n * lam) * np.eye(u)])])
    b = np.vstack([y, np.zeros((u, y.shape[1]))])
    return np.linalg.lstsq(a, b, rcond=None)[0][1:]


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.random((150, 9)) < 0.4  # bernoulli masks
    y = rng.normal(size=(150, 4)).astype(np.float32)
    y[:, 3] = rng.integers(0, 2, 150)  # a 0/1 column like is_correct
    return x, y


@pytest.mark.parametrize("block", [1, 7, 150])
def test_dim_matches_loop(data, block):
    x, y = data
    e = fit(DifferenceOfMeans(), x, y, block_rows=block)
    np.testing.assert_allclose(e.influence, loop_dim(x, y.astype(np.float64)), rtol=1e-10, atol=1e-12)
    assert (e.n_in == x.sum(0)).all() and (e.n_out == (~x).sum(0)).all() and e.rows == 150
    np.testing.assert_allclose(e.mean, y.astype(np.float64).mean(0), rtol=1e-12)


def test_dim_invariant_to_row_order(data):
    x, y = data
    perm = np.random.default_rng(1).permutation(len(x))
    a = fit(DifferenceOfMeans(), x, y, block_rows=11).influence
    b = fit(DifferenceOfMeans(), x[perm], y[perm], block_rows=4).influence
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_dim_never_in_or_out_is_a_clear_error(data):
    x, y = data
    x = x.copy()
    x[:, 2] = False
    x[:, 5] = True
    with pytest.raises(EstimatorError, match=r"in none of the 150 rows used \('unit 2'\).*in every one.*'unit 5'"):
        fit(DifferenceOfMeans(), x, y)
    est = DifferenceOfMeans()
    est.update(np.arange(150), x, y)
    with pytest.raises(EstimatorError, match="'c'.*'f'"):
        est.result(list("abcdefghi"))


def test_nan_outputs_are_refused(data):
    x, y = data
    y = y.copy()
    y[3, 1] = np.nan
    with pytest.raises(EstimatorError, match="NaN"):
        fit(DifferenceOfMeans(), x, y)


@pytest.mark.parametrize("scheme", ["bernoulli", "fixed_size"])
def test_ridge_single_lambda_matches_lstsq(scheme):
    rng = np.random.default_rng(2)
    x = mask_matrix(3, 120, 10, 0.5, scheme)  # fixed_size: rank-deficient with the bias, ridge still unique
    y = rng.normal(size=(120, 3))
    e = fit(Ridge(lambdas=[0.05]), x, y, block_rows=13)
    np.testing.assert_allclose(e.influence, ridge_lstsq(x.astype(float), y, 0.05), rtol=1e-8, atol=1e-10)
    assert (e.extras["lambda"] == 0.05).all()


def test_ridge_choice_matches_brute_force():
    """Each column's lambda minimises the held-out squared error of a fit on the other rows; then all rows."""
    rng = np.random.default_rng(4)
    x = rng.random((300, 8)) < 0.5
    w = rng.normal(size=(8, 5)) * np.array([0.0, 0.05, 0.3, 1.0, 3.0])  # from pure noise to strong signal
    y = x @ w + rng.normal(size=(300, 5))
    lambdas = [1e-3, 1e-2, 0.1, 1.0, 10.0]
    est = Ridge(lambdas=lambdas, holdout_fraction=0.25, salt=0)
    e = fit(est, x, y, block_rows=17)
    held = holdout_rows(np.arange(300), 0.25, 0)
    xf = x.astype(float)
    sse = []
    for lam in lambdas:
        wl = ridge_lstsq(xf[~held], y[~held], lam)
        b = y[~held].mean(0) - xf[~held].mean(0) @ wl
        sse.append(((y[held] - b - xf[held] @ wl) ** 2).sum(0))
    chosen = np.asarray(lambdas)[np.argmin(sse, axis=0)]
    np.testing.assert_allclose(e.extras["lambda"], chosen)
    expect = np.column_stack([ridge_lstsq(xf, y[:, [k]], chosen[k])[:, 0] for k in range(5)])
    np.testing.assert_allclose(e.influence, expect, rtol=1e-8, atol=1e-10)
    assert chosen[0] > chosen[-1]  # noise gets the strongest penalty, strong signal the weakest


def test_ridge_invariant_to_order_and_blocks():
    rng = np.random.default_rng(5)
    x = rng.random((200, 6)) < 0.5
    y = rng.normal(size=(200, 3))
    rows = np.arange(200)
    perm = rng.permutation(200)
    a = fit(Ridge(), x, y, rows=rows, block_rows=200)
    b = fit(Ridge(), x[perm], y[perm], rows=rows[perm], block_rows=9)  # rows travel with their data
    np.testing.assert_allclose(a.influence, b.influence, rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(a.extras["lambda"], b.extras["lambda"])


def test_ridge_defaults_match_the_config():
    from datatransfer.config import RidgeEstimatorConfig

    cfg = RidgeEstimatorConfig()
    r = Ridge()
    assert r.lambdas == cfg.lambdas and r.holdout_fraction == cfg.holdout_fraction


def test_ridge_bad_settings():
    with pytest.raises(EstimatorError):
        Ridge(lambdas=[0.0])
    with pytest.raises(EstimatorError):
        make("nosuch")


def test_holdout_rows_is_a_stable_function_of_the_row():
    rows = np.arange(10_000)
    h = holdout_rows(rows, 0.2)
    assert abs(h.mean() - 0.2) < 0.02
    np.testing.assert_array_equal(holdout_rows(rows[::-1], 0.2), h[::-1])
    assert (holdout_rows(rows, 0.2, salt=1) != h).mean() > 0.2  # another salt, another split


def test_planted_truth_recovered():
    rng = np.random.default_rng(6)
    x = mask_matrix(0, 2000, 30, 0.5, "fixed_size")
    w = rng.normal(size=(30, 4))
    y = x @ w + 0.5 * rng.normal(size=(2000, 4))
    for e in (fit(DifferenceOfMeans(), x, y), fit(Ridge(), x, y)):
        for k in range(4):
            assert diag.spearman(e.influence[:, k], w[:, k]) >= 0.95


def test_rankdata_and_spearman():
    np.testing.assert_array_equal(diag.rankdata(np.array([3.0, 1.0, 2.0, 2.0])), [4, 1, 2.5, 2.5])
    a = np.random.default_rng(7).normal(size=(40, 3))
    np.testing.assert_allclose(diag.spearman(a, np.exp(a)), 1.0)  # rank correlation ignores monotone transforms
    assert diag.spearman(a[:, 0], -a[:, 0]) == pytest.approx(-1.0)
    assert np.isnan(diag.spearman(np.ones(5), np.arange(5.0)))
    # Pearson correlation of the ranks, by the textbook formula without ties
    r1, r2 = np.argsort(np.argsort(a[:, 0])), np.argsort(np.argsort(a[:, 1]))
    d = (r1 - r2).astype(float)
    assert diag.spearman(a[:, 0], a[:, 1]) == pytest.approx(1 - 6 * (d ** 2).sum() / (40 * (40 ** 2 - 1)))


def test_knockoff_masks_follow_the_scheme_and_are_reproducible():
    real = mask_matrix(3, 50, 20, 0.5, "fixed_size")
    k1 = diag.knockoff_masks(3, 50, 20, 0.5, "fixed_size")
    np.testing.assert_array_equal(k1, diag.knockoff_masks(3, 50, 20, 0.5, "fixed_size"))
    assert (k1.sum(1) == 10).all() and (k1 != real).any()
    sizes = lambda: (real.sum(axis=1), real.shape[1])  # noqa: E731
    assert diag.mask_scheme({"sweep": {"seed": 3, "alpha": 0.5, "scheme": "fixed_size"}}, sizes) == (3, 0.5,
                                                                                                    "fixed_size")
    assert diag.mask_scheme(None, sizes) == (0, 0.5, "fixed_size")
    ragged = mask_matrix(3, 50, 20, 0.3, "bernoulli")
    assert diag.mask_scheme(None, lambda: (ragged.sum(axis=1), 20)) == (0, ragged.mean(), "bernoulli")


def test_convergence_curves_on_planted_data():
    rng = np.random.default_rng(8)
    rows = np.arange(800)
    x = mask_matrix(0, 800, 20, 0.5, "fixed_size")
    w = np.zeros((20, 6))
    w[:4] = rng.uniform(0.5, 1.0, size=(4, 6))  # 4 truly helpful units
    w[4:] = 0.02 * rng.normal(size=(16, 6))
    y = x @ w + 0.3 * rng.normal(size=(800, 6))
    knock = diag.knockoff_masks(0, 800, 20, 0.5, "fixed_size")
    settings = DiagnosticsConfig(bootstrap=50, points=5, top_k=4)
    c = diag.convergence(x, rows, y.mean(1, keepdims=True), y[:, None, :].astype(np.float32), knock, settings)
    n = c["num_rows"]
    assert n[-1] == c["fit_rows"] and c["fit_rows"] + c["heldout_rows"] == 800 and (np.diff(n) > 0).all()
    assert c["bootstrap_std"][0, -1] < c["bootstrap_std"][0, 0]  # estimates settle with more rows
    assert c["rank_corr"][0, -1] > 0.8 and c["lds"][0, -1] > 0.8
    assert c["fdr"][0, -1] == 0.0  # the 4 real units beat all knockoffs
    assert c["knockoff_overall"].shape == (1, 20)
    # the bootstrap std at one N equals a direct loop over the same resamples (counts seeded by (seed, N))
    nb = int(n[1])
    counts = np.random.default_rng([0, nb]).multinomial(nb, np.full(nb, 1 / nb), size=50)
    fit = ~holdout_rows(rows, 0.2, diag.HOLDOUT_SALT)
    xf, yf = x[fit][:nb], y.mean(1)[fit][:nb]
    boots = []
    for cnt in counts:
        idx = np.repeat(np.arange(nb), cnt)
        xi, yi = xf[idx], yf[idx]
        boots.append([yi[xi[:, u]].mean() - yi[~xi[:, u]].mean() if 0 < xi[:, u].sum() < len(xi) else np.nan
                      for u in range(20)])
    assert c["bootstrap_std"][0, 1] == pytest.approx(np.nanmean(np.nanstd(np.array(boots), axis=0, ddof=1)))
