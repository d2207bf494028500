"""`python -m launch.resume store.path=PATH [launcher / compute overrides]`: run every row of an existing store that
is neither completed nor live in the Slurm queue (failed, cancelled, timed out, lost with a node, never submitted).

The sweep, compute settings and launcher come from the store's latest submission, with e.g.
`launcher.timeout_min=240` on top; `launcher=local` runs the rows here. Running it twice submits nothing the second
time. See docs/slurm.md.
"""

import hydra
from hydra.core.hydra_config import HydraConfig

from datatransfer import config
from datatransfer.errors import fail_cleanly

config.register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="resume")
def main(cli_cfg) -> None:
    from datatransfer.launchers import preflight, run
    from datatransfer.launchers.resume import resume_config
    from datatransfer.store.added_targets import add_targets
    from datatransfer.store.open import open_store, open_to_plan
    from datatransfer.store.sweep_store import Store

    with fail_cleanly("completed rows are kept; rerun the same command to continue"):
        overrides = HydraConfig.get().overrides.task
        cfg, added = resume_config(Store.open(cli_cfg.store.path), cli_cfg, overrides)
        preflight(cfg)
        # reopened as `python -m launch` (or `launch.add_targets`) would: same checks, same scope
        store = add_targets(cfg) if added else open_to_plan(cfg) if cfg.launch.dry_run else open_store(cfg)
        run(cfg, store, overrides)


if __name__ == "__main__":
    main()
