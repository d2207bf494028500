"""`python -m launch [overrides]`: create or reopen the sweep's store and run its missing rows.

launcher=local runs them here; launcher=slurm submits them as job arrays and returns at once (docs/slurm.md).
"""

import hydra
from hydra.core.hydra_config import HydraConfig

from datatransfer import config
from datatransfer.errors import fail_cleanly

config.register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg) -> None:
    from datatransfer.launchers import preflight, run
    from datatransfer.store.open import open_store, open_to_plan

    with fail_cleanly("completed rows are kept; rerun the same command to continue"):
        preflight(cfg)
        store = open_to_plan(cfg) if cfg.launch.dry_run else open_store(cfg)  # a dry run writes nothing
        run(cfg, store, HydraConfig.get().overrides.task)


if __name__ == "__main__":
    main()
