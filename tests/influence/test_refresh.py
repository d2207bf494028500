"""Row-block sums: a refresh reads only new rows, recomputes the blocks whose rows changed or disappeared, and
gives what a from-scratch aggregation gives (to float64 rounding); worker processes give the same."""

import numpy as np
import pytest
from planted import make_planted_store

from datatransfer.influence.aggregate import aggregate
from datatransfer.influence.reader import Influence
from datatransfer.store.integrity import chunk_file
from datatransfer.store.verify import verify

NAMES = ("per_example", "per_class", "overall", "mean_output", "per_example_se", "per_class_se", "overall_se")


def same_influences(a, b):
    ia, ib = Influence(a), Influence(b)
    np.testing.assert_array_equal(ia.rows(), ib.rows())
    for t in ib.targets:
        np.testing.assert_array_equal(ia.rows(t), ib.rows(t))
        for mode in ib.modes:
            for kind in ib.output_kinds:
                for name in NAMES:
                    np.testing.assert_allclose(ia.array(t, mode, kind, name), ib.array(t, mode, kind, name),
                                               rtol=1e-6, atol=1e-9, err_msg=f"{t}/{mode}/{kind}/{name}")
                np.testing.assert_allclose(ia.group[f"sums/{t}/total_s_in"][:], ib.group[f"sums/{t}/total_s_in"][:],
                                           rtol=1e-12, atol=1e-9)
        da, db = ia.diagnostics(t, "fixed", "softmax_gt"), ib.diagnostics(t, "fixed", "softmax_gt")
        for key in ("rank_corr", "lds", "fdr", "bootstrap_std"):
            np.testing.assert_allclose(da[key], db[key], rtol=1e-9, equal_nan=True)


def run(path, out, **kw):
    kw.setdefault("diagnostics", __import__("datatransfer.config", fromlist=["x"]).DiagnosticsConfig(
        bootstrap=10, points=3, lds_examples=5))
    return aggregate(path, out=out, progress=False, sums_block_rows=8, block_rows=3, **kw)


def test_refresh_equals_full_recomputation(tmp_path):
    p = make_planted_store(tmp_path / "s.zarr", rows=60, units=6, n=(7, 5), completed=np.arange(0, 30),
                           noise=1.0, scheme="bernoulli", via_write_row=True)
    store, out, ref = p.store, tmp_path / "infl.zarr", tmp_path / "ref.zarr"

    def write(rows):
        for i in rows:
            store.write_row(int(i), {t: p.y[t][i] for t in p.y},
                            {t: np.zeros((2, p.y[t].shape[-1]), np.int32) for t in p.y}, {"source_accuracy": 0.5})

    first = run(store.path, out)
    assert first.rows_read == 2 * 30  # two targets
    # new rows: only they are read
    write([30, 31, 45])
    s = run(store.path, out)
    assert s.rows_used == 33 and s.rows_read == 2 * 3
    same_influences(out, run(store.path, ref, incremental=False).out)
    # nothing new: nothing read
    assert run(store.path, out).rows_read == 0
    # a damaged row, invalidated by launch.verify: its block (rows 8-15) is recomputed without it
    chunk_file(store.path, store.outputs("t0"), 10).write_bytes(b"\x00garbage\xff" * 5)
    assert verify(store.path, invalidate=True).cleared
    s = run(store.path, out)
    assert s.rows_used == 32 and s.rows_read == 2 * 7
    same_influences(out, run(store.path, ref, incremental=False).out)
    # repaired (rerun): its block grows by it; a row rewritten with other outputs: its block is read again
    write([10])
    p.y["t1"][20] += 1.0
    write([20])
    s = run(store.path, out)
    assert s.rows_used == 33 and s.rows_read == 2 * 1 + 2 * 8
    same_influences(out, run(store.path, ref, incremental=False).out)
    # the previous store is never modified by a refresh (hard links are replaced, not written into)
    before = Influence(out).array("t1", "full", "is_correct", "per_example")
    write([50])
    run(store.path, tmp_path / "other.zarr")
    np.testing.assert_array_equal(Influence(out).array("t1", "full", "is_correct", "per_example"), before)
    # rows added to a grown block went to the totals only: pending, their block's sums are the earlier rows'
    pending = np.flatnonzero(Influence(out).group["sums/t0/row_pending"][:])
    np.testing.assert_array_equal(pending, [10, 30, 31])
    # a pending row rewritten: its block's share of the totals is unknown, so every block with pending rows (8-15,
    # 24-31) is summed again, with the new row 50's, and the totals are the blocks' sum
    p.y["t0"][31] -= 2.0
    write([31])
    s = run(store.path, out)
    assert s.rows_used == 34 and s.rows_read == 2 * (8 + 8 + 1), s.rows_read
    same_influences(out, run(store.path, ref, incremental=False).out)
    assert not Influence(out).group["sums/t0/row_pending"][:].any()


def test_pending_rows_survive_a_refresh_in_worker_processes(tmp_path):
    """Grown blocks keep their new rows pending only where the tasks run in this process; worker processes add
    rows to the block's sums and keep the earlier pending rows as they were; an invalidated pending row makes the
    totals the sum of the blocks, there too."""
    from omegaconf import OmegaConf

    p = make_planted_store(tmp_path / "s.zarr", rows=40, units=5, n=(6,), completed=np.arange(0, 20), noise=1.0,
                           scheme="bernoulli", via_write_row=True)
    store, out = p.store, tmp_path / "infl.zarr"
    workers = OmegaConf.create({"name": "local", "workers": 2})

    def write(rows):
        for i in rows:
            store.write_row(int(i), {t: p.y[t][i] for t in p.y},
                            {t: np.zeros((2, p.y[t].shape[-1]), np.int32) for t in p.y}, {"source_accuracy": 0.5})

    def check(name):
        same_influences(out, run(store.path, tmp_path / name, incremental=False).out)

    run(store.path, out)
    write([20, 21])
    run(store.path, out)  # in this process: 20 and 21 pending in block 16-23
    check("a.zarr")
    write([22])
    assert run(store.path, out, launcher=workers).rows_read == 1  # in workers: 22 goes into the block's sums
    np.testing.assert_array_equal(np.flatnonzero(Influence(out).group["sums/t0/row_pending"][:]), [20, 21])
    check("b.zarr")
    chunk_file(store.path, store.outputs("t0"), 21).write_bytes(b"\x00garbage\xff" * 5)
    assert verify(store.path, invalidate=True).cleared
    assert run(store.path, out, launcher=workers).rows_read == 6  # block 16-23 summed again: 16-20, 22
    check("c.zarr")


def test_worker_processes_equal_this_process(tmp_path):
    from omegaconf import OmegaConf

    p = make_planted_store(tmp_path / "s.zarr", rows=40, units=5, n=(6,), noise=1.0)
    a = run(p.store.path, tmp_path / "a.zarr").out
    b = run(p.store.path, tmp_path / "b.zarr", launcher=OmegaConf.create({"name": "local", "workers": 2})).out
    same_influences(a, b)


def test_ridge_and_bootstrap_read_everything(tmp_path):
    p = make_planted_store(tmp_path / "s.zarr", rows=40, units=5, n=(6,), noise=1.0)
    out = tmp_path / "i.zarr"
    run(p.store.path, out)
    for settings, est in (({}, "ridge"), ({"bootstrap": 3}, "dim")):
        s = run(p.store.path, out, estimator=est, estimator_settings=settings)
        assert s.rows_read == 40 and "sums" not in Influence(out).group


@pytest.mark.parametrize("sums_block_rows", [1, 7, 100])
def test_block_size_does_not_change_the_result(tmp_path, sums_block_rows):
    p = make_planted_store(tmp_path / "s.zarr", rows=30, units=5, n=(6,), noise=1.0, scheme="bernoulli")
    a = aggregate(p.store.path, out=tmp_path / "a.zarr", progress=False, diagnostics=None, sums_block_rows=30)
    b = aggregate(p.store.path, out=tmp_path / "b.zarr", progress=False, diagnostics=None,
                  sums_block_rows=sums_block_rows)
    for name in NAMES:
        np.testing.assert_allclose(Influence(a.out).array("t0", "full", "softmax_gt", name),
                                   Influence(b.out).array("t0", "full", "softmax_gt", name), rtol=1e-6)


def test_completion_flags_are_decoded_only_where_written_since(tmp_path):
    import zarr

    from datatransfer.influence.blocks import completed_since
    from datatransfer.store.sweep_store import Store

    p = make_planted_store(tmp_path / "s.zarr", rows=20, units=4, n=(5,), completed=np.arange(0, 10), noise=1.0,
                           scheme="bernoulli")
    out = aggregate(p.store.path, out=tmp_path / "i.zarr", progress=False, diagnostics=None).out
    prev = zarr.open_group(str(out), mode="r")
    flags = zarr.open_array(str(p.store.path / "completed"), mode="r+")
    flags[10:12] = True  # completed since
    flags[3] = False  # invalidated since
    rows, got, _ = completed_since(Store.open(p.store.path), prev)
    np.testing.assert_array_equal(got, Store.open(p.store.path).completed())
    np.testing.assert_array_equal(rows, [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11])
    # a flag whose file was not written since is taken from the previous store, not decoded (here: garbage in
    # place, same inode and time; a real write replaces the file)
    f = chunk_file(p.store.path, Store.open(p.store.path).group["completed"], 5)
    st = f.stat()
    with open(f, "r+b") as fh:
        fh.write(b"\xff" * st.st_size)
    import os
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    rows, _, _ = completed_since(Store.open(p.store.path), prev)
    assert 5 in rows
    # without a previous store every flag is decoded: the damaged one counts as not completed
    assert 5 not in completed_since(Store.open(p.store.path), None)[0]


def test_a_refresh_after_an_extension_reuses_the_earlier_blocks(tmp_path):
    """Raising sweep.num_models adds rows past the old end: the previous sums still hold the first rows, so a
    refresh reads only the rows completed since (in the old last block, which grows, and in new blocks), and the
    completion flags of the old rows are not decoded again."""
    from datatransfer.influence.blocks import completed_since
    from datatransfer.store.sweep_store import Store
    from tests.store.test_store import make_spec, row_payload

    path, out, ref = tmp_path / "s.zarr", tmp_path / "infl.zarr", tmp_path / "ref.zarr"
    store = Store.create_or_open(path, make_spec(rows=12, units=6))
    for r in range(10):
        store.write_row(r, *row_payload(store, r))
    assert run(path, out).rows_read == 2 * 10  # blocks of 8 rows: 0-7 and 8-11
    bigger = Store.create_or_open(path, make_spec(rows=30, units=6))
    assert bigger.num_rows == 30 and bigger.attrs["extended"][0]["from_rows"] == 12
    prev = __import__("zarr").open_group(str(out), mode="r")
    rows, flags, _ = completed_since(bigger, prev)  # the old rows' flags come from the previous store
    np.testing.assert_array_equal(rows, np.arange(10))
    for r in (11, 17, 29):  # the old last block grows; two new blocks
        bigger.write_row(r, *row_payload(bigger, r))
    s = run(path, out)
    assert s.rows_used == 13 and s.rows_read == 2 * 3, (s.rows_used, s.rows_read)
    same_influences(out, run(path, ref, incremental=False).out)
    # again, nothing new: nothing read; one more row in a new block: only it
    assert run(path, out).rows_read == 0
    bigger.write_row(20, *row_payload(bigger, 20))
    assert run(path, out).rows_read == 2
    same_influences(out, run(path, tmp_path / "ref2.zarr", incremental=False).out)


def test_random_histories_of_additions_rewrites_and_invalidations_equal_full_recomputation(tmp_path):
    """A seeded random history: each step adds rows, rewrites some with other outputs, or invalidates some (as
    launch.verify does: the completion flag cleared), then refreshes in this process or in worker processes;
    after every step the refreshed store equals a from-scratch aggregation (pending rows, blocks summed again and
    the totals they leave behind included)."""
    import zarr
    from omegaconf import OmegaConf

    p = make_planted_store(tmp_path / "s.zarr", rows=48, units=5, n=(6,), completed=np.arange(0, 10), noise=1.0,
                           scheme="bernoulli", via_write_row=True)
    store, out = p.store, tmp_path / "infl.zarr"
    flags = zarr.open_array(str(store.path / "completed"), mode="r+")
    rng = np.random.default_rng(7)
    workers = OmegaConf.create({"name": "local", "workers": 2})
    run(store.path, out, diagnostics=None)
    for step in range(7):
        done = np.flatnonzero(store.completed())
        todo = np.setdiff1d(np.arange(48), done)
        action = ["add", "add", "rewrite", "invalidate"][rng.integers(4)] if step else "add"
        if action == "add" and len(todo):
            rows = rng.choice(todo, size=min(len(todo), int(rng.integers(1, 6))), replace=False)
        else:
            rows = rng.choice(done, size=int(rng.integers(1, 3)), replace=False)
        if action == "invalidate":
            flags[rows] = False
        else:
            for i in rows:
                if action == "rewrite":
                    p.y["t0"][i] += rng.normal(size=p.y["t0"][i].shape)
                store.write_row(int(i), {"t0": p.y["t0"][i]}, {"t0": np.zeros((2, 6), np.int32)},
                                {"source_accuracy": 0.5})
        run(store.path, out, diagnostics=None, launcher=workers if rng.integers(3) == 0 else None)
        ref = run(store.path, tmp_path / f"ref{step}.zarr", incremental=False, diagnostics=None).out
        for name in NAMES:
            for mode in ("fixed", "full"):
                np.testing.assert_allclose(Influence(out).array("t0", mode, "softmax_gt", name),
                                           Influence(ref).array("t0", mode, "softmax_gt", name), rtol=1e-6,
                                           atol=1e-9, err_msg=f"step {step} ({action} {rows}): {mode}/{name}")
        np.testing.assert_allclose(Influence(out).group["sums/t0/total_s_in"][:],
                                   Influence(ref).group["sums/t0/total_s_in"][:], rtol=1e-12, atol=1e-9)
