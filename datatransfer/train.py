"""Training: one source model on a mask's classes, then its transfer to a target (fixed-feature or full).

Reads top to bottom: the LR and resolution schedules, where to run, one generic minibatch loop, evaluation, source
training, the two transfer modes. The loop reads batches from a loader: anything that yields (images, labels) every
epoch and has ``set_epoch`` / ``set_resolution`` -- in-memory tensors (``data.TensorLoader``) or FFCV betons
(``ffcv_data.FFCVLoader``), as the dataset objects' ``train_loader`` / ``eval_loader`` give them.
On CUDA it runs channels-last with mixed precision (``train.amp``: fp16 autocast and a grad scaler); on CPU in
float32. Everything is seeded by the row's seed, so a row is reproducible on the same hardware and thread count
(FFCV's random crops and flips excepted).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from .checkpoint import RowCheckpoint
from .models import Net, build

log = logging.getLogger(__name__)  # DEBUG: one line per epoch (python -m launch ... hydra.verbose=datatransfer.train)


def lr_factor(schedule: str, t: float, epochs: float, peak_epoch: float, step_every: int = 5,
              step_gamma: float = 0.1) -> float:
    """Multiplier of the peak LR at training progress ``t`` (in epochs, 0..epochs)."""
    if schedule == "constant":
        return 1.0
    if schedule == "step":  # x step_gamma every step_every epochs (Food-101); t in (e, e + 1] is epoch e
        return step_gamma ** (max(math.ceil(t) - 1, 0) // step_every)
    peak = min(max(peak_epoch, 1e-8), epochs)
    if schedule == "cyclic":  # the paper's triangle: linear 0 -> 1 at peak, linear -> 0 at the end
        return float(np.interp(t, [0.0, peak, epochs], [0.0, 1.0, 0.0]))
    if schedule == "onecycle":  # the same shape with cosine ramps
        if t <= peak:
            return 0.5 * (1 - math.cos(math.pi * t / peak))
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (t - peak) / max(epochs - peak, 1e-8))))
    raise ValueError(f"unknown LR schedule {schedule!r} (constant | cyclic | onecycle | step)")


def resolution_at(recipe, epoch: int) -> int:
    """Progressive resizing as in ffcv-imagenet: min_res up to epoch start_ramp, then linear to max_res at
    end_ramp, rounded to a multiple of res_step. Paper recipe: 160 px for epochs 0-11, 192 for 12-15."""
    if epoch <= recipe.start_ramp:
        return int(recipe.min_res)
    if epoch >= recipe.end_ramp:
        return int(recipe.max_res)
    r = np.interp(epoch, [recipe.start_ramp, recipe.end_ramp], [recipe.min_res, recipe.max_res])
    return int(round(r / recipe.res_step)) * int(recipe.res_step)


@dataclass
class Runtime:
    device: torch.device
    amp: bool  # fp16 autocast + grad scaler


def runtime(cfg) -> Runtime:
    """compute.device (auto: cuda if there is one) and mixed precision, which only CUDA uses."""
    name = str(cfg.compute.device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes within an epoch: let cuDNN pick the fastest kernels
    return Runtime(device, bool(cfg.train.amp) and device.type == "cuda")


def make_optimizer(params, recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r} (sgd | adam)")


def _batchnorms(model: nn.Module) -> list:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def fit(
    model: nn.Module,
    loader,
    recipe,
    generator: torch.Generator,
    rt: Runtime,
    label_smoothing: float = 0.0,
    checkpoint: Optional[RowCheckpoint] = None,
    params=None,
    freeze_bn: bool = False,
    resolution: Optional[Callable[[int], int]] = None,
    tag: str = "",
) -> None:
    """Minibatch training of ``params`` (default: every parameter of ``model``) on ``loader``'s batches with
    ``recipe``'s optimizer and per-iteration LR schedule.

    ``freeze_bn`` keeps batch-norm layers in eval mode; ``resolution(epoch)`` sets the loader's image side each
    epoch (progressive resizing). With a checkpoint, training resumes after its last saved epoch (the loader's
    order continues from that epoch too) and saves after every epoch. ``tag`` names the run in debug logs.
    """
    opt = make_optimizer(model.parameters() if params is None else params, recipe)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp)  # disabled: a pass-through
    steps_per_epoch = len(loader)  # the last partial batch is dropped: a batch of 1 breaks batch-norm
    if steps_per_epoch == 0:
        raise ValueError(f"no full batch of {recipe.batch_size} examples to train on: lower the batch size")
    # the recipe read once: OmegaConf attribute access is slow enough to notice in a per-step loop
    peak_lr, schedule, epochs, peak_epoch = recipe.lr, recipe.schedule, recipe.epochs, recipe.peak_epoch
    step_every, step_gamma = recipe.get("step_every", 5), recipe.get("step_gamma", 0.1)

    def lr_at(t: float) -> float:  # t: training progress in epochs
        return peak_lr * lr_factor(schedule, t, epochs, peak_epoch, step_every, step_gamma)

    first_epoch = checkpoint.restore(model, opt, generator) if checkpoint is not None else 0
    loader.set_epoch(first_epoch)
    model.train()
    for m in _batchnorms(model) if freeze_bn else []:
        m.eval()
    for epoch in range(first_epoch, epochs):
        if resolution is not None and loader.resolution is not None:  # RGB FFCV loaders; others keep their size
            loader.set_resolution(resolution(epoch))
        log.debug("%s epoch %d/%d: %d steps, resolution %s, %s lr %.4g..%.4g, %s", tag, epoch + 1, epochs,
                  steps_per_epoch, loader.resolution or "stored", schedule, lr_at(epoch + 1 / steps_per_epoch),
                  lr_at(epoch + 1), "batch-norm frozen" if freeze_bn else "batch-norm training")
        for step, (x, y) in enumerate(loader):
            for group in opt.param_groups:
                group["lr"] = lr_at(epoch + (step + 1) / steps_per_epoch)
            x, y = x.to(rt.device, non_blocking=True), y.to(rt.device, non_blocking=True)
            with torch.autocast(rt.device.type, dtype=torch.float16, enabled=rt.amp):
                loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        if checkpoint is not None:
            checkpoint.save(epoch + 1, model, opt, generator)


@torch.no_grad()
def evaluate(module: nn.Module, loader, rt: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    """(outputs as float32 on the CPU, labels) of ``module`` in eval mode over ``loader``'s batches, in order."""
    module.eval()
    outputs, labels = [], []
    for x, y in loader:
        with torch.autocast(rt.device.type, dtype=torch.float16, enabled=rt.amp):
            outputs.append(module(x.to(rt.device, non_blocking=True)).float().cpu())
        labels.append(y.cpu().clone())  # FFCV reuses its label buffers for later batches
    return torch.cat(outputs), torch.cat(labels)


def train_source(
    cfg, source, mask: np.ndarray, seed: int, checkpoint: Optional[RowCheckpoint] = None
) -> tuple[Net, dict]:
    """Train a fresh model on the source classes in ``mask``; the head keeps all source labels.

    ``source``: ``data.Dataset`` or ``ffcv_data.BetonDataset``. Source accuracy is measured on the validation
    images of the kept classes (centre crop at ``train.eval_res``).
    """
    rt, tr = runtime(cfg), cfg.train
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build(cfg.model, source.num_classes, in_channels=source.channels).to(rt.device)
    start = time.perf_counter()
    loader = source.train_loader(batch_size=tr.batch_size, generator=gen, seed=seed, keep=mask,
                                 decoder="random_resized_crop", resolution=resolution_at(tr, 0))
    fit(model, loader, tr, gen, rt, tr.label_smoothing, checkpoint, resolution=lambda e: resolution_at(tr, e),
        tag="source")
    seconds = time.perf_counter() - start
    logits, y = evaluate(model, source.eval_loader("test", keep=mask, decoder="center_crop",
                                                   resolution=tr.eval_res), rt)
    acc = float((logits.argmax(1) == y).float().mean()) if len(y) else float("nan")
    return model, {"source_accuracy": acc, "train_seconds": seconds}


def transfer_recipe(cfg, mode: str, key: str):
    """transfer.<mode> with target ``key``'s own epochs / LR / schedule where it sets them."""
    recipe, t = cfg.transfer[mode], cfg.targets[key]
    own = {k: t[k] for k in ("epochs", "lr", "schedule") if t[k] is not None}
    if not own:
        return recipe
    r = OmegaConf.to_container(recipe)
    r.update(own)
    return OmegaConf.create(r)


def linear_probe(cfg, model: Net, loader, num_classes: int, rt: Runtime) -> nn.Linear:
    """A linear head on the frozen backbone: multinomial logistic regression by L-BFGS on cached features of
    ``loader``'s examples (the target's train split). On the CPU.

    Deterministic given the backbone (zero-initialised head, full-batch solver).
    """
    fx = cfg.transfer.fixed
    feats, y = evaluate(model.backbone, loader, rt)
    # Standardise for the solver's sake, then fold the affine map into the head, so it applies to raw features.
    mu, sd = feats.mean(0), feats.std(0) + 1e-6
    z = (feats - mu) / sd
    head = nn.Linear(z.shape[1], num_classes)
    nn.init.zeros_(head.weight), nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=fx.iterations, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(z), y) + fx.weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        head.weight /= sd
        head.bias -= head.weight @ mu
    return head


def transfer_fixed(cfg, model: Net, target, seed: int, key: str) -> torch.Tensor:
    """Fixed-feature transfer: the source backbone's weights frozen, a new linear head. Returns test logits.

    solver=lbfgs: the head is a linear probe on features of the eval-mode backbone. solver=sgd (the paper): the
    head, randomly initialised, trains by SGD through the frozen backbone on augmented batches; with
    ``transfer.fixed.batchnorm=train`` (the release) the backbone's batch-norm layers stay in train mode, so their
    running statistics adapt to the target while no weight changes; ``frozen`` keeps them in eval mode.
    """
    rt, t = runtime(cfg), cfg.targets[key]
    test = target.eval_loader("test", decoder=t.eval_decoder, resolution=t.resolution)
    if cfg.transfer.fixed.solver == "lbfgs":
        probe = linear_probe(cfg, model, target.eval_loader("train", decoder=t.eval_decoder,
                                                            resolution=t.resolution), target.num_classes, rt)
        features, _ = evaluate(model.backbone, test, rt)
        with torch.no_grad():
            return probe(features)
    recipe = transfer_recipe(cfg, "fixed", key)
    torch.manual_seed(seed)
    net = copy.deepcopy(model)  # batch-norm statistics may change: keep the source model as it is
    net.backbone.requires_grad_(False)
    net.head = nn.Linear(net.num_features, target.num_classes).to(rt.device)
    gen = torch.Generator().manual_seed(seed)
    loader = target.train_loader(batch_size=recipe.batch_size, generator=gen, seed=seed, decoder=t.train_decoder,
                                 resolution=t.resolution)
    fit(net, loader, recipe, gen, rt, params=net.head.parameters(),
        freeze_bn=cfg.transfer.fixed.batchnorm == "frozen", tag=f"fixed {key}")
    if log.isEnabledFor(logging.DEBUG):
        before, after = model.backbone.state_dict(), net.backbone.state_dict()
        same = [torch.equal(before[k], after[k]) for k in before]
        stats = [k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in before]
        log.debug("fixed %s: backbone weights unchanged: %s; batch-norm running statistics changed: %s", key,
                  all(s for s, st in zip(same, stats) if not st), not all(s for s, st in zip(same, stats) if st))
    return evaluate(net, test, rt)[0]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader, rt: Runtime) -> None:
    """Replace batch-norm running statistics by the exact mean/var over ``loader``'s images (as training mode
    will see them)."""
    norms = _batchnorms(model)
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    model.train()
    for x, _ in loader:
        with torch.autocast(rt.device.type, dtype=torch.float16, enabled=rt.amp):
            model(x.to(rt.device, non_blocking=True))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum


def transfer_full(cfg, model: Net, target, seed: int, key: str) -> torch.Tensor:
    """Every weight trains from the source model. Returns test logits.

    The new head starts random (the paper's recipe) or, with ``transfer.full.head_init=linear_probe``, from a
    linear probe (LP-FT), which needs far fewer epochs. The probe is fitted after re-estimating batch-norm
    statistics on the target, so that the head matches the features training mode will produce.
    """
    rt, t = runtime(cfg), cfg.targets[key]
    recipe = transfer_recipe(cfg, "full", key)
    torch.manual_seed(seed)
    net = copy.deepcopy(model)
    net.head = nn.Linear(net.num_features, target.num_classes).to(rt.device)
    if recipe.head_init == "linear_probe":
        view = dict(decoder=t.eval_decoder, resolution=t.resolution)
        recalibrate_batchnorm(net, target.eval_loader("train", batch_size=256, **view), rt)
        net.head = linear_probe(cfg, net, target.eval_loader("train", **view), target.num_classes, rt).to(rt.device)
    gen = torch.Generator().manual_seed(seed)
    loader = target.train_loader(batch_size=recipe.batch_size, generator=gen, seed=seed, decoder=t.train_decoder,
                                 resolution=t.resolution)
    fit(net, loader, recipe, gen, rt, tag=f"full {key}")
    return evaluate(net, target.eval_loader("test", decoder=t.eval_decoder, resolution=t.resolution), rt)[0]
