"""GPU throughput of the paper-scale recipe, and the hours it projects for one half-ImageNet row and for the sweep.

    python bench/gpu_throughput.py                       # on a machine with a CUDA GPU and ffcv (a few minutes)
    python bench/gpu_throughput.py --device cpu --images 128 --batch-size 16 --image-size 64x48 \\
        --resolutions 32,48 --transfer-res 48 --timed-epochs 1            # a CPU smoke test of the script itself

Writes a synthetic ImageNet-shaped beton (1000 classes, images stored as ``launch.prepare`` stores ImageNet: long
side <= 400 px, 10% JPEG q90, the rest raw; smooth random content so JPEG costs what photos cost), then times our
own code path, ``datatransfer.train.loop.fit`` on ``BetonDataset`` loaders, ResNet-18, channels-last, AMP (fp16 autocast
+ grad scaler, fp16 inputs), batch 1024 (the recipe's):

* source training at each resolution of the progressive schedule (160 and 192 px; random resized crop + flip);
* full-network transfer steps and fixed-feature steps (frozen backbone, batch-norm in train mode) at 224 px;
* evaluation (no gradients) at 224 px.

Each measurement runs one untimed epoch first (numba compiles the loader, cuDNN picks kernels), then
``--timed-epochs`` timed ones. From the rates it projects one row of experiment=imagenet_transfer (16 source epochs
over half of ImageNet: 12 at 160 px, 4 at 192; the 11 targets' transfers in both modes with their epochs and sizes)
and the 7,540-row sweep. With ``$OUT`` set, also writes ``$OUT/gpu_throughput.json``.

``--batched 1,2,4,8,16`` measures the batched row runner instead (compute.models_per_process=K): models per
GPU-hour of whole mini rows (K small CNNs trained at once as grouped convolutions, then each transferred), with AMP
(``train.amp=true``) and channels-last on CUDA, each K on the same rows, repeated ``--repeats`` times with the K's
order rotating; the ratio to K=1 (today's runner) picks the default K for CUDA (docs/performance.md). On a CPU it
runs as a smoke test of itself:

    python bench/gpu_throughput.py --batched 1,2,4 --device cpu --repeats 1 --override train.epochs=1
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Dict

import numpy as np
import torch

HALF_IMAGENET = 1_281_167 // 2  # train images of 500 classes, on average
IMAGENET_VAL_HALF = 25_000
# target: (train images, test images, transfer epochs) -- docs/paper-scale.md
TARGETS = {
    "aircraft": (6_667, 3_333, 24), "birdsnap": (32_677, 8_171, 15), "caltech101": (3_030, 5_647, 24),
    "caltech256": (15_420, 15_187, 14), "cifar10": (50_000, 10_000, 15), "cifar100": (50_000, 10_000, 15),
    "flowers": (2_040, 6_149, 50), "food": (75_750, 25_250, 15), "pets": (3_680, 3_669, 24),
    "cars": (8_144, 8_041, 50), "sun397": (19_850, 19_850, 24),
}


def write_synthetic(folder: Path, n: int, size: tuple, classes: int, workers: int) -> None:
    """``folder/{train,val}.beton`` + meta.json: n smooth random RGB images of size (w, h), random labels."""
    from datatransfer.data import ffcv_reader, ffcv_writer

    ffcv_reader.import_ffcv()
    from ffcv.fields import RGBImageField

    w, h = size
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (n, max(1, h // 20), max(1, w // 20), 3), dtype=np.uint8)
    images = np.repeat(np.repeat(coarse, 20, axis=1), 20, axis=2)[:, :h, :w]
    images = np.clip(images.astype(np.int16) + rng.integers(-12, 13, images.shape, dtype=np.int16), 0, 255)
    images = np.ascontiguousarray(images.astype(np.uint8))
    labels = rng.integers(0, classes, n)
    folder.mkdir(parents=True, exist_ok=True)
    field = RGBImageField(write_mode="proportion", max_resolution=400, compress_probability=0.10, jpeg_quality=90)
    for split, sl in (("train", slice(None)), ("val", slice(0, max(1, n // 8)))):
        ffcv_writer._write(folder / f"{split}.beton", ffcv_writer._SeededSamples(
            ffcv_writer._ImageLabelArrays(images[sl], labels[sl]), 0), field, workers, chunksize=100)
    (folder / "meta.json").write_text(json.dumps({"classes": [f"c{i}" for i in range(classes)], "grey": False}))


def timed(run, epochs: int, images: int, device) -> float:
    """images/s of ``run(epochs)`` after one untimed epoch."""
    run(1)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    run(epochs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images * epochs / (time.perf_counter() - start)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--images", type=int, default=20_480, help="synthetic train images (20 batches of 1024)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--image-size", default="400x300", help="stored WxH (ImageNet's median is about 500x375)")
    p.add_argument("--resolutions", default="160,192", help="source training sides to time")
    p.add_argument("--transfer-res", type=int, default=224)
    p.add_argument("--timed-epochs", type=int, default=2)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="FFCV decoding threads")
    p.add_argument("--data", default="", help="folder to write the synthetic beton in (default: a temp dir)")
    p.add_argument("--batched", default="", help="K list, e.g. 1,2,4,8,16: the batched runner on mini rows instead")
    p.add_argument("--repeats", type=int, default=3, help="--batched: repeats of each K")
    p.add_argument("--override", nargs="*", default=[], help="--batched: mini config overrides")
    return p.parse_args()


def batched(args: argparse.Namespace) -> Dict[str, dict]:
    """Models per device-hour of whole mini rows at each K of ``--batched`` (see the module doc)."""
    import statistics

    from bench.models_per_hour import run_once
    from datatransfer.config import compose
    from datatransfer.masks import row_mask
    from datatransfer.rows.trained import TrainedRows
    from datatransfer.train.loop import make_runtime
    from datatransfer.train.precision import amp_here

    ks = [int(k) for k in args.batched.split(",")]
    amp = ["train.amp=true"] if str(args.device).startswith("cuda") else []
    cfg = compose([f"compute.device={args.device}", *amp, *args.override])
    rt = make_runtime(cfg.compute.device, amp_here(cfg), 1 if rt_is_cpu(args) else args.workers)
    runner = TrainedRows(cfg, rt, {t: i for i, t in enumerate(cfg.targets)})
    rows = list(range(max(ks)))
    masks = {r: row_mask(int(cfg.sweep.seed), r, runner.source.num_classes, float(cfg.sweep.alpha)) for r in rows}
    name = torch.cuda.get_device_name(rt.device) if rt.device.type == "cuda" else "cpu"
    print(f"batched runner, mini rows, device {name}, AMP {rt.amp}, K = {ks}, {len(rows)} rows per K, "
          f"{args.repeats} repeats", flush=True)
    run_once(runner, masks, rows[:1], 1)  # warm-up: cuDNN autotuning, allocations
    walls: Dict[int, list] = {k: [] for k in ks}
    for rep in range(args.repeats):
        for k in ks[rep % len(ks):] + ks[:rep % len(ks)]:
            if rt.device.type == "cuda":
                torch.cuda.synchronize()
            walls[k].append(run_once(runner, masks, rows, k)[1])
    out = {}
    base = statistics.median(walls[ks[0]])
    for k in ks:
        wall = statistics.median(walls[k])
        out[str(k)] = {"seconds_per_row": wall / len(rows), "models_per_hour": len(rows) * 3600 / wall,
                       "ratio_to_first": base / wall}
        print(f"  K={k:>2}: {len(rows) * 3600 / wall:8.0f} models/{'GPU' if rt.device.type == 'cuda' else 'CPU'}-hour"
              f" ({wall / len(rows):.2f} s/row wall), x{base / wall:.2f} vs K={ks[0]}", flush=True)
    return out


def rt_is_cpu(args: argparse.Namespace) -> bool:
    return not str(args.device).startswith("cuda")


def setup(args: argparse.Namespace, root: Path):
    """Write the synthetic beton under ``root``; (config, runtime, source dataset, device name)."""
    from datatransfer import data
    from datatransfer.config import compose
    from datatransfer.train.loop import make_runtime
    from datatransfer.train.precision import amp_here

    t = time.perf_counter()
    w, h = (int(v) for v in args.image_size.split("x"))
    write_synthetic(root / "synthetic", args.images, (w, h), 1000, args.workers)
    print(f"synthetic beton: {args.images} images {w}x{h}, 1000 classes, written in {time.perf_counter() - t:.0f} s "
          f"({(root / 'synthetic' / 'train.beton').stat().st_size / 2**30:.2f} GiB)")
    cfg = compose(["experiment=imagenet_transfer", f"source.root={root}", "source.name=synthetic",
                   f"compute.device={args.device}", f"compute.loader_workers={args.workers}",
                   f"train.batch_size={args.batch_size}", f"transfer.fixed.batch_size={args.batch_size}",
                   f"transfer.full.batch_size={args.batch_size}", "targets=[pets]"])
    rt = make_runtime(cfg.compute.device, amp_here(cfg), args.workers)
    gpu = torch.cuda.get_device_name(rt.device) if rt.device.type == "cuda" else "cpu"
    print(f"device {gpu}, AMP {rt.amp}, channels-last, batch {args.batch_size}, torch {torch.__version__}, "
          f"FFCV workers {args.workers}", flush=True)
    return cfg, rt, data.open_source(cfg, rt.device), gpu


def measure(args: argparse.Namespace, cfg, rt, source) -> Dict[str, float]:
    """images/s of source training per resolution, of both transfer modes and of evaluation."""
    from omegaconf import OmegaConf

    from datatransfer.train.loop import evaluate, fit
    from datatransfer.train.models import build

    n_train, r, rates = args.images // args.batch_size * args.batch_size, args.transfer_res, {}

    def model():
        torch.manual_seed(0)
        return build(cfg.model, 1000, in_channels=3).to(rt.device)

    def run_fit(net, decoder, res, params=None, freeze_bn=False):
        def run(epochs):
            recipe = OmegaConf.create(dict(OmegaConf.to_container(cfg.train), epochs=epochs))
            loader = source.train_loader(batch_size=args.batch_size, seed=0, decoder=decoder, resolution=res)
            fit(net, loader, recipe, torch.Generator().manual_seed(0), rt, params=params, freeze_bn=freeze_bn)
        return run

    def note(key: str, what: str) -> None:
        print(f"  {what}: {rates[key]:,.0f} images/s", flush=True)

    for res in (int(v) for v in args.resolutions.split(",")):
        rates[f"source {res}px"] = timed(run_fit(model(), "random_resized_crop", res), args.timed_epochs, n_train,
                                         rt.device)
        note(f"source {res}px", f"source training at {res} px")
    rates[f"full {r}px"] = timed(run_fit(model(), "center_crop", r), args.timed_epochs, n_train, rt.device)
    note(f"full {r}px", f"full-network transfer at {r} px")
    net = model()
    net.backbone.requires_grad_(False)
    rates[f"fixed {r}px"] = timed(run_fit(net, "center_crop", r, params=list(net.head.parameters())),
                                  args.timed_epochs, n_train, rt.device)
    note(f"fixed {r}px", f"fixed-feature transfer at {r} px (batch-norm train mode)")
    net = model()
    rates[f"eval {r}px"] = timed(
        lambda epochs: [evaluate(net, source.eval_loader("train", batch_size=args.batch_size, resolution=r), rt)
                        for _ in range(epochs)], args.timed_epochs, args.images, rt.device)
    note(f"eval {r}px", f"evaluation at {r} px")
    return rates


def project(args: argparse.Namespace, cfg, rates: Dict[str, float], gpu: str) -> Dict[str, float]:
    """Hours of one row of experiment=imagenet_transfer and of the sweep, from the rates; printed and returned."""
    from datatransfer.train.schedules import resolution_at

    r = args.transfer_res
    per_epoch = {e: resolution_at(cfg.train, e) for e in range(cfg.train.epochs)}
    if all(f"source {v}px" in rates for v in per_epoch.values()):
        source_h = sum(HALF_IMAGENET / rates[f"source {v}px"] for v in per_epoch.values()) / 3600
        source_h += IMAGENET_VAL_HALF / rates[f"eval {r}px"] / 3600
    else:
        source_h = float("nan")  # timed at other resolutions than the recipe's (a smoke test)
    seen = sum(n * ep for n, _, ep in TARGETS.values())  # training images per mode, all targets
    tests = sum(nt for _, nt, _ in TARGETS.values())
    transfer_h = (seen / rates[f"full {r}px"] + seen / rates[f"fixed {r}px"] + 2 * tests / rates[f"eval {r}px"]) / 3600
    row_h = source_h + transfer_h
    res = [int(x) for x in args.resolutions.split(",")]
    print(f"\nprojected, one row of experiment=imagenet_transfer on this device ({gpu}):")
    print(f"  source model (16 epochs over {HALF_IMAGENET:,} images, {res} px + eval): {source_h * 60:.1f} min")
    print(f"  transfers (11 targets x fixed + full, {seen:,} training images per mode): {transfer_h * 60:.1f} min")
    print(f"  row: {row_h:.2f} h; 7,540 rows: {7540 * row_h:,.0f} GPU-hours "
          f"(source models alone: {7540 * source_h:,.0f})")
    return {"source_hours_per_row": source_h, "transfer_hours_per_row": transfer_h, "row_hours": row_h,
            "sweep_gpu_hours": 7540 * row_h}


def main() -> None:
    args = parse_args()
    if args.batched:
        torch.set_num_threads(1 if rt_is_cpu(args) else args.workers)
        result = batched(args)
        if os.environ.get("OUT"):
            Path(os.environ["OUT"], "gpu_throughput_batched.json").write_text(json.dumps(result, indent=1))
        return
    torch.set_num_threads(args.workers)
    with tempfile.TemporaryDirectory(dir=args.data or None) as tmp:
        cfg, rt, source, gpu = setup(args, Path(tmp))
        rates = measure(args, cfg, rt, source)
    hours = project(args, cfg, rates, gpu)
    out = os.environ.get("OUT")
    if out:
        Path(out, "gpu_throughput.json").write_text(json.dumps({
            "device": gpu, "batch_size": args.batch_size, "images": args.images, "rates": rates, **hours}, indent=1))


if __name__ == "__main__":
    main()
