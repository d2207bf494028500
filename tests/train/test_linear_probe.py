"""The fixed-feature head (transfer.fixed.solver): Newton-CG reaches the optimum of the L2-penalised multinomial
logistic regression (checked against scikit-learn's solver of the same objective), L-BFGS gets close to it, and
the head folded back onto raw features gives the same logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from datatransfer.train.loop import Runtime
from datatransfer.train.models import Net
from datatransfer.train.transfer import _newton_probe, linear_probe

WD = 1e-3


def _features(n=600, f=12, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    centres = rng.normal(0, 1.0, size=(classes, f))
    x = centres[y] + rng.normal(0, 1.5, size=(n, f))  # overlapping classes: a finite optimum without the penalty too
    return x, y


def test_newton_reaches_the_optimum_scikit_learn_finds():
    x, y = _features()
    w, b = _newton_probe(x, y, 5, 100, WD)
    # same objective: sklearn minimises C * sum(loss) + |w|^2 / 2 (intercept unpenalised), ours mean(loss) + WD |w|^2
    ref = LogisticRegression(C=1 / (2 * WD * len(y)), tol=1e-12, max_iter=10_000).fit(x, y)
    assert np.abs(w - ref.coef_).max() < 1e-5 and np.abs(b - ref.intercept_).max() < 1e-5
    # the gradient at the solution is ~0 (Newton-CG stops at xtol 1e-10 on the step)
    logits = x @ w.T + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1
    assert np.abs(p.T @ x / len(y) + 2 * WD * w).max() < 1e-7 and np.abs(p.mean(0)).max() < 1e-7


def test_both_solvers_give_heads_for_raw_features_that_agree():
    x, y = _features(f=8, seed=1)
    model = Net(nn.Identity(), 8, 5)  # the "backbone" passes the features through
    loader = [(torch.from_numpy(x[i:i + 100]).float(), torch.from_numpy(y[i:i + 100])) for i in range(0, 600, 100)]
    rt = Runtime(torch.device("cpu"), False, 1)
    heads = {s: linear_probe(model, loader, 5, rt, 100, WD, s) for s in ("newton", "lbfgs")}
    feats = torch.from_numpy(x).float()
    with torch.no_grad():
        pn, pl = (torch.softmax(heads[s](feats), 1).numpy() for s in ("newton", "lbfgs"))
    assert np.abs(pn - pl).max() < 5e-3  # L-BFGS in float32 stops near, not at, the optimum
    # Newton's head on raw features = the optimum on standardised ones, folded back (to float32 rounding)
    mu, sd = feats.mean(0).double().numpy(), (feats.std(0) + 1e-6).double().numpy()
    w, b = _newton_probe((x.astype(np.float32) - mu.astype(np.float32)).astype(np.float64) / sd, y, 5, 100, WD)
    z = (feats.double().numpy() - mu) / sd
    assert np.abs(heads["newton"](feats).detach().double().numpy() - (z @ w.T + b)).max() == pytest.approx(0, abs=1e-4)
    # deterministic: the same head again, bitwise
    again = linear_probe(model, loader, 5, rt, 100, WD, "newton")
    assert torch.equal(again.weight, heads["newton"].weight) and torch.equal(again.bias, heads["newton"].bias)
