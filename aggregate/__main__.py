"""`python -m aggregate store.path=PATH [out=...] [estimator=dim|ridge|lasso] [estimator.bootstrap=B] [launcher=slurm]
[diagnostics.enabled=false] ...`"""

import hydra

from datatransfer import config
from datatransfer.errors import fail_cleanly

config.register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="aggregate")
def main(cfg) -> None:
    from datatransfer.influence.aggregate import aggregate_from_config, out_path
    from datatransfer.influence.reader import Influence

    with fail_cleanly("nothing was replaced (results are written to a temporary folder first)"):
        config.validate_aggregate(cfg)
        from datatransfer.launchers.slurm.array_map import mapper

        out = out_path(cfg.out, cfg.store.path)
        run_tasks = fanout_tasks = None
        if cfg.launcher.name == "slurm":  # the row blocks as one Slurm array
            run_tasks = mapper(cfg.launcher, out, "row-block tasks")
        if cfg.estimator.name == "lasso" and cfg.estimator.fanout.launcher == "slurm":  # the LASSO's example blocks
            fanout_tasks = mapper(cfg.estimator.fanout.slurm, out, "LASSO example-block tasks",
                                  "estimator.fanout.slurm.")
        s = aggregate_from_config(cfg, run_tasks, fanout_tasks)
        reused = s.rows_read < s.rows_used * len(s.targets)
        read = f"read {s.rows_read} target rows, the rest from the previous sums" if reused else "every row read"
        print(f"used {s.rows_used} of {s.rows_total} rows ({read}); estimator {s.estimator}; {s.seconds:.1f} s")
        for line in Influence(s.out).top_lines(cfg.report.kind):  # a first look; the report has the rest
            print(line)
        for t, note in s.diagnostics.items():
            print(f"diagnostics for {t}: {note}")
        print(f"wrote {s.out}")
        print(f"next: python -m aggregate.report store.path={cfg.store.path}" + (f" out={cfg.out}" if cfg.out else ""))


if __name__ == "__main__":
    main()
