"""Source training: a fresh model on the classes of one mask (``train_source``), or K of them at once
(``train_sources``)."""

from __future__ import annotations

import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from datatransfer.train.checkpoint import RowCheckpoint
from datatransfer.train.loop import Runtime, evaluate, fit
from datatransfer.train.models import Net, build
from datatransfer.train.schedules import resolution_at
from datatransfer.train.stacked import StackedCheckpoints, StackedNet, ZipLoader, stackable


def train_source(source, mask: np.ndarray, seed: int, model_cfg, recipe, rt: Runtime,
                 checkpoint: Optional[RowCheckpoint] = None,
                 unit_index: Optional[np.ndarray] = None, init_seed: Optional[int] = None) -> tuple[Net, dict]:
    """Train a fresh ``model_cfg`` model with ``recipe`` (the ``train`` section) on the source classes in ``mask``
    (or, with example units, on exactly the train images ``unit_index[mask]``); the head keeps all source labels.

    ``source``: any dataset reader (``datatransfer.data``). Source accuracy is measured on the validation images of
    the kept classes (with example units: the classes of the kept images) (centre crop at ``recipe.eval_res``).
    ``init_seed``: the initial weights come from it rather than from ``seed`` (sweep.init=shared).
    """
    examples = None
    if unit_index is not None:
        examples = np.asarray(unit_index)[np.asarray(mask, dtype=bool)]
        mask = np.zeros(source.num_classes, dtype=bool)
        mask[np.unique(source.labels("train")[examples])] = True
    gen = torch.Generator().manual_seed(seed)
    model = initial_model(model_cfg, source, seed, init_seed).to(rt.device)
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


def initial_model(model_cfg, source, seed: int, init_seed: Optional[int] = None) -> Net:
    """A fresh model with the initial weights of ``seed``, or of ``init_seed`` where given; either way torch's
    global generator is left seeded as ``seed`` leaves it (per_row: after drawing the weights, bitwise as before
    sweep.init existed; shared: freshly seeded), so the rest of the row stays the row's own."""
    torch.manual_seed(seed if init_seed is None else init_seed)
    model = build(model_cfg, source.num_classes, in_channels=source.channels)
    if init_seed is not None:
        torch.manual_seed(seed)
    return model


def train_sources(source, masks: Sequence[np.ndarray], seeds: Sequence[int], model_cfg, recipe, rt: Runtime,
                  checkpoints: Sequence[Optional[RowCheckpoint]],
                  init_seed: Optional[int] = None) -> List[Tuple[Net, dict]]:
    """``train_source`` for K rows at once (``stacked.StackedNet``): each model starts from the weights its own seed
    gives, sees its own classes in its own seed's order; returns (model, stats) per row, in order.

    Rows whose epoch counts of batches differ cannot share steps: they train in sub-groups of equal length, and a
    row alone in its sub-group trains exactly as ``train_source`` does (bitwise). ``checkpoints``: each row's
    checkpoint, written as an ordinary row checkpoint every epoch (the rows must have none yet). ``train_seconds``
    of a row is its group's training time divided by the group's size (the cost per model). ``init_seed``: as in
    ``train_source``.
    """
    built, loaders, rng_states, gens = [], [], [], []
    for mask, seed in zip(masks, seeds):
        gens.append(torch.Generator().manual_seed(seed))
        built.append(initial_model(model_cfg, source, seed, init_seed).to(rt.device))
        rng_states.append(torch.get_rng_state())
        loaders.append(source.train_loader(batch_size=recipe.batch_size, generator=gens[-1], seed=seed, keep=mask,
                                           decoder="random_resized_crop", resolution=resolution_at(recipe, 0)))
    by_length: Dict[int, List[int]] = {}
    for i, ld in enumerate(loaders):
        by_length.setdefault(len(ld), []).append(i)
    results: Dict[int, Tuple[Net, dict]] = {}
    for group in by_length.values():
        if len(group) == 1 or not stackable(built[group[0]]):
            for i in group:
                results[i] = train_source(source, masks[i], seeds[i], model_cfg, recipe, rt, checkpoints[i],
                                          init_seed=init_seed)
            continue
        start = time.perf_counter()
        stacked = StackedNet([built[i] for i in group]).to(rt.device)
        fit(stacked, ZipLoader([loaders[i] for i in group]), recipe, [gens[i] for i in group], rt,
            recipe.label_smoothing, StackedCheckpoints([checkpoints[i] for i in group], [rng_states[i] for i in group]),
            resolution=lambda e: resolution_at(recipe, e), tag=f"source x{len(group)}", models=len(group))
        seconds = (time.perf_counter() - start) / len(group)
        for k, i in enumerate(group):
            model = stacked.unstack(k)
            logits, y = evaluate(model, source.eval_loader("test", keep=masks[i], decoder="center_crop",
                                                           resolution=recipe.eval_res), rt)
            acc = float((logits.argmax(1) == y).float().mean()) if len(y) else float("nan")
            results[i] = (model, {"source_accuracy": acc, "train_seconds": seconds, "models_per_process": len(group)})
    return [results[i] for i in range(len(masks))]
