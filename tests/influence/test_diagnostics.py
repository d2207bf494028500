"""Diagnostics on planted data: every estimator gets held-out LDS, repeated rows give a noise ceiling, knockoffs are
valid under fixed-size masks, and the convergence rule's verdict and row prediction."""

import numpy as np
import pytest
from planted import make_planted_store

from datatransfer.config import DiagnosticsConfig
from datatransfer.influence import convergence as conv
from datatransfer.influence import diagnostics as diag
from datatransfer.influence.aggregate import aggregate
from datatransfer.influence.estimators import holdout_rows
from datatransfer.influence.reader import Influence
from datatransfer.masks import mask_matrix

FAST = DiagnosticsConfig(bootstrap=10, points=3, lds_examples=16)


def planted(rows, units, w, noise, seed=0, scheme="fixed_size", repeats=0):
    """Masks (rows, U), aggregate (rows, P) and samples (rows, P, S) of y = x . w + noise (w: (U, S))."""
    rng = np.random.default_rng(seed)
    x = mask_matrix(seed, rows, units, 0.5, scheme, repeats)
    y = x @ w + noise * rng.normal(size=(rows, w.shape[1]))
    return x, y.mean(axis=1, keepdims=True), y[:, None, :].astype(np.float32)


@pytest.mark.parametrize("estimator", [("dim", None), ("ridge", {"lambdas": [1e-3, 1e-2, 0.1]})])
def test_every_estimator_gets_rank_correlation_and_lds_on_rows_no_fit_used(estimator):
    rng = np.random.default_rng(1)
    w = rng.normal(size=(15, 8))
    x, agg, samples = planted(600, 15, w, 1.0)
    rows = np.arange(600)
    knock = diag.knockoff_masks(0, 600, 15, 0.5, "fixed_size")
    c = diag.convergence(x, rows, agg, samples, knock, FAST, estimator=estimator)
    assert c["estimator"] == estimator[0]
    assert np.isfinite(c["lds"]).all() and c["lds"][0, -1] > 0.7 and c["rank_corr"][0, -1] > 0.7
    # the held-out rows changed nothing the curves were fitted on: rewriting their outputs leaves the fits alone,
    # so the curves only move through the held-out side (LDS of garbage rows collapses)
    held = holdout_rows(rows, FAST.holdout_fraction, diag.HOLDOUT_SALT)
    junk_agg, junk_samples = agg.copy(), samples.copy()
    junk_agg[held] = rng.normal(size=(held.sum(), 1))
    junk_samples[held] = rng.normal(size=(held.sum(), 1, 8))
    j = diag.convergence(x, rows, junk_agg, junk_samples, knock, FAST, estimator=estimator)
    assert np.abs(j["lds"]).max() < 0.3 and np.array_equal(j["fdr"], c["fdr"])


def test_repeated_rows_give_a_noise_ceiling():
    rng = np.random.default_rng(2)
    units, noise = 32, 1.5
    w = rng.normal(scale=0.4, size=(units, 6))
    x, agg, samples = planted(1200, units, w, noise, repeats=2)  # every mask twice
    rows = np.arange(1200)
    pairs = diag.repeated_pairs(x, rows)
    assert len(pairs) == 600 and (x[pairs[:, 0]] == x[pairs[:, 1]]).all()
    c = diag.convergence(x, rows, agg, samples, diag.knockoff_masks(0, 1200, units, 0.5, "fixed_size"), FAST)
    assert c["repeated_pairs"] == 600
    # truth: corr(E[f | mask], f) = sd(signal) / sd(signal + noise), per example, over masks
    signal = mask_matrix(9, 20000, units, 0.5) @ w
    truth = np.sqrt(signal.var(axis=0) / (signal.var(axis=0) + noise ** 2)).mean()
    assert c["lds_ceiling"][0] == pytest.approx(truth, abs=0.05)
    assert c["lds"][0, -1] <= c["lds_ceiling"][0] + 0.03  # no estimator beats the ceiling (up to noise)
    # no repeats: no ceiling
    x2, agg2, s2 = planted(300, units, w, noise)
    c2 = diag.convergence(x2, np.arange(300), agg2, s2, diag.knockoff_masks(0, 300, units, 0.5, "fixed_size"), FAST)
    assert c2["repeated_pairs"] == 0 and np.isnan(c2["lds_ceiling"]).all()


def test_knockoffs_are_valid_under_fixed_size_masks_after_the_null_shift():
    """20 helpful units of 100: the top 50 hold the 20 and 30 others; with valid knockoffs those 30 are knockoffs
    and null real units in proportion 100 : 80 (FDR 30 * 100/180 / 50 = 0.33). Unshifted, the null real units sit
    at -U/(U-1) * mean(w) below the knockoffs and the FDR is inflated."""
    units, rows, k = 100, 3000, 50
    w = np.zeros((units, 1))
    w[:20] = 1.0
    fdr, raw = [], []
    for seed in range(6):
        x, agg, samples = planted(rows, units, w, 3.0, seed=seed)
        knock = diag.knockoff_masks(seed, rows, units, 0.5, "fixed_size")
        settings = DiagnosticsConfig(bootstrap=0, points=1, top_k=k, holdout_fraction=0.01)
        fdr.append(diag.convergence(x, np.arange(rows), agg, samples, knock, settings)["fdr"][0, -1])
        both = np.vstack([diag.dim(x, agg), diag.dim(knock, agg)])
        raw.append(diag._fdr(both, units, k)[0])
    print(f"knockoff FDR top {k}: shifted {np.mean(fdr):.3f} +- {np.std(fdr):.3f}, unshifted {np.mean(raw):.3f} "
          f"+- {np.std(raw):.3f} (6 seeds)")
    assert np.mean(fdr) == pytest.approx(30 * 100 / 180 / 50, abs=0.06)
    assert np.mean(raw) > np.mean(fdr) + 0.15
    # Bernoulli masks identify the effects themselves: no shift
    xb = mask_matrix(0, 500, 10, 0.5, "bernoulli")
    assert diag.null_level(np.ones((10, 2)), xb).tolist() == [0.0, 0.0]
    assert diag.default_top_k(30) == 10 and diag.default_top_k(1000) == 100 and diag.default_top_k(4) == 4


def test_convergence_rule_verdict_and_predicted_rows():
    rng = np.random.default_rng(3)
    units = 30
    w = np.zeros((units, 1))
    w[:5] = rng.uniform(0.5, 1.0, size=(5, 1))
    x = mask_matrix(0, 6400, units, 0.5)
    y = x @ w + 2.0 * rng.normal(size=(6400, 1))
    few = conv.rule(x[:400], y[:400], top_k=5, rel_se=0.1, overlap=0.8)
    many = conv.rule(x, y, top_k=5, rel_se=0.1, overlap=0.8)
    assert not few["conv_converged"][0] and few["conv_rows_more"][0] > 0
    assert many["conv_converged"][0] and many["conv_rows_more"][0] == 0 and many["conv_overlap"][0] == 1.0
    # SE ~ 1/sqrt(rows): 16x the rows, a quarter of the relative SE (within 25%)
    assert many["conv_rel_se"][0] == pytest.approx(few["conv_rel_se"][0] / 4, rel=0.25)
    # the prediction from 400 rows lands near the rows where the rule's SE condition is really met
    predicted = 400 + few["conv_rows_more"][0]
    at = conv.rule(x[:int(predicted)], y[:int(predicted)], top_k=5, rel_se=0.1, overlap=0.8)
    assert at["conv_rel_se"][0] == pytest.approx(0.1, rel=0.3)
    # Welch SE = the textbook two-sample formula
    se = conv.welch_se(x[:50], y[:50])
    a, b = y[:50][x[:50, 0], 0], y[:50][~x[:50, 0], 0]
    assert se[0, 0] == pytest.approx(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
    d = {**many, "top_k": 5, "converge_rel_se": 0.1, "converge_overlap": 0.8}
    assert conv.verdict(d, 0).startswith("converged at 6400 rows")
    assert "more rows" in conv.verdict({**few, "top_k": 5, "converge_rel_se": 0.1, "converge_overlap": 0.8}, 0)


def test_aggregate_stores_ceilings_null_levels_and_the_rule(tmp_path):
    p = make_planted_store(tmp_path / "s.zarr", rows=120, units=16, n=(10,), noise=0.5,
                           masks=mask_matrix(0, 120, 16, 0.5, repeats=3))
    s = aggregate(p.store.path, estimator="ridge", estimator_settings={"lambdas": [0.01, 0.1]}, diagnostics=FAST,
                  progress=False)
    inf = Influence(s.out)
    assert inf.attrs["diagnostics"]["estimator"] == "ridge"
    dg = inf.group["diagnostics/t0"]
    assert dg.attrs["estimator"] == "ridge" and dg.attrs["repeated_pairs"] >= 40
    for name in ("rank_corr_ceiling", "lds_ceiling", "null_level", *conv.FIELDS):
        assert dg[name].shape == (2, 2), name
    assert np.isfinite(dg["lds_ceiling"][:]).all()
    lines = conv.status_lines(inf)
    assert len(lines) == 2 and all("rows" in line for line in lines)
