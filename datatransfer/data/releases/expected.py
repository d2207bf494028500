"""The expected sizes of each prepared dataset (the paper's Table 1, ILSVRC2012) and ``verify``, which compares a
prepared folder (its meta.json and the betons' labels) with them.

Per dataset: the number of classes, each split's total, and per-class counts where the release or the split
rule fixes them (CIFAR, Food-101, SUN397 partition 1, Flowers' 10 + 10 training ids, Caltech's 30 / 60, ImageNet's
50 validation images). Every class must have images in every split. Birdsnap's totals depend on which Flickr
images could still be downloaded: they are reported, not required; its rule (20% of each species for test) is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Union

import numpy as np

PerClass = Union[int, Callable[[int], int]]  # a count, or the count from the class's total over all splits


@dataclass(frozen=True)
class Expected:
    classes: int
    totals: Dict[str, int]
    per_class: Dict[str, PerClass] = field(default_factory=dict)
    totals_required: bool = True  # False: totals reported only (Birdsnap)


def _birdsnap_test(total: int) -> int:
    return max(1, int(round(0.2 * total)))


EXPECTED: Dict[str, Expected] = {
    "imagenet": Expected(1000, {"train": 1_281_167, "val": 50_000}, {"val": 50}),
    "aircraft": Expected(100, {"train": 6_667, "test": 3_333}),
    "birdsnap": Expected(500, {"train": 32_677, "test": 8_171}, {"test": _birdsnap_test}, totals_required=False),
    "caltech101": Expected(101, {"train": 3_030, "test": 5_647}, {"train": 30}),
    "caltech256": Expected(257, {"train": 15_420, "test": 15_187}, {"train": 60}),
    "cars": Expected(196, {"train": 8_144, "test": 8_041}),
    "cifar10": Expected(10, {"train": 50_000, "test": 10_000}, {"train": 5_000, "test": 1_000}),
    "cifar100": Expected(100, {"train": 50_000, "test": 10_000}, {"train": 500, "test": 100}),
    "flowers": Expected(102, {"train": 2_040, "test": 6_149}, {"train": 20}),
    "food": Expected(101, {"train": 75_750, "test": 25_250}, {"train": 750, "test": 250}),
    "pets": Expected(37, {"train": 3_680, "test": 3_669}),
    "sun397": Expected(397, {"train": 19_850, "test": 19_850}, {"train": 50, "test": 50}),
}


def counts(folder: Path) -> Dict[str, np.ndarray]:
    """Images per class of each split of a prepared folder, from the betons' label tables."""
    from datatransfer.data.ffcv_reader import read_labels

    meta = json.loads((folder / "meta.json").read_text())
    n = len(meta["classes"])
    return {s: np.bincount(read_labels(folder / f"{s}.beton"), minlength=n) for s in meta["splits"]}


def verify(folder: Path, expected: Expected) -> tuple[List[str], List[str]]:
    """(report lines, differences) of a prepared folder against ``expected``; no differences: it matches."""
    meta = json.loads((folder / "meta.json").read_text())
    got = counts(folder)
    classes = meta["classes"]
    lines, diffs = [f"{folder}: {len(classes)} classes (expected {expected.classes})"], []
    if len(classes) != expected.classes:
        diffs.append(f"classes: {len(classes)}, expected {expected.classes}")
    for split, total in expected.totals.items():
        if split not in got:
            diffs.append(f"{split}: split missing")
            continue
        c = got[split]
        note = "" if expected.totals_required else ", depends on the download"
        lines.append(f"  {split}: {int(c.sum()):,} images (expected {total:,}{note})")
        if expected.totals_required and int(c.sum()) != total:
            diffs.append(f"{split}: {int(c.sum()):,} images, expected {total:,}")
        for k in np.flatnonzero(c == 0)[:5]:
            diffs.append(f"{split}: class {classes[k]!r} has no images")
        rule = expected.per_class.get(split)
        if rule is not None:
            totals = sum(got.values())
            want = np.array([rule(int(t)) if callable(rule) else rule for t in totals])
            for k in np.flatnonzero(c != want)[:10]:
                diffs.append(f"{split}: class {classes[k]!r} has {int(c[k])} images, expected {int(want[k])}")
    return lines, diffs
