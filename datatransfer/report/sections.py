"""The report's sections: one per target, and within it one per mode, made of one part per figure (paper figure
numbers in the captions). Each figure function draws its PNG, records it, and returns its HTML."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from datatransfer.config import ReportConfig
from datatransfer.influence import convergence as convergence_rule
from datatransfer.influence.reader import Influence
from datatransfer.report import figures, noise
from datatransfer.report.inputs import error_rates, target_images
from datatransfer.report.markup import KIND_TEXT, MODE_TEXT, esc, figure_html
from datatransfer.report.tables import Z95, ranked_csvs, ranking, write_csv
from datatransfer.store.sweep_store import Store


@dataclass
class Sections:
    """The sections of one report in the making: what they show, where they go, and the files written so far."""

    inf: Influence
    store: Optional[Store]  # adds the models' most frequent wrong predictions, when given
    kind: str  # the output kind the figures show
    settings: ReportConfig
    out: Path
    figures: List[Path] = field(default_factory=list)
    csvs: List[Path] = field(default_factory=list)
    explained: set = field(default_factory=set)  # figure titles whose long explanation was already given

    @property
    def what(self) -> str:
        return KIND_TEXT.get(self.kind, self.kind)

    def figure(self, path: Path, title: str, text: str, csvs: Sequence[str] = (), note: str = "") -> str:
        """The figure's HTML; the long explanation once per title, later figures of that title point back to it."""
        if title in self.explained:
            text = "As explained above."
        self.explained.add(title)
        return figure_html(path, title, text + note, csvs)


@dataclass
class _View:
    """One target in one mode, in the report's output kind."""

    t: str
    mode: str
    labels: np.ndarray
    class_names: List[str]
    overall: np.ndarray  # (U,)
    per_class: np.ndarray  # (classes, U)
    per_example: np.ndarray  # (n, U)
    diagnostics: Optional[Dict[str, Any]]
    images: Optional[np.ndarray]  # the target's test images, None when not found
    captions: List[str]

    @property
    def tag(self) -> str:
        return f"{self.t}_{self.mode}"


def target_section(r: Sections, t: str) -> str:
    """The HTML of target ``t``: a heading and a part per mode."""
    inf = r.inf
    labels, class_names = inf.labels(t), inf.class_names(t)
    images, captions = target_images(inf.attrs.get("config") or {}, t, len(labels))
    parts = [f'<h2 id="{esc(t)}">Target <code>{esc(t)}</code></h2>',
             f"<p>{len(labels)} test examples in {len(class_names)} classes: {esc(', '.join(map(str, class_names)))}."
             f"</p>"]
    if inf.attrs.get("unit") == "example":  # units are source images: Fig. 7 instead of the class figures
        return "\n".join(parts + [_examples(r, t, mode, images, captions) for mode in inf.modes])
    for mode in inf.modes:
        v = _View(t, mode, labels, class_names, overall=inf.array(t, mode, r.kind, "overall"),
                  per_class=inf.array(t, mode, r.kind, "per_class"),
                  per_example=inf.array(t, mode, r.kind, "per_example"),
                  diagnostics=inf.diagnostics(t, mode, r.kind), images=images, captions=captions)
        parts.append(f'<h3 id="{esc(v.tag)}">{esc(t)}: {esc(MODE_TEXT.get(mode, mode))}</h3>')
        for k in inf.output_kinds:  # CSVs for every output kind, figures for the report's kind
            r.csvs += ranked_csvs(inf, t, mode, k, r.out)
        for part in (_overall, _per_class, _heatmap, _projection, _hard_examples, _convergence):
            parts += part(r, v)
    return "\n".join(parts)


def _diagnostic_extras(r: Sections, t: str) -> Dict[str, np.ndarray]:
    """The noise ceilings of target ``t`` as (modes, kinds) arrays ({} when the store has none)."""
    key = f"diagnostics/{t}"
    return {name: np.asarray(r.inf.group[f"{key}/{name}"][:]) for name in ("rank_corr_ceiling", "lds_ceiling")
            if key in r.inf.group and name in r.inf.group[key]}


def _judged(j: noise.Judged, row=None) -> Dict[str, Any]:
    """What a bar chart needs to mark noise (figures._bars): of the whole Judged, or of its row ``row``."""
    pick = (lambda a: a) if row is None else (lambda a: a[row])
    return {"null": float(pick(j.null)), "is_noise": pick(j.noise),
            "err": None if j.se is None else Z95 * pick(j.se)}


def _overall(r: Sections, v: _View) -> List[str]:
    d, units = v.diagnostics, r.inf.unit_names
    j = noise.overall(r.inf, v.t, v.mode, r.kind)
    f = figures.overall_bars(r.out / f"overall_{v.tag}.png", units, v.overall, r.settings.top,
                             f"{v.t}: most helpful and most harmful source classes ({v.mode})",
                             f"overall influence on the {r.what}", j.band, _judged(j))
    r.figures.append(f)
    interval = "its 95% interval (whiskers) excludes the null level and " if j.se is not None else ""
    return [r.figure(f, "Overall influence (paper Fig. 1)",
                     f"Each bar is a source class's influence averaged over all {len(v.labels)} target test "
                     f"examples: how much higher the {r.what} is, on average, for models whose source training "
                     f"set included the class than for models whose set did not. Green bars help transfer, "
                     f"red bars hurt it. The grey band is the noise level: the largest influence that "
                     f"<em>knockoff</em> classes (random masks independent of the outputs) reached with the same "
                     f"number of models. A bar counts as a finding only if {interval}it lies outside the band; "
                     f"pale hatched bars are noise. {_null_text(r)}",
                     [f"overall_{v.t}_{v.mode}_{r.kind}.csv"],
                     f" Here {int(j.signal.sum())} of {len(units)} source classes are findings by this rule."
                     if d is not None or j.se is not None else "")]


def _null_text(r: Sections) -> str:
    if not noise.fixed_size(r.inf):
        return ""
    return ("With fixed-size masks only differences between classes are measured, so the null level (dotted "
            "line) is the centre of the bulk of the classes' influences rather than 0.")


def _per_class(r: Sections, v: _View) -> List[str]:
    j = noise.level(r.inf, v.t, v.mode, r.kind, "per_class")
    f = figures.per_class_bars(r.out / f"per_class_{v.tag}.png", r.inf.unit_names, v.per_class, v.class_names,
                               min(r.settings.top, 5), f"{v.t}: top source classes for each target class ({v.mode})",
                               f"influence on the {r.what} (mean over the class's test examples)",
                               judged=[_judged(j, c) for c in range(len(v.class_names))])
    r.figures.append(f)
    rule = ("Whiskers are 95% intervals; pale bars are noise (their interval covers the null level)."
            if j.se is not None else "No standard errors in this influence store: no bar is marked as noise.")
    return [r.figure(f, "Per target class (paper Fig. 3)",
                     "The same influence averaged over the test examples of one target class only: which "
                     f"source classes help (green) or hurt (red) that class in particular. {rule}",
                     [f"per_class_{v.t}_{v.mode}_{r.kind}.csv"])]


def _heatmap(r: Sections, v: _View) -> List[str]:
    f = figures.heatmap(r.out / f"heatmap_{v.tag}.png", r.inf.unit_names, v.per_class, v.class_names,
                        f"{v.t}: class-level influence, target class x source class ({v.mode})")
    r.figures.append(f)
    return [r.figure(f, "All class pairs at a glance",
                     "Rows are target classes, columns source classes (the most influential ones when there "
                     "are many); green = helps, red = hurts. A source class that is the same concept as a "
                     "target class shows up as a bright green cell in that row.")]


def _projection(r: Sections, v: _View) -> List[str]:
    if v.images is None:
        return ["<p><em>Image grids skipped: the target's test images were not found in the data file "
                "named in the store's config.</em></p>"]
    s, units = r.settings, r.inf.unit_names
    order = ranking(v.overall)
    n_pos = (s.sources + 1) // 2
    chosen = list(order[:n_pos]) + list(order[::-1][:s.sources - n_pos])
    rows = []
    for u in chosen:
        rank = ranking(v.per_example[:, u])
        rows.append((units[u], rank[:s.images], rank[::-1][:s.images]))
    f = figures.projection_grid(r.out / f"projection_{v.tag}.png", v.images, rows, v.per_example[:, chosen],
                                v.captions, f"{v.t}: target images most affected by influential source "
                                            f"classes ({v.mode})")
    r.figures.append(f)
    return [r.figure(f, "Projecting source classes onto the target (paper Figs. 4-5)",
                     f"One row per source class (the {n_pos} most helpful and the {s.sources - n_pos} "
                     f"most harmful overall, named in the middle). Left: the target test images whose "
                     f"{r.what} that class raises most; right: those it lowers most. Captions give the "
                     f"image's label and the influence. This finds the target subpopulation that a source "
                     f"class corresponds to, even when the target has no such label.")]


def _hard_examples(r: Sections, v: _View) -> List[str]:
    wrong, predicted = error_rates(r.inf, r.store, v.t, v.mode)
    s, units, names = r.settings, r.inf.unit_names, v.class_names
    j = noise.level(r.inf, v.t, v.mode, r.kind, "per_example")
    # how clearly each example's most negative source class stands out: -(its z), z = (influence - null) / SE;
    # beyond noise only past a 5% family-wise threshold over every (example, source class) pair: the panel shows
    # the most extreme of n x U values, which a per-pair 95% rule would fill with chance findings
    thr = noise.familywise_z(j.z.size)
    j.noise = ~(np.abs(j.z) >= thr)
    clarity = -np.nan_to_num(j.z, nan=np.inf).min(axis=1)
    hard = np.argsort(-clarity, kind="stable")[:s.hard_examples]
    examples, rows_csv = [], []
    for i in hard:
        neg = np.argsort(np.nan_to_num(j.z[i], nan=np.inf), kind="stable")[:s.negatives]
        cap = f"label {names[v.labels[i]]}, most negative source class at z = {-clarity[i]:.1f}"
        if wrong is not None:
            cap += f", wrong in {wrong[i]:.0%} of models"
        if predicted is not None:
            cap += f", often predicted {names[predicted[i]]}"
        examples.append({"index": int(i), "caption": cap, "names": [units[u] for u in neg],
                         "values": v.per_example[i, neg], "noise": j.noise[i, neg], "null": float(j.null[i]),
                         "err": None if j.se is None else Z95 * j.se[i, neg]})
        rows_csv.append([int(i), names[v.labels[i]], float(wrong[i]) if wrong is not None else "",
                         names[predicted[i]] if predicted is not None else "", float(clarity[i])]
                        + [x for u in neg for x in (units[u], float(v.per_example[i, u]), float(j.z[i, u]),
                                                    "noise" if j.noise[i, u] else "signal")])
    f = figures.hard_examples(r.out / f"hard_examples_{v.tag}.png", v.images, examples,
                              f"{v.t}: examples whose most negative source class stands out most ({v.mode})")
    c = write_csv(r.out / f"hard_examples_{v.tag}.csv",
                  ["example", "label", "error_rate", "most_frequent_wrong_prediction", "clarity_z"]
                  + [f"{a}{k + 1}" for k in range(s.negatives)
                     for a in ("negative_source_", "influence_", "z_", "judged_")], rows_csv)
    r.figures.append(f)
    r.csvs.append(c)
    clear = int((clarity[hard] >= thr).sum())
    how = "influence / its standard error" if j.se is not None else \
        "influence / the spread of the example's influences over source classes (no standard errors stored)"
    return [r.figure(f, "Debugging failures (paper Fig. 6, left)",
                     f"The target test examples whose most negative source class stands out most clearly from "
                     f"noise (largest |z|, z = {how}, relative to the example's null level), with the source "
                     f"classes whose inclusion lowers their score most. Such a class may teach a feature that "
                     f"the transferred model misuses on this example; removing it from the source is the "
                     f"counterfactual test. Pale bars are noise: |z| < {thr:.2f}, the two-sided 5% threshold "
                     f"corrected (Bonferroni) for the {j.z.size} example-class pairs the panel picks from.",
                     [c.name],
                     f" {clear} of the {len(hard)} examples shown have a most negative source class beyond "
                     f"noise.")]


def _convergence(r: Sections, v: _View) -> List[str]:
    d = v.diagnostics
    if d is None:
        return []
    if not len(d["num_rows"]):
        return [f"<p><em>Convergence curves not available yet: {esc(d.get('note', ''))}</em></p>"]
    curves = {k: r.inf.diagnostics(v.t, v.mode, k) for k in r.inf.output_kinds}
    rule = convergence_rule.of_target(r.inf.group, v.t)
    extra = _diagnostic_extras(r, v.t)
    m = r.inf.modes.index(v.mode)
    for k, name in enumerate(r.inf.output_kinds):
        curves[name].update({key: extra[key][m, k] for key in extra})
    f = figures.convergence(r.out / f"convergence_{v.tag}.png", d["num_rows"], curves,
                            f"{v.t}: are there enough models? ({v.mode})")
    j = noise.overall(r.inf, v.t, v.mode, r.kind)
    g = figures.knockoff_ranks(r.out / f"knockoffs_{v.tag}.png", v.overall, d["knockoff_overall"],
                               f"{v.t}: real source classes vs knockoffs ({v.mode}, {r.kind})", float(j.null))
    k = r.inf.output_kinds.index(r.kind)
    verdict = convergence_rule.verdict({**rule, **{n: rule[n][m, k:k + 1] for n in convergence_rule.FIELDS}}, 0) \
        if rule else "not judged (influence store computed without the convergence rule)"
    r.figures += [f, g]
    return [r.figure(f, "Convergence (paper Figs. 8, 29, 30)",
                     f"How the estimates improve with the number of models N (the first N of {d['fit_rows']}"
                     f" fit rows; {d['heldout_rows']} other rows are held out). Top left: spread of the "
                     f"overall influences over bootstrap resamples of the N models. Top right: rank "
                     f"correlation, on held-out models, between the mean target output and its prediction "
                     f"from the model's source classes (sum of their influences). Bottom left: the same per "
                     f"target example, averaged (LDS). Bottom right: share of knockoff (fake) classes among "
                     f"the top {d['top_k']} influences; 0.5 is chance. Curves still moving at the right "
                     f"edge mean more models would sharpen the estimates. Every curve but the bootstrap uses "
                     f"the report's estimator ({esc(str(d.get('estimator', 'dim')))}) fitted on the N fit rows "
                     f"only. Dashed lines: the noise ceiling from repeated rows (models sharing a mask; "
                     f"sweep.repeats), the best correlation any estimator can reach; absent without repeats.",
                     note=f" <b>Convergence rule</b> ({esc(r.kind)}): {esc(verdict)}."),
            r.figure(g, "Signal above noise",
                     "Overall influences of the real source classes sorted from most positive to most "
                     "negative, against knockoff classes that by construction have no effect. Real classes "
                     "beyond the knockoffs' range carry signal. " + _null_text(r))]


def _examples(r: Sections, t: str, mode: str, images, captions) -> str:
    """Fig. 7: the strongest target examples beside their highest positive and most negative source images."""
    from datatransfer.report import examples

    s, config = r.settings, r.inf.attrs.get("config") or {}
    head = f'<h3 id="{esc(t)}_{esc(mode)}">{esc(t)}: {esc(MODE_TEXT.get(mode, mode))}</h3>'
    rows = examples.strongest(r.inf, t, mode, r.kind, s.hard_examples, s.images)
    if not rows:
        return head + f"<p>No target example has a nonzero weight ({esc(r.kind)}): no source images to show.</p>"
    index, unit_labels = examples.unit_images(r.inf.unit_names)
    src, kind = examples.source_images(config)
    tags = examples.planted_tags(index, kind)
    f = examples.figure(r.out / f"examples_{t}_{mode}.png", rows, images, captions, src, index, unit_labels,
                        s.images, f"{t} ({mode}): source images with the largest weights (Fig. 7)", tags)
    c = examples.table(r.out / f"examples_{t}_{mode}.csv", rows, captions, index, unit_labels, tags)
    r.figures.append(f)
    r.csvs.append(c)
    shown = sum(len(row["pos"][0]) + len(row["neg"][0]) for row in rows)
    if src is None:
        note = f" <b>Source images not found</b> ({esc(str(examples.source_file(config)))}): thumbnails left blank."
    else:
        note = (f" {shown} source images shown, from {esc(examples.source_file(config).name)}"
                + ("; planted ones are marked (leak or misleading)." if kind is not None else "."))
    return head + r.figure(
        f, "Source images with the largest weights (Fig. 7)",
        f"The {len(rows)} target examples whose weights are largest in magnitude, each beside the source images "
        f"with the highest positive weights (including them raises the {r.what}: near-copies of the target image "
        f"are leaks) and the most negative ones (including them lowers it: images labelled against what they show "
        f"are misleading); above each, its weight and its source label.", [c.name], note=note)


def counterfactual_section(r: Sections, store_path: Optional[str]) -> str:
    """Counterfactual results found beside the sweep store (``<store parent>/counterfactual/`` and
    ``<store parent>/*/counterfactual/``, written by ``python -m aggregate.counterfactual``): their figures and
    tables copied into the report, with the best-k table (paper Fig. 2a, Table 2b, Fig. 6 right); "" when none."""
    import shutil

    from datatransfer.report.inputs import counterfactual_results

    found = counterfactual_results(store_path)
    if not found:
        return ""
    parts = ['<h2 id="counterfactual">Counterfactual experiments: removing source classes</h2>']
    for i, (folder, about, best) in enumerate(found):
        tag = f"counterfactual{i + 1}"
        copied = {}
        for name in ("accuracy_vs_k.png", "example_predictions.png", "accuracy.csv", "summary.csv", "best_k.csv",
                     "examples.csv", "example_shares.csv"):
            if (folder / name).is_file():
                copied[name] = shutil.copyfile(folder / name, r.out / f"{tag}_{name}")
        r.csvs += [p for n, p in copied.items() if n.endswith(".csv")]
        r.figures += [p for n, p in copied.items() if n.endswith(".png")]
        inf = about.get("influence") or {}
        parts.append(f"<h3>Target <code>{esc(about.get('target'))}</code>, classes ranked by {esc(about.get('mode'))}"
                     f"-mode influences ({esc(about.get('kind'))})</h3><p>Store <code>{esc(about.get('store'))}"
                     f"</code>, {about.get('rows_completed')} of {about.get('rows_planned')} models; influences from "
                     f"<code>{esc(inf.get('path'))}</code> ({inf.get('rows_used')} rows, fingerprint "
                     f"{esc(inf.get('fingerprint'))}).</p>")
        csvs = [p.name for n, p in copied.items() if n.endswith(".csv")]
        if "accuracy_vs_k.png" in copied:
            parts.append(r.figure(copied["accuracy_vs_k.png"], "Accuracy after removing source classes (paper "
                                  "Fig. 2a)", "Target test accuracy of models pretrained without the k source "
                                  "classes of most negative (bottom), most positive (top) or random influence; "
                                  "mean and std band over runs. Lines: the full source and the hand-picked "
                                  "classes.", csvs))
        rows = "".join(f"<tr><td>{esc(b['mode'])}</td><td>{esc(b['source'])}</td><td>{esc(b['k'])}</td>"
                       f"<td>{100 * float(b['mean']):.2f} &plusmn; {100 * float(b['std'] or 'nan'):.2f}</td>"
                       f"<td>{esc(b['n'])}</td><td>{100 * float(b['diff_to_full']):+.2f} "
                       f"[{100 * float(b['ci_low']):+.2f}, {100 * float(b['ci_high']):+.2f}]</td></tr>"
                       for b in best)
        parts.append("<p><b>Best k (paper Table 2b).</b> Accuracy (%) and difference to the full source (pp, 95% "
                     "Welch interval). The best k is chosen on the same runs, so its gain is optimistic.</p>"
                     "<table border=1 cellpadding=3><tr><th>mode</th><th>source</th><th>k removed</th>"
                     f"<th>accuracy</th><th>n</th><th>vs full</th></tr>{rows}</table>")
        if "example_predictions.png" in copied:
            s = about.get("shares") or {}
            parts.append(r.figure(copied["example_predictions.png"], "Debugging a mistake (paper Fig. 6 right, "
                                  "Appendix E.4)", f"Per debugged example, the classes predicted by models "
                                  f"trained without its most negative influencer and by full-source models. Of "
                                  f"{s.get('n')} examples, {s.get('more_often')} are predicted correctly more "
                                  f"often without it, {s.get('less_often')} less often, {s.get('equally')} "
                                  f"equally often.", csvs))
    return "\n".join(parts)
