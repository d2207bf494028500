"""The report's CSV files and the ranking they (and the figures) share."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, List, Sequence

import numpy as np

from datatransfer.influence.reader import Influence

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal: estimate +- Z95 * se is a 95% interval


def ranking(values: np.ndarray) -> np.ndarray:
    """Indices from most positive to most negative (ties keep unit order)."""
    return np.argsort(-values, kind="stable")


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    """A CSV file with a header line; floats with 6 significant digits."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow([f"{v:.6g}" if isinstance(v, (float, np.floating)) else v for v in r])
    return path


def ranked_csvs(inf: Influence, t: str, mode: str, kind: str, out: Path) -> List[Path]:
    """Source classes ranked by overall influence, and per target class, for one target, mode and output kind;
    with standard errors and 95% intervals (columns se, ci95_low, ci95_high) when the store has them, and the
    judgement of report/noise.py (null_level, z, judged: signal or noise)."""
    units, class_names = inf.unit_names, inf.class_names(t)
    overall = inf.array(t, mode, kind, "overall")
    per_class = inf.array(t, mode, kind, "per_class")
    n_in, n_out = np.asarray(inf.group[f"{t}/n_in"][:]), np.asarray(inf.group[f"{t}/n_out"][:])
    se_o, se_c = inf.se(t, mode, kind, "overall"), inf.se(t, mode, kind, "per_class")
    extra = ["se", "ci95_low", "ci95_high"] if se_o is not None else []
    from datatransfer.report import noise  # report/noise.py: z and noise judgement (it imports Z95 from here)

    j_o, j_c = noise.overall(inf, t, mode, kind), noise.level(inf, t, mode, kind, "per_class")
    extra += ["null_level", "z", "judged"]

    def judged(j, *idx) -> list:
        return [float(j.null[idx[:-1]]), float(j.z[idx]), "noise" if j.noise[idx] else "signal"]

    def interval(est: float, se) -> list:
        return [] if se is None else [float(se), est - Z95 * float(se), est + Z95 * float(se)]

    a = write_csv(out / f"overall_{t}_{mode}_{kind}.csv",
                  ["rank", "source_class", "influence", "n_in", "n_out"] + extra,
                  [[r + 1, units[u], float(overall[u]), int(n_in[u]), int(n_out[u])]
                   + interval(float(overall[u]), None if se_o is None else se_o[u]) + judged(j_o, u)
                   for r, u in enumerate(ranking(overall))])
    b = write_csv(out / f"per_class_{t}_{mode}_{kind}.csv", ["target_class", "rank", "source_class", "influence"]
                  + extra,
                  [[class_names[c], r + 1, units[u], float(per_class[c, u])]
                   + interval(float(per_class[c, u]), None if se_c is None else se_c[c, u]) + judged(j_c, c, u)
                   for c in range(len(class_names)) for r, u in enumerate(ranking(per_class[c]))])
    return [a, b]
