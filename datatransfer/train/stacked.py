"""K source models trained at once in one process: the batched row runner's training half.

``StackedNet`` holds K copies of one ``Net`` (the small CNN: a Sequential of Conv2d / MaxPool2d / BatchNorm2d /
ReLU / AdaptiveAvgPool2d / Flatten, then a linear head) with every parameter and buffer stacked along a leading K
axis, and runs them as one network: each convolution is a grouped convolution with K groups (model k sees only its
own channels), batch norm and pooling are per channel and so per model, the heads are one batched matmul. The input
is the K models' own minibatches side by side along the channel axis, so each model trains on its own classes,
seed and data order. The loss is the sum of the K models' mean losses: its gradient with respect to model k's
weights is model k's own gradient, and Adam / SGD update every element on its own, so each model follows its
unbatched recipe exactly; only floating-point summation order differs (grouped kernels), which makes a stacked
model statistically, not bitwise, equal to one trained alone (docs/performance.md, "Batched rows").

Why grouped convolutions rather than ``torch.func.vmap``: batch norm in training mode updates its running statistics
in place, which vmap refuses (functorch's batch-norm patching drops the running statistics), and on the CPU a
grouped convolution is one oneDNN call where vmap falls back to a loop for several ops (measured: bench/).
"""

from __future__ import annotations

import copy
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from datatransfer.train.models import Net

STACKABLE = (nn.Conv2d, nn.MaxPool2d, nn.BatchNorm2d, nn.ReLU, nn.AdaptiveAvgPool2d, nn.Flatten)


def stackable(model: Net) -> bool:
    """Whether ``model``'s backbone is a plain sequence of layers this module can stack (the small CNN)."""
    body = model.backbone
    return isinstance(body, nn.Sequential) and all(isinstance(m, STACKABLE) for m in body)


class StackedNet(nn.Module):
    """K ``Net``s of one architecture as one module. ``forward(x)``: x (B, K * C, H, W), model k's images in
    channels [k * C, (k + 1) * C) -> logits (K * B, classes), model k's in rows [k * B, (k + 1) * B)."""

    def __init__(self, models: Sequence[Net]):
        super().__init__()
        if not models or not all(stackable(m) for m in models):
            raise ValueError("only a Sequential backbone of conv / pool / batch-norm / ReLU layers can be stacked")
        self.k = len(models)
        # layer settings only (not a submodule: its tensors are neither trained nor saved)
        self.__dict__["template"] = copy.deepcopy(models[0]).cpu()
        self.names = [n for n, _ in models[0].named_parameters()]
        self.buffer_names = [n for n, _ in models[0].named_buffers()]
        states = [m.state_dict() for m in models]
        for n in self.names:  # registration order = the unstacked model's parameter order (optimizer state)
            self.register_parameter(_key(n), nn.Parameter(torch.stack([s[n].detach() for s in states]).clone()))
        for n in self.buffer_names:
            self.register_buffer(_key(n), torch.stack([s[n] for s in states]).clone())
        self.steps = 0  # batch-norm num_batches_tracked, shared by the K models

    def _get(self, name: str) -> torch.Tensor:
        return getattr(self, _key(name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.k
        for i, m in enumerate(self.template.backbone):
            p = f"backbone.{i}."
            if isinstance(m, nn.Conv2d):
                w = self._get(p + "weight")
                x = F.conv2d(x, w.reshape(-1, *w.shape[2:]), None, m.stride, m.padding, m.dilation, groups=k)
            elif isinstance(m, nn.BatchNorm2d):
                mean, var = self._get(p + "running_mean").view(-1), self._get(p + "running_var").view(-1)
                x = F.batch_norm(x, mean, var, self._get(p + "weight").view(-1), self._get(p + "bias").view(-1),
                                 self.training, m.momentum, m.eps)  # training: updates the views' buffers in place
            elif isinstance(m, nn.ReLU):
                x = F.relu(x, inplace=True)
            else:  # pooling, flatten: per channel, so per model
                x = m(x)
        if self.training and any(isinstance(m, nn.BatchNorm2d) for m in self.template.backbone):
            self.steps += 1
        feats = x.reshape(x.shape[0], k, -1)  # (B, K, F)
        w, b = self._get("head.weight"), self._get("head.bias")  # (K, classes, F), (K, classes)
        z = torch.einsum("bkf,kcf->kbc", feats, w.to(feats.dtype)) + b.to(feats.dtype)[:, None, :]
        return z.reshape(k * x.shape[0], -1)

    def unstack(self, k: int) -> Net:
        """Model k as an ordinary ``Net`` (a copy, on the same device)."""
        net = copy.deepcopy(self.template).to(self._get("head.weight").device)
        net.load_state_dict(self.state_of(k))
        net.train(self.training)
        return net.to(memory_format=torch.channels_last)

    def state_of(self, k: int) -> dict:
        """Model k's state dict, keyed as an unstacked ``Net``'s."""
        state = {n: self._get(n)[k].detach().clone() for n in self.names + self.buffer_names}
        for n in self.buffer_names:
            if n.endswith("num_batches_tracked"):
                state[n] = torch.tensor(self.steps, dtype=torch.long)
        return state


def _key(name: str) -> str:
    return name.replace(".", "__")


def optimizer_state_of(opt: torch.optim.Optimizer, model: StackedNet, k: int) -> dict:
    """Model k's slice of the stacked optimizer's state, as the state dict of an optimizer over ``model.unstack(k)
    .parameters()`` (same order): what a row checkpoint holds, so a row resumes alone from a stacked run's epoch."""
    full = opt.state_dict()
    params = list(model.parameters())
    state = {}
    for i, p in enumerate(params):
        entry = opt.state.get(p, {})
        state[i] = {name: (v[k].clone() if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == model.k
                           and v.shape == p.shape else (v.clone() if torch.is_tensor(v) else v))
                    for name, v in entry.items()}
    groups = [dict(g, params=list(range(len(params)))) for g in full["param_groups"]]
    return {"state": state, "param_groups": groups}


class StackedCheckpoints:
    """The row checkpoints of a stacked group, written as K ordinary row checkpoints at every epoch end (so a row
    resumes alone, with the unbatched runner, from wherever its group stopped). A group only forms from rows
    without a checkpoint, so nothing is restored here."""

    def __init__(self, checkpoints: Sequence, rng_states: Sequence[torch.Tensor]):
        self.checkpoints, self.rng_states = list(checkpoints), list(rng_states)

    def restore(self, model, opt, generators) -> int:
        return 0

    def save(self, epoch: int, model: StackedNet, opt: torch.optim.Optimizer, generators: List) -> None:
        for k, (ck, gen) in enumerate(zip(self.checkpoints, generators)):
            if ck is None:
                continue
            state = {"epoch": int(epoch), "model": model.state_of(k), "optimizer": optimizer_state_of(opt, model, k),
                     "generator": gen.get_state(), "torch_rng": self.rng_states[k]}
            ck.write(state)


class ZipLoader:
    """K loaders' minibatches side by side: images concatenated along channels (model k's in its own channel
    block), labels concatenated (model k's in rows [k * B, (k + 1) * B)). The loaders must have equal lengths."""

    def __init__(self, loaders: Sequence):
        self.loaders = list(loaders)
        lengths = {len(ld) for ld in self.loaders}
        if len(lengths) != 1:
            raise ValueError(f"stacked loaders differ in steps per epoch: {sorted(lengths)}")
        self.resolution = self.loaders[0].resolution

    def __len__(self) -> int:
        return len(self.loaders[0])

    def __iter__(self):
        for batches in zip(*self.loaders):
            x = torch.cat([b[0] for b in batches], dim=1).contiguous(memory_format=torch.channels_last)
            yield x, torch.cat([b[1] for b in batches])

    def set_epoch(self, epoch: int) -> None:
        for ld in self.loaders:
            ld.set_epoch(epoch)

    def set_resolution(self, resolution: int) -> None:
        for ld in self.loaders:
            ld.set_resolution(resolution)
        self.resolution = resolution
