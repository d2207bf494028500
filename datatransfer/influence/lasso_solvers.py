"""LASSO solvers on precomputed covariances (the "Gram form"): every target example shares the masks, so the mask
covariance S (U, U) is formed once and each example only brings its covariance with the masks c (U,).

Per example k and penalty lam the problem is

    min_w  1/2 w^T S w - c^T w + 1/2 syy + lam |w|_1      (= (1/2N) |y_c - X_c w|^2 + lam |w|_1, centred data)

and its duality gap is computable from (S, c, syy) alone: with g = c - S w (minus the gradient), R = syy - w.c - w.g
the mean squared residual, s = min(1, lam / max|g|):  gap = R (1 + s^2) / 2 + lam |w|_1 - s (syy - w.c).
Both solvers stop on gap <= tol * syy (scikit-learn's criterion), so they agree with it to the tolerance.

- :func:`path_cd` / :func:`refit_cd`: coordinate descent with covariance updates (glmnet's), one example per numba
  thread: after one full sweep only the nonzero coordinates are cycled until they settle, then the gap is checked.
  An update costs O(U) (a row of S), so a sparse path is cheap; this is the CPU solver.
- :func:`path_fista` / :func:`refit_fista`: accelerated proximal gradient (FISTA with gradient restart) on torch
  tensors, all examples of a block at once: each step is one (U, U) x (U, K) product, which is what a GPU is for.
  The (U, U) matrices may also be operators that stream the masks (``@`` and ``lipschitz()``; lasso_stream.py).

Along the path each solution is scored on held-out rows from their centred moments (H, p, cyy_h):
sse = cyy_h - 2 w.p + w^T H w; the solution with the least sse is kept (warm starts make the path cheap).
"""

from __future__ import annotations

from typing import Tuple

import numba
import numpy as np

# ---------------------------------------------------------------- coordinate descent (numba, CPU)


@numba.njit(cache=True, nogil=True)
def _gap(c, syy, lam, w, g):
    wc = 0.0
    wg = 0.0
    l1 = 0.0
    dual = 0.0
    for j in range(w.shape[0]):
        wc += w[j] * c[j]
        wg += w[j] * g[j]
        l1 += abs(w[j])
        if abs(g[j]) > dual:
            dual = abs(g[j])
    r = syy - wc - wg
    s = 1.0 if dual <= lam else lam / dual
    return 0.5 * r * (1.0 + s * s) + lam * l1 - s * (syy - wc)


@numba.njit(cache=True, nogil=True)
def _sweep(s_mat, lam, w, g, active_only):
    """One cycle of coordinate updates (all, or only the nonzero ones); returns (max |change|, max |w|)."""
    maxd = 0.0
    maxw = 0.0
    n = w.shape[0]
    for j in range(n):
        old = w[j]
        if active_only and old == 0.0:
            continue
        d = s_mat[j, j]
        if d <= 0.0:
            continue
        z = old + g[j] / d
        thr = lam / d
        new = z - thr if z > thr else (z + thr if z < -thr else 0.0)
        if new != old:
            delta = new - old
            w[j] = new
            row = s_mat[j]
            for i in range(n):
                g[i] -= row[i] * delta
            if abs(delta) > maxd:
                maxd = abs(delta)
        if abs(new) > maxw:
            maxw = abs(new)
    return maxd, maxw


@numba.njit(cache=True, nogil=True)
def _solve(s_mat, c, syy, lam, w, g, tol, max_iter):
    """w, g (= c - S w) in place to a gap <= tol * syy; returns the outer iterations used (max_iter: not reached)."""
    for it in range(max_iter):
        _sweep(s_mat, lam, w, g, False)
        for _ in range(max_iter):
            maxd, maxw = _sweep(s_mat, lam, w, g, True)
            if maxd <= tol * max(maxw, 1e-300) or maxw == 0.0:
                break
        if _gap(c, syy, lam, w, g) <= tol * syy:
            return it + 1
    return max_iter


@numba.njit(cache=True, nogil=True)
def _heldout_sse(w, h_mat, p, cyy):
    act = np.flatnonzero(w)
    s = cyy
    for a in act:
        s -= 2.0 * w[a] * p[a]
        acc = 0.0
        for b in act:
            acc += h_mat[a, b] * w[b]
        s += w[a] * acc
    return s, act.shape[0]


@numba.njit(cache=True, parallel=True)
def path_cd(s_mat, c, syy, lambdas, h_mat, p, cyy, tol, max_iter, patience):
    """Per example k (rows of ``c`` (K, U), ``p`` (K, U)): the path over ``lambdas[:, k]`` (decreasing), warm
    started; it stops early once the held-out sse has not improved for ``patience`` steps (0: never), the rest of
    the path scored +inf. Returns (best w (K, U), held-out sse (L, K), nonzeros (L, K), solves that hit max_iter
    (K,))."""
    k_n, u_n = c.shape
    l_n = lambdas.shape[0]
    best_w = np.zeros((k_n, u_n))
    sse = np.full((l_n, k_n), np.inf)
    nnz = np.zeros((l_n, k_n), dtype=np.int64)
    capped = np.zeros(k_n, dtype=np.int64)
    for k in numba.prange(k_n):
        w = np.zeros(u_n)
        g = c[k].copy()
        best = np.inf
        since = 0
        for li in range(l_n):
            if _solve(s_mat, c[k], syy[k], lambdas[li, k], w, g, tol, max_iter) >= max_iter:
                capped[k] += 1
            sse[li, k], nnz[li, k] = _heldout_sse(w, h_mat, p[k], cyy[k])
            since += 1
            if sse[li, k] < best:
                best = sse[li, k]
                best_w[k] = w
                since = 0
            if patience > 0 and since >= patience:
                break
    return best_w, sse, nnz, capped


@numba.njit(cache=True, parallel=True)
def refit_cd(s_mat, c, syy, lam, w0, tol, max_iter):
    """Per example k: the solution at ``lam[k]`` on (S, c[k], syy[k]) warm started at ``w0[k]``. Returns
    (w (K, U), examples that hit max_iter (K,))."""
    k_n, u_n = c.shape
    out = w0.copy()
    capped = np.zeros(k_n, dtype=np.int64)
    for k in numba.prange(k_n):
        w = out[k]
        g = c[k].copy()
        for a in np.flatnonzero(w):
            for i in range(u_n):
                g[i] -= s_mat[a, i] * w[a]
        if _solve(s_mat, c[k], syy[k], lam[k], w, g, tol, max_iter) >= max_iter:
            capped[k] = 1
    return out, capped


# ---------------------------------------------------------------- FISTA (torch, any device)


def _gap_t(c, syy, lam, w, g):
    import torch

    wc, wg = (w * c).sum(0), (w * g).sum(0)
    dual = g.abs().amax(0)
    s = torch.where(dual <= lam, torch.ones_like(dual), lam / dual.clamp_min(1e-300))
    return 0.5 * (syy - wc - wg) * (1 + s * s) + lam * w.abs().sum(0) - s * (syy - wc)


def _fista(s_mat, c, syy, lam, w, step, tol, max_iter, check_every=10):
    """Columns of ``c`` (U, K) at penalties ``lam`` (K,), from ``w`` (U, K); returns (w, columns not converged)."""
    import torch

    z, t = w.clone(), 1.0
    for it in range(1, max_iter + 1):
        grad_step = z + step * (c - s_mat @ z)
        w_new = torch.sign(grad_step) * (grad_step.abs() - step * lam).clamp_min(0)
        t_new = (1 + (1 + 4 * t * t) ** 0.5) / 2
        restart = ((z - w_new) * (w_new - w)).sum(0) > 0  # momentum points uphill: drop it (O'Donoghue-Candes)
        z = torch.where(restart, w_new, w_new + ((t - 1) / t_new) * (w_new - w))
        w, t = w_new, (1.0 if bool(restart.all()) else t_new)
        if it % check_every == 0:
            open_ = _gap_t(c, syy, lam, w, c - s_mat @ w) > tol * syy
            if not bool(open_.any()):
                return w, 0
    return w, int(open_.sum())


def _lipschitz(s_mat) -> float:
    import torch

    if not isinstance(s_mat, torch.Tensor):  # an operator on the masks (lasso_stream.Implicit): power iteration
        return s_mat.lipschitz()
    return float(torch.linalg.eigvalsh(s_mat)[-1].clamp_min(1e-12))


def path_fista(s_mat, c, syy, lambdas, h_mat, p, cyy, tol, max_iter, patience) -> Tuple:
    """Same contract as :func:`path_cd` on torch tensors (all examples of the block at once; the path stops when
    every example's has)."""
    import torch

    step = 1.0 / _lipschitz(s_mat)
    ct, pt = c.T.contiguous(), p.T.contiguous()  # (U, K)
    w = torch.zeros_like(ct)
    best_w = torch.zeros_like(ct)
    best = torch.full_like(syy, float("inf"))
    sse = torch.full_like(lambdas, float("inf"))
    nnz = torch.zeros(lambdas.shape, dtype=torch.int64, device=lambdas.device)
    capped = torch.zeros_like(syy, dtype=torch.int64)
    since = torch.zeros_like(capped)
    for li in range(lambdas.shape[0]):
        go = since < patience if patience > 0 else torch.ones_like(since, dtype=torch.bool)
        if not bool(go.any()):
            break
        w, left = _fista(s_mat, ct, syy, lambdas[li], w, step, tol, max_iter)
        capped += left > 0
        sse[li] = torch.where(go, cyy - 2 * (w * pt).sum(0) + (w * (h_mat @ w)).sum(0), float("inf"))
        nnz[li] = (w != 0).sum(0)
        better = sse[li] < best
        best = torch.where(better, sse[li], best)
        best_w = torch.where(better, w, best_w)
        since = torch.where(better, 0, since + 1)
    return best_w.T.contiguous(), sse, nnz, capped


def refit_fista(s_mat, c, syy, lam, w0, tol, max_iter):
    """Same contract as :func:`refit_cd` on torch tensors."""
    w, left = _fista(s_mat, c.T.contiguous(), syy, lam, w0.T.contiguous(), 1.0 / _lipschitz(s_mat), tol, max_iter)
    return w.T.contiguous(), left
