"""The report: an influence store -> ``report/`` with PNG figures, CSVs of ranked classes and an index.html that
explains them, plus the headline numbers of the embedded mini experiment (digits, coarse).

Figures follow the paper: overall ranking (Fig. 1), per target class (Fig. 3), the target images each influential
source class affects most (Figs. 4-5), often-misclassified examples and their most negative source classes (Fig. 6
left), convergence curves (Figs. 8, 29, 30).
"""

from __future__ import annotations

import csv
import html
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from datatransfer.config import ReportConfig
from datatransfer.influence.aggregate import Influence, read_blocks
from datatransfer.report import figures
from datatransfer.store.sweep_store import Store, StoreError

MODE_TEXT = {
    "fixed": "fixed-feature transfer (source backbone frozen, new linear head)",
    "full": "full-network transfer (every weight fine-tuned)",
}
KIND_TEXT = {
    "softmax_gt": "probability of the true class (p_y)",
    "gt_logit": "logit of the true class (z_y)",
    "raw_margin": "logit margin (z_y minus the largest other logit)",
    "softmax_margin": "probability margin (p_y minus the largest other probability)",
    "is_correct": "correctness (1 if predicted right, else 0)",
}
# The embedded coarse target: each coarse class and the source classes it is made of (docs/data.md).
COARSE_MEMBERS = {
    "digit": [f"mnist:{d}" for d in range(10)],
    "top": ["fashion:tshirt", "fashion:pullover", "fashion:coat", "fashion:shirt"],
    "bottom": ["fashion:trouser", "fashion:dress"],
    "footwear": ["fashion:sandal", "fashion:sneaker", "fashion:ankle_boot"],
    "bag": ["fashion:bag"],
    "farm animal": ["animal:cat", "animal:cow", "animal:dog", "animal:horse", "animal:sheep"],
    "wild animal": ["animal:bear", "animal:elephant", "animal:giraffe", "animal:zebra"],
    "bird": ["animal:bird"],
}
EMBEDDED_DATA = Path(__file__).resolve().parent / "data"


@dataclass
class ReportSummary:
    out: Path
    index: Path
    figures: List[Path] = field(default_factory=list)
    csvs: List[Path] = field(default_factory=list)
    headline: Dict[str, Any] = field(default_factory=dict)
    headline_lines: List[str] = field(default_factory=list)
    explained: set = field(default_factory=set)  # figure kinds whose long explanation was already given


def default_report_dir(influence_path: str | os.PathLike) -> Path:
    return Path(influence_path).resolve().parent / "report"


# ---- headline numbers ------------------------------------------------------------------------------------------
def ranking(values: np.ndarray) -> np.ndarray:
    """Indices from most positive to most negative (ties keep unit order)."""
    return np.argsort(-values, kind="stable")


def headline(inf: Influence, kind: str = "softmax_gt", top: int = 3) -> Dict[str, Any]:
    """For target ``digits``: how many digit classes have the matching MNIST digit as top positive influencer and
    within the top ``top``; for ``coarse``: the share of each coarse class's top-k influencers (k = its number of
    member fine classes) that are members. Per mode; empty where the targets or source classes are absent."""
    out: Dict[str, Any] = {}
    if kind not in inf.output_kinds:
        return out
    units = inf.unit_names
    if "digits" in inf.targets:
        names = inf.class_names("digits")
        rows = {}
        for mode in inf.modes:
            pc = inf.array("digits", mode, kind, "per_class")
            per = {}
            for c, name in enumerate(names):
                want = f"mnist:{name}"
                if want in units:
                    order = [units[i] for i in ranking(pc[c])]
                    per[name] = {"top": order[:top], "rank": order.index(want) + 1}
            if per:
                rows[mode] = {"classes": len(per), "top1": sum(v["rank"] == 1 for v in per.values()),
                              f"top{top}": sum(v["rank"] <= top for v in per.values()), "per_class": per}
        if rows:
            out["digits"] = {"kind": kind, "top": top, "modes": rows}
    if "coarse" in inf.targets:
        names = inf.class_names("coarse")
        rows = {}
        for mode in inf.modes:
            pc = inf.array("coarse", mode, kind, "per_class")
            per = {}
            for c, name in enumerate(names):
                members = [m for m in COARSE_MEMBERS.get(str(name), []) if m in units]
                if members:
                    top_k = [units[i] for i in ranking(pc[c])[:len(members)]]
                    per[str(name)] = {"k": len(members), "share": sum(u in members for u in top_k) / len(members),
                                      "top": top_k}
            if per:
                rows[mode] = {"mean_share": float(np.mean([v["share"] for v in per.values()])), "per_class": per}
        if rows:
            out["coarse"] = {"kind": kind, "modes": rows}
    return out


def headline_lines(h: Dict[str, Any]) -> List[str]:
    lines = []
    for mode, r in h.get("digits", {}).get("modes", {}).items():
        top = h["digits"]["top"]
        lines.append(f"digits ({mode}, {h['digits']['kind']}): the matching MNIST digit is the top positive "
                     f"influencer for {r['top1']}/{r['classes']} digit classes and in the top {top} for "
                     f"{r[f'top{top}']}/{r['classes']}")
    for mode, r in h.get("coarse", {}).get("modes", {}).items():
        shares = ", ".join(f"{c} {v['share']:.0%}" for c, v in r["per_class"].items())
        lines.append(f"coarse ({mode}, {h['coarse']['kind']}): share of member fine classes among each coarse "
                     f"class's top-k influencers (k = its number of members): mean {r['mean_share']:.0%} "
                     f"({shares})")
    return lines


# ---- data for the figures --------------------------------------------------------------------------------------
def target_images(config: Dict[str, Any], target: str, n: int):
    """(images uint8 (n, H, W) or None, captions per example). Read straight from the data file named in the
    store's config (no torch); None when the file or the array is not there (the report then skips image grids)."""
    tcfg = (config.get("targets") or {}).get(target) or {}
    name, root, file = tcfg.get("name", target), tcfg.get("root", ""), tcfg.get("file", "mini.npz")
    path = (Path(root) if root else EMBEDDED_DATA) / file
    try:
        with np.load(path, allow_pickle=False) as z:
            x = z[f"{name}_test_x"] if f"{name}_test_x" in z.files else None
            fine = z[f"{name}_test_fine"] if f"{name}_test_fine" in z.files else None
            src = [str(s) for s in z["source_class_names"]] if "source_class_names" in z.files else None
            classes = [str(s) for s in z[f"{name}_class_names"]] if f"{name}_class_names" in z.files else None
            labels = z[f"{name}_test_y"] if f"{name}_test_y" in z.files else None
    except (OSError, ValueError):
        return None, [str(i) for i in range(n)]
    if x is None or len(x) != n:
        return None, [str(i) for i in range(n)]
    if x.ndim == 4 and x.shape[-1] in (1, 3):
        x = x[..., 0] if x.shape[-1] == 1 else x
    captions = [classes[int(c)] if classes is not None else "" for c in labels] if labels is not None \
        else [""] * n
    if fine is not None and src is not None:
        captions = [f"{c}: {src[int(f)].split(':')[-1]}" for c, f in zip(captions, fine)]
    return x, captions


def error_rates(inf: Influence, store: Optional[Store], t: str, mode: str):
    """(share of rows that got each example wrong, most frequent prediction per example or None)."""
    if "is_correct" in inf.output_kinds:
        wrong = 1.0 - inf.array(t, mode, "is_correct", "mean_output").astype(np.float64)
    else:
        wrong = None
    predicted = None
    if store is not None:
        try:
            arr = store.predictions(t)
            m = store.modes.index(mode)
            labels = inf.labels(t)
            n_classes = len(inf.class_names(t))
            counts = np.zeros((len(labels), n_classes + 1), dtype=np.int64)
            for _, data in read_blocks(arr, inf.rows(t), 256):
                p = np.clip(data[:, m, :], -1, n_classes - 1)  # -1: fill value of an unwritten row
                np.add.at(counts, (np.broadcast_to(np.arange(len(labels)), p.shape), p), 1)
            counts = counts[:, :n_classes]  # drop the -1 column
            seen = counts.sum(axis=1)
            if not seen.any():
                return wrong, None  # no predictions written (a synthetic store): nothing to say
            if wrong is None:
                wrong = 1.0 - counts[np.arange(len(labels)), labels] / np.maximum(seen, 1)
            counts[np.arange(len(labels)), labels] = -1  # the most frequent *wrong* prediction
            predicted = counts.argmax(axis=1)
        except (KeyError, ValueError, StoreError):
            pass
    return wrong, predicted


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow([f"{v:.6g}" if isinstance(v, (float, np.floating)) else v for v in r])
    return path


# ---- the report ------------------------------------------------------------------------------------------------
def write_report(inf: Influence, out_dir: Optional[str | os.PathLike] = None,
                 settings: ReportConfig = ReportConfig(), store: Optional[Store] = None) -> ReportSummary:
    """Write figures, CSVs and index.html for every target and mode of ``inf`` into ``out_dir`` (default
    ``<influence store's parent>/report``). ``store`` (optional) adds the models' most frequent wrong predictions."""
    out = Path(out_dir).resolve() if out_dir else default_report_dir(inf.path)
    out.mkdir(parents=True, exist_ok=True)
    kind = settings.kind if settings.kind in inf.output_kinds else inf.output_kinds[0]
    summary = ReportSummary(out, out / "index.html")
    summary.headline = headline(inf, kind, settings.headline_top)
    summary.headline_lines = headline_lines(summary.headline)
    units = inf.unit_names
    sections: List[str] = []
    for t in inf.targets:
        sections.append(_target_section(inf, store, t, kind, units, settings, out, summary))
    (out / "headline.txt").write_text("\n".join(summary.headline_lines) + "\n")
    summary.index.write_text(_page(inf, kind, summary, sections))
    return summary


def _target_section(inf: Influence, store, t: str, kind: str, units: List[str], s: ReportConfig, out: Path,
                    summary: ReportSummary) -> str:
    labels, class_names = inf.labels(t), inf.class_names(t)
    images, captions = target_images(inf.attrs.get("config") or {}, t, len(labels))
    what = KIND_TEXT.get(kind, kind)

    def _fig(path: Path, title: str, text: str, csvs: Sequence[str] = (), note: str = "") -> str:
        # The long explanation once per figure kind; later figures of the same kind point back to it.
        if title in summary.explained:
            text = "As explained above."
        summary.explained.add(title)
        return _figure_html(path, title, text + note, csvs)
    parts = [f'<h2 id="{_e(t)}">Target <code>{_e(t)}</code></h2>',
             f"<p>{len(labels)} test examples in {len(class_names)} classes: {_e(', '.join(map(str, class_names)))}."
             f"</p>"]
    for mode in inf.modes:
        tag = f"{t}_{mode}"
        overall = inf.array(t, mode, kind, "overall")
        per_class = inf.array(t, mode, kind, "per_class")
        per_example = inf.array(t, mode, kind, "per_example")  # (n, U)
        d = inf.diagnostics(t, mode, kind)
        noise = float(np.nanmax(np.abs(d["knockoff_overall"]))) if d is not None else None
        mt = MODE_TEXT.get(mode, mode)
        parts.append(f'<h3 id="{_e(tag)}">{_e(t)}: {_e(mt)}</h3>')
        for k in inf.output_kinds:  # CSVs for every output kind, figures for the report's kind
            summary.csvs += _csvs(inf, t, mode, k, units, class_names, out)

        f = figures.overall_bars(out / f"overall_{tag}.png", units, overall, s.top,
                                 f"{t}: most helpful and most harmful source classes ({mode})",
                                 f"overall influence on the {what}", noise)
        parts.append(_fig(f, "Overall influence (paper Fig. 1)",
                          f"Each bar is a source class's influence averaged over all {len(labels)} target test "
                          f"examples: how much higher the {what} is, on average, for models whose source training "
                          f"set included the class than for models whose set did not. Green bars help transfer, "
                          f"red bars hurt it. The grey band is the noise level: the largest influence that "
                          f"<em>knockoff</em> classes (random masks independent of the outputs) reached with the same "
                          f"number of models; bars inside it are not distinguishable from chance.",
                          [f"overall_{t}_{mode}_{kind}.csv"],
                          f" Here {int((np.abs(overall) > noise).sum())} of {len(units)} source classes lie outside "
                          f"the band." if noise is not None else ""))
        f = figures.per_class_bars(out / f"per_class_{tag}.png", units, per_class, class_names, min(s.top, 5),
                                   f"{t}: top source classes for each target class ({mode})",
                                   f"influence on the {what} (mean over the class's test examples)")
        parts.append(_fig(f, "Per target class (paper Fig. 3)",
                          "The same influence averaged over the test examples of one target class only: which "
                          "source classes help (green) or hurt (red) that class in particular.",
                          [f"per_class_{t}_{mode}_{kind}.csv"]))
        f = figures.heatmap(out / f"heatmap_{tag}.png", units, per_class, class_names,
                            f"{t}: class-level influence, target class x source class ({mode})")
        parts.append(_fig(f, "All class pairs at a glance",
                          "Rows are target classes, columns source classes (the most influential ones when there "
                          "are many); green = helps, red = hurts. A source class that is the same concept as a "
                          "target class shows up as a bright green cell in that row."))
        summary.figures += [out / f"overall_{tag}.png", out / f"per_class_{tag}.png", out / f"heatmap_{tag}.png"]

        if images is not None:
            order = ranking(overall)
            n_pos = (s.sources + 1) // 2
            chosen = list(order[:n_pos]) + list(order[::-1][:s.sources - n_pos])
            rows = []
            for u in chosen:
                col = per_example[:, u]
                rank = ranking(col)
                rows.append((units[u], rank[:s.images], rank[::-1][:s.images]))
            f = figures.projection_grid(out / f"projection_{tag}.png", images, rows, per_example[:, chosen],
                                        captions, f"{t}: target images most affected by influential source "
                                                  f"classes ({mode})")
            summary.figures.append(f)
            parts.append(_fig(f, "Projecting source classes onto the target (paper Figs. 4-5)",
                              f"One row per source class (the {n_pos} most helpful and the {s.sources - n_pos} "
                              f"most harmful overall, named in the middle). Left: the target test images whose "
                              f"{what} that class raises most; right: those it lowers most. Captions give the "
                              f"image's label and the influence. This finds the target subpopulation that a source "
                              f"class corresponds to, even when the target has no such label."))
        else:
            parts.append("<p><em>Image grids skipped: the target's test images were not found in the data file "
                         "named in the store's config.</em></p>")

        wrong, predicted = error_rates(inf, store, t, mode)
        if wrong is not None:
            # most often wrong first; among equally often wrong, the lowest mean output (least confident) first
            hard = np.lexsort((inf.array(t, mode, kind, "mean_output"), -wrong))[:s.hard_examples]
            examples, rows_csv = [], []
            for i in hard:
                neg = ranking(per_example[i])[::-1][:s.negatives]
                cap = f"label {class_names[labels[i]]}, wrong in {wrong[i]:.0%} of models"
                if predicted is not None:
                    cap += f", often predicted {class_names[predicted[i]]}"
                examples.append({"index": int(i), "caption": cap, "names": [units[u] for u in neg],
                                 "values": per_example[i, neg]})
                rows_csv.append([int(i), class_names[labels[i]], float(wrong[i]),
                                 class_names[predicted[i]] if predicted is not None else ""]
                                + [v for u in neg for v in (units[u], float(per_example[i, u]))])
            f = figures.hard_examples(out / f"hard_examples_{tag}.png", images, examples,
                                      f"{t}: examples the models get wrong most often ({mode})")
            c = _write_csv(out / f"hard_examples_{tag}.csv",
                           ["example", "label", "error_rate", "most_frequent_wrong_prediction"]
                           + [f"{a}{j + 1}" for j in range(s.negatives) for a in ("negative_source_", "influence_")],
                           rows_csv)
            summary.figures.append(f)
            summary.csvs.append(c)
            parts.append(_fig(f, "Debugging failures (paper Fig. 6, left)",
                              "The target test examples that the most models misclassify, with the source classes "
                              "whose inclusion lowers their score most. Such a class may teach a feature that the "
                              "transferred model misuses on this example; removing it from the source is the "
                              "counterfactual test.", [c.name]))

        if d is not None and len(d["num_rows"]):
            curves = {k: inf.diagnostics(t, mode, k) for k in inf.output_kinds}
            f = figures.convergence(out / f"convergence_{tag}.png", d["num_rows"], curves,
                                    f"{t}: are there enough models? ({mode})")
            g = figures.knockoff_ranks(out / f"knockoffs_{tag}.png", overall, d["knockoff_overall"],
                                       f"{t}: real source classes vs knockoffs ({mode}, {kind})")
            summary.figures += [f, g]
            parts.append(_fig(f, "Convergence (paper Figs. 8, 29, 30)",
                              f"How the estimates improve with the number of models N (the first N of {d['fit_rows']}"
                              f" fit rows; {d['heldout_rows']} other rows are held out). Top left: spread of the "
                              f"overall influences over bootstrap resamples of the N models. Top right: rank "
                              f"correlation, on held-out models, between the mean target output and its prediction "
                              f"from the model's source classes (sum of their influences). Bottom left: the same per "
                              f"target example, averaged (LDS). Bottom right: share of knockoff (fake) classes among "
                              f"the top {d['top_k']} influences; 0.5 is chance. Curves still moving at the right "
                              f"edge mean more models would sharpen the estimates."))
            parts.append(_fig(g, "Signal above noise",
                              "Overall influences of the real source classes sorted from most positive to most "
                              "negative, against knockoff classes that by construction have no effect. Real classes "
                              "beyond the knockoffs' range carry signal."))
        elif d is not None:
            parts.append(f"<p><em>Convergence curves not available yet: {_e(d.get('note', ''))}</em></p>")
    return "\n".join(parts)


def _csvs(inf: Influence, t: str, mode: str, kind: str, units: List[str], class_names, out: Path) -> List[Path]:
    overall = inf.array(t, mode, kind, "overall")
    per_class = inf.array(t, mode, kind, "per_class")
    n_in, n_out = np.asarray(inf.group[f"{t}/n_in"][:]), np.asarray(inf.group[f"{t}/n_out"][:])
    a = _write_csv(out / f"overall_{t}_{mode}_{kind}.csv", ["rank", "source_class", "influence", "n_in", "n_out"],
                   [[r + 1, units[u], float(overall[u]), int(n_in[u]), int(n_out[u])]
                    for r, u in enumerate(ranking(overall))])
    b = _write_csv(out / f"per_class_{t}_{mode}_{kind}.csv", ["target_class", "rank", "source_class", "influence"],
                   [[class_names[c], r + 1, units[u], float(per_class[c, u])]
                    for c in range(len(class_names)) for r, u in enumerate(ranking(per_class[c]))])
    return [a, b]


def _e(s: Any) -> str:
    return html.escape(str(s))


def _figure_html(path: Path, title: str, text: str, csvs: Sequence[str] = ()) -> str:
    links = " ".join(f'<a href="{_e(c)}">{_e(c)}</a>' for c in csvs)
    return (f'<figure><figcaption><b>{_e(title)}.</b> {text}'
            + (f" Data: {links}." if links else "")
            + f'</figcaption><a href="{_e(path.name)}"><img src="{_e(path.name)}" alt="{_e(title)}"></a></figure>')


def _page(inf: Influence, kind: str, summary: ReportSummary, sections: List[str]) -> str:
    a = inf.attrs
    est = a.get("estimator", {})
    est_text = {"dim": "difference of means (paper Eq. 1)", "ridge": "ridge regression (datamodels, Appendix B)"} \
        .get(est.get("name"), est.get("name"))
    head = "".join(f"<li>{_e(x)}</li>" for x in summary.headline_lines) or "<li>(no digits/coarse target)</li>"
    toc = " &middot; ".join(f'<a href="#{_e(t)}_{_e(m)}">{_e(t)}, {_e(m)}</a>' for t in inf.targets for m in inf.modes)
    csv_links = " ".join(f'<a href="{_e(p.name)}">{_e(p.name)}</a>' for p in summary.csvs)
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
<p>Store <code>{_e(a.get('store'))}</code>: {a.get('rows_used')} of {a.get('store_rows')} models (rows) completed and
used. {len(inf.unit_names)} source classes; targets {_e(', '.join(inf.targets))}. Estimator: {_e(est_text)}.
Figures show the output <b>{_e(kind)}</b> ({_e(KIND_TEXT.get(kind, kind))}); CSVs cover every output kind.
Computed {_e(a.get('created', ''))}.</p>
<p><b>Headline.</b></p><ul>{head}</ul>
<p><b>Contents.</b> {toc}</p>
</div>
<h2>How to read this report</h2>
<p>Each row of the sweep is a model pretrained on a random half of the source classes and then transferred to the
targets. The <b>influence</b> of a source class C on a target test example t compares the models that saw C with those
that did not: Infl[C &rarr; t] = mean of f(t) over models trained with C &minus; mean of f(t) over models trained
without C, where f(t) is the transferred model's {_e(KIND_TEXT.get(kind, kind))} on t. A positive value means including
C helps the target prediction, a negative value means C hurts it. Averaging over the examples of one target class
gives the class-level influence; averaging over all examples gives the overall influence. The paper found that the
most helpful source classes are the ones that match target classes, and that removing the most harmful ones can
improve transfer.</p>
{''.join(sections)}
<h2>All CSV files</h2><p>{csv_links}</p>
<p><small>Written by <code>python -m aggregate.report</code> from <code>{_e(inf.path)}</code> on
{time.strftime('%Y-%m-%d %H:%M')}.</small></p>
</body></html>
"""
