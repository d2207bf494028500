"""Submission manifests: what was submitted to Slurm for a store, and which rows each array task runs.

One folder per submission, ``<store>/launch/<id>/`` (``id`` = time + random suffix, so folders never collide even
when Slurm job ids repeat after a controller reset), holding

- ``manifest.json`` (this module): arrays (Slurm job id, task index -> rows), the overrides and launcher settings
  used, the time, the submitit folder; written before anything is submitted and rewritten (atomically) after each
  array is accepted, so a crash mid-submission leaves a manifest that says which arrays exist;
- ``config.json``: the resolved config the tasks run with;
- ``submitit/``: submitit's pickles and the tasks' logs (``<jobid>_<task>_0_log.err`` / ``.out``).

``python -m launch.status`` and ``launch.resume`` read every manifest of a store; the store's ``completed`` flags
stay the truth about rows, manifests only say where the rows went.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from datatransfer.errors import SlurmError
from datatransfer.store import layout

FORMAT = "datatransfer-slurm-submission"
VERSION = 1


@dataclass
class SubmittedArray:
    tasks: List[List[int]]  # task index (Slurm array index) -> rows
    job_id: Optional[str] = None  # None until sbatch accepted it
    array: bool = True  # submitit submits a one-task "array" as a plain job

    def element_id(self, task: int) -> str:
        return f"{self.job_id}_{task}" if self.array else str(self.job_id)


@dataclass
class Manifest:
    id: str
    folder: str  # <store>/launch/<id>
    store: str
    fingerprint: str
    job_name: str
    overrides: List[str]
    launcher: Dict[str, Any]
    rows_per_task: int
    max_array_size: int
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    created_unix: float = field(default_factory=time.time)
    state: str = "submitting"  # submitting | submitted | failed
    error: str = ""
    arrays: List[SubmittedArray] = field(default_factory=list)
    added_targets: List[str] = field(default_factory=list)  # the rows of these targets added later, not the store's

    # ---- paths ---------------------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return Path(self.folder) / "manifest.json"

    @property
    def config_path(self) -> Path:
        return Path(self.folder) / "config.json"

    @property
    def submitit_folder(self) -> Path:
        return Path(self.folder) / "submitit"

    def log_path(self, element_id: str, kind: str = "err") -> Path:
        return self.submitit_folder / f"{element_id}_0_log.{kind}"

    # ---- contents ------------------------------------------------------------------------------------------
    def elements(self) -> Iterator[Tuple[str, List[int]]]:
        """(element id, rows) of every submitted task."""
        for a in self.arrays:
            if a.job_id is None:
                continue
            for i, rows in enumerate(a.tasks):
                yield a.element_id(i), rows

    @property
    def job_ids(self) -> List[str]:
        return [a.job_id for a in self.arrays if a.job_id is not None]

    @property
    def num_rows(self) -> int:
        return sum(len(rows) for a in self.arrays if a.job_id is not None for rows in a.tasks)

    # ---- files ---------------------------------------------------------------------------------------------
    def save(self) -> None:
        d = {"format": FORMAT, "version": VERSION, **asdict(self)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(d, separators=(",", ":")))
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, path: Path) -> "Manifest":
        d = json.loads(Path(path).read_text())
        if d.pop("format", None) != FORMAT or d.pop("version", None) != VERSION:
            raise ValueError(f"{path} is not a version-{VERSION} submission manifest")
        d["arrays"] = [SubmittedArray(**a) for a in d["arrays"]]
        return cls(**d)




def new_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def load_all(store_path: str | os.PathLike) -> List[Manifest]:
    """Every submission of a store, oldest first. An unreadable manifest is an error: skipping it would hide jobs
    that may still be writing rows (manifests are replaced atomically, so a damaged one is damage, not a write in
    progress)."""
    out = []
    for p in layout.submission_manifests(store_path):
        try:
            out.append(Manifest.load(p))
        except (ValueError, KeyError, TypeError) as e:  # json.JSONDecodeError is a ValueError
            raise SlurmError(f"submission manifest {p} cannot be read ({e}); its jobs may still be writing rows. "
                             f"Check them (squeue --me), cancel or let them finish, then move that submission "
                             f"folder out of the store and run the command again") from e
    return sorted(out, key=lambda m: (m.created_unix, m.id))
