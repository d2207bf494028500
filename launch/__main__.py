"""`python -m launch [overrides]`: create or reopen the sweep's store and run its missing rows."""

import sys
import time

import hydra

from datatransfer import config  # noqa: F401  (registers the schemas)
from datatransfer.cli import fail_cleanly


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg) -> None:
    from datatransfer.local import run_local, summary
    from datatransfer.sweep import open_store

    with fail_cleanly():
        start = time.perf_counter()
        store = open_store(cfg)
        todo = len(store.missing_rows())
        print(f"store {store.path}: {store.num_rows - todo} of {store.num_rows} rows already complete, "
              f"{todo} to run", flush=True)
        try:
            done = run_local(cfg, store)
        except KeyboardInterrupt:
            print(f"\ninterrupted: completed rows are kept; rerun the same command to continue", file=sys.stderr)
            sys.exit(130)
        print(f"ran {done} rows in {time.perf_counter() - start:.0f} s")
        print(summary(store))


if __name__ == "__main__":
    main()
