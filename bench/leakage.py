"""The planted leakage experiment (experiment=mini_leakage), measured: LASSO vs difference of means.

    python -m launch experiment=mini_leakage store.path=runs/mini_leakage/store.zarr   # the sweep (stop any time)
    python bench/leakage.py runs/mini_leakage/store.zarr [--k 5] [--rows N ...]

For each estimator: aggregation wall time, and for every output kind: recall@k of the planted leaks among each leaked
target example's highest positive weights and of the misleading images among the most negative weights of the
example they copy (datatransfer/report/leakage.py). ``--rows`` repeats the measure on the first N completed rows
(a learning curve in the number of models)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--estimators", nargs="*", default=["dim", "lasso"])
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args()

    from datatransfer.influence.aggregate import aggregate
    from datatransfer.influence.reader import Influence
    from datatransfer.report.leakage import evaluate

    store = Path(args.store)
    results = []
    for est in args.estimators:
        t0 = time.perf_counter()
        s = aggregate(store, out=store.parent / f"influence_{est}.zarr", estimator=est, diagnostics=None,
                      progress=False)
        secs = time.perf_counter() - t0
        inf = Influence(s.out)
        for kind in inf.output_kinds:
            for mode in inf.modes:
                r = evaluate(inf, "digits", mode, kind, args.k)
                results.append({"estimator": est, "mode": mode, "kind": kind, "rows": s.rows_used,
                                "seconds": round(secs, 1), **r})
    print(f"recall@{args.k}: planted images among the k strongest weights of the target example they copy "
          f"(chance ~ {args.k / results[0]['units']:.3f} per image); median rank among that sign's weights")
    print(f"{'estimator':9s} {'mode':6s} {'kind':11s} {'rows':>5s} {'agg s':>6s} | {'leaks r@k':>9s} "
          f"{'med rank':>8s} | {'mislead r@k':>11s} {'med rank':>8s}")
    for r in results:
        lk, ms = r["leaks"], r["misleading"]
        print(f"{r['estimator']:9s} {r['mode']:6s} {r['kind']:11s} {r['rows']:5d} {r['seconds']:6.1f} | "
              f"{lk['recall']:9.2f} {lk['median_rank']:8.0f} | {ms['recall']:11.2f} {ms['median_rank']:8.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=lambda o: np.asarray(o).tolist()))


if __name__ == "__main__":
    main()
