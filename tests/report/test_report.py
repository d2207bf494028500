"""The report: files written, links that resolve, headline numbers on planted stores, the report app."""

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import run_app
from planted import make_planted_store

from datatransfer.config import DiagnosticsConfig, ReportConfig
from datatransfer.influence.aggregate import aggregate
from datatransfer.influence.reader import Influence
from datatransfer.report import write_report
from datatransfer.report.headline import COARSE_MEMBERS, headline, headline_lines

MINI = Path(__file__).resolve().parents[2] / "datatransfer" / "data" / "mini.npz"
SOURCE = [f"mnist:{d}" for d in range(10)] + [
    "fashion:tshirt", "fashion:trouser", "fashion:pullover", "fashion:dress", "fashion:coat", "fashion:sandal",
    "fashion:shirt", "fashion:sneaker", "fashion:bag", "fashion:ankle_boot", "animal:bear", "animal:bird",
    "animal:cat", "animal:cow", "animal:dog", "animal:elephant", "animal:giraffe", "animal:horse", "animal:sheep",
    "animal:zebra"]
FAST = DiagnosticsConfig(bootstrap=10, points=3, lds_examples=16)


def digits_store(path, match, rows=400, seed=0, **kw):
    """A store whose target ``digits`` has the embedded test labels and images (from the store's config), and
    whose planted effect puts source unit match[d] first for digit class d."""
    with np.load(MINI) as z:
        labels = z["digits_test_y"]
    w = np.zeros((30, len(labels)))
    for d in range(10):
        w[match[d], labels == d] = 1.0
    return make_planted_store(
        path, rows=rows, unit_names=SOURCE, targets={"digits": (labels, [str(d) for d in range(10)])},
        effects={"digits": w}, noise=0.2, seed=seed,
        config={"targets": {"digits": {"name": "digits", "root": "", "file": "mini.npz"}}}, **kw)


def test_report_files_and_links(tmp_path):
    p = digits_store(tmp_path / "s.zarr", match=list(range(10)), modes=("fixed",),
                     kinds=("softmax_gt", "is_correct"))
    inf = Influence(aggregate(p.store.path, diagnostics=FAST, progress=False).out)
    s = write_report(inf, settings=ReportConfig(sources=2, images=3, hard_examples=3), store=p.store)
    out = tmp_path / "report"
    assert s.out == out and s.index == out / "index.html"
    for stem in ("overall", "per_class", "heatmap", "projection", "hard_examples", "convergence", "knockoffs"):
        f = out / f"{stem}_digits_fixed.png"
        assert f.is_file() and f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", stem
    for kind in ("softmax_gt", "is_correct"):
        assert (out / f"overall_digits_fixed_{kind}.csv").is_file()
        assert (out / f"per_class_digits_fixed_{kind}.csv").is_file()
    page = s.index.read_text()
    links = re.findall(r'(?:href|src)="([^"]+)"', page)
    assert len(links) >= 7 + 4
    for link in links:
        if link.startswith("#"):
            assert f'id="{link[1:]}"' in page, f"broken anchor {link}"
        else:
            assert (out / link).is_file(), f"broken link {link}"
    # ranked CSV: header, one line per source class, ranked by influence; mnist digits on top (planted)
    lines = (out / "overall_digits_fixed_softmax_gt.csv").read_text().splitlines()
    assert lines[0] == "rank,source_class,influence,n_in,n_out,se,ci95_low,ci95_high,null_level,z,judged" \
        and len(lines) == 31
    assert [line.split(",")[-1] for line in lines[1:]] == ["signal"] * 10 + ["noise"] * 20  # only digits planted
    top = {line.split(",")[1] for line in lines[1:11]}
    assert top == {f"mnist:{d}" for d in range(10)}
    values = [float(line.split(",")[2]) for line in lines[1:]]
    assert values == sorted(values, reverse=True)
    assert "matching MNIST digit is the top positive influencer for 10/10" in page
    assert "beyond noise (z = distance from the null level in units of its standard error) at z &gt;= 2 for 10/10" \
        in page and "mean of f(t) over models trained with C" in page
    ridge = Influence(aggregate(p.store.path, tmp_path / "ridge.zarr", estimator="ridge", diagnostics=FAST,
                                progress=False).out)
    page = write_report(ridge, tmp_path / "ridge_report", ReportConfig(sources=2, images=3, hard_examples=3),
                        p.store).index.read_text()
    assert "coefficient in a linear model" in page and "mean of f(t) over models trained with C" not in page
    assert "report&#x27;s estimator (ridge)" in page or "report's estimator (ridge)" in page
    assert (out / "headline.txt").read_text().startswith("digits (fixed, softmax_gt): ")


def test_headline_counts(tmp_path):
    # classes 0-6 planted on their own digit; 7, 8 on mnist:(d+1) with their own digit second; 9 on a fashion class
    match = list(range(7)) + [8, 9, 12]
    p = digits_store(tmp_path / "s.zarr", match=match, rows=150, modes=("fixed",), kinds=("softmax_gt",))
    w = p.w["digits"]
    labels = p.store.labels("digits")
    w[7, labels == 7] = 0.5  # second for class 7
    w[8, labels == 8] = 0.5  # second for class 8
    w[9, labels == 9] = -0.5  # class 9's own digit hurts it: last
    p.store.outputs("digits")[:] = (p.store.masks.astype(np.float64) @ w)[:, None, None, :].astype(np.float32) \
        + np.random.default_rng(1).normal(0, 0.05, size=(150, 1, 1, w.shape[1])).astype(np.float32)
    inf = Influence(aggregate(p.store.path, diagnostics=None, progress=False).out)
    h = headline(inf, "softmax_gt", top=3)
    r = h["digits"]["modes"]["fixed"]
    assert (r["classes"], r["top1"], r["top3"]) == (10, 7, 9)
    assert r["per_class"]["7"]["rank"] == 2 and r["per_class"]["9"]["top"][0] == "fashion:pullover"
    assert "7/10 digit classes and in the top 3 for 9/10" in headline_lines(h)[0]


def test_coarse_headline(tmp_path):
    names = list(COARSE_MEMBERS)
    labels = np.repeat(np.arange(8), 3)
    w = np.zeros((30, len(labels)))
    for c, name in enumerate(names):
        for m in COARSE_MEMBERS[name][:-1] if len(COARSE_MEMBERS[name]) > 1 else COARSE_MEMBERS[name]:
            w[SOURCE.index(m), labels == c] = 1.0  # all members but one lead; that one is replaced by an outsider
        if len(COARSE_MEMBERS[name]) > 1:
            w[SOURCE.index("animal:bird" if name != "bird" else "mnist:0"), labels == c] = 0.9
    p = make_planted_store(tmp_path / "s.zarr", rows=300, unit_names=SOURCE, targets={"coarse": (labels, names)},
                           effects={"coarse": w}, noise=0.05, modes=("fixed",), kinds=("softmax_gt",))
    inf = Influence(aggregate(p.store.path, diagnostics=None, progress=False).out)
    r = headline(inf)["coarse"]["modes"]["fixed"]["per_class"]
    for name, members in COARSE_MEMBERS.items():
        k = len(members)
        assert r[name]["k"] == k
        assert r[name]["share"] == pytest.approx(1.0 if k == 1 else (k - 1) / k), name


def test_report_app(tmp_path):
    p = make_planted_store(tmp_path / "s.zarr", rows=40, units=6, n=(12,), modes=("fixed",), kinds=("softmax_gt",),
                           completed=np.arange(30))
    r = run_app("aggregate.report", f"store.path={p.store.path}", "diagnostics.enabled=false", "report.images=2",
                "report.sources=2", "report.hard_examples=2")
    assert r.returncode == 0, r.stderr
    assert "aggregating first" in r.stdout and f"open {tmp_path / 'report' / 'index.html'}" in r.stdout
    assert (tmp_path / "influence.zarr").is_dir() and (tmp_path / "report" / "overall_t0_fixed.png").is_file()
    assert "Image grids skipped" in (tmp_path / "report" / "index.html").read_text()  # no data file for t0
    r = run_app("aggregate.report", f"store.path={tmp_path / 'missing.zarr'}")
    assert r.returncode == 2 and r.stderr.startswith("error: no store at") and len(r.stderr.splitlines()) == 1


def test_hard_examples_are_picked_by_how_clearly_their_most_negative_class_stands_out(tmp_path):
    from datatransfer.report.noise import familywise_z

    with np.load(MINI) as z:
        labels = z["digits_test_y"]
    w = np.zeros((30, len(labels)))
    w[12, 40] = -1.5  # example 40: source unit 12 hurts it, clearly
    w[20, 41] = -0.6  # example 41: unit 20 hurts it, less clearly
    p = make_planted_store(tmp_path / "s.zarr", rows=300, unit_names=SOURCE, noise=0.3, modes=("fixed",),
                           kinds=("softmax_gt",), targets={"digits": (labels, [str(d) for d in range(10)])},
                           effects={"digits": w}, scheme="bernoulli")
    inf = Influence(aggregate(p.store.path, diagnostics=FAST, progress=False).out)
    s = write_report(inf, settings=ReportConfig(hard_examples=4, negatives=2), store=p.store)
    rows = (s.out / "hard_examples_digits_fixed.csv").read_text().splitlines()
    assert rows[0].startswith("example,label,error_rate,most_frequent_wrong_prediction,clarity_z,negative_source_1")
    first, second = rows[1].split(","), rows[2].split(",")
    assert first[0] == "40" and first[5] == SOURCE[12] and first[8] == "signal"
    assert second[0] == "41" and second[5] == SOURCE[20]
    clarity = [float(r.split(",")[4]) for r in rows[1:]]
    assert clarity == sorted(clarity, reverse=True)
    thr = familywise_z(len(labels) * 30)
    assert clarity[0] > thr and clarity[2] < thr  # the rest of the panel is noise, and marked so
    assert all(r.split(",")[8] == "noise" for r in rows[3:])
    assert "2 of the 4 examples shown have a most negative source class beyond noise" in s.index.read_text()


def test_lasso_report_without_standard_errors(tmp_path):
    """estimator=lasso has no standard errors: the report judges by the knockoff band and the spread of each row's
    weights (their standard deviation, as most are exactly 0), every z finite, and says what a LASSO weight is."""
    p = digits_store(tmp_path / "s.zarr", match=list(range(10)), modes=("fixed",), kinds=("softmax_gt",))
    inf = Influence(aggregate(p.store.path, estimator="lasso", diagnostics=FAST, progress=False).out)
    assert inf.se("digits", "fixed", "softmax_gt") is None and inf.se_method("digits", "fixed", "softmax_gt") is None
    assert inf.interval("digits", "fixed", "softmax_gt") is None
    s = write_report(inf, settings=ReportConfig(sources=2, images=3, hard_examples=3), store=p.store)
    page = s.index.read_text()
    assert "LASSO regression" in page and "No standard errors in this influence store" in page
    lines = (s.out / "overall_digits_fixed_softmax_gt.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    assert {r["source_class"] for r in rows[:10]} == {f"mnist:{d}" for d in range(10)}  # planted, found
    assert "se" not in header and all(np.isfinite(float(r["z"])) for r in rows)
    hard = (s.out / "hard_examples_digits_fixed.csv").read_text().splitlines()
    assert len(hard) == 4 and all(np.isfinite(float(line.split(",")[4])) for line in hard[1:])
