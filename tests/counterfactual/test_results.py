"""The counterfactual summaries: Welch's interval against scipy's own test, and best k."""

import numpy as np
import pytest
from scipy import stats

from datatransfer.counterfactual.results import Rows, best_k, summary, welch


def test_welch_interval_matches_scipy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(0.7, 0.02, 5), rng.normal(0.68, 0.05, 7)
    d, lo, hi = welch(x, y)
    ci = stats.ttest_ind(x, y, equal_var=False).confidence_interval(0.95)
    assert d == pytest.approx(x.mean() - y.mean()) and (lo, hi) == pytest.approx((ci.low, ci.high))
    assert np.isnan(welch(x[:1], y)[1]) and welch(x[:1], y)[0] == pytest.approx(x[0] - y.mean())


def _rows(points, ks, acc):
    n = len(points)
    return Rows("t", "fixed", "softmax_gt", ["fixed"], np.arange(n), list(points), np.array(ks), np.zeros(n, int),
                -np.ones(n, int), np.array(acc, float)[:, None], np.zeros((n, 1)), 10, {})


def test_summary_and_best_k():
    r = _rows(["bottom"] * 4 + ["full"] * 2 + ["handpicked"] * 2, [1, 1, 3, 3, 0, 0, 4, 4],
              [0.80, 0.82, 0.70, 0.72, 0.75, 0.77, 0.60, 0.62])
    recs = summary(r)
    b1 = [x for x in recs if x["point"] == "bottom" and x["k"] == 1][0]
    assert b1["mean"] == pytest.approx(0.81) and b1["n"] == 2 and b1["diff_to_full"] == pytest.approx(0.05)
    assert b1["ci_low"] < 0.05 < b1["ci_high"]
    best = best_k(r, recs)
    assert [(x["source"], x["k"], x["classes_kept"]) for x in best] == [("best bottom", 1, 9), ("full", 0, 10),
                                                                         ("handpicked", 4, 6)]


def test_automatic_examples_put_mistakes_first_then_the_clearest_influencer():
    from datatransfer.counterfactual.plan import auto_examples

    x = np.random.default_rng(0).normal(size=(6, 10))
    x[2, 3], x[4, 1] = -9.0, -5.0  # examples 2 and 4: one influencer far below the others
    assert auto_examples(x, 2, []) == [2, 4]
    assert auto_examples(x, 2, [2]) == [4, auto_examples(x, 3, [])[2]]
    mistakes = np.array([0, 0, 0, 0, 1, 1], dtype=bool)
    assert auto_examples(x, 3, [], mistakes) == [4, 5, 2]
