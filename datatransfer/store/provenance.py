"""Where stored results come from: the code that wrote a store, and (format version 2) each row's run.

A row's provenance is written by :meth:`Store.write_row` before the row's commit point, into four per-row arrays
(one chunk per row, like every per-row array; docs/store-format.md, "Row provenance"):

    provenance/start_time   float64 (M,)  unix seconds; NaN = unknown / unwritten
    provenance/end_time     float64 (M,)  unix seconds, taken when the row is written; NaN = unwritten
    provenance/threads      int32   (M,)  torch intra-op threads; -1 = unknown / unwritten
    provenance/info         str     (M,)  JSON text: code_version, host, device, libraries, slurm_*; "" = unwritten

What only the process computing a row knows (its device, thread count, start time) comes in a :class:`RowRun`;
the rest is gathered here (the code version once per process: it runs git).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np
import zarr

log = logging.getLogger(__name__)

GROUP = "provenance"
# name -> (dtype, fill value): the fill value is what an unwritten row reads
ARRAYS = {"start_time": ("float64", np.nan), "end_time": ("float64", np.nan), "threads": ("int32", -1),
          "info": (str, "")}
LIBRARIES = ("torch", "zarr", "numpy", "ffcv")
SLURM = {"slurm_job_id": "SLURM_JOB_ID", "slurm_array_job_id": "SLURM_ARRAY_JOB_ID",
         "slurm_array_task_id": "SLURM_ARRAY_TASK_ID"}
INFO_KEYS = ("code_version", "host", "device", "models_per_process", "libraries", *SLURM)


@functools.lru_cache(maxsize=None)
def code_version() -> str:
    """The git commit of the code that wrote a store (with '-dirty' if modified), or '' outside a checkout.
    Computed once per process."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{sha}-dirty" if sha and dirty else sha


@functools.lru_cache(maxsize=None)
def _library_versions() -> tuple:
    found = []
    for name in LIBRARIES:  # installed distributions' metadata: nothing is imported (importing ffcv is slow)
        try:
            found.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            pass
    return tuple(found)


def library_versions() -> Dict[str, str]:
    """Versions of torch, zarr, numpy and ffcv, those installed."""
    return dict(_library_versions())


@dataclass(frozen=True)
class RowRun:
    """What only the process that computed a row knows; the worker passes it to :meth:`Store.write_row`."""

    start_time: float = math.nan  # unix seconds when the row started (before its training)
    device: str = ""  # e.g. "cuda:0", "cpu"
    threads: int = -1  # torch intra-op threads; -1: this process's count, if torch is imported
    # rows trained together in one process (compute.models_per_process; a batched row is bitwise reproducible for
    # the same K and group composition). Rows of a group: start_time is the previous row's commit (the first: the
    # group's start), so that end - start summed over a group is its wall time.
    models: int = 1


def record(run: Optional[RowRun] = None) -> Dict[str, Any]:
    """The provenance of a row written now: one value per array of :data:`ARRAYS`."""
    run = run or RowRun()
    threads = run.threads
    if threads < 0 and "torch" in sys.modules:
        threads = sys.modules["torch"].get_num_threads()
    info = {"code_version": code_version(), "host": socket.gethostname(), "device": str(run.device),
            "models_per_process": int(run.models), "libraries": library_versions(),
            **{k: os.environ.get(v, "") for k, v in SLURM.items()}}
    return {"start_time": float(run.start_time), "end_time": time.time(), "threads": int(threads),
            "info": json.dumps(info, sort_keys=True)}


def create_arrays(root: zarr.Group, m: int) -> None:
    """The ``provenance/*`` arrays of a store of ``m`` rows (one chunk per row)."""
    g = root.require_group(GROUP)
    for name, (dtype, fill) in ARRAYS.items():
        g.create_array(name, shape=(m,), dtype=dtype, chunks=(1,), fill_value=fill, dimension_names=("row",))


def unpack(values: Mapping[str, Any]) -> Dict[str, Any]:
    """A row's provenance as a dict, from the values read of its arrays (absent: unknown). Every key is always
    there: ``start_time``, ``end_time`` (NaN when unknown), ``threads`` (-1), ``code_version``, ``host``,
    ``device``, ``models_per_process``, ``slurm_job_id``, ``slurm_array_job_id``, ``slurm_array_task_id`` ("") and
    ``libraries`` ({})."""
    out: Dict[str, Any] = {name: values.get(name, fill) for name, (_, fill) in ARRAYS.items() if name != "info"}
    out["start_time"], out["end_time"] = float(out["start_time"]), float(out["end_time"])
    out["threads"] = int(out["threads"])
    info = json.loads(values["info"]) if values.get("info") else {}
    out.update({k: info.get(k, {} if k == "libraries" else "") for k in INFO_KEYS})
    return out


def read(fetch: Callable[[str], Optional[np.ndarray]], where: str) -> Dict[str, Any]:
    """:func:`unpack` of the values ``fetch(name)`` gives for each array (None: could not be read); info that is
    not JSON is left out, with a warning naming ``where``."""
    values = {}
    for name in ARRAYS:
        value = fetch(name)
        if value is not None:
            values[name] = np.asarray(value).item()
    try:
        return unpack(values)
    except ValueError as e:  # info decodes but is not JSON
        log.warning("%s: provenance info is not JSON (%s): left out", where, str(e).splitlines()[0][:200])
        return unpack({k: v for k, v in values.items() if k != "info"})
