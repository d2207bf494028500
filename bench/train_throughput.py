"""Training throughput, side by side in one run:

1. images/s of our source-training loop (``datatransfer.train.fit``: per-iteration LR schedule, grad scaler,
   autocast, resolution hook, loader protocol) against a plain PyTorch loop (randperm, index, forward, loss,
   backward, step) on the same model, data, batch size, optimizer and thread count. Expected ratio >= 0.9.
2. images/s of the FFCV loader (``BetonDataset``, as a sweep reads the mini betons) against torchvision's
   DataLoader over the same images (in-process over tensors, and with worker processes over uint8 arrays).

    python bench/train_throughput.py [--arch small_cnn|resnet18] [--batch-size 128] [--epochs 1] [--repeats 8]
                                     [--images N] [--threads N] [--betons DIR] [--skip-ffcv]

Data: the embedded mini source, the kept classes of row 0's mask (9,000 28x28 grey images). ``--arch resnet18``
trains torchvision's ResNet-18 on the same images replicated to 3 channels (slow on CPU). Runs come in back-to-back
pairs (alternating which goes first) and medians are reported, since a shared machine's speed drifts. The FFCV part needs
ffcv; ``--betons`` reuses mini betons written by ``python -m launch.prepare dataset=mini out=DIR``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from datatransfer import data
from datatransfer.config import compose
from datatransfer.data import memory
from datatransfer.masks import row_mask
from datatransfer.train import loop as train
from datatransfer.train.models import build
from datatransfer.train.precision import amp_here


def ours(model, split, recipe, rt, seed: int) -> float:
    """images/s of train.fit over the split (one call, recipe.epochs epochs)."""
    gen = torch.Generator().manual_seed(seed)
    loader = memory.TensorLoader(split, recipe.batch_size, gen)
    start = time.perf_counter()
    train.fit(model, loader, recipe, gen, rt)
    return len(loader) * recipe.batch_size * recipe.epochs / (time.perf_counter() - start)


def plain(model, split, recipe, seed: int) -> float:
    """images/s of the textbook loop, same optimizer and batches (no schedule, no scaler, no hooks)."""
    gen = torch.Generator().manual_seed(seed)
    opt = train.make_optimizer(model.parameters(), recipe)
    n, bs = len(split), recipe.batch_size
    steps = max(1, n // bs)
    model.train()
    start = time.perf_counter()
    for _ in range(recipe.epochs):
        order = torch.randperm(n, generator=gen)
        for step in range(steps):
            idx = order[step * bs:(step + 1) * bs]
            loss = F.cross_entropy(model(split.x[idx].contiguous(memory_format=torch.channels_last)), split.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return steps * bs * recipe.epochs / (time.perf_counter() - start)


def training_step(args) -> None:
    cfg = compose([f"model.arch={args.arch}", f"train.batch_size={args.batch_size}", f"train.epochs={args.epochs}",
                   "compute.device=cpu"])
    source = data.load_source(cfg)
    mask = row_mask(0, 0, source.num_classes, 0.5)
    split = source.train.select_classes(mask)
    if args.images:
        split = memory.Split(split.x[:args.images], split.y[:args.images])
    if args.arch == "resnet18":  # RGB model: replicate the grey channel
        split = memory.Split(split.x.expand(-1, 3, -1, -1).contiguous(), split.y)
    rt = train.make_runtime(cfg.compute.device, amp_here(cfg), torch.get_num_threads())
    print(f"training step: {args.arch}, {len(split)} images {tuple(split.x.shape[1:])}, batch {args.batch_size}, "
          f"{args.epochs} epochs per run, {args.repeats} runs each, torch threads {torch.get_num_threads()}, "
          f"device {rt.device}", flush=True)

    def fresh():
        torch.manual_seed(0)
        return build(cfg.model, source.num_classes, in_channels=split.x.shape[1])

    ours(fresh(), split, cfg.train, rt, 0)  # warm-up (allocator, oneDNN kernels)
    rates = {"datatransfer.train.fit": [], "plain PyTorch loop": []}
    for r in range(args.repeats):  # back-to-back pairs, alternating which goes first
        pair = [("datatransfer.train.fit", lambda: ours(fresh(), split, cfg.train, rt, r)),
                ("plain PyTorch loop", lambda: plain(fresh(), split, cfg.train, r))]
        for name, run in pair if r % 2 == 0 else pair[::-1]:
            rates[name].append(run())
    medians = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in rates.items():
        print(f"  {k:<28} {medians[k]:>10,.0f} images/s   (runs: {', '.join(f'{x:,.0f}' for x in v)})")
    ratios = [a / b for a, b in zip(rates["datatransfer.train.fit"], rates["plain PyTorch loop"])]
    print(f"  ratio ours / plain: median of pairs {statistics.median(ratios):.3f}, of medians "
          f"{medians['datatransfer.train.fit'] / medians['plain PyTorch loop']:.3f}\n", flush=True)


def loaders(args) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ffcv_loader import (  # the loader bench's dataset and timer
        MEAN,
        STD,
        Uint8Dataset,
        images_per_s,
    )
    from torch.utils.data import DataLoader, TensorDataset

    from datatransfer.data import ffcv_reader, prepare

    t = time.perf_counter()
    ffcv_reader.import_ffcv()
    print(f"loaders: ffcv import {time.perf_counter() - t:.1f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.betons) if args.betons else Path(tmp) / "mini"
        if not args.betons:
            t = time.perf_counter()
            prepare.write_mini(root, workers=torch.get_num_threads())
            print(f"loaders: wrote the mini betons in {time.perf_counter() - t:.1f} s", flush=True)
        betons = ffcv_reader.BetonDataset(root, "source", "val", [MEAN], [STD], workers=torch.get_num_threads())
        bs, results = args.batch_size, {}
        loader = betons.train_loader(batch_size=bs, seed=0)
        t = time.perf_counter()
        for _ in loader:  # first epoch: numba compiles the pipeline
            pass
        print(f"loaders: ffcv first epoch (compiling) {time.perf_counter() - t:.1f} s", flush=True)
        results["FFCV (BetonDataset.train_loader)"] = images_per_s(lambda: loader, args.loader_epochs)
        x_u8 = np.load(memory.EMBEDDED_DIR / "mini.npz")["source_train_x"]
        y = betons.labels("train")
        x = (torch.from_numpy(x_u8.astype(np.float32) / 255.0)[:, None] - MEAN) / STD
        dl = DataLoader(TensorDataset(x, torch.from_numpy(y)), batch_size=bs, shuffle=True, drop_last=True)
        results["DataLoader(TensorDataset), in-process"] = images_per_s(lambda: dl, args.loader_epochs)
        workers = torch.get_num_threads()
        dl = DataLoader(Uint8Dataset(x_u8, y), batch_size=bs, shuffle=True, drop_last=True, num_workers=workers,
                        persistent_workers=True)
        next(iter(dl))  # start the workers outside the timing
        results[f"DataLoader(uint8 Dataset, {workers} workers)"] = images_per_s(lambda: dl, args.loader_epochs)
        loader = betons = None  # release the betons before their folder goes
    base = results["FFCV (BetonDataset.train_loader)"][0]
    print(f"  {'loader (18,000 images 28x28, batch ' + str(bs) + ')':<44} {'images/s':>10} {'ffcv / this':>12}")
    for name, (rate, _) in results.items():
        print(f"  {name:<44} {rate:>10,.0f} {base / rate:>12.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="small_cnn", choices=["small_cnn", "resnet18"])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=1, help="epochs per timed training run")
    p.add_argument("--images", type=int, default=0, help="train on the first N kept images only (0: all 9,000)")
    p.add_argument("--repeats", type=int, default=8, help="timed (ours, plain) pairs")
    p.add_argument("--loader-epochs", type=int, default=3)
    p.add_argument("--betons", default="", help="folder of prepared mini betons (default: write them to a temp dir)")
    p.add_argument("--skip-ffcv", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, the CPUs)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    training_step(args)
    if not args.skip_ffcv:
        loaders(args)


if __name__ == "__main__":
    main()
