"""The launchers behind ``launcher=``: run a store's missing rows here (local) or submit them to Slurm (slurm).

What ``python -m launch`` and ``python -m launch.resume`` call once they have a config and an open store.
"""

from __future__ import annotations

import time
from typing import Any, Optional, Sequence

from datatransfer.store.sweep_store import Store


def run(cfg: Any, store: Optional[Store], overrides: Sequence[str] = ()) -> None:
    """Run or submit the store's missing rows. ``store`` None: a dry run before the store exists."""
    if cfg.launcher.name == "slurm":
        from datatransfer.launchers.slurm.submit import submit

        submit(cfg, store, overrides)  # returns at once; `python -m launch.status` watches
        return
    from datatransfer.launchers.local import local_workers, run_local, summary

    if store is None:
        print(f"dry run: would create {cfg.store.path} and run its {cfg.sweep.num_models} rows here "
              f"in {local_workers(cfg)} worker process(es)")
        return
    todo = len(store.missing_rows())
    print(f"store {store.path}: {store.num_rows - todo} of {store.num_rows} rows already complete, {todo} to run",
          flush=True)
    if cfg.launch.dry_run:
        print(f"dry run: would run {todo} rows here in {local_workers(cfg)} worker process(es)")
        return
    start = time.perf_counter()
    done = run_local(cfg, store)
    print(f"ran {done} rows in {time.perf_counter() - start:.0f} s")
    print(summary(store))
