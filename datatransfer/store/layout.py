"""Every path inside a store folder. Nothing else in the code builds ``<store>/...`` paths.

    <store>/zarr.json, masks/, completed/, outputs/, ...   the Zarr arrays (docs/store-format.md)
    <store>/checkpoints/row-<i>.pt                          row i's training state while it trains
    <store>/backbones/row-<i>.pt                            row i's source model (store.save_backbones)
    <store>/submissions/<id>/                               one Slurm submission (manifest, config, logs)
    <store>/claims/row-<i>.json                             who is computing row i (store/claims.py)
    <store>/claims/targets/<t1>+<t2>/row-<i>.json           the same for rows of targets added later
    <store>/claims/.add_targets.lock                        held while targets are added or the sweep extended

Each of these folders is a Zarr group with a description (``AUX_FOLDERS``), made with the store.

Stores written before the submissions folder was named so keep theirs at ``<store>/launch/``; it is still read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

SUBMISSIONS = "submissions"
LEGACY_SUBMISSIONS = "launch"  # stores written before 2026-12
# The store's folders that hold files, not arrays. A new store makes each a Zarr group (a zarr.json with this
# description) and keeps no file outside them, so that zarr and xarray list the store without "not recognized as a
# component of a Zarr hierarchy" warnings.
AUX_FOLDERS = {
    "claims": "not array data: row claims of the workers computing rows (claims.py), and the add_targets lock",
    "checkpoints": "not array data: the training state of rows in progress (row-<i>.pt), removed when they complete",
    "backbones": "not array data: saved source models (store.save_backbones, row-<i>.pt)",
    SUBMISSIONS: "not array data: Slurm submissions (manifests, the tasks' configs and logs)",
}


def checkpoint(store: str | os.PathLike, row: int) -> Path:
    return Path(store) / "checkpoints" / f"row-{int(row)}.pt"


def backbone(store: str | os.PathLike, row: int) -> Path:
    return Path(store) / "backbones" / f"row-{int(row)}.pt"


def saved_backbones(store: str | os.PathLike, num_rows: int) -> np.ndarray:
    """Bool (num_rows,): which rows have a saved source model (one directory listing)."""
    out = np.zeros(num_rows, dtype=bool)
    folder = Path(store) / "backbones"
    if folder.is_dir():
        for name in os.listdir(folder):
            if name.startswith("row-") and name.endswith(".pt") and name[4:-3].isdigit():
                row = int(name[4:-3])
                if row < num_rows:
                    out[row] = True
    return out


def submissions(store: str | os.PathLike) -> Path:
    """Where new Slurm submissions go."""
    return Path(store) / SUBMISSIONS


def submission_manifests(store: str | os.PathLike) -> List[Path]:
    """Every submission manifest of the store (the legacy folder too), in name order."""
    return sorted(p for name in (LEGACY_SUBMISSIONS, SUBMISSIONS) for p in (Path(store) / name).glob("*/manifest.json"))


def submit_lock(store: str | os.PathLike) -> Path:
    return submissions(store) / ".submit.lock"


def completed_chunks(store: str | os.PathLike) -> Path:
    """The ``completed`` array's chunk folder: one file per committed row (its mtime is the commit time)."""
    return Path(store) / "completed" / "c"


def add_targets_lock(store: str | os.PathLike) -> Path:
    """Held while targets are added, so that two additions never interleave (``store/added_targets.py``). In the
    claims folder: the store's root holds Zarr nodes only (stores made before 2026-12-07 have it at the root)."""
    return Path(store) / "claims" / ".add_targets.lock"


def claims(store: str | os.PathLike, scope: Optional[Sequence[str]] = None) -> Path:
    """The folder of the row claims: the store's own rows, or (``scope``) rows of targets added later."""
    folder = Path(store) / "claims"
    return folder / "targets" / "+".join(sorted(scope)) if scope else folder


def claim(store: str | os.PathLike, row: int, scope: Optional[Sequence[str]] = None) -> Path:
    """Row ``row``'s claim file (docs/store-format.md, "Row claims")."""
    return claims(store, scope) / f"row-{int(row)}.json"


def claim_row(name: str) -> Optional[int]:
    """The row of a claim file's name ('row-12.json' -> 12); None for any other name."""
    if name.startswith("row-") and name.endswith(".json") and name[4:-5].isdigit():
        return int(name[4:-5])
    return None
