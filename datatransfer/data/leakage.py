"""The ``mini_leakage`` data file: the mini source's ten MNIST digit classes with planted leaks and misleading
images (experiment=mini_leakage; docs/data.md). Derived from the embedded mini.npz, deterministically, and cached.

- ``per_class`` MNIST training images of each digit (a seeded draw), then
- **leaks**: for each of ``leaks`` digits test images (seeded), an exact copy and a lightly augmented copy (shifted
  by one pixel, contrast x 0.9, noise sd 8 grey levels), under the matching digit class;
- **misleading**: ``misleading`` other digits test images, lightly augmented, under a wrong digit class (label
  + 1 + a seeded offset, mod 10): source images whose label contradicts what they show.

Arrays beside the usual ones (docs/data.md layout): ``source_train_planted`` int8 (0 ordinary, 1 exact leak,
2 augmented leak, 3 misleading) and ``source_train_copy_of`` int64 (the digits test index copied, -1 if none).
The digits target is unchanged (the same as in mini.npz), so its test examples are the leaked ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Dict

import numpy as np

log = logging.getLogger(__name__)
FILE = "mini_leakage.npz"
SETTINGS = {"per_class": 100, "leaks": 20, "misleading": 20, "seed": 0}
ORDINARY, LEAK_EXACT, LEAK_AUGMENTED, MISLEADING = 0, 1, 2, 3


def _augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    dy, dx = rng.choice([-1, 1], size=2)
    out = np.roll(np.roll(img.astype(np.float64), dy, axis=0), dx, axis=1) * 0.9 + rng.normal(0, 8, img.shape)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def build(base: Dict[str, np.ndarray], per_class: int = 100, leaks: int = 20, misleading: int = 20,
          seed: int = 0) -> Dict[str, np.ndarray]:
    """The arrays of the leakage file from those of mini.npz."""
    rng = np.random.default_rng(seed)
    names = [str(c) for c in base["source_class_names"]]
    digit_classes = [names.index(f"mnist:{d}") for d in range(10)]
    x, y = base["source_train_x"], base["source_train_y"]
    keep = np.concatenate([np.sort(rng.choice(np.flatnonzero(y == c), size=per_class, replace=False))
                           for c in digit_classes])
    tx, ty = base["digits_test_x"], base["digits_test_y"]
    chosen = rng.choice(len(ty), size=leaks + misleading, replace=False)
    leaked, misled = chosen[:leaks], chosen[leaks:]
    imgs, labels, kind, copy_of = [x[keep]], [np.searchsorted(digit_classes, y[keep])], \
        [np.zeros(len(keep), np.int8)], [np.full(len(keep), -1, np.int64)]
    for t in leaked:
        imgs.append(np.stack([tx[t], _augment(tx[t], rng)]))
        labels.append(np.array([ty[t], ty[t]]))
        kind.append(np.array([LEAK_EXACT, LEAK_AUGMENTED], np.int8))
        copy_of.append(np.array([t, t]))
    for t in misled:
        imgs.append(_augment(tx[t], rng)[None])
        labels.append(np.array([(ty[t] + 1 + rng.integers(0, 9)) % 10]))
        kind.append(np.array([MISLEADING], np.int8))
        copy_of.append(np.array([t]))
    vy = base["source_val_y"]
    val = np.flatnonzero(np.isin(vy, digit_classes))
    out = {k: v for k, v in base.items() if not k.startswith("source_") and k != "provenance"}
    out.update({
        "source_train_x": np.concatenate(imgs), "source_train_y": np.concatenate(labels).astype(np.int64),
        "source_train_planted": np.concatenate(kind), "source_train_copy_of": np.concatenate(copy_of),
        "source_val_x": base["source_val_x"][val], "source_val_y": np.searchsorted(digit_classes, vy[val]),
        "source_class_names": np.array([names[c] for c in digit_classes]),
        "provenance": np.array(json.dumps({"derived_from": "mini.npz", "builder": __name__,
                                           "settings": dict(per_class=per_class, leaks=leaks,
                                                            misleading=misleading, seed=seed)})),
    })
    return out


def cache_dir() -> Path:
    return Path(os.environ.get("DATATRANSFER_CACHE") or Path.home() / ".cache" / "datatransfer")


def path(embedded: Path) -> Path:
    """The leakage file derived from ``embedded`` (mini.npz): built on first use, then reused (its name carries a
    hash of mini.npz and the settings, so a changed base or builder makes a new file)."""
    digest = hashlib.sha256(embedded.read_bytes() + json.dumps(SETTINGS, sort_keys=True).encode()).hexdigest()[:12]
    out = cache_dir() / f"mini_leakage-{digest}.npz"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with np.load(embedded, allow_pickle=False) as z:
        arrays = build({k: z[k] for k in z.files}, **SETTINGS)
    tmp = out.parent / f".{out.stem}-{uuid.uuid4().hex[:8]}.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, out)  # atomic: concurrent builders write the same bytes; one wins
    log.info("built %s (%d source images, %d planted)", out, len(arrays["source_train_y"]),
             int((arrays["source_train_planted"] > 0).sum()))
    return out
