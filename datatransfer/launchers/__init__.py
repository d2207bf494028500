"""Launchers: where a store's missing rows run. One interface (``Launcher``), one module per launcher:
``local.py`` (worker processes on this machine) and ``slurm/`` (job arrays through submitit).

A new launcher: copy ``local.py``, implement ``Launcher``, add it to ``LAUNCHERS`` and its schema to the
``launcher`` config group (datatransfer/config, conf/launcher/).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Protocol, Sequence

from datatransfer import masks
from datatransfer.config import ConfigError, row_kind
from datatransfer.store.sweep_store import Store


class Launcher(Protocol):
    def run(self, cfg: Any, store: Optional[Store], overrides: Sequence[str] = ()) -> None:
        """Run (or submit) ``store``'s missing rows; a scoped store (targets added later) runs those targets' rows.
        ``store`` None: a dry run before the store exists (``launch.dry_run``): print the plan, create nothing."""


def launcher(cfg: Any) -> Launcher:
    from datatransfer.launchers.local import LocalLauncher
    from datatransfer.launchers.slurm.submit import SlurmLauncher

    return {"local": LocalLauncher, "slurm": SlurmLauncher}[cfg.launcher.name]()


def preflight(cfg: Any) -> None:
    """What the config alone cannot tell, checked on this machine before any store is created or changed: the
    local launcher trains here, so a CUDA device it asks for must exist (a ConfigError naming compute.device); a
    Slurm request no node of the partition can run is refused before a new store is made for it (the submission
    asks ``sinfo`` again, as it does for an existing store). ``train.amp=auto`` becomes this machine's choice (or
    the existing store's), before anything reads it."""
    from datatransfer.train.precision import resolve_amp

    resolve_amp(cfg)
    if cfg.launcher.name == "slurm" and not cfg.launch.dry_run and not Path(cfg.store.path).exists():
        from datatransfer.launchers.slurm import resources

        resources.check(cfg.launcher, quiet=True)  # the submission checks again and logs
    device = str(cfg.compute.device)
    if cfg.launcher.name != "local" or row_kind(cfg) != "trained" or not device.startswith("cuda"):
        return
    import torch

    index = int(device[5:]) if device.startswith("cuda:") else 0
    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if index >= found:
        raise ConfigError(f"compute.device={device}: this machine has no such CUDA device (torch sees {found}), and "
                          f"the local launcher trains here; set compute.device=cpu (or auto), or submit with "
                          f"launcher=slurm_gpu")


def run(cfg: Any, store: Optional[Store], overrides: Sequence[str] = ()) -> None:
    """Run or submit the store's missing rows with the launcher ``cfg.launcher`` names."""
    launcher(cfg).run(cfg, store, overrides)


def rows_to_add(cfg: Any, store: Store) -> List[int]:
    """A dry run's rows that extending ``store`` to ``cfg``'s sweep would add (a dry run leaves it as it is,
    store/open.py ``open_to_plan``): they are to run too. Empty otherwise."""
    if not cfg.launch.dry_run or store.scope is not None:
        return []
    return list(range(store.num_rows, masks.num_rows(cfg)))
