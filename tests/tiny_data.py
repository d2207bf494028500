"""Tiny raw datasets made by tests: ImageFolder trees (RGB images of mixed sizes) and CIFAR-style pickles."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Sequence

import numpy as np


def image_folder(root: Path, classes: Sequence[str], per_class: int, seed: int = 0) -> None:
    """``root/<class>/<i>.jpg|png``: per class a colour and a stripe orientation, so classes are learnable."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        colour = (np.array([c * 67, 255 - c * 53, (c * 101) % 256]) % 256).astype(np.uint8)
        for i in range(per_class):
            h, w = (int(v) for v in rng.integers(40, 80, 2))
            pixels = np.broadcast_to(colour, (h, w, 3)).copy()
            stripes = (np.arange(w) // 6 % 2 == 0) if c % 2 else (np.arange(h) // 6 % 2 == 0)[:, None]
            pixels[np.broadcast_to(stripes, (h, w))] //= 3
            pixels = np.clip(pixels.astype(int) + rng.integers(-20, 21, pixels.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")


def cifar10_pickles(folder: Path, per_batch: int, test: int, seed: int = 0) -> None:
    """A CIFAR-10 python release in miniature: data_batch_1..5, test_batch, batches.meta."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def batch(n):
        labels = rng.integers(0, 10, n)
        images = np.repeat((labels * 25).astype(np.uint8)[:, None], 3072, axis=1)  # class = brightness
        images = np.clip(images.astype(int) + rng.integers(-10, 11, images.shape), 0, 255).astype(np.uint8)
        return {b"data": images, b"labels": labels.tolist()}

    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(per_batch), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(test), f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
