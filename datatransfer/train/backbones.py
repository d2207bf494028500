"""Saved source models, so that targets can be added to a sweep later without retraining
(``python -m launch.add_targets``).

With ``store.save_backbones=true`` a worker keeps row i's trained source model (backbone and source head) at
``<store>/backbones/row-<i>.pt`` before it transfers it. The file holds the weights (float32, on the CPU) and what
is needed to rebuild the model: the model config, the number of source classes and input channels, plus the row,
its seed and source accuracy. Written atomically: a file that exists is whole. A ResNet-18 takes 45 MB.

Everything in the file is a tensor or a plain value (the model config as a plain dict), so it is read with
``weights_only=True``: a file that would need to run code to load is refused (StoreError), never executed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from omegaconf import OmegaConf

from datatransfer.train.checkpoint import load_plain
from datatransfer.train.models import Net, build


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays, tuples and mappings turned into Python numbers, lists and dicts
    (what ``weights_only`` loading accepts besides tensors)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy scalar or array
        return value.tolist()
    return value


def save(file: Path, model: Net, model_cfg: Any, in_channels: int, info: Mapping[str, Any]) -> None:
    """Write ``model`` (all weights and batch-norm statistics) with what rebuilding it needs."""
    state = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_config": _plain(OmegaConf.to_container(model_cfg, resolve=True, enum_to_str=True)
                               if OmegaConf.is_config(model_cfg) else dict(model_cfg)),
        "num_classes": int(model.head.out_features),
        "in_channels": int(in_channels),
        **_plain(dict(info)),
    }
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(f".tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, file)


def load(file: Path, device: torch.device | str = "cpu") -> Net:
    """The source model saved at ``file``, on ``device``, channels-last."""
    state = load_plain(Path(file), "the saved source model",
                       "Delete it to skip its row when targets are added (launch.add_targets)")
    model = build(OmegaConf.create(state["model_config"]), state["num_classes"], in_channels=state["in_channels"])
    model.load_state_dict(state["model"])
    return model.to(device)

