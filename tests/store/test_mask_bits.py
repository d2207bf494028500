"""Format version 3: bit-packed masks round-trip (creation in chunk-aligned blocks, a row alone, every row,
verify's comparison and repair); version 2 stores (bool masks) are still read and written."""

import numpy as np
import pytest
import zarr
from test_store import make_spec, row_payload

from datatransfer.masks import mask_matrix
from datatransfer.store import mask_bits
from datatransfer.store.sweep_store import Store
from datatransfer.store.verify import verify


@pytest.mark.parametrize("units", [7, 8, 13, 2051])
def test_packed_masks_round_trip(tmp_path, units, monkeypatch):
    monkeypatch.setattr(mask_bits, "CHUNK_BYTES", 8)  # several chunks even for a small store
    spec = make_spec(rows=37, units=units)
    spec.pack_masks = True
    store = Store.create_or_open(tmp_path / "s.zarr", spec)
    arr = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["masks"]
    assert arr.dtype == np.uint8 and arr.shape == (37, -(-units // 8)) and arr.chunks[0] < 37
    assert dict(arr.attrs) == {"bitpacked": True, "units": units, "bitorder": "little"}
    expected = np.asarray(spec.masks)
    np.testing.assert_array_equal(Store.open(store.path).masks, expected)
    for r in (0, 17, 36):
        np.testing.assert_array_equal(Store.open(store.path).mask(r), expected[r])
    # readable with numpy alone, as documented
    np.testing.assert_array_equal(np.unpackbits(arr[:], axis=1, count=units, bitorder="little").astype(bool),
                                  expected)


def test_packed_by_default_from_many_units_and_from_a_function(tmp_path):
    units, rows = mask_bits.PACK_MIN_UNITS, 9
    spec = make_spec(rows=rows, units=units, n=(3,))
    full = np.asarray(spec.masks)
    calls = []
    spec.masks, spec.num_rows = (lambda lo, hi: calls.append((lo, hi)) or full[lo:hi]), rows
    store = Store.create_or_open(tmp_path / "s.zarr", spec)
    assert mask_bits.packed(store.array("masks")) and calls == [(0, rows)]
    np.testing.assert_array_equal(store.masks, full)
    small = Store.create_or_open(tmp_path / "b.zarr", make_spec(rows=4, units=10))
    assert small.array("masks").dtype == bool  # few units: bool, as in versions 1-2


def test_verify_finds_and_rewrites_a_damaged_packed_row(tmp_path):
    spec = make_spec(rows=12, units=20, kind="random_subsets", scheme="fixed_size")
    spec.pack_masks = True
    store = Store.create_or_open(tmp_path / "s.zarr", spec)
    store.write_row(3, *row_payload(store, 3))
    arr = store.array("masks")
    np.testing.assert_array_equal(store.masks, mask_matrix(0, 12, 20, 0.5))
    bad = mask_bits.read(arr, 3)
    bad[:4] = ~bad[:4]
    mask_bits.write(arr, 3, bad[None])
    report = verify(store.path, invalidate=True)
    assert list(report.mask_rows) == [3] and report.masks_rewritten, report.text()
    np.testing.assert_array_equal(Store.open(store.path).masks, mask_matrix(0, 12, 20, 0.5))
    assert not Store.open(store.path).row_done(3)  # computed with a wrong mask: cleared


def test_a_version_2_store_is_still_read_and_written(tmp_path):
    path = tmp_path / "s.zarr"
    spec = make_spec()
    store = Store.create_or_open(path, spec)
    zarr.open_group(str(path), mode="r+").attrs.update({"format_version": 2})  # what version 2 wrote: bool masks
    old = Store.create_or_open(path, spec)
    assert old.format_version == 2
    old.write_row(2, *row_payload(old, 2))
    np.testing.assert_array_equal(Store.open(path).masks, np.asarray(spec.masks))
    assert Store.open(path).row_done(2) and store.num_rows == 12
