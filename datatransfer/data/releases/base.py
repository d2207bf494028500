"""What every release reader returns (a ``Release``), and the checks they share.

A reader turns the folder an official archive unpacks to into lists of (image file, label) per split, class
names, and provenance. It reads and checks everything before anything is written: a missing annotation file, a
wrong layout or images listed but absent (a partial download) raise ``DataError`` naming what is missing and
what was expected.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np

from datatransfer.errors import DataError

Samples = List[Tuple[str, int]]  # (image file, label)


@dataclass
class Release:
    """A parsed release: ``splits[name]`` lists (image file, label); ``classes`` are human-readable names in
    label order; ``origin`` (annotation files' md5, the split rule, its seed, ...) goes into meta.json."""

    classes: List[str]
    splits: Dict[str, Samples]
    origin: Dict = field(default_factory=dict)
    extra_meta: Dict = field(default_factory=dict)  # more meta.json keys (ImageNet: its readable names)


def md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checksums(root: Path, files: Sequence[Path]) -> Dict[str, str]:
    """md5 of each annotation file, keyed by its path relative to ``root`` (where it is under it), for meta.json."""
    return {os.path.relpath(f, root) if Path(f).is_relative_to(root) else str(f): md5(Path(f)) for f in files}


def listing_sha256(root: Path, samples: Samples) -> str:
    """sha256 over the sorted relative paths of a split: two preparations with the same value hold the same
    images in that split (however they were listed)."""
    names = sorted(os.path.relpath(p, root) for p, _ in samples)
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def require(src: Path, expected: str, *paths: Path) -> None:
    """Every path must exist; otherwise name the missing ones and the expected layout."""
    missing = [p for p in paths if not p.exists()]
    if missing:
        names = ", ".join(str(p) for p in missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        raise DataError(f"{src}: missing {names}; expected {expected}")


def require_images(name: str, listed_in: str, samples: Samples) -> None:
    """Every listed image must be a non-empty file: a partial download stops here, before anything is written."""
    missing = [p for p, _ in samples if not (os.path.isfile(p) and os.path.getsize(p) > 0)]
    if missing:
        raise DataError(f"{name}: {len(missing):,} of {len(samples):,} images listed in {listed_in} are missing or "
                        f"empty (a partial download?), e.g. {missing[0]}" + (f", {missing[1]}" if len(missing) > 1
                                                                                  else ""))


def base_folder(src: Path, base: str, marker: str) -> Path:
    """The release's top folder: ``src/<base>`` when ``src`` is the folder the archive was unpacked in, else
    ``src`` itself (the unpacked folder, whatever its name). ``marker`` is a path inside it that must exist."""
    if not src.is_dir():
        raise DataError(f"src={src}: no such folder")
    for cand in (src / base, src):
        if (cand / marker).exists():
            return cand
    raise DataError(f"src={src}: neither {src / base / marker} nor {src / marker} exists; expected the folder the "
                    f"official archive unpacks to ({base}/ with {marker})")


@contextmanager
def torchvision_root(folder: Path, base: str) -> Iterator[Path]:
    """A root that torchvision's dataset class accepts for a release at ``folder``: torchvision wants
    ``<root>/<base>``; when ``folder`` has another name, a temporary root with a symlink named ``base`` is used
    (nothing is written into the user's folder). Use ``real_path`` to map the paths it lists back."""
    if folder.name == base:
        yield folder.parent
        return
    with tempfile.TemporaryDirectory(prefix="datatransfer-release-") as tmp:
        os.symlink(folder.resolve(), Path(tmp) / base)
        yield Path(tmp)


def real_path(path, root: Path, base: str, folder: Path) -> str:
    """``path`` as listed under a ``torchvision_root``, as a path under the user's ``folder``."""
    return str(folder / Path(path).relative_to(root / base))


def seeded_split(per_class: Dict[int, List[str]], n_train: int, seed: int) -> Tuple[Samples, Samples]:
    """Per class (in label order), a seeded random ``n_train`` of its images for train, the rest for test.

    The rule: for class c with files sorted by name, ``numpy.random.default_rng([seed, c]).permutation(n)``; the
    first ``n_train`` positions go to train. A class with no more than ``n_train`` images is refused (its test
    share would be empty)."""
    train: Samples = []
    test: Samples = []
    for c in sorted(per_class):
        files = sorted(per_class[c])
        if len(files) <= n_train:
            raise DataError(f"class {c} has {len(files)} images, the split needs more than {n_train} "
                            f"(a partial download?)")
        order = np.random.default_rng([seed, c]).permutation(len(files))
        chosen = set(order[:n_train].tolist())
        train += [(f, c) for i, f in enumerate(files) if i in chosen]
        test += [(f, c) for i, f in enumerate(files) if i not in chosen]
    return train, test


def readable(name: str) -> str:
    """A folder-style class name as words: underscores to spaces."""
    return " ".join(name.replace("_", " ").split())
