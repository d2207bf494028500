"""The training loop every stage shares: where to run (``Runtime``), one generic minibatch loop (``fit``) and
evaluation. Source training is in ``source.py``, the two transfer modes in ``transfer.py``, the LR and resolution
schedules in ``schedules.py``. The loop reads batches from a loader: anything that yields (images, labels) every
epoch and has ``set_epoch`` / ``set_resolution`` -- in-memory tensors (``data.memory.TensorLoader``) or FFCV betons
(``data.ffcv_reader.FFCVLoader``), as the dataset objects' ``train_loader`` / ``eval_loader`` give them.
With ``train.amp`` it runs in mixed precision: on CUDA fp16 autocast with a grad scaler (and channels-last), on the
CPU bf16 autocast (bf16 keeps float32's exponent range, so no scaler; fast where the CPU has AMX or AVX-512 BF16);
without it, float32. Everything is seeded by the row's seed, so a row is reproducible on the same hardware, precision
and thread count (FFCV's random crops and flips excepted).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from datatransfer.train.checkpoint import RowCheckpoint
from datatransfer.train.precision import native_bf16
from datatransfer.train.schedules import lr_factor

log = logging.getLogger(__name__)  # DEBUG: one line per epoch (python -m launch ... hydra.verbose=datatransfer.train)


@dataclass(frozen=True)
class Runtime:
    """Where and how a process trains: built once per worker process (``make_runtime``) and passed down."""

    device: torch.device
    amp: bool  # mixed precision: autocast to ``amp_dtype``
    threads: int  # torch intra-op threads of this process (a row is bitwise reproducible for a given count)

    @property
    def amp_dtype(self) -> torch.dtype:
        """fp16 on CUDA (with a grad scaler), bf16 elsewhere (CPU autocast supports bf16 only)."""
        return torch.float16 if self.device.type == "cuda" else torch.bfloat16

    @property
    def scaled(self) -> bool:
        """Whether losses need a grad scaler: fp16's narrow exponent range underflows small gradients."""
        return self.amp and self.amp_dtype == torch.float16

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)


def resolve_device(name: str) -> torch.device:
    """compute.device: auto = cuda if there is one, else cpu."""
    name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def make_runtime(device: str, amp: bool, threads: int) -> Runtime:
    """Set this process up to train (thread count, cuDNN autotuning) and describe it. ``amp``: a resolved
    ``train.amp`` (``precision.resolve_amp``), not "auto"."""
    if not isinstance(amp, bool):
        raise TypeError(f"make_runtime needs train.amp as true or false, got {amp!r} (precision.resolve_amp)")
    dev = resolve_device(device)
    torch.set_num_threads(max(1, int(threads)))
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes within an epoch: let cuDNN pick the fastest kernels
    elif amp and not native_bf16():
        log.warning("train.amp=true on a CPU without AVX-512 BF16 / AMX: bf16 is emulated there, ~7x slower than "
                    "float32; a new sweep with train.amp=auto (the default) trains in float32 here")
    return Runtime(dev, bool(amp), torch.get_num_threads())


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
    models: int = 1,
) -> None:
    """Minibatch training of ``params`` (default: every parameter of ``model``) on ``loader``'s batches with
    ``recipe``'s optimizer and per-iteration LR schedule.

    ``freeze_bn`` keeps batch-norm layers in eval mode; ``resolution(epoch)`` sets the loader's image side each
    epoch (progressive resizing). With a checkpoint, training resumes after its last saved epoch (the loader's
    order continues from that epoch too) and saves after every epoch. ``tag`` names the run in debug logs.
    ``models``: how many models ``model`` stacks (``stacked.StackedNet``, whose logits and labels come K batches
    one after the other): the loss is then the sum of their mean losses, so each model gets its own gradient.
    """
    opt = make_optimizer(model.parameters() if params is None else params, recipe)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.scaled)  # disabled: a pass-through
    steps_per_epoch = len(loader)  # the last partial batch is dropped: a batch of 1 breaks batch-norm
    if steps_per_epoch == 0:
        raise ValueError(f"no full batch of {recipe.batch_size} examples to train on: lower the batch size")
    # the recipe read once: OmegaConf attribute access is slow enough to notice in a per-step loop
    peak_lr, schedule, epochs, peak_epoch = recipe.lr, recipe.schedule, recipe.epochs, recipe.peak_epoch
    step_every, step_gamma = recipe.step_every, recipe.step_gamma

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
            with rt.autocast():
                loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
                if models != 1:
                    loss = loss * models
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
        with rt.autocast():
            outputs.append(module(x.to(rt.device, non_blocking=True)).float().cpu())
        labels.append(y.cpu().clone())  # FFCV reuses its label buffers for later batches
    return torch.cat(outputs), torch.cat(labels)
