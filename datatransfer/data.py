"""In-memory datasets: the embedded ``mini`` file (or any .npz with the same keys) as normalised tensors.

Layout of a data file (see docs/data.md): for a dataset ``d`` and split ``s``, ``{d}_{s}_x`` uint8 (N, H, W) and
``{d}_{s}_y`` int64 (N,), plus ``{d}_class_names``. The source uses splits ``train``/``val``, targets
``train``/``test``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import List

import numpy as np
import torch

EMBEDDED_DIR = Path(__file__).parent / "data"


class DataError(FileNotFoundError):
    """A data file or a dataset inside it that is not there; the message names it."""


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


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split  # "val" for the source
    class_names: List[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def data_file(root: str, file: str) -> Path:
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


def load(root: str, file: str, name: str, mean: float, std: float, eval_split: str = "test") -> Dataset:
    """Load dataset ``name`` from a data file, scaled to [0, 1] and normalised with (mean, std)."""
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
        return Split((x - mean) / std, torch.from_numpy(arrays[f"{name}_{s}_y"].astype(np.int64)))

    names = [str(c) for c in arrays[f"{name}_class_names"]]
    return Dataset(name, split("train"), split(eval_split), names)


def load_source(cfg) -> Dataset:
    return load(cfg.source.root, cfg.source.file, cfg.source.name, cfg.source.mean, cfg.source.std, "val")


def load_target(cfg, key: str) -> Dataset:
    t = cfg.targets[key]
    # Targets go through the source model, so they get the source's input normalisation.
    return load(t.root, t.file, t.name, cfg.source.mean, cfg.source.std, "test")
