"""FFCV betons and loaders (datatransfer.data.ffcv_writer, ffcv_reader), on small data made here. CPU only.

Skipped where ffcv is not installed (install it with scripts/install_ffcv.sh VENV_DIR).
Each FFCV loader compiles its pipeline with numba on first use (a few seconds each), so the tests
build as few loaders as they can.
"""

import gc
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_ffcv  # noqa: E402

_threads = torch.get_num_threads()
require_ffcv()  # skips without ffcv, fails under CI=true; keeps torch's thread count (importing ffcv sets 1)

from datatransfer.data import ffcv_reader as fd  # noqa: E402
from datatransfer.data import ffcv_writer as fw  # noqa: E402
from datatransfer.data.ffcv_pipelines import flip_op_class  # noqa: E402

WORKERS = 2

# When an FFCV loader is garbage-collected, numba's dispatcher finalizer raises a harmless KeyError
# ("Exception ignored in: <finalize object ...>"); pytest would report it as a warning.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(autouse=True)
def _collect_loaders():
    """Let each test's loaders be collected inside the test, where the filter above applies."""
    yield
    gc.collect()
    torch.set_num_threads(_threads)


def _raw_rgb(path, n_expected, *ops):
    """Every image of a beton as stored (N, H, W, 3) uint8 (after ``ops``), and its labels, in file order."""
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import Squeeze, ToTensor

    loader = Loader(str(path), batch_size=64, num_workers=1, order=OrderOption.SEQUENTIAL, drop_last=False,
                    pipelines={"image": [SimpleRGBImageDecoder(), *ops, ToTensor()],
                               "label": [IntDecoder(), ToTensor(), Squeeze(1)]})
    xs, ys = zip(*[(x.clone(), y.clone()) for x, y in loader])
    x, y = torch.cat(xs).numpy(), torch.cat(ys).numpy()
    assert len(x) == n_expected
    return x, y


def _in_memory(images, mean, std):
    """What datatransfer.data gives for grey uint8 images: (x / 255 - mean) / std as (N, 1, H, W)."""
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    return (x - mean) / std


def _sorted_rows(x: torch.Tensor, y: torch.Tensor):
    """Order-independent view of (image, label) pairs: sorted (label, image bytes) tuples."""
    return sorted((int(label), image.numpy().tobytes()) for image, label in zip(x, y))


def test_rgb_arrays_roundtrip_raw_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (37, 12, 20, 3), dtype=np.uint8)
    labels = rng.integers(0, 5, 37)
    path = tmp_path / "rgb.beton"
    fw.write_beton_arrays(path, images, labels, num_workers=WORKERS)

    np.testing.assert_array_equal(fd.read_labels(path), labels)
    x, y = _raw_rgb(path, len(images))
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)

    # The train pipeline's flip: each image comes back as itself or its mirror, and both happen.
    flipped, _ = _raw_rgb(path, len(images), flip_op_class()())
    same = (flipped == images).all(axis=(1, 2, 3))
    mirrored = (flipped == images[:, :, ::-1]).all(axis=(1, 2, 3))
    assert (same | mirrored).all() and same.any() and mirrored.any()


def test_grey_arrays_roundtrip_matches_in_memory(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (70, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 70)
    path = tmp_path / "grey.beton"
    fw.write_beton_arrays(path, images, labels, num_workers=WORKERS)
    np.testing.assert_array_equal(fd.read_labels(path), labels)

    torch.set_num_threads(2)
    loader = fd.make_loader(path, batch_size=32, train=False, drop_last=False, grey=True,
                            mean=0.25, std=0.5, num_workers=1)
    assert torch.get_num_threads() == 2, "make_loader must restore torch's thread count"
    assert len(loader) == 3  # 70 = 32 + 32 + 6, the short last batch kept
    xs, ys = zip(*[(x.clone(), y.clone()) for x, y in loader])
    assert torch.get_num_threads() == 2, "iterating must restore torch's thread count"
    x, y = torch.cat(xs), torch.cat(ys)

    assert x.dtype == torch.float32 and x.shape == (70, 1, 28, 28)
    assert torch.equal(x, _in_memory(images, 0.25, 0.5))  # sequential order: same order, bitwise equal
    assert torch.equal(y, torch.from_numpy(labels))


def test_class_subset_loader_gives_the_in_memory_selection(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (300, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 300)
    path = tmp_path / "subset.beton"
    fw.write_beton_arrays(path, images, labels, num_workers=WORKERS)

    keep = [1, 4, 7]
    idx = fd.class_subset_indices(fd.read_labels(path), keep)
    expected = np.flatnonzero(np.isin(labels, keep))
    np.testing.assert_array_equal(idx, expected)

    loader = fd.make_loader(path, batch_size=16, train=True, drop_last=False, grey=True, mean=0.5, std=0.25,
                            indices=idx, num_workers=1, seed=3)
    assert len(loader) == -(-len(expected) // 16)  # batches of 16, the short last one kept
    xs, ys = zip(*[(x.clone(), y.clone()) for x, y in loader])
    x, y = torch.cat(xs), torch.cat(ys)
    assert set(y.tolist()) <= set(keep)
    assert sorted(y.tolist()) == sorted(labels[expected].tolist())
    want_x = _in_memory(images[expected], 0.5, 0.25)
    assert _sorted_rows(x, y) == _sorted_rows(want_x, torch.from_numpy(labels[expected]))
    # A random order really is shuffled (the chance of the identity permutation here is nil).
    assert not torch.equal(y, torch.from_numpy(labels[expected]))


def test_class_subset_indices_edge_cases():
    labels = np.array([3, 0, 3, 2, 1, 3])
    np.testing.assert_array_equal(fd.class_subset_indices(labels, [3]), [0, 2, 5])
    np.testing.assert_array_equal(fd.class_subset_indices(labels, np.array([9])), [])
    with pytest.raises(ValueError):
        fd.class_subset_indices(labels, [])


def test_write_rejects_bad_arrays(tmp_path):
    # Caught before any writer process starts (an error inside one would hang DatasetWriter).
    with pytest.raises(ValueError, match="uint8"):
        fw.write_beton_arrays(tmp_path / "a.beton", np.zeros((2, 4, 4), np.float32), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="labels"):
        fw.write_beton_arrays(tmp_path / "b.beton", np.zeros((2, 4, 4), np.uint8), np.zeros(3, np.int64))


def _make_imagefolder(root: Path):
    from PIL import Image

    rng = np.random.default_rng(4)
    for c in ("cat", "dog", "eel"):
        (root / c).mkdir(parents=True)
        for i in range(4):
            h, w = rng.integers(30, 90, 2)
            pixels = (rng.integers(0, 256, 3) * np.ones((h, w, 3))).astype(np.uint8)  # one random colour
            pixels[: h // 2] //= 2  # and a darker top half, so crops differ
            image = Image.fromarray(pixels)
            if i == 3:
                image = image.convert("L")  # a grey file: ImageFolder's loader makes it RGB
            image.save(root / c / f"{i}.{'png' if i % 2 else 'jpg'}")


def test_imagefolder_beton_loaders_and_set_resolution(tmp_path):
    root = tmp_path / "train"
    _make_imagefolder(root)
    path = tmp_path / "folder.beton"
    classes = fw.write_beton_imagefolder(root, path, max_resolution=64, compress_probability=0.5,
                                         num_workers=WORKERS)
    assert classes == ["cat", "dog", "eel"]
    np.testing.assert_array_equal(fd.read_labels(path), np.repeat([0, 1, 2], 4))

    train = fd.make_loader(path, batch_size=5, train=True, resolution=32, drop_last=True, num_workers=1)
    assert len(train) == 2  # 12 // 5, the short batch dropped
    shapes = [(tuple(x.shape), tuple(y.shape)) for x, y in train]
    assert shapes == [((5, 3, 32, 32), (5,))] * 2
    train.set_resolution(48)
    assert train.resolution == 48
    x, y = next(iter(train))
    assert x.shape == (5, 3, 48, 48) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.isfinite(x).all() and y.dtype == torch.int64

    val = fd.make_loader(path, batch_size=5, train=False, resolution=40, drop_last=False, num_workers=1)
    batches = [(x.clone(), y.clone()) for x, y in val]
    assert [tuple(x.shape) for x, _ in batches] == [(5, 3, 40, 40), (5, 3, 40, 40), (2, 3, 40, 40)]
    np.testing.assert_array_equal(torch.cat([y for _, y in batches]).numpy(), np.repeat([0, 1, 2], 4))
    # The centre crop of a one-colour-per-half image is deterministic: two eval epochs agree.
    again = torch.cat([x.clone() for x, _ in val])
    assert torch.equal(torch.cat([x for x, _ in batches]), again)


def _pickle(path: Path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _cifar_rows(rng, n):
    """n CIFAR rows (N, 3072): red plane, green plane, blue plane, each 32x32 row-major."""
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8)


def test_cifar10_pickles_to_beton(tmp_path):
    rng = np.random.default_rng(5)
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    train_rows, train_labels = [], []
    for i in range(1, 6):  # the real layout: bytes keys, labels as a list
        rows, labels = _cifar_rows(rng, 3), rng.integers(0, 10, 3).tolist()
        _pickle(d / f"data_batch_{i}", {b"batch_label": b"x", b"data": rows, b"labels": labels,
                                        b"filenames": [b"f.png"] * 3})
        train_rows.append(rows)
        train_labels += labels
    _pickle(d / "test_batch", {b"data": _cifar_rows(rng, 4), b"labels": [9, 8, 7, 6]})

    images, labels = fw.load_cifar_pickles(d, "train")
    rows = np.concatenate(train_rows)
    assert images.shape == (15, 32, 32, 3)
    np.testing.assert_array_equal(images[:, :, :, 0], rows[:, :1024].reshape(15, 32, 32))  # red plane
    np.testing.assert_array_equal(images[:, :, :, 2], rows[:, 2048:].reshape(15, 32, 32))  # blue plane

    path = tmp_path / "cifar10_train.beton"
    fw.write_beton_arrays(path, images, labels, write_mode="raw", num_workers=WORKERS)  # as launch.prepare does
    np.testing.assert_array_equal(fd.read_labels(path), train_labels)
    x, _ = _raw_rgb(path, 15)
    np.testing.assert_array_equal(x, images)

    test_path = tmp_path / "cifar10_test.beton"
    fw.write_beton_arrays(test_path, *fw.load_cifar_pickles(d, "test"), write_mode="raw", num_workers=WORKERS)
    np.testing.assert_array_equal(fd.read_labels(test_path), [9, 8, 7, 6])


def test_cifar100_pickles_fine_and_coarse(tmp_path):
    rng = np.random.default_rng(6)
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    _pickle(d / "train", {b"data": _cifar_rows(rng, 5), b"fine_labels": [99, 0, 42, 7, 7],
                          b"coarse_labels": [19, 0, 3, 1, 1]})
    _pickle(d / "test", {b"data": _cifar_rows(rng, 2), b"fine_labels": [5, 6], b"coarse_labels": [1, 2]})

    path = tmp_path / "cifar100_test.beton"
    fw.write_beton_arrays(path, *fw.load_cifar_pickles(d, "test"), write_mode="raw", num_workers=WORKERS)
    np.testing.assert_array_equal(fd.read_labels(path), [5, 6])
    np.testing.assert_array_equal(fw.load_cifar_pickles(d, "train")[1], [99, 0, 42, 7, 7])
    np.testing.assert_array_equal(fw.load_cifar_pickles(d, "train", labels="coarse")[1], [19, 0, 3, 1, 1])
    with pytest.raises(FileNotFoundError):
        fw.load_cifar_pickles(tmp_path, "train")
