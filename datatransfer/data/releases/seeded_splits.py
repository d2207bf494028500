"""Targets whose release has no fixed train/test split (Caltech-101, Caltech-256, Birdsnap), and SUN397, whose
split lists (Partitions.zip) torchvision does not read.

The rules (docs/paper-scale.md), each recorded in meta.json with its seed and the checksums of what it read:

* Caltech-101: 30 training images per class, the rest test (Table 1: 3,030 / 5,647); BACKGROUND_Google is not a
  class (torchvision drops it too).
* Caltech-256: 60 training images per class, the rest test (Table 1: 15,420 / 15,187); 257 classes incl. clutter.
* Birdsnap: the images of images.txt that are on disk (Flickr has lost some: every download differs), a seeded
  20% of each species for test (Table 1: 32,677 / 8,171 is 80/20 of the 40,848 images the authors had).
* SUN397: the official partition 1 (Training_01.txt / Testing_01.txt: 50 + 50 per class).

The seeded choice per class is ``base.seeded_split``: a permutation from ``numpy.random.default_rng([seed, c])``
of the class's files sorted by name, so it depends only on (seed, class, its file names).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import re
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

from datatransfer.data.releases.base import (
    Release,
    Samples,
    base_folder,
    checksums,
    real_path,
    require,
    require_images,
    seeded_split,
    torchvision_root,
)
from datatransfer.errors import DataError

log = logging.getLogger(__name__)


def _files_sha256(folder: Path, per_class: Dict[int, List[str]]) -> str:
    """sha256 over every listed image's relative path and size: the input of a seeded rule, in one value."""
    h = hashlib.sha256()
    for c in sorted(per_class):
        for f in sorted(per_class[c]):
            p = Path(f)
            h.update(f"{p.relative_to(folder)}\t{p.stat().st_size}\n".encode())
    return h.hexdigest()


def _seeded(name: str, folder: Path, per_class: Dict[int, List[str]], n_train: int, seed: int, rule: str):
    require_images(name, str(folder), [(f, c) for c in per_class for f in per_class[c]])
    train, test = seeded_split(per_class, n_train, seed)
    return {"train": train, "test": test}, {"split": rule, "seed": seed,
                                            "images_sha256": _files_sha256(folder, per_class)}


def read_caltech101(src: Path, seed: int = 0) -> Release:
    """Caltech-101 (caltech-101.zip, then 101_ObjectCategories.tar.gz): 101_ObjectCategories/<class>/image_NNNN.jpg,
    parsed by torchvision's Caltech101; 30 train images per class, seeded."""
    from torchvision.datasets import Caltech101

    base = "caltech101"
    folder = base_folder(src, "caltech-101", "101_ObjectCategories")
    with torchvision_root(folder, base) as root:
        ds = Caltech101(str(root))
        per_class: Dict[int, List[str]] = {}
        for i, y in zip(ds.index, ds.y):
            p = root / base / "101_ObjectCategories" / ds.categories[y] / f"image_{i:04d}.jpg"
            per_class.setdefault(int(y), []).append(real_path(p, root, base, folder))
        classes = [c.replace("_", " ") for c in ds.categories]
    splits, origin = _seeded("caltech101", folder, per_class, 30, seed,
                             "per class a seeded 30 images for train, the rest test")
    return Release(classes, splits, origin)


def read_caltech256(src: Path, seed: int = 0) -> Release:
    """Caltech-256 (256_ObjectCategories.tar): 256_ObjectCategories/NNN.<class>/NNN_MMMM.jpg, parsed by
    torchvision's Caltech256; 60 train images per class (257 incl. clutter), seeded. Names drop the "NNN." prefix
    and the "-101" suffix of classes shared with Caltech-101."""
    from torchvision.datasets import Caltech256

    base = "caltech256"
    folder = base_folder(src, base, "256_ObjectCategories")
    with torchvision_root(folder, base) as root:
        ds = Caltech256(str(root))
        per_class: Dict[int, List[str]] = {}
        for i, y in zip(ds.index, ds.y):
            p = root / base / "256_ObjectCategories" / ds.categories[y] / f"{y + 1:03d}_{i:04d}.jpg"
            per_class.setdefault(int(y), []).append(real_path(p, root, base, folder))
        classes = [re.sub(r"-101$", "", c.split(".", 1)[-1]) for c in ds.categories]
    splits, origin = _seeded("caltech256", folder, per_class, 60, seed,
                             "per class a seeded 60 images for train, the rest test")
    return Release(classes, splits, origin)


def _sun397_partition(src: Path, folder: Path) -> Path:
    for cand in (src / "Partitions", src, folder, folder / "Partitions", folder.parent / "Partitions"):
        if (cand / "Training_01.txt").is_file():
            return cand
    raise DataError(f"src={src}: no Training_01.txt (from Partitions.zip) in {src / 'Partitions'}, {src} or "
                    f"{folder}; expected SUN397/ (SUN397.tar.gz) and the partition lists next to it")


def read_sun397(src: Path, seed: int = 0) -> Release:
    """SUN397 (SUN397.tar.gz: SUN397/ClassName.txt, SUN397/<l>/<class>/sun_*.jpg) with the official partition 1
    (Partitions.zip: Training_01.txt, Testing_01.txt; 50 + 50 images per class). torchvision's SUN397 parses the
    classes and lists the images; names are the class paths as words ("apartment building (outdoor)")."""
    from torchvision.datasets import SUN397

    base = "SUN397"
    folder = base_folder(src, base, "ClassName.txt")
    parts = _sun397_partition(src, folder)
    ann = [folder / "ClassName.txt", parts / "Training_01.txt", parts / "Testing_01.txt"]
    require(src, "SUN397/ClassName.txt and Training_01.txt / Testing_01.txt", *ann)
    splits: Dict[str, Samples] = {}
    with torchvision_root(folder, base) as root:
        ds = SUN397(str(root), loader=str)
        for split, file in (("train", ann[1]), ("test", ann[2])):
            samples = []
            for line in file.read_text().split():
                key = "/".join(line.strip("/").split("/")[1:-1])  # /a/abbey/sun_x.jpg -> abbey, as torchvision
                if key not in ds.class_to_idx:
                    raise DataError(f"{file}: {line} names class {key!r}, which ClassName.txt does not list")
                samples.append((str(folder / line.strip("/")), ds.class_to_idx[key]))
            require_images("sun397", file.name, samples)
            splits[split] = samples
        classes = [_sun_name(c) for c in ds.classes]
    return Release(classes, splits, {"files": checksums(src, ann), "split": "official partition 1"})


def _sun_name(c: str) -> str:
    head, *rest = c.split("/")
    words = head.replace("_", " ")
    return f"{words} ({' '.join(r.replace('_', ' ') for r in rest)})" if rest else words


def read_birdsnap(src: Path, seed: int = 0) -> Release:
    """Birdsnap 1.1 (birdsnap.tgz: species.txt, images.txt; images fetched by its get_birdsnap.py into
    download/images/<path>). No parser exists elsewhere: species.txt (tab-separated, header; id, common,
    scientific, dir) gives the 500 classes (id order, common names), images.txt (tab-separated, header; path,
    species_id, ...) the labels. The images present on disk are split per species, a seeded 20% (rounded) to test;
    the release's test_images.txt (2,443 images) is not the paper's split."""
    folder = base_folder(src, "birdsnap", "species.txt")
    images_dir = next((d for d in (folder / "download" / "images", folder / "images") if d.is_dir()), None)
    ann = [folder / "species.txt", folder / "images.txt"]
    require(src, "birdsnap/ with species.txt, images.txt and download/images/ (get_birdsnap.py's output)", *ann)
    if images_dir is None:
        raise DataError(f"{folder}: no download/images/ folder; run the release's get_birdsnap.py first")
    species = _tsv(ann[0])
    ids = sorted(int(r["id"]) for r in species)
    index = {i: k for k, i in enumerate(ids)}
    classes = [r["common"] for r in sorted(species, key=lambda r: int(r["id"]))]
    per_class: Dict[int, List[str]] = {}
    listed = 0
    for r in _tsv(ann[1]):
        listed += 1
        p = images_dir / r["path"]
        if p.is_file() and p.stat().st_size > 0:
            per_class.setdefault(index[int(r["species_id"])], []).append(str(p))
    empty = [classes[c] for c in range(len(classes)) if len(per_class.get(c, [])) < 2]
    if empty:
        raise DataError(f"birdsnap: {len(empty)} species have fewer than 2 images under {images_dir} "
                        f"(e.g. {empty[0]!r}): a partial download? (get_birdsnap.py resumes)")
    found = sum(len(v) for v in per_class.values())
    log.info(f"birdsnap: {found:,} of the {listed:,} images of images.txt are on disk")
    splits = _birdsnap_split(per_class, seed)
    origin = {"files": checksums(folder, ann), "split": "per species a seeded 20% (rounded) of its images on disk "
              "for test", "seed": seed, "images_on_disk": found, "images_listed": listed,
              "images_sha256": _files_sha256(images_dir, per_class)}
    return Release(classes, splits, origin)


def _birdsnap_split(per_class: Dict[int, List[str]], seed: int) -> Dict[str, Samples]:
    train: Samples = []
    test: Samples = []
    for c in sorted(per_class):
        files = sorted(per_class[c])
        n_test = max(1, int(round(0.2 * len(files))))
        chosen = set(np.random.default_rng([seed, c]).permutation(len(files))[:n_test].tolist())
        train += [(f, c) for i, f in enumerate(files) if i not in chosen]
        test += [(f, c) for i, f in enumerate(files) if i in chosen]
    return {"train": train, "test": test}


def _tsv(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        raise DataError(f"{path}: no rows (expected a tab-separated file with a header line)")
    return rows


READERS: dict[str, Callable[..., Release]] = {"caltech101": read_caltech101, "caltech256": read_caltech256,
                                               "sun397": read_sun397, "birdsnap": read_birdsnap}
