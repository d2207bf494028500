"""`python -m launch [overrides]`: create or reopen the sweep's store and run its missing rows.

launcher=local runs them here; launcher=slurm submits them as job arrays and returns at once (docs/slurm.md).
"""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig

from datatransfer import config
from datatransfer.errors import fail_cleanly

config.register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg) -> None:
    from datatransfer.config import validate
    from datatransfer.launchers import run
    from datatransfer.store.open import open_store

    with fail_cleanly("completed rows are kept; rerun the same command to continue"):
        if cfg.launch.dry_run and not Path(cfg.store.path).exists():
            validate(cfg)
            store = None  # a dry run creates nothing
        else:
            store = open_store(cfg)
        run(cfg, store, HydraConfig.get().overrides.task)


if __name__ == "__main__":
    main()
