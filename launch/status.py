"""`python -m launch.status store.path=PATH [watch=SECONDS]`: rows completed / running / queued / failed, per-array
states (one squeue + one sacct call per poll), failed tasks with the end of their logs, throughput and ETA; then per
target whether its influences have converged (from the influence store of `python -m aggregate`) and how many more
rows the rule predicts."""

import time

import hydra

from datatransfer import config
from datatransfer.errors import fail_cleanly

config.register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="status")
def main(cfg) -> None:
    from datatransfer.influence.convergence import store_lines
    from datatransfer.launchers.slurm.status import report

    with fail_cleanly("stopped watching (the jobs go on)"):
        while True:
            text, counts, done = report(cfg.store.path, failed=cfg.failed, tail=cfg.tail)
            print(text, flush=True)
            if cfg.convergence:
                print("\n".join(store_lines(cfg.store.path, cfg.influence, cfg.kind, done)), flush=True)
            if cfg.watch <= 0 or counts.running + counts.queued == 0:
                break
            time.sleep(cfg.watch)
            print(f"\n--- {time.strftime('%H:%M:%S')}")


if __name__ == "__main__":
    main()
