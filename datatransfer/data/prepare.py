"""Prepared datasets for ``source.loader=ffcv``: a folder ``<out>/<name>/`` per dataset, written once.

Each folder holds ``train.beton``, ``val.beton`` (ImageNet, the mini source) or ``test.beton`` (targets), and
``meta.json``: class names (in label order), whether the images are grey, the number of examples per split and
where they came from. ``ffcv_reader.BetonDataset`` reads it. A dataset is written into a hidden sibling folder
and renamed into place when complete; a folder with a ``meta.json`` is complete.

Sources (``python -m launch.prepare dataset=... src=...``):

* ``mini``: the embedded 28x28 grey datasets (source, digits, coarse), raw pixels: the FFCV path then sees
  exactly the in-memory images (``experiment=mini_ffcv``);
* ``imagenet`` and the paper's targets by their ``conf/targets`` names (``aircraft``, ``birdsnap``, ``caltech101``,
  ``caltech256``, ``cars``, ``flowers``, ``food``, ``pets``, ``sun397``): the folder the official archives unpack
  to, read by ``releases`` (whole release checked before anything is written);
* ``cifar10`` / ``cifar100``: the python pickle releases, raw 32x32 pixels;
* ``folder``: any other target given as ImageFolder ``train/`` and ``test/`` trees.

Images are stored as ffcv-imagenet stores them: the long side shrunk to ``max_resolution``, a
``compress_probability`` share as JPEG of ``jpeg_quality``, the rest raw (prepare's defaults: its ResNet-18 data).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

from datatransfer.data import ffcv_reader, ffcv_writer, releases
from datatransfer.data.memory import EMBEDDED_DIR, _load_npz
from datatransfer.data.releases.base import Release, checksums, listing_sha256
from datatransfer.errors import ConfigError, DataError

log = logging.getLogger(__name__)
DATASETS = ("mini", "folder", "cifar10", "cifar100", *releases.READERS)


def prepare(cfg: Any) -> List[Path]:
    """Write the dataset(s) ``cfg`` names; returns the dataset folders written (or found complete)."""
    if cfg.dataset not in DATASETS:
        raise ConfigError(f"dataset: must be one of {list(DATASETS)}, got {cfg.dataset!r}")
    if cfg.dataset == "folder" and not cfg.name:
        raise ConfigError("name: dataset=folder needs the target's name, e.g. name=pets (its folder under out)")
    try:
        ffcv_reader.import_ffcv()
    except ImportError as e:
        raise DataError(f"writing betons needs ffcv, which does not import here ({e}); "
                        f"scripts/install_ffcv.sh VENV installs it") from e
    out, workers = Path(cfg.out), int(cfg.workers) or (os.cpu_count() or 1)
    if cfg.dataset == "mini":
        return write_mini(out, workers, cfg.overwrite)
    folder = out / (cfg.name or cfg.dataset)
    if not _must_write(folder, cfg.overwrite):
        return [folder]
    if not cfg.src:
        raise ConfigError(f"src: dataset={cfg.dataset} needs the raw data's folder (docs/paper-scale.md)")
    src = Path(cfg.src)
    if cfg.dataset in ("cifar10", "cifar100"):
        return [write_cifar(src, folder, workers, cfg.dataset)]
    image = {"max_resolution": int(cfg.max_resolution), "compress_probability": float(cfg.compress_probability),
             "jpeg_quality": int(cfg.jpeg_quality)}
    release = _image_folders(src) if cfg.dataset == "folder" else releases.read(cfg.dataset, src, int(cfg.seed))
    return [write_release(release, src, folder, workers, image)]


def _must_write(folder: Path, overwrite: bool) -> bool:
    if (folder / "meta.json").is_file():
        if not overwrite:
            log.info(f"{folder}: already prepared (meta.json present; overwrite=true rewrites it)")
            return False
        return True
    if folder.exists():
        raise DataError(f"{folder} exists but is not a prepared dataset (no meta.json): remove it or choose another "
                        f"out / name")
    return True


@contextmanager
def _staging(folder: Path) -> Iterator[Path]:
    """A hidden sibling folder to write into; renamed to ``folder`` (replacing a complete one) on success, removed
    on failure, so ``folder`` is either the old complete dataset or the new one."""
    tmp = folder.parent / f".{folder.name}.preparing-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    made_out = not folder.parent.exists()
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if folder.exists():
            old = folder.parent / f".{folder.name}.replaced-{os.getpid()}"
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if made_out and not folder.exists() and not any(folder.parent.iterdir()):
            folder.parent.rmdir()  # out was made for this dataset only


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.writing-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_meta(folder: Path, classes: Sequence[str], grey: bool, sizes: Dict[str, int], origin: Dict,
                extra: Optional[Dict] = None, name: str = "") -> None:
    meta = {"name": name or folder.name, "classes": [str(c) for c in classes], "grey": grey, "splits": sizes,
            "origin": origin, **(extra or {}), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _write_atomic(folder / "meta.json", lambda p: p.write_text(json.dumps(meta, indent=1)))
    counts = ", ".join(f"{k} {v:,}" for k, v in sizes.items())
    log.info(f"{name or folder.name}: {len(classes)} classes, {counts}")


def write_mini(out: Path, workers: int, overwrite: bool = False) -> List[Path]:
    """Every dataset of the embedded mini file as raw grey betons: ``<out>/source`` (train, val), ``<out>/digits``
    and ``<out>/coarse`` (train, test)."""
    path = EMBEDDED_DIR / "mini.npz"
    if not path.is_file():
        raise DataError(f"data file not found: {path} (rebuild it with scripts/build_mini_data.py)")
    arrays = _load_npz(str(path))
    names = sorted(k[: -len("_class_names")] for k in arrays if k.endswith("_class_names"))
    folders = []
    for name in names:
        folder = out / name
        folders.append(folder)
        if not _must_write(folder, overwrite):
            continue
        splits = [s for s in ("train", "val", "test") if f"{name}_{s}_x" in arrays]
        with _staging(folder) as tmp:
            for s in splits:
                x, y = arrays[f"{name}_{s}_x"], arrays[f"{name}_{s}_y"]
                ffcv_writer.write_beton_arrays(tmp / f"{s}.beton", x, y, write_mode="raw", num_workers=workers)
            sizes = {s: int(len(arrays[f"{name}_{s}_y"])) for s in splits}
            _write_meta(tmp, arrays[f"{name}_class_names"], True, sizes, {"file": str(path), "dataset": name},
                        name=name)
    return folders


def _image_folders(src: Path) -> Release:
    """``dataset=folder``: ImageFolder trees ``src/train/<class>/`` and ``src/test/<class>/`` (the same classes)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    for s in ("train", "test"):
        if not (src / s).is_dir():
            raise DataError(f"no {src / s}: expected ImageFolder trees {src / 'train'} and {src / 'test'} "
                            f"(one sub-folder per class)")
    classes, index = find_classes(str(src / "train"))
    if find_classes(str(src / "test"))[0] != classes:
        raise DataError(f"{src / 'test'} has other class folders than {src / 'train'}: "
                        f"{sorted(set(find_classes(str(src / 'test'))[0]) ^ set(classes))[:10]}")
    splits = {s: [(p, int(y)) for p, y in make_dataset(str(src / s), index, IMG_EXTENSIONS)] for s in ("train", "test")}
    return Release(list(classes), splits, {"imagefolder": str(src)})


def write_release(release: Release, src: Path, folder: Path, workers: int, image: Dict[str, Any]) -> Path:
    """A parsed release to ``folder/<split>.beton`` (RGB, in the release's order) and meta.json; its origin gains
    ``src``, the image settings and a sha256 of each split's file list (the same value: the same images)."""
    origin = {"src": str(src), **release.origin, **image,
              "split_sha256": {s: listing_sha256(src, v) for s, v in release.splits.items()}}
    with _staging(folder) as tmp:
        sizes = {}
        for split, samples in release.splits.items():
            log.info(f"{folder.name} {split}: writing {len(samples):,} images")
            ffcv_writer.write_beton_files(samples, tmp / f"{split}.beton", num_workers=workers, **image)
            sizes[split] = len(samples)
        _write_meta(tmp, release.classes, False, sizes, origin, release.extra_meta, name=folder.name)
    return folder


# What each CIFAR release unpacks to, and the pickle that tells it apart from the other (ffcv_writer.load_cifar_pickles)
CIFAR_RELEASES = {"cifar10": ("cifar-10-batches-py", "data_batch_1"), "cifar100": ("cifar-100-python", "train")}


def write_cifar(src: Path, folder: Path, workers: int, dataset: str = "cifar10") -> Path:
    """CIFAR-10 or CIFAR-100 (``dataset``; fine labels) from the python pickles in ``src`` (or its
    cifar-10-batches-py/, cifar-100-python/: the folder the archive unpacks to) to raw 32x32 betons. The other
    release at ``src`` is refused before anything is written: its classes would go under this dataset's name."""
    if not src.is_dir():
        raise DataError(f"src={src}: no CIFAR pickle folder there")
    sub, marker = CIFAR_RELEASES[dataset]
    other = next(n for n in CIFAR_RELEASES if n != dataset)
    src = next((d for d in (src / sub, src / CIFAR_RELEASES[other][0]) if d.is_dir()), src)
    if not (src / marker).is_file() and (src / CIFAR_RELEASES[other][1]).is_file():
        raise DataError(f"src={src}: holds the {other} release (its {CIFAR_RELEASES[other][1]}), not {dataset}'s "
                        f"({sub}/ with {marker}); give dataset={other}, or the {dataset} release's folder")
    arrays = {}
    for s in ("train", "test"):
        try:
            arrays[s] = ffcv_writer.load_cifar_pickles(src, s)
        except (FileNotFoundError, pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
            raise DataError(f"src={src}: not a complete CIFAR python release ({type(e).__name__}: {e})") from e
    num_classes = max(int(y.max()) + 1 for _, y in arrays.values())
    with _staging(folder) as tmp:
        for s, (x, y) in arrays.items():
            ffcv_writer.write_beton_arrays(tmp / f"{s}.beton", x, y, write_mode="raw", num_workers=workers)
        sizes = {s: int(len(y)) for s, (_, y) in arrays.items()}
        files = sorted(p for p in src.iterdir() if p.is_file() and not p.name.endswith((".html", ".txt")))
        _write_meta(tmp, _cifar_classes(src, num_classes), False, sizes,
                    {"pickles": str(src), "files": checksums(src, files)}, name=folder.name)
    return folder


def verify(folder: Path, name: str):
    """(report lines, differences) of the prepared ``folder`` against the expected sizes of dataset ``name``."""
    from datatransfer.data.releases.expected import EXPECTED
    from datatransfer.data.releases.expected import verify as compare

    if name not in EXPECTED:
        raise ConfigError(f"verify: no expected sizes for {name!r}; known: {sorted(EXPECTED)}")
    if not (folder / "meta.json").is_file():
        raise DataError(f"verify: {folder} is not a prepared dataset (no meta.json)")
    return compare(folder, EXPECTED[name])


def _cifar_classes(src: Path, n: int) -> List[str]:
    """Class names from the release's meta pickle (``batches.meta`` or ``meta``), else "0", "1", ..."""
    for file, key in (("batches.meta", "label_names"), ("meta", "fine_label_names")):
        if (src / file).is_file():
            with open(src / file, "rb") as f:
                meta = pickle.load(f, encoding="bytes")
            names = meta.get(key) or meta.get(key.encode())
            if names is not None:
                return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return [str(i) for i in range(n)]
