"""One source model -> every target in every transfer mode -> per-example outputs and predictions."""

from __future__ import annotations

from typing import Dict, Mapping, Tuple

import numpy as np
import torch

from datatransfer import data
from datatransfer.rows.outputs import output_kinds
from datatransfer.train.loop import Runtime
from datatransfer.train.transfer import transfer_fixed, transfer_full, transfer_recipe


class TargetTransfer:
    """Holds the targets' datasets (opened once per process) and transfers source models to them.

    ``target_index``: each target's position in the store (original targets, then added ones); a target's
    transfer seed follows it, so a target added later gets the seed it would have had from the start.
    """

    def __init__(self, cfg, rt: Runtime, target_index: Mapping[str, int]):
        self.rt = rt
        self.modes, self.kinds = list(cfg.transfer.modes), list(cfg.sweep.outputs)
        self.datasets = {key: data.open_target(cfg, key, rt.device) for key in cfg.targets}
        self.configs = {key: cfg.targets[key] for key in cfg.targets}
        self.recipes = {key: {mode: transfer_recipe(cfg.transfer[mode], cfg.targets[key]) for mode in self.modes}
                        for key in cfg.targets}
        self.probe = cfg.transfer.fixed  # full transfer's linear-probe head starts from this solver's settings
        self.target_index = dict(target_index)

    def __call__(self, model, seed: int) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
        """Per target: outputs (n_modes, n_kinds, n) and predictions (n_modes, n)."""
        outputs, predictions = {}, {}
        for key, target in self.datasets.items():
            ts = seed + 1 + self.target_index[key]  # a seed of its own per target: their order changes nothing
            t, recipes = self.configs[key], self.recipes[key]
            per_mode = []
            for mode in self.modes:
                if mode == "fixed":
                    per_mode.append(transfer_fixed(model, target, ts, recipes[mode], t, self.rt, tag=key))
                else:
                    per_mode.append(transfer_full(model, target, ts, recipes[mode], self.probe, t, self.rt, tag=key))
            labels = torch.from_numpy(target.labels("test"))
            outputs[key] = np.stack([output_kinds(z, labels, self.kinds) for z in per_mode])
            predictions[key] = np.stack([z.argmax(1).numpy() for z in per_mode]).astype(np.int32)
        return outputs, predictions
