"""Writing FFCV ``.beton`` files: arrays (grey or RGB) and ImageFolder trees, plus the CIFAR pickle reader.

Every beton has the same two fields, ``image`` (RGBImageField; grey replicated to 3 channels) and ``label``
(IntField), so one loader builder (``ffcv_reader.make_loader``) serves all of them."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import List, Literal, Optional, Sequence, Tuple, Union

import numpy as np

from datatransfer.data.ffcv_reader import default_workers, import_ffcv

# ---------------------------------------------------------------------------------------------------------
# Writing


class _ImageLabelArrays:
    """Indexable (image HxWx3 uint8, label int) view of arrays, as DatasetWriter wants; grey -> 3 channels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Tuple[np.ndarray, int]:
        image = self.images[i]
        if image.ndim == 2:  # replicate per sample rather than holding a 3x copy of the whole array
            image = np.repeat(image[:, :, None], 3, axis=2)
        return np.ascontiguousarray(image), int(self.labels[i])


class _SeededSamples:
    """Seeds numpy's global RNG per sample before it is encoded.

    ``RGBImageField(write_mode='proportion')`` draws np.random.rand() in forked writer processes that
    all start from the same RNG state; seeding per index makes which images get JPEG-compressed a
    function of (seed, index) alone, whatever the number of workers.
    """

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        np.random.seed((self.seed * 1_000_003 + i) % 2**32)
        return self.dataset[i]


def _write(path: Union[str, Path], dataset, image_field, num_workers: Optional[int], chunksize: int) -> None:
    import_ffcv()
    from ffcv.fields import IntField
    from ffcv.writer import DatasetWriter

    if len(dataset) == 0:
        raise ValueError("refusing to write an empty beton")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    writer = DatasetWriter(str(path), {"image": image_field, "label": IntField()},
                           num_workers=num_workers or default_workers())
    writer.from_indexed_dataset(dataset, chunksize=chunksize)


def write_beton_arrays(path: Union[str, Path], images: np.ndarray, labels: np.ndarray, *,
                       write_mode: str = "raw", jpeg_quality: int = 90,
                       num_workers: Optional[int] = None) -> None:
    """Write uint8 images (N, H, W) grey or (N, H, W, 3) RGB and integer labels (N,) to a beton.

    ``write_mode='raw'`` (the default) stores pixels losslessly: right for small images such as the
    28x28 mini data, where JPEG would save little and change pixel values.
    """
    import_ffcv()
    from ffcv.fields import RGBImageField

    images, labels = np.asarray(images), np.asarray(labels)
    # Check everything up front: an exception inside a writer process hangs DatasetWriter.
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
        raise ValueError(f"images must be (N, H, W) or (N, H, W, 3), got {images.shape}")
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers of shape ({len(images)},), got {labels.dtype} {labels.shape}")
    _write(path, _ImageLabelArrays(images, labels),
           RGBImageField(write_mode=write_mode, jpeg_quality=jpeg_quality), num_workers, chunksize=1000)


def write_beton_imagefolder(root: Union[str, Path], path: Union[str, Path], *, max_resolution: int = 500,
                            write_mode: str = "proportion", compress_probability: float = 0.5,
                            jpeg_quality: int = 90, num_workers: Optional[int] = None,
                            seed: int = 0) -> List[str]:
    """Write a torchvision ImageFolder tree (``root/<class>/<image>``) to a beton; returns the class names.

    Labels are ImageFolder's: class directories in sorted order. Defaults follow ffcv-imagenet's
    ResNet-50 data (README: "50% JPEG 500px side length", write_imagenet.sh 500 0.50 90 with
    ``--cfg.write_mode=proportion``); their ResNet-18 data uses 400 px and 0.10. Images are shrunk so
    that the long side is at most ``max_resolution``, then a ``compress_probability`` share of them
    is stored as JPEG of ``jpeg_quality``, the rest raw. Unreadable images hang the writer (see module doc).
    """
    from torchvision.datasets import ImageFolder

    import_ffcv()
    from ffcv.fields import RGBImageField

    dataset = ImageFolder(str(root))  # its loader converts every image to RGB
    field = RGBImageField(write_mode=write_mode, max_resolution=max_resolution,
                          compress_probability=compress_probability, jpeg_quality=jpeg_quality)
    _write(path, _SeededSamples(dataset, seed), field, num_workers, chunksize=100)
    return list(dataset.classes)


class _ImageFiles:
    """Indexable (PIL RGB image, label) over (file, label) pairs, read as ImageFolder reads them.

    An image that does not decode (truncated, corrupt) would raise inside a writer process, which leaves FFCV's
    DatasetWriter waiting forever: it is logged to ``failures`` instead (one line per image, appended by any
    process) and replaced by a 1x1 placeholder; ``write_beton_files`` then refuses the beton."""

    def __init__(self, samples: Sequence[Tuple[str, int]], failures: Path):
        self.samples, self.failures = list(samples), failures

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from PIL import Image

        path, label = self.samples[i]
        try:
            with open(path, "rb") as f:
                return Image.open(f).convert("RGB"), int(label)
        except Exception as e:  # noqa: BLE001 -- any failure must reach the parent, not hang the writer
            with open(self.failures, "a") as log:
                message = str(e).replace("\n", " ")
                log.write(f"{path}\t{type(e).__name__}: {message}\n")
            return Image.new("RGB", (1, 1)), int(label)


def write_beton_files(samples: Sequence[Tuple[str, int]], path: Union[str, Path], *, max_resolution: int = 500,
                      write_mode: str = "proportion", compress_probability: float = 0.5, jpeg_quality: int = 90,
                      num_workers: Optional[int] = None, seed: int = 0) -> None:
    """Write image files with their labels (in the order given) to a beton, stored as ``write_beton_imagefolder``
    stores an ImageFolder tree (the same images in the same order give the same beton). An image that does not
    decode raises DataError naming it (the beton written is then incomplete: the caller discards it)."""
    from datatransfer.errors import DataError

    import_ffcv()
    from ffcv.fields import RGBImageField

    field = RGBImageField(write_mode=write_mode, max_resolution=max_resolution,
                          compress_probability=compress_probability, jpeg_quality=jpeg_quality)
    failures = Path(f"{path}.unreadable")
    failures.unlink(missing_ok=True)
    try:
        _write(path, _SeededSamples(_ImageFiles(samples, failures), seed), field, num_workers, chunksize=100)
        bad = failures.read_text().splitlines() if failures.is_file() else []
    finally:
        failures.unlink(missing_ok=True)
    if bad:
        raise DataError(f"{len(bad):,} of {len(samples):,} images do not decode (truncated or corrupt: a partial "
                        f"download?), e.g. {bad[0]}")


def load_cifar_pickles(pickle_dir: Union[str, Path], split: Literal["train", "test"],
                       labels: Literal["fine", "coarse"] = "fine") -> Tuple[np.ndarray, np.ndarray]:
    """Read CIFAR-10/100 from the python pickle release: (images uint8 (N, 32, 32, 3), labels int64 (N,)).

    CIFAR-10 (``cifar-10-batches-py``): ``data_batch_1..5`` / ``test_batch`` with ``labels``.
    CIFAR-100 (``cifar-100-python``): ``train`` / ``test`` with ``fine_labels`` / ``coarse_labels``.
    ``data`` rows are 3072 bytes: the red plane, then green, then blue, each 32x32 row-major.
    """
    d = Path(pickle_dir)
    if (d / "data_batch_1").is_file():  # CIFAR-10
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        label_key = "labels"
    elif (d / "train").is_file():  # CIFAR-100
        files, label_key = [split], f"{labels}_labels"
    else:
        raise FileNotFoundError(f"{d} holds neither CIFAR-10 (data_batch_1) nor CIFAR-100 (train) pickles")
    xs, ys = [], []
    for name in files:
        with open(d / name, "rb") as f:
            batch = pickle.load(f, encoding="bytes")  # the release was pickled by Python 2: bytes keys
        batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
        xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)
