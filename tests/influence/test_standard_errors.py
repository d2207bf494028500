"""Standard errors: Welch against a direct computation, bootstrap against Welch, and the coverage of the 95%
intervals of a planted truth."""

import numpy as np
import pytest
from planted import make_planted_store

from datatransfer.influence.aggregate import aggregate
from datatransfer.influence.estimators import DifferenceOfMeans, make, poisson_weights
from datatransfer.influence.reader import Influence


def welch_loop(x, y):
    """sqrt(s1^2/n1 + s0^2/n0) per unit and column, with numpy's sample variances."""
    out = np.zeros((x.shape[1], y.shape[1]))
    for c in range(x.shape[1]):
        a, b = y[x[:, c]], y[~x[:, c]]
        out[c] = np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b))
    return out


def test_welch_matches_direct_computation():
    rng = np.random.default_rng(0)
    x = rng.random((120, 7)) < 0.4
    y = 5.0 + rng.normal(size=(120, 5))
    est = DifferenceOfMeans()
    for i in range(0, 120, 17):
        est.update(np.arange(i, min(i + 17, 120)), x[i:i + 17], y[i:i + 17])
    np.testing.assert_allclose(est.result().se, welch_loop(x, y), rtol=1e-10)


def test_poisson_weights_depend_on_row_and_seed_only():
    a = poisson_weights(np.arange(10), 5, seed=3)
    np.testing.assert_array_equal(poisson_weights(np.arange(10)[::-1], 5, seed=3), a[::-1])
    assert not np.array_equal(poisson_weights(np.arange(10), 5, seed=4), a)
    assert abs(poisson_weights(np.arange(2000), 20, 0).mean() - 1) < 0.02


def test_bootstrap_se_near_welch():
    rng = np.random.default_rng(1)
    x = rng.random((400, 4)) < 0.5
    y = rng.normal(size=(400, 3)) + x[:, :3] * 0.5
    boot = make("dim", bootstrap=200, bootstrap_seed=0)
    boot.update(np.arange(400), x, y)
    r = boot.result()
    assert r.replicates.shape == (200, 4, 3)
    ratio = r.replicates.std(0, ddof=1) / welch_loop(x, y)
    assert 0.8 < ratio.min() and ratio.max() < 1.2


def covered(est, se, truth):
    return np.abs(est - truth) <= 1.96 * se


@pytest.mark.parametrize("estimator", ["dim", "ridge_bootstrap"])
def test_intervals_cover_planted_truth(tmp_path, estimator):
    """Bernoulli masks make difference of means unbiased for the planted effects (scaled per mode and kind, see
    tests/planted.py); the 95% intervals of per-example, per-class and overall influences cover it 93-97% of the
    time. Sizes chosen so that the share over ~5,000 entries sits well inside that band: over seeds 0-7 it ranged
    0.941-0.958 (dim) and 0.944-0.956 (ridge); the test's seed makes it deterministic."""
    p = make_planted_store(tmp_path / "s.zarr", rows=300, units=25, n=(200,), classes=4, noise=1.0,
                           scheme="bernoulli", seed=5, modes=("fixed",), kinds=("softmax_gt",))
    if estimator == "dim":
        inf = Influence(aggregate(p.store.path, diagnostics=None, progress=False).out)
    else:  # ridge with a tiny penalty is nearly unbiased too; its intervals come from the bootstrap
        inf = Influence(aggregate(p.store.path, estimator="ridge", diagnostics=None, progress=False,
                                  estimator_settings={"lambdas": [1e-6], "bootstrap": 100}).out)
    labels = p.store.labels("t0")
    hits = {"per_example": [], "per_class": [], "overall": []}
    for m, mode in enumerate(p.store.modes):
        for k, kind in enumerate(p.store.output_kinds):
            w = p.w["t0"] * (1.0 + m * len(p.store.output_kinds) + k)  # (U, n) truth of this pair
            truth = {"per_example": w.T, "per_class": np.stack([w[:, labels == c].mean(1) for c in range(4)]),
                     "overall": w.mean(1)}
            assert inf.se_method("t0", mode, kind) == ("welch" if estimator == "dim" else "bootstrap")
            for level in hits:
                est, se = inf.array("t0", mode, kind, level), inf.se("t0", mode, kind, level)
                assert se.shape == est.shape and np.isfinite(se).all() and (se > 0).all()
                lo, hi = inf.interval("t0", mode, kind, level)
                np.testing.assert_allclose(hi - lo, 2 * 1.959964 * se, rtol=1e-5)
                hits[level].append(covered(est, se, truth[level]).ravel())
    rate = np.concatenate([np.concatenate(v) for v in hits.values()]).mean()
    assert 0.93 <= rate <= 0.97, rate
    assert np.concatenate(hits["per_example"]).mean() > 0.9


def test_ridge_without_bootstrap_has_no_se(tmp_path):
    p = make_planted_store(tmp_path / "s.zarr", rows=60, units=5, n=(6,), scheme="bernoulli")
    inf = Influence(aggregate(p.store.path, estimator="ridge", diagnostics=None, progress=False).out)
    assert inf.se("t0", "fixed", "softmax_gt") is None and inf.interval("t0", "fixed", "softmax_gt") is None


def test_blocked_welch_equals_the_whole_array_formulas_bitwise():
    """welch() runs in blocks of units (~1 MB at a time: 13 of the 40 units here, a partial last block), split
    between threads or not: the same
    operations in the same order as these whole-array ones, so the same bits, including units in fewer than 2 rows
    (NaN) and in every row."""
    from datatransfer.influence.estimators import welch

    rng = np.random.default_rng(5)
    rows = 300
    masks = rng.random((rows, 40)) < 0.5
    masks[:, 0], masks[:, 1], masks[:, 2] = False, True, False
    masks[7, 2] = True  # one row: NaN
    y = rng.normal(size=(rows, 10_000))
    x = masks.T.astype(np.float64)
    s_in, s_sq, n_in = x @ y, x @ (y * y), masks.sum(axis=0)
    total, total_sq = y.sum(axis=0), (y * y).sum(axis=0)
    n1 = n_in.astype(np.float64)[:, None]
    n0 = rows - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        r1, r0 = 1.0 / n1, 1.0 / n0
        b, b2 = total - s_in, total_sq - s_sq
        want_infl = s_in * r1 - b * r0
        v1 = np.maximum(s_sq - s_in * s_in * r1, 0.0) * (r1 / (n1 - 1))
        v0 = np.maximum(b2 - b * b * r0, 0.0) * (r0 / (n0 - 1))
        want_se = np.sqrt(v1 + v0)
    want_se[np.broadcast_to((n1 < 2) | (n0 < 2), want_se.shape)] = np.nan
    for threads in (1, 2, 3):  # the units split between threads: the same bits
        infl, se = welch(s_in, s_sq, total, total_sq, n_in, rows, threads)
        np.testing.assert_array_equal(infl, want_infl)
        np.testing.assert_array_equal(se, want_se)
    assert np.isnan(se[:3]).all() and np.isfinite(se[3:]).all()
