"""The report: an influence store -> ``report/`` with PNG figures, CSVs of ranked classes and an index.html that
explains them, plus the headline numbers of the embedded mini experiment (digits, coarse).

Figures follow the paper: overall ranking (Fig. 1), per target class (Fig. 3), the target images each influential
source class affects most (Figs. 4-5), often-misclassified examples and their most negative source classes (Fig. 6
left), convergence curves (Figs. 8, 29, 30). This module assembles the page; ``sections`` writes the figures and
CSVs of each target, ``headline`` computes the headline numbers.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from datatransfer.config import ReportConfig
from datatransfer.errors import AggregationError
from datatransfer.influence.reader import Influence
from datatransfer.report.headline import headline, headline_lines
from datatransfer.report.markup import KIND_TEXT, esc
from datatransfer.report.sections import Sections, counterfactual_section, target_section
from datatransfer.store import swap
from datatransfer.store.sweep_store import Store


@dataclass
class ReportSummary:
    out: Path
    index: Path
    figures: List[Path] = field(default_factory=list)
    csvs: List[Path] = field(default_factory=list)
    headline: Dict[str, Any] = field(default_factory=dict)
    headline_lines: List[str] = field(default_factory=list)


# The headline checks the mini data's known answers (digits: the matching MNIST digit; coarse: member classes).
NO_HEADLINE = "(no headline: it is computed for source-class units and a digits or coarse target)"


def default_report_dir(influence_path: str | os.PathLike) -> Path:
    return Path(influence_path).resolve().parent / "report"


def report_dir(out_dir: Optional[str | os.PathLike], influence_path: str | os.PathLike) -> Path:
    """The report folder: ``out_dir`` (report.out), else ``<influence store's parent>/report``."""
    return Path(out_dir).resolve() if out_dir else default_report_dir(influence_path)


def refuse_foreign_out(out: Path) -> None:
    """Refuse a report folder that holds anything but a report's files (AggregationError); the app calls it before
    aggregating, so that a refused report costs no work and writes nothing."""
    swap.refuse_foreign(out, is_report, "a report folder", AggregationError)


def write_report(inf: Influence, out_dir: Optional[str | os.PathLike] = None,
                 settings: ReportConfig = ReportConfig(), store: Optional[Store] = None) -> ReportSummary:
    """Write figures, CSVs and index.html for every target and mode of ``inf`` into ``out_dir`` (default
    ``<influence store's parent>/report``). ``store`` (optional) adds the models' most frequent wrong predictions.
    The folder is replaced all at once (store/swap.py): written beside it and renamed into place, so an interrupted
    or refused report leaves the previous one whole; a folder that holds anything but a report's files is refused."""
    out = report_dir(out_dir, inf.path)
    with swap.sole_writer(out, "python -m aggregate.report", AggregationError), \
            swap.written_beside(out, is_report, "a report folder", AggregationError) as tmp:
        tmp.mkdir()
        summary = _write(inf, tmp, settings, store)
    moved = lambda p: out / p.name  # noqa: E731 (the files' paths once the folder is in place)
    summary.out, summary.index = out, moved(summary.index)
    summary.figures, summary.csvs = [moved(p) for p in summary.figures], [moved(p) for p in summary.csvs]
    return summary


# What a report folder holds: figures, CSVs, index.html, headline.txt (nothing else is replaced with it).
REPORT_FILES = (".png", ".csv", ".html", ".txt")


def is_report(p: Path) -> bool:
    return p.is_dir() and all(f.is_file() and f.suffix in REPORT_FILES for f in p.iterdir())


def _write(inf: Influence, out: Path, settings: ReportConfig, store: Optional[Store]) -> ReportSummary:
    kind = settings.kind if settings.kind in inf.output_kinds else inf.output_kinds[0]
    summary = ReportSummary(out, out / "index.html")
    summary.headline = headline(inf, kind, settings.headline_top)
    summary.headline_lines = headline_lines(summary.headline)
    r = Sections(inf, store, kind, settings, out)
    sections = [target_section(r, t) for t in inf.targets]
    sections.append(counterfactual_section(r, inf.attrs.get("store")))  # "" when there are none
    summary.figures, summary.csvs = r.figures, r.csvs
    if inf.replaced():  # its figures would mix two influence stores
        raise AggregationError(f"{inf.path} was replaced by another `python -m aggregate` while this report read it; "
                               f"run the report again (the previous report is left as it was)")
    (out / "headline.txt").write_text("\n".join(summary.headline_lines or [NO_HEADLINE]) + "\n")
    summary.index.write_text(_page(inf, kind, summary, sections))
    return summary


def _definition(estimator: Optional[str], output: str) -> str:
    """What the influence of a source class C on a target example t is, for the estimator used (HTML)."""
    if estimator in ("ridge", "lasso"):
        how = "ridge regression" if estimator == "ridge" else \
            "LASSO regression (an L1 penalty: most coefficients are exactly 0)"
        return ("The <b>influence</b> of a source class C on a target test example t is C's coefficient in a linear "
                f"model of f(t), the transferred model's {esc(output)} on t, fitted by {how} on which "
                "source classes each model saw (datamodels, Appendix B): the change in f(t) that including C "
                "predicts when the other classes are held fixed.")
    return ("The <b>influence</b> of a source class C on a target test example t compares the models that saw C "
            "with those that did not: Infl[C &rarr; t] = mean of f(t) over models trained with C &minus; mean of "
            f"f(t) over models trained without C, where f(t) is the transferred model's {esc(output)} on t.")


def _page(inf: Influence, kind: str, summary: ReportSummary, sections: List[str]) -> str:
    a = inf.attrs
    est = a.get("estimator", {})
    est_text = {"dim": "difference of means (paper Eq. 1)", "ridge": "ridge regression (datamodels, Appendix B)",
                "lasso": "LASSO datamodels (Sec. 4.3, Appendix D)"}.get(est.get("name"), est.get("name"))
    head = "".join(f"<li>{esc(x)}</li>" for x in summary.headline_lines) or f"<li>{esc(NO_HEADLINE)}</li>"
    links = [f'<a href="#{esc(t)}_{esc(m)}">{esc(t)}, {esc(m)}</a>' for t in inf.targets for m in inf.modes]
    if any('<h2 id="counterfactual">' in s for s in sections):
        links.append('<a href="#counterfactual">counterfactual experiments</a>')
    toc = " &middot; ".join(links)
    csv_links = " ".join(f'<a href="{esc(p.name)}">{esc(p.name)}</a>' for p in summary.csvs)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Source-class influence report</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 2em auto; line-height: 1.45; color: #222; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; border: 1px solid #ddd; }}
figcaption {{ margin-bottom: .5em; }} code {{ background: #f3f3f3; padding: 0 .2em; }}
.box {{ background: #f6f8fa; border: 1px solid #ddd; padding: .8em 1.2em; }}
</style></head><body>
<h1>Which source classes help or hurt transfer?</h1>
<div class="box">
<p>Store <code>{esc(a.get('store'))}</code>: {a.get('rows_used')} of {a.get('store_rows')} models (rows) completed and
used. {len(inf.unit_names)} source classes; targets {esc(', '.join(inf.targets))}. Estimator: {esc(est_text)}.
Figures show the output <b>{esc(kind)}</b> ({esc(KIND_TEXT.get(kind, kind))}); CSVs cover every output kind.
Computed {esc(a.get('created', ''))}.</p>
<p><b>Headline.</b></p><ul>{head}</ul>
<p><b>Contents.</b> {toc}</p>
</div>
<h2>How to read this report</h2>
<p>Each row of the sweep is a model pretrained on a random half of the source classes and then transferred to the
targets. {_definition(est.get("name"), KIND_TEXT.get(kind, kind))} A positive value means including C helps the target
prediction, a negative value means C hurts it. Averaging over the examples of one target class gives the class-level
influence; averaging over all examples gives the overall influence. The paper found that the most helpful source
classes are the ones that match target classes, and that removing the most harmful ones can improve transfer.</p>
<p><b>Findings and noise.</b> Every estimate has a standard error where the influence store holds one; an estimate
counts as a finding only if its 95% interval excludes the null level (0, or with fixed-size masks the centre of the
bulk of the classes' influences: such masks measure differences between classes only) and, for overall influences,
it lies outside the knockoff band. Figures draw noise pale, and the CSVs say <code>signal</code> or
<code>noise</code> in their <code>judged</code> column (docs/estimators.md).</p>
{''.join(sections)}
<h2>All CSV files</h2><p>{csv_links}</p>
<p><small>Written by <code>python -m aggregate.report</code> from <code>{esc(inf.path)}</code> on
{time.strftime('%Y-%m-%d %H:%M')}.</small></p>
</body></html>
"""
