"""`python -m aggregate.counterfactual store.path=PATH`: a counterfactual sweep's results
(docs/counterfactual.md): <store's parent>/counterfactual/ with accuracy.csv, summary.csv, best_k.csv and
accuracy_vs_k.png (and the debugged examples' files when the sweep has some)."""

import hydra

from datatransfer import config
from datatransfer.errors import fail_cleanly

config.register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="aggregate")
def main(cfg) -> None:
    from datatransfer.counterfactual.analyse import analyse

    with fail_cleanly():
        a = analyse(cfg.store.path, cfg.report.out or None)
        print(f"rows: {a.rows} of {a.planned} completed")
        for b in a.best:
            print(f"{b['mode']}: {b['source']:<11} k={b['k']:<3} accuracy {100 * b['mean']:.2f} +- "
                  f"{100 * b['std']:.2f} % (n={b['n']}); vs full {100 * b['diff_to_full']:+.2f} pp "
                  f"[95% CI {100 * b['ci_low']:+.2f}, {100 * b['ci_high']:+.2f}]")
        if a.shares:
            s = a.shares
            print(f"debugged examples: {s['n']}; predicted correctly more often {s['more_often']}, less often "
                  f"{s['less_often']}, equally {s['equally']}")
        print(f"wrote {len(a.files)} files to {a.out}")


if __name__ == "__main__":
    main()
