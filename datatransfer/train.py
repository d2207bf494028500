"""Training: one source model on a mask's classes, then its transfer to a target (fixed-feature or full).

Reads top to bottom: the LR schedule, one generic minibatch loop, source training, the two transfer modes.
Everything is seeded by the row's seed, so a row is reproducible on the same hardware and thread count.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from .checkpoint import RowCheckpoint
from .data import Dataset, Split
from .models import Net, build


def lr_factor(schedule: str, t: float, epochs: float, peak_epoch: float) -> float:
    """Multiplier of the peak LR at training progress ``t`` (in epochs, 0..epochs)."""
    if schedule == "constant":
        return 1.0
    peak = min(max(peak_epoch, 1e-8), epochs)
    if schedule == "cyclic":  # the paper's triangle: linear 0 -> 1 at peak, linear -> 0 at the end
        return float(np.interp(t, [0.0, peak, epochs], [0.0, 1.0, 0.0]))
    if schedule == "onecycle":  # the same shape with cosine ramps
        if t <= peak:
            return 0.5 * (1 - math.cos(math.pi * t / peak))
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (t - peak) / max(epochs - peak, 1e-8))))
    raise ValueError(f"unknown LR schedule {schedule!r} (constant | cyclic | onecycle)")


def make_optimizer(params, recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r} (sgd | adam)")


def fit(
    model: nn.Module,
    data: Split,
    recipe,
    generator: torch.Generator,
    label_smoothing: float = 0.0,
    checkpoint: Optional[RowCheckpoint] = None,
) -> None:
    """Minibatch training of every parameter of ``model`` on ``data`` with ``recipe``'s optimizer and schedule.

    With a checkpoint, training resumes after its last saved epoch and saves after every epoch.
    """
    opt = make_optimizer(model.parameters(), recipe)
    n, bs = len(data), recipe.batch_size
    steps_per_epoch = max(1, n // bs)  # drop the last partial batch: a batch of 1 breaks batch-norm
    first_epoch = checkpoint.restore(model, opt, generator) if checkpoint is not None else 0
    model.train()
    for epoch in range(first_epoch, recipe.epochs):
        order = torch.randperm(n, generator=generator)
        for step in range(steps_per_epoch):
            t = epoch + (step + 1) / steps_per_epoch
            for group in opt.param_groups:
                group["lr"] = recipe.lr * lr_factor(recipe.schedule, t, recipe.epochs, recipe.peak_epoch)
            idx = order[step * bs:(step + 1) * bs]
            x = data.x[idx].contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(x), data.y[idx], label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if checkpoint is not None:
            checkpoint.save(epoch + 1, model, opt, generator)


@torch.no_grad()
def predict(module: nn.Module, x: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    module.eval()
    cl = torch.channels_last
    return torch.cat([module(x[i:i + batch].contiguous(memory_format=cl)) for i in range(0, len(x), batch)])


def train_source(
    cfg, source: Dataset, mask: np.ndarray, seed: int, checkpoint: Optional[RowCheckpoint] = None
) -> tuple[Net, dict]:
    """Train a fresh model on the source classes in ``mask``; the head keeps all source labels."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build(cfg.model, source.num_classes, in_channels=source.train.x.shape[1])
    start = time.perf_counter()
    fit(model, source.train.select_classes(mask), cfg.train, gen, cfg.train.label_smoothing, checkpoint)
    seconds = time.perf_counter() - start
    val = source.test.select_classes(mask)  # accuracy on the kept classes' validation images
    acc = float((predict(model, val.x).argmax(1) == val.y).float().mean()) if len(val) else float("nan")
    return model, {"source_accuracy": acc, "train_seconds": seconds}


def linear_probe(cfg, model: Net, target: Dataset) -> nn.Linear:
    """A linear head on the frozen backbone: multinomial logistic regression by L-BFGS on cached features.

    Deterministic given the backbone (zero-initialised head, full-batch solver).
    """
    fx = cfg.transfer.fixed
    feats = predict(model.backbone, target.train.x)
    # Standardise for the solver's sake, then fold the affine map into the head, so it applies to raw features.
    mu, sd = feats.mean(0), feats.std(0) + 1e-6
    z = (feats - mu) / sd
    head = nn.Linear(z.shape[1], target.num_classes)
    nn.init.zeros_(head.weight), nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=fx.iterations, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(z), target.train.y) + fx.weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        head.weight /= sd
        head.bias -= head.weight @ mu
    return head


def transfer_fixed(model: Net, probe: nn.Linear, target: Dataset) -> torch.Tensor:
    """Fixed-feature transfer: frozen backbone + linear probe. Returns test logits."""
    with torch.no_grad():
        return probe(predict(model.backbone, target.test.x))


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, batch: int = 256) -> None:
    """Replace batch-norm running statistics by the exact mean/var over ``x`` (as training mode will see it)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    model.train()
    for i in range(0, len(x), batch):
        model(x[i:i + batch].contiguous(memory_format=torch.channels_last))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum


def transfer_full(cfg, model: Net, target: Dataset, seed: int, key: str) -> torch.Tensor:
    """Every weight trains from the source model. Returns test logits.

    The new head starts random (the paper's recipe) or, with ``transfer.full.head_init=linear_probe``, from a
    linear probe (LP-FT), which needs far fewer epochs. The probe is fitted after re-estimating batch-norm
    statistics on the target, so that the head matches the features training mode will produce.
    """
    recipe = _override(cfg.transfer.full, cfg.targets[key])
    torch.manual_seed(seed)
    net = copy.deepcopy(model)
    net.head = nn.Linear(net.num_features, target.num_classes)
    if recipe.head_init == "linear_probe":
        recalibrate_batchnorm(net, target.train.x)
        net.head = linear_probe(cfg, net, target)
    fit(net, target.train, recipe, torch.Generator().manual_seed(seed))
    return predict(net, target.test.x)


def _override(recipe, t):
    """The full-transfer recipe with a target's own epochs / LR where it sets them."""
    if t.epochs is None and t.lr is None:
        return recipe
    r = OmegaConf.to_container(recipe)
    if t.epochs is not None:
        r["epochs"] = t.epochs
    if t.lr is not None:
        r["lr"] = t.lr
    return OmegaConf.create(r)
