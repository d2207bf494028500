"""A store's size on disk, projected before it exists and measured from its written rows (store/size.py), against
the size of real stores written to the end."""

import numpy as np

from datatransfer.launchers.cost import spent
from datatransfer.store import size
from datatransfer.store.provenance import RowRun
from datatransfer.store.sweep_store import Store
from tests.store.test_store import make_spec, row_payload


def _random_payload(store: Store, row: int, rng):
    """Outputs zstd cannot shrink, as in the rows the upper bound is made of."""
    outs, preds, stats = row_payload(store, row)
    outs = {t: rng.random(o.shape, dtype=np.float32) for t, o in outs.items()}
    preds = {t: rng.integers(0, 3, p.shape, dtype=np.int32) for t, p in preds.items()}
    return outs, preds, stats


def _fill(store: Store, rows, payload):
    for row in rows:
        store.write_row(row, *payload(row), run=RowRun(start_time=1.0, device="cpu", threads=1))


def test_a_new_store_s_projection_bounds_the_store_written_to_the_end(tmp_path):
    spec = make_spec(rows=20, n=(700, 500))
    projected = size.new_store_bytes(spec, size.info_bytes("cpu"))
    rng = np.random.default_rng(1)
    noisy = Store.create_or_open(tmp_path / "noisy.zarr", spec)
    _fill(noisy, range(20), lambda r: _random_payload(noisy, r, rng))
    actual = size.disk_bytes(noisy.path)
    # rows of random outputs are what the projection is made of (its predictions are random int32, these of 3
    # classes compress): it is close to their size, block for block
    assert actual <= projected <= 1.25 * actual, (projected, actual)
    plain = Store.create_or_open(tmp_path / "plain.zarr", make_spec(rows=20, n=(700, 500)))
    _fill(plain, range(20), lambda r: row_payload(plain, r))
    assert size.disk_bytes(plain.path) < projected  # rows that compress take less: an upper bound


def test_the_status_projection_from_written_rows_meets_the_finished_store(tmp_path):
    spec = make_spec(rows=24, n=(700, 500))
    store = Store.create_or_open(tmp_path / "s.zarr", spec)
    rng = np.random.default_rng(2)
    _fill(store, range(6), lambda r: _random_payload(store, r, rng))
    done = spent(store)
    assert done.total_rows == 24 and "measured" in done.projected_how
    now = size.disk_bytes(store.path)
    assert done.store_bytes == now and done.projected_bytes > now
    _fill(store, range(6, 24), lambda r: _random_payload(store, r, rng))
    actual = size.disk_bytes(store.path)
    assert abs(done.projected_bytes - actual) <= 0.05 * actual, (done.projected_bytes, actual)
    assert "MB projected when its 24 rows are complete (measured:" in "\n".join(done.lines("completed"))


def test_disk_bytes_counts_allocated_blocks_like_du(tmp_path):
    assert size.disk_bytes(tmp_path / "absent") is None
    (tmp_path / "a").write_bytes(b"x")  # one byte takes a block
    (tmp_path / "d").mkdir()
    assert size.disk_bytes(tmp_path) >= 2 * 512 + (tmp_path / "a").stat().st_blocks * 512 - 1


def test_the_status_projection_prices_saved_models_and_leaves_out_training_checkpoints(tmp_path):
    """Rows that save their source model (store.save_backbones) add one each; a training checkpoint is deleted
    when its row completes: the projection counted the first as nothing and the second as if it stayed."""
    from datatransfer.store import layout

    store = Store.create_or_open(tmp_path / "s.zarr", make_spec(rows=24, n=(700, 500)))
    rng = np.random.default_rng(3)

    def write(rows):
        for row in rows:
            layout.backbone(store.path, row).parent.mkdir(exist_ok=True)
            layout.backbone(store.path, row).write_bytes(rng.bytes(200_000))
        _fill(store, rows, lambda r: _random_payload(store, r, rng))

    write(range(6))
    layout.checkpoint(store.path, 6).parent.mkdir(exist_ok=True)
    layout.checkpoint(store.path, 6).write_bytes(rng.bytes(3_000_000))  # row 6 training
    done = spent(store)
    assert "kB a row of saved source models" in done.projected_how, done.projected_how
    layout.checkpoint(store.path, 6).unlink()
    write(range(6, 24))
    actual = size.disk_bytes(store.path)
    assert abs(done.projected_bytes - actual) <= 0.05 * actual, (done.projected_bytes, actual)


def test_an_existing_store_without_completed_rows_is_bounded_from_its_own_arrays(tmp_path):
    """`launch.status` on a store whose rows have not completed printed its size now, and no projection."""
    from datatransfer.launchers.cost import unmeasured

    store = Store.create_or_open(tmp_path / "s.zarr", make_spec(rows=20, n=(700, 500)))
    bound = unmeasured(store)
    assert bound.store_bytes == size.disk_bytes(store.path) and bound.total_rows == 20
    # the same layout, bounded from the spec before the store existed
    assert abs(bound.projected_bytes - size.new_store_bytes(make_spec(rows=20, n=(700, 500)),
                                                           size.info_bytes("cpu"))) <= 0.02 * bound.projected_bytes
    rng = np.random.default_rng(4)
    _fill(store, range(20), lambda r: _random_payload(store, r, rng))
    actual = size.disk_bytes(store.path)
    assert actual <= bound.projected_bytes <= 1.25 * actual, (bound.projected_bytes, actual)
    (line,) = bound.disk_lines()
    assert line.startswith("store size on disk: ") and "an upper bound" in line
