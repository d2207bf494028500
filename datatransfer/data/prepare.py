"""Prepared datasets for ``source.loader=ffcv``: a folder ``<out>/<name>/`` per dataset, written once.

Each folder holds ``train.beton``, ``val.beton`` (ImageNet, the mini source) or ``test.beton`` (targets), and
``meta.json``: class names (in label order), whether the images are grey, the number of examples per split and
where they came from. ``ffcv_reader.BetonDataset`` reads it. The betons are written under temporary names and
renamed; ``meta.json`` comes last, so a folder with a ``meta.json`` is complete.

Sources (``python -m launch.prepare dataset=...``):

* ``mini``: the embedded 28x28 grey datasets (source, digits, coarse), raw pixels: the FFCV path then sees
  exactly the in-memory images (``experiment=mini_ffcv``);
* ``imagenet``: an ImageFolder tree with ``train/`` and ``val/`` (val sorted into class folders);
* ``folder``: any target given as ImageFolder ``train/`` and ``test/`` trees (Aircraft, Birdsnap, Caltech-101/256,
  Cars, Flowers, Food, Pets, SUN397);
* ``cifar10`` / ``cifar100``: the python pickle releases, raw 32x32 pixels.

ImageFolder images are stored as ffcv-imagenet stores them: the long side shrunk to ``max_resolution``, a
``compress_probability`` share as JPEG of ``jpeg_quality``, the rest raw (prepare's defaults: its ResNet-18 data).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

from datatransfer.data import ffcv_reader, ffcv_writer
from datatransfer.data.memory import EMBEDDED_DIR, _load_npz
from datatransfer.errors import ConfigError, DataError

log = logging.getLogger(__name__)
DATASETS = ("mini", "imagenet", "folder", "cifar10", "cifar100")


def prepare(cfg: Any) -> List[Path]:
    """Write the dataset(s) ``cfg`` names; returns the dataset folders written (or found complete)."""
    if cfg.dataset not in DATASETS:
        raise ConfigError(f"dataset: must be one of {list(DATASETS)}, got {cfg.dataset!r}")
    if cfg.dataset == "folder" and not cfg.name:
        raise ConfigError("name: dataset=folder needs the target's name, e.g. name=pets (its folder under out)")
    if cfg.dataset != "mini" and not cfg.src:
        raise ConfigError(f"src: dataset={cfg.dataset} needs the raw data's folder (docs/paper-scale.md)")
    try:
        ffcv_reader.import_ffcv()
    except ImportError as e:
        raise DataError(f"writing betons needs ffcv, which does not import here ({e}); "
                        f"scripts/install_ffcv.sh VENV installs it") from e
    out, workers = Path(cfg.out), int(cfg.workers) or (os.cpu_count() or 1)
    src = Path(cfg.src) if cfg.src else None
    if cfg.dataset == "mini":
        return write_mini(out, workers, cfg.overwrite)
    name = cfg.name or cfg.dataset
    if cfg.dataset in ("cifar10", "cifar100"):
        return [write_cifar(src, out / name, workers, cfg.overwrite)]
    image = {"max_resolution": int(cfg.max_resolution), "compress_probability": float(cfg.compress_probability),
             "jpeg_quality": int(cfg.jpeg_quality)}
    splits = ("train", "val") if cfg.dataset == "imagenet" else ("train", "test")
    return [write_imagefolders(src, splits, out / name, workers, cfg.overwrite, image)]


def _done(folder: Path, overwrite: bool) -> bool:
    if (folder / "meta.json").is_file() and not overwrite:
        log.info(f"{folder}: already prepared (meta.json present; overwrite=true rewrites it)")
        return True
    (folder / "meta.json").unlink(missing_ok=True)  # incomplete until rewritten last
    folder.mkdir(parents=True, exist_ok=True)
    return False


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.writing-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_meta(folder: Path, classes: Sequence[str], grey: bool, sizes: Dict[str, int], origin: Dict) -> None:
    meta = {"name": folder.name, "classes": [str(c) for c in classes], "grey": grey, "splits": sizes,
            "origin": origin, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _write_atomic(folder / "meta.json", lambda p: p.write_text(json.dumps(meta, indent=1)))
    counts = ", ".join(f"{k} {v:,}" for k, v in sizes.items())
    log.info(f"{folder}: {len(classes)} classes, {counts}")


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
        if _done(folder, overwrite):
            continue
        splits = [s for s in ("train", "val", "test") if f"{name}_{s}_x" in arrays]
        for s in splits:
            x, y = arrays[f"{name}_{s}_x"], arrays[f"{name}_{s}_y"]
            _write_atomic(folder / f"{s}.beton",
                          lambda p: ffcv_writer.write_beton_arrays(p, x, y, write_mode="raw", num_workers=workers))
        sizes = {s: int(len(arrays[f"{name}_{s}_y"])) for s in splits}
        _write_meta(folder, arrays[f"{name}_class_names"], True, sizes, {"file": str(path), "dataset": name})
    return folders


def write_imagefolders(src: Path, splits: Sequence[str], folder: Path, workers: int, overwrite: bool,
                       image: Dict[str, Any]) -> Path:
    """ImageFolder trees ``src/<split>/<class>/<image>`` to ``folder/<split>.beton`` (RGB)."""
    if _done(folder, overwrite):
        return folder
    for s in splits:
        if not (src / s).is_dir():
            raise DataError(f"no {src / s}: expected ImageFolder trees {[str(src / x) for x in splits]} "
                            f"(one sub-folder per class)")
    classes, sizes = None, {}
    for s in splits:
        got: List[str] = []
        _write_atomic(folder / f"{s}.beton", lambda p: got.extend(
            ffcv_writer.write_beton_imagefolder(src / s, p, num_workers=workers, **image)))
        if classes is not None and got != classes:
            raise DataError(f"{src / s} has other class folders than {src / splits[0]}: "
                            f"{sorted(set(got) ^ set(classes))[:10]}")
        classes = got
        sizes[s] = int(len(ffcv_reader.read_labels(folder / f"{s}.beton")))
    _write_meta(folder, classes, False, sizes, {"imagefolder": str(src), **image})
    return folder


def write_cifar(src: Path, folder: Path, workers: int, overwrite: bool) -> Path:
    """CIFAR-10 or CIFAR-100 (fine labels) from the python pickles in ``src`` to raw 32x32 betons."""
    if _done(folder, overwrite):
        return folder
    if not src.is_dir():
        raise DataError(f"no CIFAR pickle folder {src}")
    sizes, num_classes = {}, 0
    for s in ("train", "test"):
        try:
            x, y = ffcv_writer.load_cifar_pickles(src, s)
        except FileNotFoundError as e:
            raise DataError(str(e)) from e
        _write_atomic(folder / f"{s}.beton",
                      lambda p: ffcv_writer.write_beton_arrays(p, x, y, write_mode="raw", num_workers=workers))
        sizes[s], num_classes = int(len(y)), max(num_classes, int(y.max()) + 1)
    _write_meta(folder, _cifar_classes(src, num_classes), False, sizes, {"pickles": str(src)})
    return folder


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
