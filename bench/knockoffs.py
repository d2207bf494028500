"""Knockoffs under fixed-size masks, with and without the null-level shift (docs/estimators.md, "Knockoffs").

Planted outputs y = x . w + noise with U units, N rows, H helpful units (w = effect), the rest null; fixed-size
masks (alpha = 0.5). Counts knockoffs and null real units among the top k overall influences, raw (the paper's
comparison) and with the real influences shifted by their null level (diagnostics.null_level). With valid
knockoffs, the non-helpful entries of the top k are knockoffs and null real units in the ratio U : (U - H).

    python bench/knockoffs.py [--units 1000] [--rows 6000] [--helpful 200] [--effect 0.1] [--noise 1] [--seeds 5]
"""

import argparse

import numpy as np

from datatransfer.influence import diagnostics as diag
from datatransfer.masks import mask_matrix


def main() -> None:
    ap = argparse.ArgumentParser()
    for name, default in (("units", 1000), ("rows", 6000), ("helpful", 200), ("top", 100), ("seeds", 5)):
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--effect", type=float, default=0.1)
    ap.add_argument("--noise", type=float, default=1.0)
    a = ap.parse_args()
    w = np.zeros((a.units, 1))
    w[:a.helpful] = a.effect
    counts = {"raw": [], "shifted": []}
    for seed in range(a.seeds):
        rng = np.random.default_rng(seed)
        x = mask_matrix(seed, a.rows, a.units, 0.5)
        y = x @ w + a.noise * rng.normal(size=(a.rows, 1))
        real, knock = diag.dim(x, y), diag.dim(diag.knockoff_masks(seed, a.rows, a.units, 0.5, "fixed_size"), y)
        for name, shift in (("raw", 0.0), ("shifted", diag.null_level(real, x))):
            top = np.argsort(-np.vstack([real - shift, knock])[:, 0], kind="stable")[:a.top]
            counts[name].append(((top >= a.units).sum(), ((top >= a.helpful) & (top < a.units)).sum()))
        print(f"seed {seed}: raw (knockoffs, null real) {counts['raw'][-1]}, shifted {counts['shifted'][-1]}",
              flush=True)
    ratio = a.units / (a.units - a.helpful)
    print(f"U={a.units} N={a.rows} helpful={a.helpful} (w={a.effect}) noise={a.noise}, top {a.top}, "
          f"{a.seeds} seeds; valid knockoffs give knockoffs : null real = {ratio:.2f}")
    for name, c in counts.items():
        c = np.array(c, dtype=float)
        print(f"  {name:8s}: knockoffs {c[:, 0].mean():.1f} +- {c[:, 0].std():.1f}, null real "
              f"{c[:, 1].mean():.1f} +- {c[:, 1].std():.1f}, FDR {c[:, 0].mean() / a.top:.3f}")


if __name__ == "__main__":
    main()
