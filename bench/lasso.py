"""Benchmark: the LASSO datamodels estimator (estimator=lasso) against independent solvers, and against difference
of means across regimes.

    python bench/lasso.py solvers                 # time per target example: ours vs scikit-learn, skglm, celer
    python bench/lasso.py solvers --rows 4000 --units 2000 --examples 64
    python bench/lasso.py regimes                 # recovery of planted weights: difference of means vs lasso
    python bench/lasso.py project --seconds-per-example S --units U --rows N   # paper-scale hours from a measurement
    python bench/lasso.py memory [--rows N --units U --examples K --per B]
                                                  # peak memory of `aggregate estimator=lasso solver=stream`:
                                                  # weights kept sparse vs formed dense, vs the whole masks held
    python bench/lasso.py stream [--device cuda] [--pass-rows N --pass-units U --pass-examples K]
                                                  # solver=stream vs the Gram form on the same data, and its
                                                  # passes over the masks projected to the paper's scale

``solvers``: the same data (bernoulli masks, a sparse planted truth plus noise), the same lambda grid (ours), the
same stopping rule (duality gap <= tol * var(y)) and the same held-out rows; every solver computes the whole path,
the held-out choice and the refit. Ours forms the Gram matrix once for all examples (its time is printed apart and
amortised); the references work per example (scikit-learn is given the precomputed Gram as well). Timings are the
best of --repeat runs, one thread per solver (numba set to 1 thread) so the ratio is per core; ours' parallel time
over all cores is printed too. The weights of every solver are compared with ours (max abs difference).

``regimes``: precision of the strongest weights (fraction of the planted strong units among the top-s of each
example) and rank correlation with the truth, for rows < units, rows >> units, more noise, and a background of many
small effects; difference of means vs lasso.

``stream``: the same data solved by solver=cd (Gram form, numba, all threads) and solver=stream (FISTA on row blocks
of the bit-packed masks, torch on --device): the time ratio, max |w difference|, and the passes over the masks the
stream solver made (its cost at any size is passes x one pass). Then one pass (S @ W) is timed alone at
--pass-rows x --pass-units x --pass-examples (bigger, e.g. on a GPU) for the rate, and the paper's scale is projected:
hours = blocks of examples x passes per block x seconds per pass at (71,828 rows x 1,281,167 units x the block), the
pass time scaled from the measured rate by rows x units x examples (a pass is 4 rows x units x examples flops).

``memory``: a planted sweep (row=planted, bit-packed masks) of --rows x --units with one target of --examples
examples is written with the local launcher, then aggregated by solver=stream in a fresh process per variant, --per
examples per block and --block-rows rows per pass, with a short path (--path-length, --max-iter: the solver's work is
not what is measured). Printed: each process's peak resident memory above a process that imported the same libraries
and opened the store: the default (weights merged as CSR,
masks read a block at a time), the same with per_example formed dense (estimator.dense_max_mb large), and that with
the whole decoded mask matrix held too (what `aggregate` did before 2026-12-06), and their ratios.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict

import numpy as np


def planted(rows: int, units: int, examples: int, strong: int, noise: float, background: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((rows, units)) < 0.5
    w = background * rng.normal(size=(units, examples))
    for j in range(examples if strong else 0):
        idx = rng.choice(units, size=strong, replace=False)
        w[idx, j] = rng.choice([-1.0, 1.0], size=strong) * (1.0 + np.abs(rng.normal(size=strong)))
    y = x @ w + noise * rng.normal(size=(rows, examples))
    return x, w, y


def best_of(fn: Callable[[], object], repeat: int):
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _split(x, y, holdout):
    from datatransfer.influence.estimators import holdout_rows

    held = holdout_rows(np.arange(len(x)), holdout)
    xf, yf = x[~held].astype(float), y[~held]
    return held, xf, yf, xf.mean(0), yf.mean(0)


def reference(name: str, x, y, cols, grid, holdout, tol):
    """Path + held-out choice + refit per example with an independent solver; returns w (len(cols), U)."""
    held, xf, yf, xm, ym = _split(x, y, holdout)
    xc, xh, yh = xf - xm, x[held].astype(float) - xm, y[held]
    xa = x.astype(float)
    xa_c = xa - xa.mean(0)
    gram_f, gram_a = (xc.T @ xc, xa_c.T @ xa_c) if name == "sklearn" else (None, None)
    out = np.zeros((len(cols), x.shape[1]))
    for i, k in enumerate(cols):
        yc = yf[:, k] - ym[k]
        coefs = _path(name, xc, yc, grid[:, k], tol, gram_f)  # (U, L)
        sse = ((yh[:, [k]] - ym[k] - xh @ coefs) ** 2).sum(0)
        lam = grid[np.argmin(sse), k]
        ya = y[:, k] - y[:, k].mean()
        out[i] = _path(name, xa_c, ya, np.array([lam]), tol, gram_a, warm=coefs[:, np.argmin(sse)])[:, 0]
    return out


def _path(name, xc, yc, alphas, tol, gram, warm=None):
    if name == "sklearn":
        from sklearn.linear_model import lasso_path

        return lasso_path(xc, yc, alphas=alphas, precompute=gram, Xy=xc.T @ yc, tol=tol, max_iter=1000,
                          coef_init=warm)[1]
    if name == "skglm":
        from skglm import Lasso

        model, coefs = Lasso(alpha=alphas[0], fit_intercept=False, warm_start=True, tol=tol), []
        for a in alphas:
            model.alpha = a
            coefs.append(model.fit(xc, yc).coef_.copy())
        return np.array(coefs).T
    if name == "celer":
        from celer import celer_path

        return celer_path(xc, yc, pb="lasso", alphas=alphas, tol=tol)[1]
    raise ValueError(name)


def solvers(args) -> None:
    import numba

    from datatransfer.influence.lasso import Lasso, solve

    x, _, y = planted(args.rows, args.units, args.examples, args.strong, args.noise, 0.0)
    est = Lasso(path_length=args.path_length, tol=args.tol, patience=args.patience)
    t_gram, _ = best_of(lambda: _stats(est, x, y), 1)
    problem = est.problem()
    print(f"data: {args.rows} rows x {args.units} units, {args.examples} examples, path of {args.path_length}, "
          f"tol {args.tol}; statistics (Gram, X^T y, once for every example): {t_gram:.2f} s")
    solve(problem.columns(np.arange(2)), "cd", tol=args.tol, patience=args.patience)  # numba compile, not timed
    numba.set_num_threads(1)
    times: Dict[str, float] = {}
    t, ours = best_of(lambda: solve(problem, "cd", tol=args.tol, patience=args.patience), args.repeat)
    times["ours cd (1 thread)"] = t / args.examples
    t, early = best_of(lambda: solve(problem, "cd", tol=args.tol, patience=5), args.repeat)
    times["ours cd, patience 5 (1 thread)"] = t / args.examples
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    t, _ = best_of(lambda: solve(problem, "cd", tol=args.tol, patience=args.patience), args.repeat)
    times[f"ours cd ({numba.config.NUMBA_NUM_THREADS} threads)"] = t / args.examples
    import torch

    torch.set_num_threads(1)
    t, fista = best_of(lambda: solve(problem, "torch", tol=args.tol, patience=args.patience), 1)
    times["ours torch FISTA (CPU, 1 thread)"] = t / args.examples
    t, _ = best_of(lambda: solve(problem, "torch", tol=args.tol, patience=5), 1)
    times["ours torch FISTA, patience 5 (CPU, 1 thread)"] = t / args.examples
    diffs = {"ours torch FISTA (CPU, 1 thread)": np.abs(fista["w"] - ours["w"]).max(),
             "ours cd, patience 5 (1 thread)": np.abs(early["w"] - ours["w"]).max()}
    cols = np.arange(min(args.ref_examples, args.examples))
    for name in args.refs:
        try:
            t, w = best_of(lambda n=name: reference(n, x, y, cols, problem.lambdas, 0.2, args.tol), args.repeat)
        except ImportError as e:
            print(f"{name}: not installed ({e})")
            continue
        times[name] = t / len(cols)
        diffs[name] = np.abs(w - ours["w"][cols]).max()
    base = times["ours cd (1 thread)"]
    print(f"{'solver':44s} {'s / example':>12s} {'x ours (1 thread)':>18s} {'max |w - ours|':>15s}")
    for name, s in times.items():
        d = diffs.get(name)
        print(f"{name:44s} {s:12.4f} {s / base:18.2f} {'' if d is None else f'{d:15.2e}'}")
    print(f"ours: mean nonzeros per example {ours['nnz'].mean():.1f}; solves stopped at max_iter: "
          f"{ours['not_converged']}")


def _stats(est, x, y, block=512):
    rows = np.arange(len(x))
    for i in range(0, len(x), block):
        est.update(rows[i:i + block], x[i:i + block], y[i:i + block])


def regimes(args) -> None:
    from datatransfer.influence.estimators import DifferenceOfMeans
    from datatransfer.influence.lasso import Lasso

    cases = [("rows = units / 3", 200, 600, 0.5, 0.0, args.strong), ("rows = units", 600, 600, 0.5, 0.0, args.strong),
             ("rows = 4 x units", 2400, 600, 0.5, 0.0, args.strong),
             ("noisy (rows = units)", 600, 600, 3.0, 0.0, args.strong),
             ("background (rows = units)", 600, 600, 0.5, 0.3, args.strong),
             ("dense truth (rows = units / 3)", 200, 600, 0.5, 1.0, 0),
             ("dense truth (rows = units)", 600, 600, 0.5, 1.0, 0),
             ("dense truth (rows = 4 x units)", 2400, 600, 0.5, 1.0, 0)]
    print(f"{args.examples} examples, {args.strong} strong units each (|w| in 1..~3), bernoulli masks; "
          f"precision@{args.strong} = strong units among each example's top-{args.strong} |weights|, mean +- sd "
          f"over examples; r = Pearson correlation with the true w (mean over examples, 0 for an all-zero estimate); "
          f"'dense truth': every unit "
          f"N(0, 1), no strong ones (precision then counts the true top-{args.strong})")
    print(f"{'regime':30s} {'rows':>5s} {'units':>5s} {'noise':>5s} {'bg':>5s} | {'dim prec':>12s} "
          f"{'lasso prec':>12s} | {'dim r':>6s} {'lasso r':>7s} | {'lasso s':>7s} {'dim s':>6s}")
    for name, rows, units, noise, bg, strong in cases:
        x, w, y = planted(rows, units, args.examples, strong, noise, bg, seed=1)
        res = {}
        for label, est in (("dim", DifferenceOfMeans()), ("lasso", Lasso())):
            t = time.perf_counter()
            _stats(est, x, y)
            res[label] = (est.result().influence, time.perf_counter() - t)
        prec = {k: _precision(v[0], w, args.strong) for k, v in res.items()}
        rho = {k: np.mean([_corr(v[0][:, j], w[:, j]) for j in range(args.examples)]) for k, v in res.items()}
        print(f"{name:30s} {rows:5d} {units:5d} {noise:5.1f} {bg:5.2f} | "
              f"{prec['dim'][0]:.3f}+-{prec['dim'][1]:.3f} {prec['lasso'][0]:.3f}+-{prec['lasso'][1]:.3f} | "
              f"{rho['dim']:6.3f} {rho['lasso']:7.3f} | {res['lasso'][1]:7.2f} {res['dim'][1]:6.2f}")


def _corr(a, b):
    """Pearson correlation; 0 for an estimate that is all zero (lasso at lambda_max: nothing found)."""
    return float(np.corrcoef(a, b)[0, 1]) if np.std(a) > 0 else 0.0


def _precision(infl, w, s):
    hits = []
    for j in range(w.shape[1]):
        truth = set(np.argsort(-np.abs(w[:, j]))[:s])
        hits.append(len(truth & set(np.argsort(-np.abs(infl[:, j]), kind="stable")[:s])) / s)
    return float(np.mean(hits)), float(np.std(hits))


def project(args) -> None:
    """Paper scale from a measured seconds per example at (rows, units)."""
    paper_rows, paper_units, paper_examples = 71_828, 1_281_167, 10_000
    gram_tb = paper_units ** 2 * 8 / 1e12
    print(f"paper scale: {paper_rows} rows x {paper_units} units x {paper_examples} examples; its Gram matrix alone "
          f"is {gram_tb:.0f} TB (float64): the Gram form does not apply, a solver on X (rows x units, "
          f"{paper_rows * paper_units / 8 / 1e9:.1f} GB bit-packed) is needed")
    # per example, coordinate descent on X costs ~ rows x units per sweep (vs units x active on the Gram): scale the
    # measured time by rows x units / (measured rows x units)
    scale = (paper_rows * paper_units) / (args.rows * args.units)
    hours = args.seconds_per_example * scale * paper_examples / 3600
    print(f"measured {args.seconds_per_example:.4f} s / example at {args.rows} x {args.units}; scaled by rows x "
          f"units ({scale:.3g}x): {hours:.3g} core-hours = {hours / args.cores:.3g} h on {args.cores} cores")


def stream(args) -> None:
    import torch

    from datatransfer.influence.lasso import Lasso, solve

    x, _, y = planted(args.rows, args.units, args.examples, args.strong, args.noise, 0.0)
    est = {name: Lasso(path_length=args.path_length, tol=args.tol, patience=args.patience, solver=name,
                       device=args.device, block_rows=args.block_rows) for name in ("cd", "stream")}
    solve(_problem(Lasso(solver="cd"), x[:50, :8], y[:50, :2]), "cd")  # numba compile, not timed
    t, out, q = {}, {}, {}
    for name, e in est.items():
        start = time.perf_counter()
        q[name] = _problem(e, x, y)
        out[name] = solve(q[name], name, args.device, args.tol, 1000, args.patience)
        t[name] = time.perf_counter() - start
    passes = q["stream"].s.passes + q["stream"].h.passes + q["stream"].s_all.passes + 1  # + the statistics' pass
    print(f"data: {args.rows} rows x {args.units} units, {args.examples} examples, path of {args.path_length}, "
          f"tol {args.tol}, patience {args.patience}; torch threads {torch.get_num_threads()}, device {args.device}")
    diff = np.abs(out["stream"]["w"] - out["cd"]["w"]).max()
    print(f"cd (Gram form, statistics + solve): {t['cd']:.2f} s; stream (on the masks): {t['stream']:.2f} s = "
          f"{t['stream'] / t['cd']:.2f} x cd; max |w_stream - w_cd| = {diff:.2e}; "
          f"nonzeros per example {out['cd']['nnz'].mean():.1f} (cd) {out['stream']['nnz'].mean():.1f} (stream)")
    print(f"stream: {passes} passes over the masks ({passes / args.examples:.1f} per example in a block of "
          f"{args.examples}), {t['stream'] / passes * 1e3:.1f} ms per pass here")
    rates = {"measured here": _pass_rate(args)}
    if args.assume_tflops:
        rates[f"assumed {args.assume_tflops:g} TFLOP/s"] = args.assume_tflops * 1e12
    paper_rows, paper_units, paper_examples, block = 71_828, 1_281_167, 10_000, args.paper_block
    for label, rate in rates.items():
        per_pass = 4.0 * paper_rows * paper_units * block / rate
        hours = -(-paper_examples // block) * passes * per_pass / 3600
        print(f"projection (an estimate, not a run), {label}: {paper_rows} rows x {paper_units} units x "
              f"{paper_examples} examples in blocks of {block}: one pass {per_pass:.3g} s at {rate / 1e12:.3g} "
              f"TFLOP/s; assuming {passes} passes per block (as measured here; the real count depends on the path "
              f"and the conditioning at that scale) -> {hours:.3g} device-hours, {hours / args.devices:.3g} h on "
              f"{args.devices} devices")


MEMORY_CHILD = """
import resource, sys
import numpy as np
from datatransfer.influence.aggregate import aggregate
from datatransfer.store.sweep_store import Store
import torch  # noqa: F401  (imported by the aggregation too: the baseline holds the same libraries)
from datatransfer.influence import lasso, lasso_stream  # noqa: F401
store, out, variant, per, path_length, max_iter, block_rows = sys.argv[1:8]
held = Store.open(store)
if variant == "whole masks held":
    held.masks  # decoded and kept for the whole run, as aggregate did before
if variant != "baseline":
    aggregate(store, out, "lasso", {"solver": "stream", "path_length": int(path_length), "max_iter": int(max_iter),
              "block_rows": int(block_rows), "dense_max_mb": 0 if variant == "sparse" else 1e9,
              "fanout": {"examples_per_task": int(per)}},
              diagnostics=None, progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def memory(args) -> None:
    """Peak memory of the LASSO aggregation at example-level shapes (see the module docstring)."""
    folder = Path(tempfile.mkdtemp(prefix="lasso-memory-"))
    store = folder / "store.zarr"
    subprocess.run([sys.executable, "-m", "launch", "experiment=planted", f"sweep.num_models={args.rows}",
                    f"row.units={args.units}", f"row.examples=[{args.examples}]", "row.modes=[full]",
                    "sweep.outputs=[softmax_gt]", f"store.path={store}", "launcher.workers=2"], check=True,
                   capture_output=True)
    decoded, dense = args.rows * args.units, args.examples * args.units * 8
    print(f"{args.rows} rows x {args.units} units (masks: {decoded / 2 ** 20:.0f} MiB decoded, "
          f"{decoded / 8 / 2 ** 20:.1f} MiB packed), {args.examples} examples (weights {dense / 2 ** 20:.0f} MiB dense "
          f"float64), {args.per} examples per block, {args.block_rows} rows per pass block, path of "
          f"{args.path_length}, max_iter {args.max_iter}")
    peak = {}
    for variant in ("baseline", "sparse", "dense weights", "whole masks held"):
        start = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(store), str(folder / f"{len(peak)}.zarr"),
                              variant, str(args.per), str(args.path_length), str(args.max_iter),
                              str(args.block_rows)],
                             check=True, capture_output=True, text=True)
        peak[variant] = int(res.stdout.split()[-1])
        above = (peak[variant] - peak["baseline"]) / 2 ** 20
        print(f"  {variant:>18}: peak {peak[variant] / 2 ** 20:7.0f} MiB, {above:7.0f} MiB above a process that only "
              f"opened the store ({time.perf_counter() - start:.0f} s)")
    base = peak["sparse"] - peak["baseline"]
    for variant in ("dense weights", "whole masks held"):
        print(f"memory above baseline, {variant} / sparse (the default): "
              f"{(peak[variant] - peak['baseline']) / max(base, 1):.2f}")


def _problem(est, x, y):
    _stats(est, x, y)
    return est.problem()


def _pass_rate(args) -> float:
    """Flops per second of one pass S @ W (4 rows x units x examples flops) at the --pass-* size."""
    import torch

    from datatransfer.influence.estimators import holdout_rows
    from datatransfer.influence.lasso_stream import Implicit, MaskRows
    from datatransfer.store import mask_bits

    n, u, k = args.pass_rows, args.pass_units, args.pass_examples
    rng = np.random.default_rng(0)
    packed = np.concatenate([mask_bits.encode(rng.random((min(4096, n - i), u)) < 0.5) for i in range(0, n, 4096)])
    rows = np.arange(n)
    op = Implicit(MaskRows(u, rows, packed=packed, block_rows=args.block_rows), ~holdout_rows(rows, 0.2),
                  np.full(u, 0.5), 1.0 / n, args.cache_mb).on(torch.device(args.device), torch.float64)
    w = torch.randn((u, k), dtype=torch.float64, device=args.device)
    op @ w  # warm up (cache upload, kernels)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    sync()
    best = np.inf
    for _ in range(args.repeat):
        start = time.perf_counter()
        op @ w
        sync()
        best = min(best, time.perf_counter() - start)
    flops = 4.0 * int((~holdout_rows(rows, 0.2)).sum()) * u * k
    print(f"one pass S @ W at {n} rows x {u} units x {k} examples (fit rows): {best:.3f} s "
          f"(best of {args.repeat}) = {flops / best / 1e12:.3f} TFLOP/s (float64)")
    return flops / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["solvers", "regimes", "project", "stream", "memory"])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--units", type=int, default=1000)
    ap.add_argument("--examples", type=int, default=32)
    ap.add_argument("--ref-examples", type=int, default=4, help="examples timed for each reference solver")
    ap.add_argument("--strong", type=int, default=10)
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--path-length", type=int, default=30)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--patience", type=int, default=0, help="0: the whole path (as the references compute it)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--refs", nargs="*", default=["sklearn", "skglm", "celer"])
    ap.add_argument("--seconds-per-example", type=float, default=0.0)
    ap.add_argument("--cores", type=int, default=1000)
    ap.add_argument("--device", default="cpu", help="stream: torch device of solver=stream")
    ap.add_argument("--block-rows", type=int, default=1024)
    ap.add_argument("--cache-mb", type=float, default=2048.0)
    ap.add_argument("--pass-rows", type=int, default=4000)
    ap.add_argument("--pass-units", type=int, default=4000)
    ap.add_argument("--pass-examples", type=int, default=64)
    ap.add_argument("--paper-block", type=int, default=256, help="stream: examples per block at the paper's scale")
    ap.add_argument("--devices", type=int, default=8, help="stream: devices the projection divides by")
    ap.add_argument("--assume-tflops", type=float, default=0.0,
                    help="stream: also project at this float64 rate (e.g. a GPU's, when none is here to measure)")
    ap.add_argument("--per", type=int, default=16,
                    help="memory: examples per block (estimator.fanout.examples_per_task)")
    ap.add_argument("--max-iter", type=int, default=20, help="memory: the solver's max_iter")
    args = ap.parse_args()
    {"solvers": solvers, "regimes": regimes, "project": project, "stream": stream, "memory": memory}[args.what](args)


if __name__ == "__main__":
    main()
