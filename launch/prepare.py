"""`python -m launch.prepare dataset=NAME src=RAW out=FOLDER [verify=true]`: write a dataset's FFCV betons to
<out>/<name>/ for source.loader=ffcv, from the folder its official release unpacks to (docs/paper-scale.md);
verify=true compares the counts per split and class with the paper's Table 1 and exits 2 on a difference."""

import hydra

from datatransfer import config
from datatransfer.errors import DataError, fail_cleanly

config.register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="prepare")
def main(cfg) -> None:
    from datatransfer.data.prepare import prepare, verify

    with fail_cleanly():
        folders = prepare(cfg)
        if not cfg.verify:
            return
        lines, diffs = verify(folders[0], cfg.name or cfg.dataset)
        print("\n".join(lines))
        for d in diffs:
            print(f"  DIFFERENT {d}")
        if diffs:
            raise DataError(f"verify: {folders[0]} differs from the expected sizes in {len(diffs)} place(s) (above)")
        print(f"verify: {folders[0]} matches the expected sizes")


if __name__ == "__main__":
    main()
