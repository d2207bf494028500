"""Per-row training checkpoints, so a preempted or killed row resumes from its last finished epoch.

A checkpoint lives at ``<store>/checkpoints/row-<i>.pt`` while row i trains and is deleted once the row is
complete. It holds everything the rest of the training depends on (model, optimizer, epoch, both RNG states),
so a resumed row finishes with the same weights as an uninterrupted one.

Nothing executable is read from a store: checkpoints hold tensors, state dicts and plain numbers only, and are
loaded with ``weights_only=True`` (:func:`load_plain`); a file that needs more is refused with a StoreError.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from datatransfer.errors import StoreError


def load_plain(path: Path, what: str, remedy: str) -> dict:
    """``torch.load`` of a file of this code (tensors, state dicts, plain ints/floats/strings/lists/dicts) with
    ``weights_only=True``: a file holding anything else (e.g. a pickled object whose unpickling would run code)
    or a damaged one is refused with a StoreError naming it (and ``remedy``), and nothing in it is executed."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError (refused content), RuntimeError / EOFError (damaged zip), ...
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [""]
        why = next((line for line in lines if "GLOBAL" in line or "nsupported" in line), lines[0])  # what it holds
        raise StoreError(f"cannot load {what} {path}: not a file this code wrote, or damaged "
                         f"({type(e).__name__}: {why[:300]}); nothing in it was run. {remedy}") from e
    if not isinstance(state, dict):
        raise StoreError(f"cannot load {what} {path}: it holds a {type(state).__name__}, not a dict")
    return state


class RowCheckpoint:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def load(self) -> Optional[dict]:
        if not self.path.is_file():
            return None
        return load_plain(self.path, "the row checkpoint",
                          "Delete it to train the row again from its first epoch")

    def save(self, epoch: int, model: nn.Module, opt: torch.optim.Optimizer, generator: torch.Generator) -> None:
        state = {
            "epoch": int(epoch),  # epochs finished
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }
        self.write(state)

    def write(self, state: dict) -> None:
        """Save ``state`` (as :meth:`save` builds it) atomically."""
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
