"""Source training: a fresh model on the classes of one mask."""

from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch

from datatransfer.train.checkpoint import RowCheckpoint
from datatransfer.train.loop import Runtime, evaluate, fit
from datatransfer.train.models import Net, build
from datatransfer.train.schedules import resolution_at


def train_source(source, mask: np.ndarray, seed: int, model_cfg, recipe, rt: Runtime,
                 checkpoint: Optional[RowCheckpoint] = None,
                 unit_index: Optional[np.ndarray] = None) -> tuple[Net, dict]:
    """Train a fresh ``model_cfg`` model with ``recipe`` (the ``train`` section) on the source classes in ``mask``
    (or, with example units, on exactly the train images ``unit_index[mask]``); the head keeps all source labels.

    ``source``: any dataset reader (``datatransfer.data``). Source accuracy is measured on the validation images of
    the kept classes (with example units: the classes of the kept images) (centre crop at ``recipe.eval_res``).
    """
    examples = None
    if unit_index is not None:
        examples = np.asarray(unit_index)[np.asarray(mask, dtype=bool)]
        mask = np.zeros(source.num_classes, dtype=bool)
        mask[np.unique(source.labels("train")[examples])] = True
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build(model_cfg, source.num_classes, in_channels=source.channels).to(rt.device)
    start = time.perf_counter()
    loader = source.train_loader(batch_size=recipe.batch_size, generator=gen, seed=seed, keep=mask,
                                 decoder="random_resized_crop", resolution=resolution_at(recipe, 0),
                                 **({} if examples is None else {"examples": examples}))
    fit(model, loader, recipe, gen, rt, recipe.label_smoothing, checkpoint,
        resolution=lambda e: resolution_at(recipe, e), tag="source")
    seconds = time.perf_counter() - start
    logits, y = evaluate(model, source.eval_loader("test", keep=mask, decoder="center_crop",
                                                   resolution=recipe.eval_res), rt)
    acc = float((logits.argmax(1) == y).float().mean()) if len(y) else float("nan")
    return model, {"source_accuracy": acc, "train_seconds": seconds}
