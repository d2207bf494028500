"""How clearly a mini store's digits answer stands above its noise: for each digit class c of target ``digits``,
the class-level influence of the matching MNIST digit (source class ``mnist:c``) as a z score,

    z = (mean_1 - mean_0) / sqrt(s_1^2 / n_1 + s_0^2 / n_0)

over the store's completed rows, where a row's value is its mean output (``--kind``, default softmax_gt = p_y) over
the test examples of class c, and 1 / 0 split the rows by whether ``mnist:c`` was in their mask (Welch's standard
error of a difference of means). Also: whether the matching digit is the top positive influencer of class c.

    python bench/digit_z.py STORE [--mode fixed] [--kind softmax_gt] [--threshold 3]
"""

from __future__ import annotations

import argparse

import numpy as np

from datatransfer.store.sweep_store import Store


def digit_z(store: Store, mode: str = "fixed", kind: str = "softmax_gt") -> dict:
    """class name -> (z of the matching digit, whether it is the top influencer by difference of means)."""
    rows = np.flatnonzero(store.completed())
    out = np.asarray(store.outputs("digits")[rows])[:, store.modes.index(mode), store.output_kinds.index(kind)]
    labels, names = store.labels("digits"), store.class_names("digits")
    masks = store.masks[rows]
    result = {}
    for c, name in enumerate(names):
        per_row = out[:, labels == c].mean(axis=1)  # (rows,)
        inside = masks.astype(bool)
        n1, n0 = inside.sum(0), (~inside).sum(0)
        m1 = (per_row[:, None] * inside).sum(0) / np.maximum(n1, 1)
        m0 = (per_row[:, None] * ~inside).sum(0) / np.maximum(n0, 1)
        unit = store.unit_names.index(f"mnist:{name}")
        yes, no = per_row[inside[:, unit]], per_row[~inside[:, unit]]
        se = np.sqrt(yes.var(ddof=1) / len(yes) + no.var(ddof=1) / len(no))
        result[name] = (float((yes.mean() - no.mean()) / se), int(np.argmax(m1 - m0)) == unit)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store")
    ap.add_argument("--mode", default="fixed")
    ap.add_argument("--kind", default="softmax_gt")
    ap.add_argument("--threshold", type=float, default=3.0)
    args = ap.parse_args()
    store = Store.open(args.store)
    z = digit_z(store, args.mode, args.kind)
    n = int(store.completed().sum())
    print(f"{args.store}: {n} rows, digits, {args.mode}, {args.kind}")
    for name, (value, top) in z.items():
        print(f"  digit {name}: z = {value:5.1f}{'  (top influencer)' if top else ''}")
    print(f"z >= {args.threshold:g}: {sum(v >= args.threshold for v, _ in z.values())}/{len(z)}; "
          f"top influencer: {sum(t for _, t in z.values())}/{len(z)}")


if __name__ == "__main__":
    main()
