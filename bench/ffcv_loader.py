"""Images/s of the FFCV loader vs PyTorch loaders over the mini source train arrays, side by side.

    python bench/ffcv_loader.py [--epochs 3] [--batch-size 256] [--workers N]

(with datatransfer importable: installed, as in the project venv, or PYTHONPATH=.).

Needs ffcv (scripts/install_ffcv.sh VENV_DIR). Uses datatransfer/data/mini.npz (source_train_x/y),
or random arrays of the same shape when that file is absent. Every loader yields the same thing: shuffled
float32 (B, 1, 28, 28) batches normalised as (x / 255 - mean) / std, and int64 labels. Compared:

* ffcv: ``make_loader(grey=True)`` over a raw beton (written to a temp dir first; timed apart);
* tensor-index: the in-memory path datatransfer.train uses (normalised tensors indexed by randperm);
* DataLoader(TensorDataset): torch's DataLoader over those normalised tensors, in-process;
* DataLoader(uint8 Dataset): a per-item Dataset normalising uint8 arrays, with ``--workers`` processes.

The first FFCV epoch (numba compiling the pipeline) is timed and reported apart.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from datatransfer.data import ffcv_reader, ffcv_writer

MINI = Path(__file__).resolve().parents[1] / "datatransfer" / "data" / "mini.npz"
MEAN, STD = 0.3, 0.35  # any fixed pair: every loader applies the same one


def source_arrays() -> Tuple[np.ndarray, np.ndarray, str]:
    if MINI.is_file():
        with np.load(MINI) as z:
            return z["source_train_x"], z["source_train_y"], str(MINI)
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (18000, 28, 28), dtype=np.uint8), rng.integers(0, 30, 18000),
            "random arrays (mini.npz not found)")


class Uint8Dataset(Dataset):
    """Normalises one uint8 image per __getitem__, as a typical file/array-backed Dataset does."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        image = torch.from_numpy(self.x[i].astype(np.float32) / 255.0)[None]
        return (image - MEAN) / STD, int(self.y[i])


def tensor_index_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Iterable:
    order = torch.randperm(len(y))
    for i in range(0, len(y), batch_size):
        idx = order[i:i + batch_size]
        yield x[idx], y[idx]


def images_per_s(make_epoch: Callable[[], Iterable], epochs: int) -> Tuple[float, int]:
    """Mean images/s over ``epochs`` full passes (each batch is touched so lazy work is done)."""
    seen, start = 0, time.perf_counter()
    for _ in range(epochs):
        for xb, yb in make_epoch():
            seen += len(yb)
            xb.sum()  # touch the data
    return seen / (time.perf_counter() - start), seen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=torch.get_num_threads())
    args = p.parse_args()

    x_u8, y, origin = source_arrays()
    print(f"data: {origin}: {len(y)} images {x_u8.shape[1:]}; batch {args.batch_size}, {args.epochs} epochs, "
          f"{args.workers} workers, torch threads {torch.get_num_threads()}")
    x = (torch.from_numpy(x_u8.astype(np.float32) / 255.0)[:, None] - MEAN) / STD
    y_t = torch.from_numpy(y.astype(np.int64))
    bs = args.batch_size
    results = {}

    t = time.perf_counter()
    ffcv_reader.import_ffcv()
    print(f"ffcv: import {time.perf_counter() - t:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        beton = Path(tmp) / "source_train.beton"
        t = time.perf_counter()
        ffcv_writer.write_beton_arrays(beton, x_u8, y, num_workers=args.workers)
        print(f"ffcv: wrote beton in {time.perf_counter() - t:.1f} s ({beton.stat().st_size / 2**20:.0f} MiB)")
        loader = ffcv_reader.make_loader(beton, batch_size=bs, train=True, drop_last=False, grey=True,
                                         mean=MEAN, std=STD, num_workers=args.workers)
        t = time.perf_counter()
        for _ in loader:  # first epoch: numba compiles the pipeline
            pass
        print(f"ffcv: first epoch (compiling) {time.perf_counter() - t:.1f} s")
        results["ffcv"] = images_per_s(lambda: loader, args.epochs)
        loader = None  # release the beton before its folder goes

    results["tensor-index"] = images_per_s(lambda: tensor_index_batches(x, y_t, bs), args.epochs)
    dl = DataLoader(TensorDataset(x, y_t), batch_size=bs, shuffle=True)
    results["DataLoader(TensorDataset)"] = images_per_s(lambda: dl, args.epochs)
    dl = DataLoader(Uint8Dataset(x_u8, y), batch_size=bs, shuffle=True, num_workers=args.workers,
                    persistent_workers=args.workers > 0)
    next(iter(dl))  # start the worker processes outside the timing
    results[f"DataLoader(uint8 Dataset, {args.workers} workers)"] = images_per_s(lambda: dl, args.epochs)

    ffcv_rate = results["ffcv"][0]
    print(f"\n{'loader':<40} {'images/s':>12} {'ffcv / this':>12}")
    for name, (rate, _) in results.items():
        print(f"{name:<40} {rate:>12,.0f} {ffcv_rate / rate:>12.2f}")


if __name__ == "__main__":
    main()
