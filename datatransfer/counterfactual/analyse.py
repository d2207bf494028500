"""``python -m aggregate.counterfactual``'s one call: a counterfactual sweep store -> ``<store parent>/counterfactual/``
with accuracy.csv, summary.csv, best_k.csv, accuracy_vs_k.png, and for debugged examples examples.csv,
example_predictions.png and example_shares.csv; about.json says which store and influence store they describe."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from datatransfer.counterfactual import examples as ex
from datatransfer.counterfactual import figures
from datatransfer.counterfactual.results import best_k, read, summary
from datatransfer.errors import StoreError
from datatransfer.report.tables import write_csv
from datatransfer.store.sweep_store import Store

RESULTS = "counterfactual"  # the results folder's name, beside the store


@dataclass
class Analysis:
    out: Path
    rows: int
    planned: int
    files: List[Path] = field(default_factory=list)
    best: List[Dict[str, Any]] = field(default_factory=list)
    shares: Optional[Dict[str, Any]] = None


def default_out(store_path: str | os.PathLike) -> Path:
    return Path(store_path).resolve().parent / RESULTS


def analyse(store_path: str | os.PathLike, out: Optional[str | os.PathLike] = None) -> Analysis:
    store = Store.open(store_path)
    r = read(store)
    if not len(r.row):
        raise StoreError(f"{store.path} has no completed rows yet; run or resume the sweep first")
    o = Path(out).resolve() if out else default_out(store.path)
    o.mkdir(parents=True, exist_ok=True)
    res = Analysis(o, len(r.row), store.num_rows)
    res.files.append(write_csv(o / "accuracy.csv", ["row", "point", "k", "run", "example"]
                               + [f"accuracy_{m}" for m in r.modes] + [f"{r.kind}_{m}" for m in r.modes],
                               [[int(r.row[i]), r.point[i], int(r.k[i]), int(r.run[i]), int(r.example[i]),
                                 *map(float, r.accuracy[i]), *map(float, r.output[i])] for i in range(len(r.row))]))
    records = summary(r)
    cols = ["point", "k", "mode", "mean", "std", "n", "diff_to_full", "ci_low", "ci_high"]
    res.files.append(write_csv(o / "summary.csv", cols, [[x[c] for c in cols] for x in records]))
    res.best = best_k(r, records)
    bcols = ["mode", "source", "k", "classes_kept", "mean", "std", "n", "diff_to_full", "ci_low", "ci_high"]
    res.files.append(write_csv(o / "best_k.csv", bcols, [[x[c] for c in bcols] for x in res.best]))
    res.files.append(figures.accuracy_vs_k(o / "accuracy_vs_k.png", records, r.modes,
                                           f"{r.target} (ranked by {r.mode}, {r.kind})"))
    _examples(store, r, o, res)
    about = {"store": str(store.path), "rows_completed": res.rows, "rows_planned": res.planned, "target": r.target,
             "mode": r.mode, "kind": r.kind, "influence": r.attrs.get("influence"), "num_units": r.num_units,
             "handpicked": r.attrs.get("handpicked"), "shares": res.shares}
    (o / "about.json").write_text(json.dumps(about, indent=1, default=str) + "\n")
    res.files.append(o / "about.json")  # counted in the app's "wrote N files"
    return res


def _examples(store: Store, r, o: Path, res: Analysis) -> None:
    found = ex.debugged(store, r, r.mode)
    if not found:
        return
    names = store.class_names(r.target)
    res.files.append(write_csv(
        o / "examples.csv", ["example", "label", "influencer", "influence", "models_without", "correct_without",
                             "models_with", "correct_with"],
        [[x["example"], names[x["label"]], x["influencer"], float(x["influence"]), int(x["without"].sum()),
          float(x["correct_without"]), int(x["with"].sum()), float(x["correct_with"])] for x in found]))
    res.files.append(figures.prediction_histograms(o / "example_predictions.png", found, names))
    res.shares = ex.shares(found)
    s = res.shares
    res.files.append(write_csv(o / "example_shares.csv", ["outcome", "examples", "share"],
                               [[k, s[k], s[f"share_{k}"]] for k in ("more_often", "less_often", "equally")]))
