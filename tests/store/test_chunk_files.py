"""Per-row arrays read from a local store's chunk files (store/chunk_files.py) give what zarr's own read gives: every
array of a real store, written and unwritten rows, text included; damaged chunks raise as zarr's read does; what it
cannot read, zarr reads."""

import numpy as np
import pytest
import zarr

from datatransfer.store import chunk_files
from datatransfer.store.extend import row_arrays
from datatransfer.store.integrity import chunk_file, read_rows
from datatransfer.store.provenance import RowRun
from datatransfer.store.sweep_store import Store
from tests.store.test_store import make_spec, row_payload


def _store(tmp_path, rows=12, written=(0, 2, 3, 7, 11)):
    store = Store.create_or_open(tmp_path / "s.zarr", make_spec(rows=rows, n=(30, 20)))
    for r in written:
        store.write_row(r, *row_payload(store, r), run=RowRun(start_time=100.0 + r, device="cpu", threads=1))
    return store


def test_every_per_row_array_reads_as_zarr_reads_it(tmp_path):
    store = _store(tmp_path)
    arrays = list(row_arrays(zarr.open_group(str(store.path), mode="r")))
    assert {"completed", "row_stats", "outputs/t0", "predictions/t1"} <= {name for name, _ in arrays}
    read_here = 0
    for name, arr in arrays:
        theirs = np.asarray(arr[:])
        ours = chunk_files.rows(arr, 0, arr.shape[0])
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, name
        assert chunk_files._same(ours, theirs), name
        picked = np.array([2, 3, 5, 11])  # written and never-written rows alike
        assert chunk_files._same(chunk_files.take(arr, picked), theirs[picked]), name
        read_here += chunk_files._decoder(arr) is not None
    # text (provenance), bool flags, float32 outputs and int32 predictions are read from the files; the masks,
    # chunked in blocks of rows, by zarr
    assert read_here == sum(arr.chunks[0] == 1 for _, arr in arrays) and read_here >= 8
    masks = zarr.open_group(str(store.path), mode="r")["masks"]
    assert chunk_files._decoder(masks) is None
    assert np.array_equal(chunk_files.rows(masks, 0, 12), masks[:])


def test_a_damaged_chunk_raises_and_the_damage_tolerant_read_names_only_it(tmp_path):
    store = _store(tmp_path)
    arr = zarr.open_group(str(store.path), mode="r")["outputs/t0"]
    chunk_files.rows(arr, 0, 12)  # checked and remembered while undamaged
    chunk_file(store.path, arr, 3).write_bytes(b"not zstd")
    with pytest.raises(Exception):
        chunk_files.rows(arr, 0, 12)
    bad = []
    out = read_rows(arr, lambda a, row, e: bad.append(row))
    assert bad == [3] and np.isnan(out[3]).all() and np.array_equal(out[7], np.asarray(arr[7]))


def test_a_store_not_in_a_local_folder_is_read_by_zarr():
    group = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
    arr = group.create_array("completed", shape=(4,), chunks=(1,), dtype=bool, fill_value=False)
    arr[1] = True
    assert chunk_files._decoder(arr) is None
    assert chunk_files.rows(arr, 0, 4).tolist() == [False, True, False, False]


def test_an_array_replaced_with_another_layout_is_checked_again(tmp_path):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    arr = group.create_array("x", shape=(3, 2), chunks=(1, 2), dtype="float32", fill_value=np.nan)
    arr[1] = [1.0, 2.0]
    assert chunk_files.rows(arr, 0, 3)[1].tolist() == [1.0, 2.0]
    arr = group.create_array("x", shape=(3, 4), chunks=(1, 4), dtype="int32", fill_value=-1, overwrite=True)
    arr[2] = [1, 2, 3, 4]
    assert chunk_files.rows(arr, 0, 3).tolist() == [[-1] * 4, [-1] * 4, [1, 2, 3, 4]]


def test_rows_written_only_late_in_the_array_are_read_from_their_files(tmp_path):
    """The check against zarr's read uses the rows asked for: it used to look only at the first 64 rows, so an array
    written only past them (rows a repair left) went to zarr, and each read opened 64 missing files first."""
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    arr = group.create_array("x", shape=(100, 2), chunks=(1, 2), dtype="float32", fill_value=np.nan)
    arr[80] = [8.0, 0.5]
    got = chunk_files.rows(arr, 70, 90)
    assert chunk_files._same(got, np.asarray(arr[70:90])) and chunk_files.reads_files(arr)
