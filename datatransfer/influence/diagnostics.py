"""Diagnostics: "are there enough models?" (the paper's Appendix A.5 and F), as curves over the number of rows N.

They need only small in-memory arrays that the aggregation pass collects on the way: the masks of the rows used,
each row's output averaged over the target's examples (the "aggregate output"), and each row's outputs on a fixed
sample of target examples (for LDS).

The used rows are split once, by a hash of the row index, into *fit* rows and *held-out* rows (20% by default, the
paper held out 1,540 of 7,540); no curve's fit uses a held-out row (a held-out row may share its mask with a fit
row, ``sweep.repeats``: their training noise is independent, so nothing of the held-out outputs leaks). For each
N on a geometric grid, the estimates use the first N fit rows (in row order, so a growing store extends the curve
rather than reshuffling it). Every curve uses the aggregation's own estimator (difference of means or ridge),
fitted on those N fit rows only:

- bootstrap std (A.5): resample the N rows with replacement B times, recompute the overall difference-of-means
  influences, take each unit's standard deviation over resamples, average over units (difference of means for
  every estimator: a ridge fit per resample would cost B eigendecompositions);
- rank correlation (F, Fig. 29): the overall influences w define a linear predictor of a row's aggregate output
  from its mask, x . w; its Spearman correlation with the actual aggregate output on the held-out rows;
- LDS (linear datamodeling score): the same per target example (x . w_t against f(t) over held-out rows), averaged
  over the sampled examples;
- noise ceiling (from repeated rows): two rows with one mask differ only by training noise; the rank correlation
  r of their outputs over such pairs is the share of variance a mask explains, and sqrt(r) is the correlation
  the true E[f | mask] would reach against one noisy row: the best rank correlation and LDS any estimator can
  get. NaN when the used rows hold fewer than ``MIN_PAIRS`` repeated pairs;
- knockoff FDR (F, Fig. 30): knockoff masks drawn independently with the sweep's own scheme are fitted together
  with the real masks; the FDR is the share of knockoffs among the top-k influences of real and knockoff units
  together (0.5 = chance). Under fixed-size masks a mask always holds k units, so the design is collinear with
  the intercept and influences are identified only relative to the average unit: a null real unit sits at
  -U/(U-1) * mean(w) while a knockoff (independent of everything) sits at 0. The real influences are therefore
  shifted by the centre of their bulk (an iterated median that ignores units far from it: the null level,
  assuming most units have no effect) before the comparison;
  Bernoulli masks need no shift (``null_level``).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from datatransfer.errors import EstimatorError
from datatransfer.influence import convergence as convergence_rule
from datatransfer.influence.estimators import holdout_rows, make
from datatransfer.masks import row_mask

# Knockoff masks come from the sweep's seed plus this offset, through the same per-row mask function, so they are
# reproducible and independent of every real row's mask.
KNOCKOFF_SEED_OFFSET = 1_000_003
HOLDOUT_SALT = 1  # the ridge estimator's held-out split uses salt 0; these diagnostics use an independent split


def mask_scheme(store_config: Optional[Dict[str, Any]], sizes: Callable[[], Tuple[np.ndarray, int]]) \
        -> Tuple[int, float, str]:
    """(seed, alpha, scheme) of the sweep, from the store's config; when absent, inferred from the rows' mask sizes
    (``sizes()``: (each row's number of units, U); only called then)."""
    sweep = (store_config or {}).get("sweep") or {}
    if {"seed", "alpha", "scheme"} <= set(sweep):
        return int(sweep["seed"]), float(sweep["alpha"]), str(sweep["scheme"])
    sizes, units = sizes()
    scheme = "fixed_size" if len(sizes) and (sizes == sizes[0]).all() else "bernoulli"
    return 0, float(sizes.mean() / units) if len(sizes) and units else 0.5, scheme


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
    if points <= 1:
        return np.array([n_fit], dtype=np.int64)
    return np.unique(np.round(np.geomspace(first, n_fit, max(points, 1))).astype(np.int64))


MIN_PAIRS = 5  # repeated pairs needed for a noise ceiling


def default_top_k(num_units: int) -> int:
    """Top-k of the knockoff FDR when ``diagnostics.top_k`` is 0: a tenth of the units (the paper: 100 of 1,000),
    but at least 10 (or all units), so that the FDR moves in steps of at most 0.1."""
    return max(int(round(num_units / 10)), min(10, num_units))


def first_with_same_mask(masks: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(N,) for each used row, the store row of the first used row with the same mask (itself if none before)."""
    _, first, inverse = np.unique(np.packbits(masks, axis=1), axis=0, return_index=True, return_inverse=True)
    return np.asarray(rows)[first[np.ravel(inverse)]]


def repeated_pairs(masks: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(pairs, 2) positions (into the used rows) of rows sharing a mask: each later row with its group's first."""
    base = first_with_same_mask(masks, rows)
    pos = {int(r): i for i, r in enumerate(rows)}
    return np.array([(pos[int(b)], i) for i, b in enumerate(base) if int(b) != int(rows[i])],
                    dtype=np.int64).reshape(-1, 2)


def noise_ceiling(y_a: np.ndarray, y_b: np.ndarray) -> np.ndarray:
    """sqrt of the rank correlation between the two rows of each repeated pair (columns on their own), clipped at
    0; NaN with fewer than MIN_PAIRS pairs."""
    if len(y_a) < MIN_PAIRS:
        return np.full(y_a.shape[1:], np.nan)
    r = np.atleast_1d(spearman(y_a.reshape(len(y_a), -1), y_b.reshape(len(y_b), -1)))
    return np.sqrt(np.clip(r, 0, None)).reshape(y_a.shape[1:])


def null_centre(values: np.ndarray, width: float = 2.5, steps: int = 10) -> float:
    """The centre of the bulk of ``values``: the median, then repeatedly the median of the values within ``width``
    robust standard deviations (1.4826 MAD) of it. Units with clear effects fall outside and stop pulling it, as
    they pull a plain median when a minority of units has effects of one sign."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan")
    c = float(np.median(v))
    for _ in range(steps):
        s = 1.4826 * float(np.median(np.abs(v - c)))
        inside = v[np.abs(v - c) <= width * s] if s > 0 else v
        new = float(np.median(inside)) if len(inside) else c
        if new == c:
            break
        c = new
    return c


def null_level(influence: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Where the influences of units without effect sit, per column: under fixed-size masks (identified only
    relative to the average unit, see the module doc) the centre of the bulk of the influences
    (``null_centre``), else 0."""
    sizes = masks.sum(axis=1)
    if len(sizes) and (sizes == sizes[0]).all():
        return np.array([null_centre(influence[:, c]) for c in range(influence.shape[1])])
    return np.zeros(influence.shape[1:])


def fitter(estimator: Tuple[str, Optional[Dict[str, Any]]]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """fit(masks (N, U), y (N, K)) -> influences (U, K) with the named estimator (``make``'s name and settings)."""
    name, settings = estimator
    # the curves need point estimates: the bootstrap of the standard errors is left out
    settings = {k: v for k, v in (settings or {}).items() if k not in ("bootstrap", "bootstrap_seed")}
    # ... and so is the LASSO's fan-out: the curves' fits are small, they run here; and they fit the masks given
    # (knockoff columns included), not the sweep store's, which solver=stream would read again from mask_store
    settings = {k: v for k, v in settings.items() if k not in ("fanout", "run_tasks", "mask_store")}
    if name == "dim":
        return lambda x, y: dim(x, y)

    def fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        est = make(name, **settings)
        est.update(np.arange(len(x)), x, y)
        try:
            return est.result().dense_influence()
        except EstimatorError:  # lasso: a unit (a knockoff) in none of a small prefix's rows: no point there
            return np.full((x.shape[1], np.asarray(y).reshape(len(x), -1).shape[1]), np.nan)

    return fit


def convergence(masks: np.ndarray, rows: np.ndarray, aggregate: np.ndarray, samples: np.ndarray,
                knockoffs: np.ndarray, settings: Any, seed: int = 0,
                estimator: Tuple[str, Optional[Dict[str, Any]]] = ("dim", None)) -> Dict[str, Any]:
    """Curves vs N for P output columns.

    masks (N, U) bool and knockoffs (N, U) bool for the used rows (store row indices ``rows``), aggregate (N, P)
    per-row output averaged over target examples, samples (N, P, S) per-row outputs on S sampled examples.
    ``settings`` has holdout_fraction, bootstrap, points, top_k; ``estimator`` (name, settings) fits every curve.
    Returns arrays: num_rows (G,), and (P, G) arrays bootstrap_std, rank_corr, lds, fdr; knockoff_overall (P, U)
    from all used rows; (P,) rank_corr_ceiling and lds_ceiling; plus counts and a note.
    """
    n_units, n_pairs = masks.shape[1], aggregate.shape[1]
    held = holdout_rows(rows, settings.holdout_fraction, HOLDOUT_SALT)
    fit = ~held
    grid = rows_grid(masks[fit], settings.points)
    top_k = min(settings.top_k if settings.top_k > 0 else default_top_k(n_units), 2 * n_units)
    pairs = repeated_pairs(masks, rows)
    out: Dict[str, Any] = {
        "num_rows": grid, "fit_rows": int(fit.sum()), "heldout_rows": int(held.sum()), "top_k": top_k,
        "repeated_pairs": int(len(pairs)), "estimator": estimator[0], "note": "",
        "knockoff_overall": dim(knockoffs, aggregate).T if len(rows) else np.zeros((n_pairs, n_units)),
        "rank_corr_ceiling": noise_ceiling(aggregate[pairs[:, 0]], aggregate[pairs[:, 1]]),
        "lds_ceiling": np.nanmean(noise_ceiling(samples[pairs[:, 0]], samples[pairs[:, 1]]), axis=-1)
        if samples.shape[-1] and len(pairs) >= MIN_PAIRS else np.full(n_pairs, np.nan),
    }
    curves = {k: np.full((n_pairs, len(grid)), np.nan) for k in ("bootstrap_std", "rank_corr", "lds", "fdr")}
    out.update(curves)
    out.update(convergence_rule.rule(masks, aggregate, top_k, settings.converge_rel_se, settings.converge_overlap))
    if len(grid) == 0:
        out["note"] = "too few fit rows for every unit to be both in and out of some prefix: no curves yet"
        return out
    if held.sum() < 3:
        out["note"] = "fewer than 3 held-out rows: rank correlation and LDS not computed yet"
    fit_fn = fitter(estimator)
    out["null_level"] = null_level(fit_fn(masks, aggregate), masks)  # (P,): where null units sit, all rows
    xf, kf, xh = masks[fit], knockoffs[fit], masks[held].astype(np.float64)
    for g, n in enumerate(grid):
        y = aggregate[fit][:n]  # (n, P)
        _bootstrap(curves["bootstrap_std"][:, g], xf[:n], y, settings.bootstrap, seed)
        both = fit_fn(np.hstack([xf[:n], kf[:n]]), y)  # (2U, P): real and knockoff units in one fit
        real = both[:n_units] - null_level(both[:n_units], xf[:n])
        curves["fdr"][:, g] = _fdr(np.vstack([real, both[n_units:]]), n_units, top_k)
        if held.sum() >= 3:
            w = fit_fn(xf[:n], y)  # (U, P)
            curves["rank_corr"][:, g] = np.atleast_1d(spearman(xh @ w, aggregate[held]))
            for p in range(n_pairs):
                pred = xh @ fit_fn(xf[:n], samples[fit, p][:n].astype(np.float64))  # (held, S)
                scores = np.atleast_1d(spearman(pred, samples[held, p]))
                curves["lds"][p, g] = np.nanmean(scores) if np.isfinite(scores).any() else np.nan
    return out


def write_extra(dg: Any, curves: Dict[str, Any], shape: Tuple[int, int], settings: Any) -> None:
    """Into a target's diagnostics group ``dg``: the noise ceilings, null levels and convergence rule (each (mode,
    kind)), and the attributes saying how they were made."""
    dg.attrs.update({"estimator": curves["estimator"], "repeated_pairs": curves["repeated_pairs"],
                     "converge_rel_se": settings.converge_rel_se, "converge_overlap": settings.converge_overlap})
    p = shape[0] * shape[1]
    for name in ("rank_corr_ceiling", "lds_ceiling", "null_level", *convergence_rule.FIELDS):
        values = np.asarray(curves.get(name, np.full(p, np.nan)))
        dg.create_array(name, data=values.reshape(shape), dimension_names=("mode", "kind"))


def _bootstrap(dest: np.ndarray, x: np.ndarray, y: np.ndarray, resamples: int, seed: int) -> None:
    """Mean over units of the bootstrap std of the difference-of-means influences, per column of y, into dest.
    One set of counts per N, shared by every column so columns are comparable; seeded by (seed, N) so a point does
    not depend on which other points the grid has."""
    n = len(x)
    if resamples <= 1:
        return
    counts = np.random.default_rng([seed, int(n)]).multinomial(n, np.full(n, 1.0 / n), size=resamples)
    for p in range(y.shape[1]):
        boot = dim(x, y[:, p], counts.astype(np.float64))
        with np.errstate(invalid="ignore"):
            dest[p] = np.nanmean(_nanstd(boot))


def _fdr(both: np.ndarray, n_units: int, top_k: int) -> np.ndarray:
    """(P,) share of knockoffs (rows >= n_units of ``both``, (2U, P)) among the top_k influences of each column."""
    order = np.argsort(-np.nan_to_num(both, nan=-np.inf), axis=0, kind="stable")[:top_k]
    return (order >= n_units).mean(axis=0)


def _nanstd(a: np.ndarray) -> np.ndarray:
    """Per-column std over resamples (rows), ignoring NaN resamples (a unit that fell out of a resample)."""
    ok = np.isfinite(a)
    cnt = ok.sum(axis=0)
    mean = np.where(ok, a, 0).sum(axis=0) / np.maximum(cnt, 1)
    var = (np.where(ok, a - mean, 0) ** 2).sum(axis=0) / np.maximum(cnt - 1, 1)
    return np.where(cnt > 1, np.sqrt(var), np.nan)
