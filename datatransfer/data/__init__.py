"""Datasets: the one entry point (``open_source`` / ``open_target``) picks the reader ``source.loader`` asks for.

Every reader offers the same reading methods (the Dataset protocol below): ``memory.Dataset`` (tensors in RAM, the
embedded mini file) and ``ffcv_reader.BetonDataset`` (``.beton`` files written by ``python -m launch.prepare``).
Writers (``ffcv_writer``) and the prepare app's library (``prepare``) sit apart from the readers.
"""

from __future__ import annotations

from typing import List, Optional, Protocol, Tuple

import numpy as np
import torch

from datatransfer.data.memory import Dataset, load


class DatasetReader(Protocol):
    """What training reads from a dataset, whatever stores it."""

    name: str
    class_names: List[str]

    @property
    def num_classes(self) -> int: ...

    @property
    def channels(self) -> int: ...

    def labels(self, split: str) -> np.ndarray: ...

    def train_loader(self, *, batch_size: int, generator: torch.Generator, seed: int = 0,
                     keep: Optional[np.ndarray] = None, decoder: str = "", resolution: int = 0,
                     examples: Optional[np.ndarray] = None): ...

    def eval_loader(self, split: str, *, batch_size: int = 1024, keep: Optional[np.ndarray] = None,
                    decoder: str = "", resolution: int = 0): ...


def normalization(cfg, key: Optional[str] = None) -> Tuple[List[float], List[float]]:
    """(mean, std) of the source, or of target ``key``: the source's statistics unless
    transfer.normalization=target (the release's per-target choice)."""
    if key is not None and cfg.transfer.normalization == "target":
        t = cfg.targets[key]
        return list(t.mean), list(t.std)
    return list(cfg.source.mean), list(cfg.source.std)


def load_source(cfg) -> Dataset:
    mean, std = normalization(cfg)
    return load(cfg.source.root, cfg.source.file, cfg.source.name, mean, std, "val")


def load_target(cfg, key: str) -> Dataset:
    t = cfg.targets[key]
    mean, std = normalization(cfg, key)  # by default the source's: targets go through the source model
    return load(t.root, t.file, t.name, mean, std, "test")


def open_source(cfg, device: str = "cpu"):
    """The source dataset as ``source.loader`` asks: in memory (Dataset) or FFCV betons (BetonDataset)."""
    if cfg.source.loader != "ffcv":
        return load_source(cfg)
    from datatransfer.data.ffcv_reader import BetonDataset

    mean, std = normalization(cfg)
    return BetonDataset(cfg.source.root, cfg.source.name, "val", mean, std, device=device, **_ffcv_options(cfg))


def open_target(cfg, key: str, device: str = "cpu"):
    """Target ``key`` as ``source.loader`` asks. With ffcv, a target without a root of its own uses source.root."""
    if cfg.source.loader != "ffcv":
        return load_target(cfg, key)
    from datatransfer.data.ffcv_reader import BetonDataset

    t = cfg.targets[key]
    mean, std = normalization(cfg, key)
    return BetonDataset(t.root or cfg.source.root, t.name, "test", mean, std, device=device, **_ffcv_options(cfg))


def _ffcv_options(cfg) -> dict:
    c = cfg.compute
    return {"workers": int(c.loader_workers) or torch.get_num_threads(), "os_cache": bool(c.os_cache),
            "fp16": bool(cfg.train.amp)}
