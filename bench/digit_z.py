"""How clearly a mini store's digits answer stands above its noise: for each digit class c of target ``digits``,
the class-level influence of the matching MNIST digit (source class ``mnist:c``) as a z score,

    z = (mean_1 - mean_0) / sqrt(s_1^2 / n_1 + s_0^2 / n_0)

over the store's completed rows, where a row's value is its mean output (``--kind``, default softmax_gt = p_y) over
the test examples of class c, and 1 / 0 split the rows by whether ``mnist:c`` was in their mask (Welch's standard
error of a difference of means). Also: whether the matching digit is the top positive influencer of class c;
the rows' noise (per class, the standard deviation of its per-row mean left after a least-squares fit on the mask
bits with an intercept; averaged over classes); and, with ``--bootstrap B``, how steady the count at z >= threshold
is: B draws of the rows with replacement, the mean count and the share of draws with at least ``--at-least``.

    python bench/digit_z.py STORE [--mode fixed] [--kind softmax_gt] [--threshold 3] [--bootstrap 400]
"""

from __future__ import annotations

import argparse

import numpy as np

from datatransfer.errors import AppError
from datatransfer.store.sweep_store import Store


def class_rows(store: Store, mode: str, kind: str) -> tuple:
    """(per-row mean output over each digit class's test examples (rows, classes), masks (rows, units), names)."""
    rows = np.flatnonzero(store.completed())
    out = np.asarray(store.outputs("digits")[rows])[:, store.modes.index(mode), store.output_kinds.index(kind)]
    labels, names = store.labels("digits"), store.class_names("digits")
    per_row = np.stack([out[:, labels == c].mean(axis=1) for c in range(len(names))], axis=1)
    return per_row, np.asarray(store.masks[rows]).astype(bool), names


def digit_z(per_row: np.ndarray, inside: np.ndarray, names, units) -> dict:
    """class name -> (z of the matching digit, whether it is the top influencer by difference of means)."""
    n1, n0 = inside.sum(0), (~inside).sum(0)
    result = {}
    for c, name in enumerate(names):
        m1 = (per_row[:, c, None] * inside).sum(0) / np.maximum(n1, 1)
        m0 = (per_row[:, c, None] * ~inside).sum(0) / np.maximum(n0, 1)
        unit = units.index(f"mnist:{name}")
        yes, no = per_row[inside[:, unit], c], per_row[~inside[:, unit], c]
        se = np.sqrt(yes.var(ddof=1) / len(yes) + no.var(ddof=1) / len(no))
        result[name] = (float((yes.mean() - no.mean()) / se), int(np.argmax(m1 - m0)) == unit)
    return result


def noise(per_row: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Per class: the spread of its per-row mean that the mask bits do not explain (least squares, intercept)."""
    x = np.column_stack([np.ones(len(inside)), inside.astype(float)])
    coef, *_ = np.linalg.lstsq(x, per_row, rcond=None)
    dof = len(x) - np.linalg.matrix_rank(x)
    return np.sqrt(((per_row - x @ coef) ** 2).sum(0) / dof)


def open_store(ap: argparse.ArgumentParser, path: str) -> Store:
    """The store at ``path``, or argparse's one-line error (exit 2) naming what is wrong."""
    try:
        return Store.open(path)
    except AppError as e:
        ap.error(str(e))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store")
    ap.add_argument("--mode", default="fixed")
    ap.add_argument("--kind", default="softmax_gt")
    ap.add_argument("--threshold", type=float, default=3.0)
    ap.add_argument("--bootstrap", type=int, default=0, help="draws of the rows with replacement (0: none)")
    ap.add_argument("--at-least", type=int, default=8)
    args = ap.parse_args()
    store = open_store(ap, args.store)
    # a bad option is one line naming it, exit 2 (argparse's), not a traceback from deep in the arrays
    for what, value, valid in (("--mode", args.mode, store.modes), ("--kind", args.kind, store.output_kinds),
                               ("STORE", "target digits", [f"target {t}" for t in store.targets])):
        if value not in valid:
            ap.error(f"{what}: {value!r} is not in {args.store} (it has {', '.join(valid)})")
    if args.bootstrap < 0:
        ap.error(f"--bootstrap: draws must be >= 0, got {args.bootstrap}")
    per_row, inside, names = class_rows(store, args.mode, args.kind)
    z = digit_z(per_row, inside, names, store.unit_names)
    print(f"{args.store}: {len(per_row)} rows, digits, {args.mode}, {args.kind}")
    for name, (value, top) in z.items():
        print(f"  digit {name}: z = {value:5.1f}{'  (top influencer)' if top else ''}")
    print(f"z >= {args.threshold:g}: {sum(v >= args.threshold for v, _ in z.values())}/{len(z)}; "
          f"top influencer: {sum(t for _, t in z.values())}/{len(z)}")
    sd = noise(per_row, inside)
    print(f"noise (sd of a class's per-row mean beyond the mask fit): mean {sd.mean():.4f}, per class "
          + " ".join(f"{v:.4f}" for v in sd))
    if args.bootstrap:
        rng = np.random.default_rng(0)
        counts = []
        for _ in range(args.bootstrap):
            pick = rng.integers(0, len(per_row), len(per_row))
            zb = digit_z(per_row[pick], inside[pick], names, store.unit_names)
            counts.append(sum(v >= args.threshold for v, _ in zb.values()))
        counts = np.array(counts)
        print(f"bootstrap ({args.bootstrap} draws): mean count at z >= {args.threshold:g} {counts.mean():.2f}, "
              f"at least {args.at_least} in {np.mean(counts >= args.at_least):.0%}")


if __name__ == "__main__":
    main()
