"""The four-Russians kernel for M^T [Y, Y^2] with 0/1 masks equals the float64 BLAS product to float64 rounding,
on both of its paths (many rows: the kernel; few: BLAS), and a refresh through it equals a full recomputation."""

import numpy as np
import pytest
from planted import make_planted_store

from datatransfer.influence import masksum
from datatransfer.influence.aggregate import aggregate
from datatransfer.influence.reader import Influence


def product(masks, y):
    x, y = masks.T.astype(np.float64), y.astype(np.float64)
    return np.hstack([x @ y, x @ (y * y)]), np.concatenate([y.sum(axis=0), (y * y).sum(axis=0)])


@pytest.mark.parametrize("rows,units,cols", [
    (masksum.MIN_ROWS, 8, masksum.TILE),  # the smallest kernel call: one group, one tile
    (700, 13, 45),  # units not a multiple of 8, columns not of the tile
    (1100, 67, 3 * masksum.TILE + 1),  # several groups and tiles, a last tile of one column
    (40, 13, 45),  # few rows: the BLAS path
    (700, 13, masksum.TILE - 1),  # few columns: the BLAS path
])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_equals_the_float64_product(rows, units, cols, threads, dtype):
    rng = np.random.default_rng(rows + units)
    masks = rng.random((rows, units)) < rng.uniform(0.1, 0.9, size=units)
    masks[0], masks[1] = True, False  # a row with every unit, one with none
    masks[:, 0] = True  # a unit in every row
    masks[:, -1] = False  # a unit in none
    y = (rng.random((rows, cols)) if dtype == np.float32 else rng.normal(0, 100, (rows, cols))).astype(dtype)
    # it adds into what is there, at the given columns: sums at 2..2+cols, squares at 3+cols..3+2cols
    out, total = rng.normal(size=(units, 2 * cols + 5)), rng.normal(size=2 * cols + 5)
    want, want_total = out.copy(), total.copy()
    s, t = product(masks, y)
    want[:, 2:2 + cols] += s[:, :cols]
    want[:, 3 + cols:3 + 2 * cols] += s[:, cols:]
    want_total[2:2 + cols] += t[:cols]
    want_total[3 + cols:3 + 2 * cols] += t[cols:]
    masksum.mask_sums(masks, y, out, total, 2, 3 + cols, threads=threads)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    np.testing.assert_allclose(total, want_total, rtol=1e-12, atol=1e-12 * np.abs(want_total).max())
    assert (out[-1] == want[-1]).all()  # a unit in no row: exactly what was there
    assert (out[:, [0, 1, 2 + cols, -2, -1]] == want[:, [0, 1, 2 + cols, -2, -1]]).all()  # other columns untouched


def test_kernel_and_product_paths_agree_on_the_same_rows():
    """The same rows through the kernel (all at once) and through BLAS (in small blocks, as a refresh adds them)."""
    rng = np.random.default_rng(3)
    masks = rng.random((masksum.MIN_ROWS + 88, 21)) < 0.5
    y = rng.random((len(masks), 50)).astype(np.float32)
    a, b, ta, tb = np.zeros((21, 100)), np.zeros((21, 100)), np.zeros(100), np.zeros(100)
    masksum.mask_sums(masks, y, a, ta, 0, 50)
    for i in range(0, len(masks), 75):
        masksum.mask_sums(masks[i:i + 75], y[i:i + 75], b, tb, 0, 50)
    np.testing.assert_allclose(a, b, rtol=1e-13)
    np.testing.assert_allclose(ta, tb, rtol=1e-13)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="do not match"):
        masksum.mask_sums(np.ones((600, 8), bool), np.ones((600, 4)), np.zeros((8, 6)), np.zeros(6), 0, 4)


def test_refresh_through_the_kernel_equals_full_recomputation(tmp_path):
    """Blocks of 640 rows: the full run sums them with the kernel, the refresh adds its new rows with BLAS."""
    rows = 2 * 640
    p = make_planted_store(tmp_path / "s.zarr", rows=rows, units=11, n=(9,), modes=("fixed",),
                           kinds=("softmax_gt",), noise=1.0, scheme="bernoulli")
    kw = {"progress": False, "diagnostics": None, "sums_block_rows": 640, "block_rows": 128}
    out = tmp_path / "i.zarr"
    p.store.group["completed"][rows - 12:] = False
    aggregate(p.store.path, out=out, **kw)
    p.store.group["completed"][rows - 12:] = True  # 12 new rows in the second block
    s = aggregate(p.store.path, out=out, **kw)
    assert s.rows_read == 12
    ref = aggregate(p.store.path, out=tmp_path / "ref.zarr", incremental=False, **kw).out
    a, b = Influence(out), Influence(ref)
    np.testing.assert_allclose(a.group["sums/t0/total_s_in"][:], b.group["sums/t0/total_s_in"][:], rtol=1e-12)
    for name in ("per_example", "per_example_se", "overall", "overall_se"):
        np.testing.assert_allclose(a.array("t0", "fixed", "softmax_gt", name),
                                   b.array("t0", "fixed", "softmax_gt", name), rtol=1e-6)
