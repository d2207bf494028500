"""Has a target's sweep converged? The rule behind `python -m launch.status` and the report (docs/estimators.md).

For each output column (a target's mode and output kind), on the overall influences of the units (difference of
means of the row's output averaged over the target's examples):

1. standard errors: Welch's, SE_u = sqrt(s_in^2 / n_in + s_out^2 / n_out) from the rows with and without unit u;
2. the top k units by |influence - null level| (the null level: 0, or under fixed-size masks the centre of the bulk
   of the influences, see diagnostics.py), and their median relative SE, SE_u / |influence_u - null level|;
3. rank stability: the share of the top k of all rows that are also the top k of the first half of the rows (in
   row order), and the Spearman correlation of all units' influences between the two.

Converged: median relative SE <= ``rel_se`` AND top-k overlap >= ``overlap``. Since SE shrinks as 1/sqrt(rows),
the rows the SE condition needs are N * (median relative SE / rel_se)^2; ``rows_more`` is that minus N (0 when met).
The stability condition has no such prediction: when only it fails, ``rows_more`` is 0 and the verdict says so.
"""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

# The report and status read these (per column, arrays of shape (P,)) from the diagnostics of each target.
FIELDS = ("conv_rows", "conv_rel_se", "conv_overlap", "conv_spearman", "conv_converged", "conv_rows_more")


def welch_se(masks: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(U, P) Welch standard error of the difference of means of y (N, P) between rows with and without each unit
    (NaN where a side has fewer than 2 rows)."""
    x = masks.astype(np.float64)
    n_in = x.sum(axis=0)[:, None]
    n_out = len(x) - n_in
    s1, s2 = x.T @ y, x.T @ (y * y)
    t1, t2 = y.sum(axis=0)[None, :], (y * y).sum(axis=0)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        var_in = (s2 - s1 ** 2 / n_in) / (n_in - 1)
        var_out = ((t2 - s2) - (t1 - s1) ** 2 / n_out) / (n_out - 1)
        se = np.sqrt(np.clip(var_in, 0, None) / n_in + np.clip(var_out, 0, None) / n_out)
    return np.where((n_in > 1) & (n_out > 1), se, np.nan)


def _top(w: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-np.nan_to_num(np.abs(w), nan=-np.inf), axis=0, kind="stable")[:k]


def rule(masks: np.ndarray, aggregate: np.ndarray, top_k: int, rel_se: float, overlap: float) -> Dict[str, Any]:
    """The rule's numbers for every column of ``aggregate`` (N, P) (rows in row order): the FIELDS, each (P,)."""
    from datatransfer.influence.diagnostics import dim, null_level, spearman

    n, p = aggregate.shape
    out = {name: np.full(p, np.nan) for name in FIELDS}
    out["conv_rows"][:] = n
    out["conv_converged"] = np.zeros(p, dtype=bool)
    half = n // 2
    if half < 2 or masks[:half].all(axis=0).any() or (~masks[:half]).all(axis=0).any():
        return out  # too few rows for every unit to be in and out of the first half
    w = dim(masks, aggregate)
    w = w - null_level(w, masks)
    w_half = dim(masks[:half], aggregate[:half])
    w_half = w_half - null_level(w_half, masks[:half])
    se = welch_se(masks, aggregate)
    k = max(1, min(top_k, masks.shape[1]))
    top, top_half = _top(w, k), _top(w_half, k)
    for c in range(p):
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = float(np.nanmedian(se[top[:, c], c] / np.abs(w[top[:, c], c])))
        out["conv_rel_se"][c] = rel
        out["conv_overlap"][c] = len(np.intersect1d(top[:, c], top_half[:, c])) / k
        out["conv_spearman"][c] = spearman(w[:, c], w_half[:, c])
        if np.isfinite(rel):
            out["conv_converged"][c] = rel <= rel_se and out["conv_overlap"][c] >= overlap
            out["conv_rows_more"][c] = max(0, int(np.ceil(n * (rel / rel_se) ** 2)) - n)
    return out


def verdict(d: Dict[str, Any], c: int) -> str:
    """One line: column ``c``'s verdict from a target's diagnostics ``d`` (the FIELDS as (P,) arrays, and
    ``top_k``, ``converge_rel_se``, ``converge_overlap``)."""
    n, rel, ov = int(d["conv_rows"][c]), float(d["conv_rel_se"][c]), float(d["conv_overlap"][c])
    if not np.isfinite(rel):
        return f"not judged yet ({n} rows: too few for the first half to hold every unit in and out)"
    more = int(d["conv_rows_more"][c])
    what = (f"median relative SE of the top {d['top_k']} {rel:.2f} (rule: <= {d['converge_rel_se']:g}), top-k "
            f"overlap first half vs all rows {ov:.2f} (>= {d['converge_overlap']:g}), Spearman "
            f"{float(d['conv_spearman'][c]):.2f}")
    if bool(d["conv_converged"][c]):
        return f"converged at {n} rows: {what}"
    need = f"about {more} more rows ({n + more} in all; SE ~ 1/sqrt(rows))" if more else \
        "more rows for rank stability (the SE condition is met; how many is not predicted)"
    return f"not converged at {n} rows: {what}; needs {need}"


def of_target(group: Any, t: str) -> Dict[str, Any]:
    """The rule's numbers of target ``t`` from an influence store's root group: the FIELDS as (modes, kinds)
    arrays and the rule's settings; {} if that store has none (computed by older code, or without diagnostics)."""
    key = f"diagnostics/{t}"
    if key not in group or "conv_rel_se" not in group[key]:
        return {}
    dg = group[key]
    out: Dict[str, Any] = {name: np.asarray(dg[name][:]) for name in FIELDS}
    out.update({k: dg.attrs.get(k) for k in ("top_k", "converge_rel_se", "converge_overlap")})
    return out


def rows_needed(influence: Any, kind: str = "softmax_gt") -> int:
    """The most rows in all that the rule predicts for any target and mode not converged yet (output kind ``kind``);
    0 when none predicts more."""
    k, most = _kind_index(influence, kind), 0
    for t in influence.targets:
        d = of_target(influence.group, t)
        for m in range(len(influence.modes)) if d else ():
            more = float(d["conv_rows_more"][m, k])  # NaN: too few rows to judge yet (the verdict says so)
            if not bool(d["conv_converged"][m, k]) and np.isfinite(more) and more > 0:
                most = max(most, int(d["conv_rows"][m, k]) + int(more))
    return most


def _kind_index(influence: Any, kind: str) -> int:
    """The position of output kind ``kind``; the default (softmax_gt) falls back to the store's first kind, any
    other kind the store lacks is refused."""
    if kind not in influence.output_kinds and kind == "softmax_gt":
        return 0
    if kind not in influence.output_kinds:
        from datatransfer.errors import ConfigError

        raise ConfigError(f"kind={kind}: not an output kind of this store (it has {', '.join(influence.output_kinds)})")
    return influence.output_kinds.index(kind)


def status_lines(influence: Any, kind: str = "softmax_gt") -> List[str]:
    """Lines for ``launch.status``: per target and mode, the verdict on output kind ``kind`` (``influence``: an
    :class:`~datatransfer.influence.reader.Influence`)."""
    k = _kind_index(influence, kind)
    lines = []
    for t in influence.targets:
        d = of_target(influence.group, t)
        for m, mode in enumerate(influence.modes):
            if not d:
                lines.append(f"  {t} ({mode}): no convergence numbers in this influence store (rerun aggregate)")
                continue
            col = {**d, **{name: d[name][m, k:k + 1] for name in FIELDS}}
            lines.append(f"  {t} ({mode}, {kind}): {verdict(col, 0)}")
    return lines


def store_lines(store_path: str, influence_path: str = "", kind: str = "softmax_gt", spent: Any = None) -> List[str]:
    """``launch.status``'s convergence section for the store at ``store_path``: the verdicts of its influence store
    (``influence_path``, "" = the default beside the store), how many completed rows it has not seen, and how far to
    extend the sweep (``spent``: what the completed rows cost, ``cost.spent``, if already read)."""
    from datatransfer.errors import AggregationError
    from datatransfer.influence.aggregate import default_out
    from datatransfer.influence.blocks import completed_rows
    from datatransfer.influence.reader import Influence
    from datatransfer.store.sweep_store import Store

    path = influence_path or str(default_out(store_path))
    refresh = f"python -m aggregate store.path={store_path}" + (f" out={influence_path}" if influence_path else "")
    try:
        influence = Influence(path)
    except AggregationError:
        return [f"convergence: no influence store at {path} yet ({refresh})"]
    store = Store.open(store_path)
    if not influence.of_store(store):
        return [f"convergence: {path} holds the influences of another sweep store ({influence.attrs.get('store')}), "
                f"not of {store.path.resolve()}: not used (aggregate this store into its own out=PATH)"]
    done = len(completed_rows(store))
    used = int(influence.attrs.get("rows_used", 0))
    stale = f"; {done - used} completed rows since: {refresh} to update" if done > used else ""
    return [f"convergence (docs/estimators.md, rule in {path} from {used} rows{stale}):",
            *status_lines(influence, kind), *_extension_lines(store, rows_needed(influence, kind), spent)]


def _extension_lines(store: Any, needed: int, done: Any = None) -> List[str]:
    """What meeting the rule everywhere asks: the sweep extended to ``needed`` rows, and what the rows it adds would
    cost at the completed rows' rate (``done``: ``cost.spent(store)`` if already read, launchers/cost.py)."""
    from datatransfer.launchers import cost

    more = needed - store.num_rows
    if more <= 0:
        return []
    line = (f"  to meet the rule for every target: about {needed} rows in all, {more} more than the store holds "
            f"(python -m launch with sweep.num_models={needed} extends it)")
    done = done if done is not None else cost.spent(store)
    if done is not None:
        rest = done.more(more)
        line += (f"; at the completed rows' cost {rest.device_hours:.2f} {rest.unit}-hours, "
                 f"{cost.duration(rest.wall_seconds)} at {done.parallel} row(s) at a time")
    return [line]
