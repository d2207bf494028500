"""The numbers the README's demo section states, with intervals, from a demo store and its report (run
``python -m aggregate.report`` first), so that two runs of ``make demo`` can be compared line by line:

- rows; mean source accuracy and test accuracy per target and mode, each ± the 95% half-width of the mean over rows;
- digits, per mode (p_y): each digit class's matching-MNIST-digit z (``bench/digit_z.py``) and the counts;
- the report's headline lines and convergence verdicts;
- the overall influences judged beyond the noise (the report's ``overall_<target>_<mode>_softmax_gt.csv``), with
  their 95% intervals and z.

    python bench/demo_summary.py runs/mini/store.zarr [--report runs/mini/report]
"""

from __future__ import annotations

import argparse
import csv
import html
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digit_z import class_rows, digit_z, open_store  # bench/ scripts run as files

from datatransfer.store.sweep_store import Store


def mean_ci(values: np.ndarray) -> str:
    v = values[~np.isnan(values)]
    return f"{v.mean():.3f} ± {1.96 * v.std(ddof=1) / np.sqrt(len(v)):.3f}"


def accuracy_lines(store: Store, rows: np.ndarray) -> list:
    stats = store.row_stats_of(rows)
    lines = [f"source accuracy (kept classes): {mean_ci(stats[:, store.row_stat_fields.index('source_accuracy')])}"]
    for t in store.targets:
        acc = store.target_accuracy(t, rows)
        lines.append(f"{t} test accuracy: " + ", ".join(f"{m} {mean_ci(acc[:, k])}" for k, m in enumerate(store.modes)))
    return lines


def digit_lines(store: Store) -> list:
    lines = []
    for mode in store.modes if "digits" in store.targets else []:  # a store of other targets: no digit lines
        z = digit_z(*class_rows(store, mode, "softmax_gt"), store.unit_names)
        per = " ".join(f"{name}:{v:+.1f}{'*' if top else ''}" for name, (v, top) in z.items())
        counts = ", ".join(f"z >= {k}: {sum(v >= k for v, _ in z.values())}/10" for k in (2, 3))
        lines.append(f"digits {mode} p_y, matching digit z (* = top influencer): {per}; {counts}; "
                     f"top: {sum(t for _, t in z.values())}/10")
    return lines


def overall_lines(report: Path, store: Store) -> list:
    lines = []
    for t in store.targets:
        for mode in store.modes:
            path = report / f"overall_{t}_{mode}_softmax_gt.csv"
            if not path.exists():
                continue
            rows = [r for r in csv.DictReader(path.open()) if r["judged"] == "signal" or abs(float(r["z"])) >= 2]
            shown = "; ".join(f"{r['source_class']} {float(r['influence']):+.4f} [{float(r['ci95_low']):+.4f}, "
                              f"{float(r['ci95_high']):+.4f}] z={float(r['z']):+.1f} ({r['judged']})" for r in rows)
            lines.append(f"overall {t} {mode} (|z| >= 2 or judged signal): {shown or 'none'}")
    return lines


def convergence_lines(text: str) -> list:
    """Each convergence verdict of the report, named by the convergence figure that follows it."""
    figures = [(m.start(), m.group(1)) for m in re.finditer(r"convergence_(\w+?_(?:fixed|full))\.png", text)]
    lines = []
    for m in re.finditer(r"(?:not )?converged at \d+ rows[^<]*", text):
        name = min(((pos, n) for pos, n in figures if pos > m.start()), default=(0, "?"))[1]
        lines.append(f"convergence {name}: {html.unescape(m.group(0))}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store")
    ap.add_argument("--report", help="the report folder (default: <store's folder>/report)")
    args = ap.parse_args()
    store = open_store(ap, args.store)
    report = Path(args.report) if args.report else Path(args.store).resolve().parent / "report"
    rows = np.flatnonzero(store.completed())
    print(f"{args.store}: {len(rows)} rows")
    for line in accuracy_lines(store, rows) + digit_lines(store):
        print(line)
    if (report / "headline.txt").exists():
        print(*(f"headline: {h}" for h in (report / "headline.txt").read_text().splitlines() if h), sep="\n")
    if (report / "index.html").exists():
        print(*convergence_lines((report / "index.html").read_text()), sep="\n")
    print(*overall_lines(report, store), sep="\n")


if __name__ == "__main__":
    main()
