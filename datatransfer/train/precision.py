"""``train.amp=auto``: the recipe's precision for the machine that creates the sweep.

Mixed precision is part of a sweep's recipe (and of its store's fingerprint), but whether it pays depends on the
hardware: on CUDA fp16 autocast is the paper's recipe; on a CPU, bf16 runs natively only with AVX-512 BF16 or AMX,
and elsewhere oneDNN emulates it, several times slower than float32 (measured on an AVX2-only AMD EPYC: a mini
training step 296 ms in bf16 against 53 ms in float32, a whole row 7.6x the CPU time; docs/performance.md).
``auto`` is resolved once, before the store is created, and the store records the bool, so every row of a sweep has
one precision whatever machine runs it, and a store made elsewhere is continued in its own precision.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from datatransfer.errors import ConfigError

log = logging.getLogger(__name__)


def native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX-512 BF16 or AMX); assume so where torch cannot tell."""
    import torch  # here, not at import: planted sweeps and Slurm submissions resolve train.amp without torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def _stored_amp(store_path: str) -> Optional[bool]:
    """The ``train.amp`` an existing store recorded (None: no store there, or no trained rows' config in it; False
    for a store made before the key existed, whose rows trained in float32)."""
    import zarr

    p = Path(store_path)
    if not (p / "zarr.json").is_file():
        return None
    try:
        recorded = zarr.open_group(str(p), mode="r").attrs["config"]["train"].get("amp", False)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return recorded if isinstance(recorded, bool) else None


def amp_here(cfg: Any) -> bool:
    """``train.amp`` for a run on this machine, without a store (the benches): an explicit true/false as it is;
    ``auto``: mixed precision on CUDA and for architectures other than the small CNN (GPU recipes: a login node
    without a GPU must not turn them into float32), and for the small CNN on a CPU only where bf16 is native."""
    if isinstance(cfg.train.amp, bool):
        return cfg.train.amp
    from datatransfer.train.loop import resolve_device

    if str(cfg.compute.device).startswith("cuda") or cfg.model.arch != "small_cnn":
        return True
    return resolve_device(cfg.compute.device).type == "cuda" or native_bf16()


def resolve_amp(cfg: Any) -> bool:
    """Replace ``train.amp=auto`` in ``cfg`` by a bool, in place, and return it: the precision the store at
    ``store.path`` recorded if it exists (a sweep keeps its recipe on any machine), else ``amp_here``. An explicit
    true/false is kept as it is."""
    amp = cfg.train.amp
    if isinstance(amp, bool):
        return amp
    if str(amp) != "auto":
        raise ConfigError(f"train.amp: must be true, false or auto, got {amp!r}")
    trained = cfg.get("row") is None or str(cfg.row.get("kind", "trained")) == "trained"  # planted: no training
    stored = _stored_amp(str(cfg.store.path)) if cfg.get("store") is not None else None
    chosen = stored if stored is not None else (amp_here(cfg) if trained else False)
    cfg.train.amp = chosen
    if stored is None and trained:
        log.info("train.amp=auto: %s on this machine", "mixed precision" if chosen else
                 "float32 (this CPU has no native bf16: AVX-512 BF16 or AMX)")
    return chosen
