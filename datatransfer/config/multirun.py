"""One store per job of a Hydra multirun: `python -m launch -m sweep.alpha=0.3,0.5 ...`.

The default ``store.path`` is ``runs/${name}/${dt_multirun_subdir:}store.zarr``. The resolver gives "" in a single
run (and outside a Hydra app, as in ``compose()``), so the store is ``runs/<name>/store.zarr``; in a multirun job it
gives a folder named after the job's own overrides, e.g.
``runs/planted/experiment-planted+sweep.alpha-0.3+sweep.num_models-4/store.zarr``: each job gets its own store.

Hydra's ``hydra.job.override_dirname`` is not used as is: its ``exclude_keys`` match whole keys only (not
``launcher.*``), and its ``key=value,key=value`` cannot be given back as ``store.path=...`` without quoting. Here
each override is written ``key-value``, joined by ``+``, with any character other than letters, digits and
``._-`` replaced by ``_`` (``row.examples=[5,3]`` -> ``row.examples-5_3``), so that the path prints and pastes as a
plain override value. Keys that do not change what a row is are left out: ``store.path`` and everything under
``launcher``, ``launch``, ``compute`` and ``hydra``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Sequence

RESOLVER = "dt_multirun_subdir"
EXCLUDED = ("store.path", "launcher", "launch", "compute", "hydra")
_MAX = 200  # characters of the folder name (file systems allow 255 bytes); longer: cut, plus a hash of the whole


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def _excluded(key: str) -> bool:
    return any(key == k or key.startswith((k + ".", k + "/")) for k in EXCLUDED)


def job_dirname(overrides: Sequence[str]) -> str:
    """The folder name of a multirun job with these (task) overrides; "" if none of them counts."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    items = []
    for o in OverridesParser.create().parse_overrides(list(overrides)):
        if _excluded(o.key_or_group):
            continue
        _, eq, value = (o.input_line or "").partition("=")
        items.append(_safe(o.key_or_group) + (f"-{_safe(value)}" if eq else ""))
    name = "+".join(sorted(items))
    if len(name) > _MAX:
        name = name[:_MAX - 13] + "+" + hashlib.sha256(name.encode()).hexdigest()[:12]
    return name


def multirun_subdir() -> str:
    """``${dt_multirun_subdir:}``: "" unless this is a job of a Hydra multirun; then "<job_dirname>/"."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return ""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return ""
    name = job_dirname(hydra_cfg.overrides.task)
    return f"{name}/" if name else ""
