"""Diagnostics: "are there enough models?" (the paper's Appendix A.5 and F), as curves over the number of rows N.

All four use the difference-of-means estimator (as the paper does) and need only small in-memory arrays that the
aggregation pass collects on the way: the masks of the rows used, each row's output averaged over the target's
examples (the "aggregate output"), and each row's outputs on a fixed sample of target examples (for LDS).

The used rows are split once, by a hash of the row index, into *fit* rows and *held-out* rows (20% by default, the
paper held out 1,540 of 7,540). For each N on a geometric grid, the estimates use the first N fit rows (in row
order, so a growing store extends the curve rather than reshuffling it):

- bootstrap std (A.5): resample the N rows with replacement B times, recompute the overall influences, take each
  unit's standard deviation over resamples, average over units;
- rank correlation (F, Fig. 29): the overall influences w define a linear predictor of a row's aggregate output
  from its mask, x . w; its Spearman correlation with the actual aggregate output on the held-out rows;
- LDS (linear datamodeling score): the same per target example (x . w_t against f(t) over held-out rows), averaged
  over the sampled examples;
- knockoff FDR (F, Fig. 30): knockoff masks drawn independently with the sweep's own scheme get influences too;
  the FDR is the share of knockoffs among the top-k influences of real and knockoff units together (0.5 = chance).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from datatransfer.influence.estimators import holdout_rows
from datatransfer.masks import row_mask

# Knockoff masks come from the sweep's seed plus this offset, through the same per-row mask function, so they are
# reproducible and independent of every real row's mask.
KNOCKOFF_SEED_OFFSET = 1_000_003
HOLDOUT_SALT = 1  # the ridge estimator's held-out split uses salt 0; these diagnostics use an independent split


def mask_scheme(store_config: Optional[Dict[str, Any]], masks: np.ndarray) -> Tuple[int, float, str]:
    """(seed, alpha, scheme) of the sweep, from the store's config; inferred from the masks when absent."""
    sweep = (store_config or {}).get("sweep") or {}
    if {"seed", "alpha", "scheme"} <= set(sweep):
        return int(sweep["seed"]), float(sweep["alpha"]), str(sweep["scheme"])
    sizes = masks.sum(axis=1)
    scheme = "fixed_size" if len(sizes) and (sizes == sizes[0]).all() else "bernoulli"
    return 0, float(masks.mean()) if masks.size else 0.5, scheme


def knockoff_masks(seed: int, num_rows: int, num_units: int, alpha: float, scheme: str) -> np.ndarray:
    """Bool (num_rows, num_units): row i's knockoff mask, drawn exactly like a real mask from another seed."""
    out = np.empty((num_rows, num_units), dtype=bool)
    for i in range(num_rows):
        out[i] = row_mask(seed + KNOCKOFF_SEED_OFFSET, i, num_units, alpha, scheme)
    return out


def rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n along axis 0 (each column of a 2-D array on its own), ties given their average rank (outputs
    like is_correct are full of ties). One sort for all columns: sort by (column, value)."""
    a = np.asarray(a, dtype=np.float64)
    flat = a.ndim == 1
    a2 = a[:, None] if flat else a
    n, k = a2.shape
    vals, cols = a2.T.ravel(), np.repeat(np.arange(k), n)
    order = np.lexsort((vals, cols))
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    sv, sc = vals[order], cols[order]
    new = np.r_[True, (sv[1:] != sv[:-1]) | (sc[1:] != sc[:-1])]
    dense = np.cumsum(new)[inv]
    bounds = np.r_[np.flatnonzero(new), len(order)]
    ranks = (0.5 * (bounds[dense] + bounds[dense - 1] + 1) - cols * n).reshape(k, n).T
    return ranks[:, 0] if flat else ranks


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Spearman rank correlation (of two vectors, or column by column of two 2-D arrays); NaN where a side is
    constant (no ranking to compare)."""
    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(axis=0), rb - rb.mean(axis=0)
    den = np.sqrt((ra ** 2).sum(axis=0) * (rb ** 2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, (ra * rb).sum(axis=0) / np.where(den > 0, den, 1), np.nan)
    return float(r) if np.ndim(r) == 0 else r


def dim(masks: np.ndarray, y: np.ndarray, weights: Optional[np.ndarray] = None) -> np.ndarray:
    """Difference of means of y (N,) or (N, K) for each unit; rows may carry integer weights (bootstrap counts).
    With weights (B, N) the result is (B, U). Units never in or never out give NaN here (callers skip them)."""
    x = masks.astype(np.float64)
    w = np.ones((1, len(x))) if weights is None else weights
    if y.ndim == 1:
        s_in, n_in, tot = w @ (x * y[:, None]), w @ x, w @ y
        n = w.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = s_in / n_in - (tot[:, None] - s_in) / (n[:, None] - n_in)
        return out[0] if weights is None else out
    s_in, n_in = x.T @ y, x.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return s_in / n_in[:, None] - (y.sum(axis=0)[None, :] - s_in) / (len(x) - n_in)[:, None]


def rows_grid(fit_masks: np.ndarray, points: int) -> np.ndarray:
    """Geometric grid of N, from the first prefix of the fit rows where every unit is both in and out."""
    n_fit = len(fit_masks)
    if n_fit < 2:
        return np.zeros(0, dtype=np.int64)
    cum_in = np.cumsum(fit_masks, axis=0)
    covered = (cum_in > 0).all(axis=1) & ((np.arange(1, n_fit + 1)[:, None] - cum_in) > 0).all(axis=1)
    if not covered.any():
        return np.zeros(0, dtype=np.int64)
    first = max(int(np.argmax(covered)) + 1, 2)
    return np.unique(np.round(np.geomspace(first, n_fit, max(points, 1))).astype(np.int64))


def convergence(masks: np.ndarray, rows: np.ndarray, aggregate: np.ndarray, samples: np.ndarray,
                knockoffs: np.ndarray, settings: Any, seed: int = 0) -> Dict[str, Any]:
    """Curves vs N for P output columns.

    masks (N, U) bool and knockoffs (N, U) bool for the used rows (store row indices ``rows``), aggregate (N, P)
    per-row output averaged over target examples, samples (N, P, S) per-row outputs on S sampled examples.
    ``settings`` has holdout_fraction, bootstrap, points, top_k. Returns arrays: num_rows (G,), and (P, G) arrays
    bootstrap_std, rank_corr, lds, fdr; knockoff_overall (P, U) from all used rows; plus counts and a note.
    """
    n_units = masks.shape[1]
    n_pairs = aggregate.shape[1]
    held = holdout_rows(rows, settings.holdout_fraction, HOLDOUT_SALT)
    fit = ~held
    grid = rows_grid(masks[fit], settings.points)
    top_k = settings.top_k if settings.top_k > 0 else max(1, int(round(n_units / 10)))
    top_k = min(top_k, 2 * n_units)
    out: Dict[str, Any] = {
        "num_rows": grid, "fit_rows": int(fit.sum()), "heldout_rows": int(held.sum()), "top_k": top_k,
        "note": "",
        "knockoff_overall": np.stack([dim(knockoffs, aggregate[:, p]) for p in range(n_pairs)])
        if len(rows) else np.zeros((n_pairs, n_units)),
    }
    curves = {k: np.full((n_pairs, len(grid)), np.nan) for k in ("bootstrap_std", "rank_corr", "lds", "fdr")}
    out.update(curves)
    if len(grid) == 0:
        out["note"] = "too few fit rows for every unit to be both in and out of some prefix: no curves yet"
        return out
    if held.sum() < 3:
        out["note"] = "fewer than 3 held-out rows: rank correlation and LDS not computed yet"
    xf, kf, xh = masks[fit], knockoffs[fit], masks[held].astype(np.float64)
    for g, n in enumerate(grid):
        # One set of bootstrap counts per N, shared by every output column so columns are comparable; seeded by
        # (seed, N) so a point does not depend on which other points the grid has.
        rng = np.random.default_rng([seed, int(n)])
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=settings.bootstrap).astype(np.float64) \
            if settings.bootstrap > 1 else None
        for p in range(n_pairs):
            y = aggregate[fit, p][:n]
            w = dim(xf[:n], y)
            if counts is not None:
                boot = dim(xf[:n], y, counts)
                with np.errstate(invalid="ignore"):
                    curves["bootstrap_std"][p, g] = np.nanmean(_nanstd(boot))
            both = np.concatenate([w, dim(kf[:n], y)])
            top = np.argsort(-np.nan_to_num(both, nan=-np.inf), kind="stable")[:top_k]
            curves["fdr"][p, g] = float((top >= n_units).mean())
            if held.sum() >= 3:
                curves["rank_corr"][p, g] = spearman(xh @ w, aggregate[held, p])
                ws = dim(xf[:n], samples[fit, p][:n])  # (U, S)
                pred = xh @ ws
                scores = np.atleast_1d(spearman(pred, samples[held, p]))
                curves["lds"][p, g] = np.nanmean(scores) if np.isfinite(scores).any() else np.nan
    return out


def _nanstd(a: np.ndarray) -> np.ndarray:
    """Per-column std over resamples (rows), ignoring NaN resamples (a unit that fell out of a resample)."""
    ok = np.isfinite(a)
    cnt = ok.sum(axis=0)
    mean = np.where(ok, a, 0).sum(axis=0) / np.maximum(cnt, 1)
    var = (np.where(ok, a - mean, 0) ** 2).sum(axis=0) / np.maximum(cnt - 1, 1)
    return np.where(cnt > 1, np.sqrt(var), np.nan)
