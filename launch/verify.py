"""`python -m launch.verify store.path=PATH [verify.invalidate=true]`: check that every completed row's chunks
decode (outputs, predictions, row_stats, provenance; targets added later too), outputs are finite, the masks are the
sweep's and the metadata is consistent. Prints a report; exits 0 when nothing is damaged, 1 when damage was found,
2 when the store's metadata cannot be read. With verify.invalidate=true, the damaged rows' completion flags are
cleared so that a rerun (`python -m launch ...`, `launch.resume`) computes them again. docs/store-format.md.
"""

import sys

import hydra

from datatransfer import config
from datatransfer.errors import fail_cleanly

config.register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="verify")
def main(cfg) -> None:
    from datatransfer.store.verify import verify

    with fail_cleanly("stopped; flags already cleared stay cleared (a rerun recomputes those rows)"):
        report = verify(cfg.store.path, invalidate=cfg.verify.invalidate)
        print(report.text(), flush=True)
    sys.exit(1 if report.damage_found else 0)


if __name__ == "__main__":
    main()
