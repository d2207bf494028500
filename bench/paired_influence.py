"""Do two sweeps of the same rows (same sweep seed, masks and row seeds) that differ in one setting -- precision
(``train.amp``), the batched runner's group size, the thread count -- give the same science? Paired by row:

- accuracy: per target and mode, the mean over rows of (A - B) with its 95% interval;
- class-level influences: for every target class c and source unit u, the influence of u on the *difference*
  d_r = f_A(r) - f_B(r) of the rows' mean output over class c's test examples (difference of means over the rows
  with / without u, Welch standard error). If the setting changes nothing systematic, these z scores are standard
  normal: about 5% beyond |z| = 1.96, and the largest |z| of a few hundred near 3. Pairing removes what both sweeps
  share (the masks, the seeds, the data order), so this test is far sharper than comparing two intervals;
- the correlation of the two sweeps' class-level influences, and of their z scores.

``--unpaired``: two sweeps of *different* rows (another sweep seed, so other masks and seeds) that should estimate
the same influences: each class-level influence's difference over both standard errors,
z = (I_A - I_B) / sqrt(se_A^2 + se_B^2), again about 5% beyond |z| = 1.96 if they do (less for sweeps that share
their masks, whose estimates are correlated: pair those instead).

    python bench/paired_influence.py STORE_A STORE_B [--kind softmax_gt] [--rows N] [--unpaired]
"""

from __future__ import annotations

import argparse

import numpy as np
from digit_z import open_store

from datatransfer.store.sweep_store import Store


def class_means(store: Store, t: str, rows: np.ndarray, kind: str) -> np.ndarray:
    """(rows, modes, classes) mean output of ``kind`` over each target class's test examples."""
    out = np.asarray(store.outputs(t)[rows])[:, :, store.output_kinds.index(kind)].astype(np.float64)
    labels = store.labels(t)
    return np.stack([out[:, :, labels == c].mean(axis=2) for c in range(len(store.class_names(t)))], axis=2)


def influence_z(values: np.ndarray, masks: np.ndarray) -> tuple:
    """Difference of means over rows with / without each unit and Welch z. values (R, ...), masks (R, U) ->
    (influence, z, standard error), each (U, ...)."""
    inside = masks.astype(bool)
    infl, z, ses = [], [], []
    for u in range(masks.shape[1]):
        a, b = values[inside[:, u]], values[~inside[:, u]]
        d = a.mean(0) - b.mean(0)
        se = np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b))
        infl.append(d)
        z.append(d / np.where(se > 0, se, np.nan))
        ses.append(se)
    return np.array(infl), np.array(z), np.array(ses)


def beyond(z: np.ndarray) -> str:
    z = z[np.isfinite(z)]
    if not len(z):  # every standard error 0: e.g. two runs whose rows are bitwise equal (docs/configuration.md)
        return "no z score: the differences have no spread (A and B equal on these rows)"
    return (f"{len(z)} z scores, {np.mean(np.abs(z) > 1.96):.1%} beyond |z| = 1.96 (5% expected), largest |z| "
            f"{np.abs(z).max():.2f}, mean z {z.mean():+.2f}")


def unpaired(A: Store, B: Store, kind: str, n: int) -> None:
    """Two sweeps of different rows: every class-level influence of A against B's, over both standard errors."""
    sides = []
    for s in (A, B):
        rows = np.flatnonzero(s.completed()[:n or s.num_rows])
        sides.append((rows, np.asarray(s.masks[rows])))
    print(f"{len(sides[0][0])} and {len(sides[1][0])} rows; kind {kind}; unpaired")
    for t in A.targets:
        ma, mb = class_means(A, t, sides[0][0], kind), class_means(B, t, sides[1][0], kind)
        for k, mode in enumerate(A.modes):
            ia, _, sa = influence_z(ma[:, k], sides[0][1])
            ib, _, sb = influence_z(mb[:, k], sides[1][1])
            print(f"{t} {mode}: A - B over both errors: {beyond((ia - ib) / np.sqrt(sa ** 2 + sb ** 2))}; "
                  f"A vs B influences: Pearson {np.corrcoef(ia.ravel(), ib.ravel())[0, 1]:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--kind", default="softmax_gt")
    ap.add_argument("--rows", type=int, default=0, help="use only rows below this (0: all rows both completed)")
    ap.add_argument("--unpaired", action="store_true", help="sweeps of different rows (e.g. another sweep seed)")
    args = ap.parse_args()
    A, B = open_store(ap, args.a), open_store(ap, args.b)
    for s, path in ((A, args.a), (B, args.b)):
        if args.kind not in s.output_kinds:
            ap.error(f"--kind: {args.kind!r} is not in {path} (it has {', '.join(s.output_kinds)})")
    print(f"A = {args.a}\nB = {args.b}")
    if args.unpaired:
        return unpaired(A, B, args.kind, args.rows)
    n = min(A.num_rows, B.num_rows) if not args.rows else args.rows
    done = A.completed()[:n] & B.completed()[:n]
    rows = np.flatnonzero(done)
    masks = np.asarray(A.masks[rows])
    if not np.array_equal(masks, np.asarray(B.masks[rows])):
        raise SystemExit("the two stores' masks differ on their common rows: not the same sweep (--unpaired compares "
                         "sweeps of different rows)")
    print(f"{len(rows)} rows completed in both; kind {args.kind}")
    for t in A.targets:
        acc_a, acc_b = A.target_accuracy(t, rows), B.target_accuracy(t, rows)
        ma, mb = class_means(A, t, rows, args.kind), class_means(B, t, rows, args.kind)
        for k, mode in enumerate(A.modes):
            d = acc_a[:, k] - acc_b[:, k]
            half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
            ia, za, _ = influence_z(ma[:, k], masks)
            ib, zb, _ = influence_z(mb[:, k], masks)
            zd = influence_z(ma[:, k] - mb[:, k], masks)[1]
            print(f"{t} {mode}: accuracy A - B {d.mean():+.4f} [{d.mean() - half:+.4f}, {d.mean() + half:+.4f}] "
                  f"(A {acc_a[:, k].mean():.4f}, B {acc_b[:, k].mean():.4f})")
            print(f"  class-level influences on A - B: {beyond(zd)}")
            print(f"  A vs B influences: Pearson {np.corrcoef(ia.ravel(), ib.ravel())[0, 1]:.3f}, "
                  f"z scores {np.corrcoef(za.ravel(), zb.ravel())[0, 1]:.3f}")


if __name__ == "__main__":
    main()
