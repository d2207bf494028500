"""`python -m launch.prepare dataset=mini|imagenet|folder|cifar10|cifar100 out=FOLDER [src=RAW] [name=...]`:
write a dataset's FFCV betons to <out>/<name>/ for source.loader=ffcv (docs/paper-scale.md)."""

import hydra

from datatransfer import config
from datatransfer.errors import fail_cleanly

config.register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="prepare")
def main(cfg) -> None:
    from datatransfer.data.prepare import prepare

    with fail_cleanly():
        prepare(cfg)


if __name__ == "__main__":
    main()
