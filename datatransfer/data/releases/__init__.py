"""Readers of the official releases of ImageNet and the paper's 11 targets (``python -m launch.prepare
dataset=<name> src=<folder the archive unpacks to>``), one per dataset, named as ``conf/targets``.

Each returns a ``Release`` (image files and labels per split, human-readable class names, provenance) after
checking the whole release; ``prepare`` writes it. torchvision's dataset classes parse the formats they know
(``fixed_splits``, Caltech and SUN397 in ``seeded_splits``, the devkit in ``imagenet``); Birdsnap's parser and the
seeded splits are written here. CIFAR is read from its pickles by ``ffcv_writer.load_cifar_pickles``.
``expected`` holds Table 1's sizes, which ``verify=true`` compares a prepared folder with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict

from datatransfer.data.releases import fixed_splits, seeded_splits
from datatransfer.data.releases.base import Release
from datatransfer.data.releases.imagenet import read_imagenet
from datatransfer.errors import DataError

READERS: Dict[str, Callable[..., Release]] = {"imagenet": read_imagenet, **fixed_splits.READERS,
                                              **seeded_splits.READERS}


def read(name: str, src: Path, seed: int = 0) -> Release:
    """The release of dataset ``name`` at ``src``; a layout torchvision cannot parse is a DataError."""
    try:
        release = READERS[name](Path(src), seed=seed)
    except DataError:
        raise
    except (RuntimeError, ValueError, KeyError, IndexError, OSError) as e:  # torchvision's "Dataset not found", ...
        raise DataError(f"{name}: {src} does not parse as the official release ({type(e).__name__}: {e}); "
                        f"docs/paper-scale.md lists the expected layout") from e
    for split, samples in release.splits.items():
        if not samples:
            raise DataError(f"{name}: {src} gives no {split} images")
    return release


__all__ = ["READERS", "Release", "read"]
