"""In-memory datasets: the embedded ``mini`` file (or any .npz with the same keys) as normalised tensors.

Layout of a data file (see docs/data.md): for a dataset ``d`` and split ``s``, ``{d}_{s}_x`` uint8 (N, H, W) and
``{d}_{s}_y`` int64 (N,), plus ``{d}_class_names``. The source uses splits ``train``/``val``, targets
``train``/``test``.

Training code reads a dataset through two methods that the FFCV datasets (``ffcv_reader.BetonDataset``) share:
``train_loader(...)`` (shuffled minibatches, a fresh order every epoch) and ``eval_loader(split, ...)`` (in file
order). ``open_source`` / ``open_target`` pick the kind that ``source.loader`` asks for.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from datatransfer.errors import DataError

EMBEDDED_DIR = Path(__file__).parent  # the embedded mini.npz ships beside this module


@dataclass
class Split:
    x: torch.Tensor  # float32 (N, C, H, W), normalised
    y: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def select_classes(self, keep: np.ndarray) -> "Split":
        """The examples whose label is a kept class (``keep`` is a bool mask over classes)."""
        idx = torch.from_numpy(np.flatnonzero(keep[self.y.numpy()]))
        return Split(self.x[idx], self.y[idx])

    def select_examples(self, idx: np.ndarray) -> "Split":
        """The examples at ``idx`` (ascending indices into this split: example units)."""
        t = torch.from_numpy(np.asarray(idx, dtype=np.int64))
        return Split(self.x[t], self.y[t])


class TensorLoader:
    """Minibatches of a Split, channels-last. With a generator: a new random order each epoch, the last partial
    batch dropped (a batch of one breaks batch-norm) unless it is the only one; without: file order, every example.
    """

    def __init__(self, split: Split, batch_size: int, generator: Optional[torch.Generator] = None):
        self.split, self.batch_size, self.generator = split, batch_size, generator

    def __len__(self) -> int:
        n, bs = len(self.split), self.batch_size
        return max(1, n // bs) if self.generator is not None else -(-n // bs)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        x, y, bs, cl = self.split.x, self.split.y, self.batch_size, torch.channels_last
        if self.generator is None:
            for i in range(0, len(y), bs):
                yield x[i:i + bs].contiguous(memory_format=cl), y[i:i + bs]
            return
        order = torch.randperm(len(y), generator=self.generator)
        for step in range(len(self)):
            idx = order[step * bs:(step + 1) * bs]
            yield x[idx].contiguous(memory_format=cl), y[idx]

    def set_epoch(self, epoch: int) -> None:
        """Nothing to do: the order comes from the generator, whose state a checkpoint restores."""

    resolution = None  # in-memory images keep their stored size


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split  # "val" for the source
    class_names: List[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.train.x.shape[1])

    def labels(self, split: str) -> np.ndarray:
        """int64 labels of ``split`` ("train" or "test"), in file order."""
        return (self.train if split == "train" else self.test).y.numpy()

    def train_loader(self, *, batch_size: int, generator: torch.Generator, seed: int = 0,
                     keep: Optional[np.ndarray] = None, decoder: str = "", resolution: int = 0,
                     examples: Optional[np.ndarray] = None) -> TensorLoader:
        """Shuffled minibatches of the train split (of the classes in ``keep``, a bool mask over classes, or exactly
        the images at ``examples``, ascending train indices). ``seed``, ``decoder`` and ``resolution`` are for FFCV
        datasets; the order comes from ``generator``."""
        split = self.train if keep is None else self.train.select_classes(keep)
        if examples is not None:
            split = self.train.select_examples(examples)
        return TensorLoader(split, batch_size, generator)

    def eval_loader(self, split: str, *, batch_size: int = 1024, keep: Optional[np.ndarray] = None,
                    decoder: str = "", resolution: int = 0) -> TensorLoader:
        """``split`` ("train" or "test") in file order (of the classes in ``keep``), in batches."""
        s = self.train if split == "train" else self.test
        return TensorLoader(s if keep is None else s.select_classes(keep), batch_size)


def data_file(root: str, file: str) -> Path:
    if not root and file == "mini_leakage.npz":  # derived from the embedded file (data/leakage.py), cached
        from datatransfer.data import leakage

        return leakage.path(EMBEDDED_DIR / "mini.npz")
    path = (Path(root) if root else EMBEDDED_DIR) / file
    if not path.is_file():
        hint = " (the embedded file ships with the package; rebuild it with scripts/build_mini_data.py)" \
            if not root else ""
        raise DataError(f"data file not found: {path}{hint}")
    return path


@functools.lru_cache(maxsize=4)
def _load_npz(path: str) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def load(root: str, file: str, name: str, mean: Sequence[float], std: Sequence[float],
         eval_split: str = "test") -> Dataset:
    """Load dataset ``name`` from a data file, scaled to [0, 1] and normalised with (mean, std) per channel."""
    path = data_file(root, file)
    arrays = _load_npz(str(path))
    needed = [f"{name}_train_x", f"{name}_train_y", f"{name}_{eval_split}_x", f"{name}_{eval_split}_y",
              f"{name}_class_names"]
    absent = [k for k in needed if k not in arrays]
    if absent:
        datasets = sorted({k.rsplit("_", 2)[0] for k in arrays if k.endswith("_class_names")})
        raise DataError(f"{path} has no dataset {name!r} (missing {absent}); it holds {datasets}")

    def split(s: str) -> Split:
        x = torch.from_numpy(arrays[f"{name}_{s}_x"].astype(np.float32) / 255.0)
        if x.ndim == 3:  # grey: add the channel axis
            x = x[:, None]
        else:  # (N, H, W, C) -> (N, C, H, W)
            x = x.permute(0, 3, 1, 2).contiguous()
        m, sd = _stats(mean, x.shape[1]), _stats(std, x.shape[1])
        return Split((x - m) / sd, torch.from_numpy(arrays[f"{name}_{s}_y"].astype(np.int64)))

    names = [str(c) for c in arrays[f"{name}_class_names"]]
    return Dataset(name, split("train"), split(eval_split), names)


def _stats(values: Sequence[float], channels: int):
    """Per-channel statistics: one value stays a Python float (grey data: bitwise what it always was)."""
    v = [float(a) for a in values]
    if len(v) == 1:
        return v[0]
    if len(v) != channels:
        raise ValueError(f"{len(v)} normalisation values for {channels}-channel images")
    return torch.tensor(v).view(1, -1, 1, 1)
