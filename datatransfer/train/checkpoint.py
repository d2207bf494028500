"""Per-row training checkpoints, so a preempted or killed row resumes from its last finished epoch.

A checkpoint lives at ``<store>/checkpoints/row-<i>.pt`` while row i trains and is deleted once the row is
complete. It holds everything the rest of the training depends on (model, optimizer, epoch, both RNG states),
so a resumed row finishes with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch
from torch import nn


class RowCheckpoint:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def load(self) -> Optional[dict]:
        if not self.path.is_file():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=False)

    def save(self, epoch: int, model: nn.Module, opt: torch.optim.Optimizer, generator: torch.Generator) -> None:
        state = {
            "epoch": epoch,  # epochs finished
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp-{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, self.path)  # atomic: a reader sees the old checkpoint or the new one, never half of one

    def restore(self, model: nn.Module, opt: torch.optim.Optimizer, generator: torch.Generator) -> int:
        """Load the saved state into the given objects; returns the number of epochs already done (0 if none)."""
        state = self.load()
        if state is None:
            return 0
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        return int(state["epoch"])

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)
