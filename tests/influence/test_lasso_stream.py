"""estimator.solver=stream: FISTA on row blocks of the (bit-packed) masks, never the (U, U) Gram matrix. Against
the Gram form's coordinate descent (same lambda grid, objective, support), on planted stores read back from disk,
fanned out, and solver=auto's rule."""

import numpy as np
import pytest
import zarr
from planted import make_planted_store, sparse_effects

from datatransfer.config.aggregate import DiagnosticsConfig
from datatransfer.influence.aggregate import aggregate
from datatransfer.influence.lasso import Lasso, gram_fits, solve
from datatransfer.influence.lasso_stream import Implicit, MaskRows
from datatransfer.influence.reader import Influence
from datatransfer.store import mask_bits
from datatransfer.store.sweep_store import Store

TIGHT = {"tol": 1e-10, "max_iter": 100000}


def fed(est, x, y, block=37):
    rows = np.arange(len(x))
    for i in range(0, len(x), block):
        est.update(rows[i:i + block], x[i:i + block], y[i:i + block])
    return est


def objective(q, k, w, lam):
    """The refit's objective on all rows, from the Gram form: 1/2 w'Sw - c.w + 1/2 syy + lam |w|_1."""
    return 0.5 * w @ q.s_all @ w - q.c_all[k] @ w + 0.5 * q.syy_all[k] + lam * np.abs(w).sum()


@pytest.fixture(scope="module")
def planted_data():
    rng = np.random.default_rng(11)
    x = rng.random((400, 60)) < 0.5
    w = sparse_effects(rng, 60, 6, strong=4)
    return x, w, x @ w + 0.7 * rng.normal(size=(400, 6))


def test_matches_gram_coordinate_descent(planted_data):
    x, w_true, y = planted_data
    gram = fed(Lasso(solver="cd", **TIGHT), x, y)
    stream = fed(Lasso(solver="stream", block_rows=50, **TIGHT), x, y)
    qg, qs = gram.problem(), stream.problem()
    assert isinstance(qs.s, Implicit) and stream.used == "stream" and gram.used == "cd"
    np.testing.assert_allclose(qs.lambdas, qg.lambdas, rtol=1e-10)  # the same path
    for name in ("c", "syy", "p", "cyy", "c_all", "syy_all"):
        np.testing.assert_allclose(getattr(qs, name), getattr(qg, name), rtol=1e-9, atol=1e-12, err_msg=name)
    a, b = solve(qg, "cd", **TIGHT), solve(qs, "stream", **TIGHT)
    np.testing.assert_allclose(b["path_sse"], a["path_sse"], rtol=1e-7)
    np.testing.assert_array_equal(np.argmin(b["path_sse"], 0), np.argmin(a["path_sse"], 0))  # same choice
    np.testing.assert_allclose(b["lambda"], a["lambda"], rtol=1e-12)
    for k in range(y.shape[1]):
        fa, fb = objective(qg, k, a["w"][k], a["lambda"][k]), objective(qg, k, b["w"][k], b["lambda"][k])
        assert abs(fb - fa) <= 1e-9 * qg.syy_all[k], (k, fa, fb)
        np.testing.assert_array_equal(np.flatnonzero(b["w"][k]), np.flatnonzero(a["w"][k]))  # the same support
        np.testing.assert_allclose(b["w"][k], a["w"][k], atol=1e-6)
        strong = set(np.flatnonzero(np.abs(w_true[:, k]) >= 1.0))
        assert strong <= set(np.flatnonzero(b["w"][k]))  # the planted support is recovered


def test_operator_never_forms_the_gram_matrix(planted_data):
    """S @ W and the Lipschitz constant from row blocks equal the dense matrix's."""
    import torch

    x, _, y = planted_data
    q = fed(Lasso(solver="stream", block_rows=64), x, y).problem()
    g = fed(Lasso(solver="cd"), x, y).problem()
    op = q.s.on(torch.device("cpu"), torch.float64)
    v = torch.as_tensor(np.random.default_rng(0).normal(size=(60, 3)))
    np.testing.assert_allclose((op @ v).numpy(), g.s @ v.numpy(), rtol=1e-10, atol=1e-12)
    top = np.linalg.eigvalsh(g.s)[-1]
    assert top <= op.lipschitz() <= 1.03 * top  # from above: a step of 1/L never diverges


def test_bit_packed_store_blocks_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    p = make_planted_store(tmp_path / "s.zarr", rows=90, units=21, n=(3,), modes=("full",), kinds=("softmax_gt",),
                           pack_masks=True)
    store = Store.open(p.store.path)
    assert mask_bits.packed(store.group["masks"])
    rows = np.sort(rng.choice(90, size=40, replace=False))
    got = [(s, mask_bits.decode(b, 21)) for s, b in MaskRows(21, rows, str(p.store.path), block_rows=7).blocks()]
    np.testing.assert_array_equal(np.concatenate([b for _, b in got]), store.masks[rows])
    assert [s.start for s, _ in got] == list(range(0, 40, 7))


@pytest.mark.slow
@pytest.mark.parametrize("pack", [True, False])
def test_store_recovers_planted_support_like_cd(tmp_path, pack):
    rng = np.random.default_rng(3)
    units, n = 120, 8
    w = sparse_effects(rng, units, n, strong=5)
    p = make_planted_store(tmp_path / "s.zarr", rows=700, units=units, n=(n,), noise=1.0, scheme="bernoulli",
                           modes=("full",), kinds=("softmax_gt",), effects={"t0": w}, pack_masks=pack)
    s = dict(tol=1e-8, max_iter=20000)
    cd = Influence(aggregate(p.store.path, tmp_path / "cd.zarr", "lasso", {"solver": "cd", **s}, diagnostics=None,
                             progress=False).out)
    # packed: every pass reads the masks from the store again (cache_mb=0); plain: kept in memory between passes
    st = Influence(aggregate(p.store.path, tmp_path / "st.zarr", "lasso", {"solver": "stream", "block_rows": 64,
                                                                          "cache_mb": 0 if pack else 64, **s},
                             diagnostics=None, progress=False).out)
    a, b = (x.array("t0", "full", "softmax_gt", "per_example") for x in (cd, st))
    np.testing.assert_allclose(b, a, atol=1e-4)
    np.testing.assert_allclose(st.array("t0", "full", "softmax_gt", "lambda"),
                               cd.array("t0", "full", "softmax_gt", "lambda"), rtol=1e-9)
    found = sum(len(set(np.flatnonzero(np.abs(w[:, j]) >= 1.0)) & set(np.argsort(-np.abs(b[j]))[:5]))
                for j in range(n))
    assert found / (5 * n) >= 0.9
    np.testing.assert_array_equal(st.array("t0", "full", "softmax_gt", "nnz"), (b != 0).sum(1))


@pytest.mark.slow
def test_local_fanout_equals_single_process(tmp_path):
    rng = np.random.default_rng(5)
    p = make_planted_store(tmp_path / "s.zarr", rows=300, units=30, n=(10,), scheme="bernoulli", noise=0.5,
                           modes=("full",), kinds=("softmax_gt",), effects={"t0": sparse_effects(rng, 30, 10, 3)})
    s = {"solver": "stream", "tol": 1e-10, "max_iter": 100000}
    one = Influence(aggregate(p.store.path, tmp_path / "one.zarr", "lasso", s, diagnostics=None,
                              progress=False).out)
    fan = {"launcher": "local", "examples_per_task": 3, "workers": 2, "folder": str(tmp_path / "fan")}
    many = Influence(aggregate(p.store.path, tmp_path / "many.zarr", "lasso", {**s, "fanout": fan},
                               diagnostics=None, progress=False).out)
    assert (tmp_path / "fan" / "job.pkl").is_file()  # the tasks got the job (the store's path), not matrices
    np.testing.assert_allclose(many.array("t0", "full", "softmax_gt", "lambda"),
                               one.array("t0", "full", "softmax_gt", "lambda"), rtol=1e-12)
    # FISTA iterates a block's examples together until all have converged: equal to the tolerance, not bitwise
    np.testing.assert_allclose(many.array("t0", "full", "softmax_gt", "per_example"),
                               one.array("t0", "full", "softmax_gt", "per_example"), atol=1e-6)
    np.testing.assert_array_equal(many.array("t0", "full", "softmax_gt", "nnz"),
                                  one.array("t0", "full", "softmax_gt", "nnz"))
    # in one process the examples are solved a block at a time too (statistics of one block at once): the same
    blocks = Influence(aggregate(p.store.path, tmp_path / "blocks.zarr", "lasso",
                                 {**s, "fanout": {"examples_per_task": 4}}, diagnostics=None, progress=False).out)
    np.testing.assert_allclose(blocks.array("t0", "full", "softmax_gt", "per_example"),
                               one.array("t0", "full", "softmax_gt", "per_example"), atol=1e-6)
    np.testing.assert_allclose(blocks.array("t0", "full", "softmax_gt", "heldout_r2"),
                               one.array("t0", "full", "softmax_gt", "heldout_r2"), rtol=1e-9)


def test_auto_picks_stream_when_the_gram_form_does_not_fit(planted_data):
    x, _, y = planted_data
    assert gram_fits(8191, 4096) and not gram_fits(8192, 4096)  # the documented rule at the default budget
    assert fed(Lasso(), x, y).used == "cd"
    small = fed(Lasso(gram_max_mb=0.1, **TIGHT), x, y)  # 8 x 61^2 x 8 bytes = 0.23 MB > 0.1 MB
    assert small.used == "stream"
    np.testing.assert_allclose(small.result().influence, fed(Lasso(**TIGHT), x, y).result().influence, atol=1e-6)


def test_fanout_through_a_runner_passed_in(tmp_path, caplog):
    """launcher=slurm hands the stream blocks to the runner the app passes in (a Slurm array's in the app), here the
    in-process one: each task reads its columns of y.npy and streams the masks from the store itself."""
    from datatransfer.influence.fanout import serial_map

    rng = np.random.default_rng(7)
    p = make_planted_store(tmp_path / "s.zarr", rows=200, units=20, n=(5,), scheme="bernoulli", noise=0.5,
                           modes=("full",), kinds=("softmax_gt",), effects={"t0": sparse_effects(rng, 20, 5, 3)})
    s = {"solver": "stream", "tol": 1e-10, "max_iter": 100000}
    one = Influence(aggregate(p.store.path, tmp_path / "one.zarr", "lasso", s, diagnostics=None,
                              progress=False).out)
    calls = []

    def runner(fn, items, on_done=None):
        calls.append(len(items))
        return serial_map(fn, items, on_done)

    fan = {"launcher": "slurm", "examples_per_task": 2, "folder": str(tmp_path / "fan")}
    with caplog.at_level("INFO", logger="datatransfer.influence.lasso_fanout"):
        many = Influence(aggregate(p.store.path, tmp_path / "many.zarr", "lasso", {**s, "fanout": fan},
                                   diagnostics=None, progress=False, fanout_tasks=runner).out)
    assert calls == [3]  # 5 examples in blocks of 2
    # progress as each task finishes: examples done of all, elapsed, ETA
    done = [r.getMessage() for r in caplog.records if "examples solved" in r.getMessage()]
    assert [m.split(" examples")[0] for m in done] == ["lasso: 2 of 5", "lasso: 4 of 5", "lasso: 5 of 5"]
    assert "(100%)" in done[-1] and "ETA 0:00:00" in done[-1]
    np.testing.assert_allclose(many.array("t0", "full", "softmax_gt", "per_example"),
                               one.array("t0", "full", "softmax_gt", "per_example"), atol=1e-6)


@pytest.mark.slow
def test_weights_stay_sparse_and_the_mask_matrix_is_never_decoded_whole(tmp_path, monkeypatch):
    """solver=stream with per_example too large to be dense: the blocks' weights are merged as CSR (never an
    examples x units dense matrix) and the masks are read a block at a time. Store.masks refuses the whole matrix
    beyond MASKS_MAX_BYTES (set here below this store's 240 x 400 bytes), so any step that still decodes it all
    fails; the result equals the dense path's."""
    from datatransfer.store import sweep_store

    rng = np.random.default_rng(8)
    units, n = 400, 6
    p = make_planted_store(tmp_path / "s.zarr", rows=240, units=units, n=(n,), noise=0.5, scheme="bernoulli",
                           modes=("full",), kinds=("softmax_gt",), effects={"t0": sparse_effects(rng, units, n, 3)},
                           pack_masks=True)  # as example units are (>= PACK_MIN_UNITS)
    s = {"solver": "stream", "tol": 1e-6, "max_iter": 5000, "path_length": 8, "block_rows": 64,
         "fanout": {"examples_per_task": 4}}
    dense = Influence(aggregate(p.store.path, tmp_path / "dense.zarr", "lasso", s, diagnostics=None,
                                progress=False).out)
    monkeypatch.setattr(sweep_store, "MASKS_MAX_BYTES", 240 * units - 1)
    with pytest.raises(sweep_store.StoreError, match="needs the whole mask matrix"):
        Store.open(p.store.path).masks
    with pytest.raises(sweep_store.StoreError, match="diagnostics.enabled=false"):  # before any work
        aggregate(p.store.path, tmp_path / "diag.zarr", "lasso", s, progress=False)
    assert not (tmp_path / "diag.zarr").exists()
    thin = Influence(aggregate(p.store.path, tmp_path / "thin.zarr", "lasso", {**s, "dense_max_mb": 0},
                               diagnostics=None, progress=False).out)
    g = thin.group["t0/full/softmax_gt"]
    assert "per_example" not in g and "sparse" in g
    want = dense.array("t0", "full", "softmax_gt", "per_example")
    np.testing.assert_array_equal(thin.array("t0", "full", "softmax_gt", "per_example"), want)  # from the CSR
    for name in ("per_class", "overall", "lambda", "nnz"):
        np.testing.assert_allclose(thin.array("t0", "full", "softmax_gt", name),
                                   dense.array("t0", "full", "softmax_gt", name), rtol=1e-6, atol=1e-7)
    every = mask_bits.read(Store.open(p.store.path).group["masks"]).sum(axis=0)
    for name in ("n_in", "t0/n_in"):
        np.testing.assert_array_equal(np.asarray(thin.group[name][:]), every)


@pytest.mark.slow
def test_diagnostics_fit_the_masks_they_are_given(tmp_path):
    """The convergence curves refit the estimator on prefixes of the fit rows, with knockoff units beside the real
    ones: solver=stream must fit those masks, not read the sweep store's again (it did, before 2026-12-06)."""
    rng = np.random.default_rng(4)
    p = make_planted_store(tmp_path / "s.zarr", rows=600, units=20, n=(6,), noise=0.5, scheme="bernoulli",
                           modes=("full",), kinds=("softmax_gt",), effects={"t0": sparse_effects(rng, 20, 6, 3)})
    curves = {}
    for solver in ("cd", "stream"):
        out = aggregate(p.store.path, tmp_path / f"{solver}.zarr", "lasso", {"solver": solver, **TIGHT},
                        diagnostics=DiagnosticsConfig(bootstrap=20, points=4, lds_examples=6), progress=False).out
        dg = zarr.open_group(str(out), mode="r")["diagnostics"]["t0"]
        curves[solver] = {k: np.asarray(dg[k][:]) for k in ("lds", "rank_corr", "knockoff_overall", "num_rows")}
    # with fewer rows than units (2 x 20 with the knockoffs) the LASSO's minimiser is not unique: compare the rest
    unique = curves["cd"]["num_rows"] >= 40
    assert unique.sum() >= 2
    for k in ("lds", "rank_corr"):
        np.testing.assert_allclose(curves["stream"][k][..., unique], curves["cd"][k][..., unique], atol=1e-4)
    np.testing.assert_allclose(curves["stream"]["knockoff_overall"], curves["cd"]["knockoff_overall"], atol=1e-4)
