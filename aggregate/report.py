"""`python -m aggregate.report store.path=PATH [report.out=DIR] [report.kind=softmax_gt] ...`

Writes <store's parent>/report/index.html with figures and CSVs; aggregates first when the influence store is
missing, older than the store's completed rows, or (when `estimator=...` is given) of another estimator."""

import hydra
from hydra.core.hydra_config import HydraConfig

from datatransfer import config
from datatransfer.errors import fail_cleanly

config.register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="aggregate")
def main(cfg) -> None:
    from datatransfer.influence.aggregate import current_influence, out_path
    from datatransfer.report.page import refuse_foreign_out, report_dir, write_report

    with fail_cleanly("nothing was replaced (results are written to a temporary folder first)"):
        config.validate_aggregate(cfg)
        # report.out is checked before the influence store is (re)computed: a refused report does no work
        refuse_foreign_out(report_dir(cfg.report.out, out_path(cfg.out, cfg.store.path)))
        asked = {"estimator", "estimator.name"} & set(config.override_keys(HydraConfig.get().overrides.task))
        inf, store = current_influence(cfg, estimator_asked=bool(asked))
        print(f"influences: {inf.path} ({inf.attrs['rows_used']} rows, estimator {inf.attrs['estimator']['name']})")
        s = write_report(inf, cfg.report.out or None, cfg.report, store)
        for line in s.headline_lines:
            print(f"headline: {line}")
        print(f"wrote {len(s.figures)} figures and {len(s.csvs)} CSV files")
        print(f"open {s.index}")


if __name__ == "__main__":
    main()
