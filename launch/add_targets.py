"""`python -m launch.add_targets store.path=PATH targets=[...] [the sweep's settings] [launcher=...]`: add targets to
an existing store and transfer its rows' saved source models (store.save_backbones) to them, training no source
model. Run again to continue. docs/store-format.md, "Targets added later"."""

import hydra
from hydra.core.hydra_config import HydraConfig

from datatransfer import config
from datatransfer.errors import fail_cleanly

config.register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg) -> None:
    from datatransfer.launchers import preflight, run
    from datatransfer.store.added_targets import add_targets

    with fail_cleanly("completed rows are kept; rerun the same command to continue"):
        preflight(cfg)
        store = add_targets(cfg, dry_run=cfg.launch.dry_run)
        if cfg.launch.dry_run:
            from datatransfer.launchers.cost import transfers

            print("\n".join(transfers(cfg).lines()))
        if store is not None:
            run(cfg, store, HydraConfig.get().overrides.task)


if __name__ == "__main__":
    main()
