"""The schema of `python -m launch.prepare` (conf/prepare.yaml): write a dataset's FFCV betons."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING


@dataclass
class PrepareConfig:
    """`python -m launch.prepare dataset=... out=FOLDER`: write a dataset's FFCV betons to <out>/<name>/.

    Each dataset folder holds train.beton, val.beton (ImageNet, the mini source) or test.beton (targets), and
    meta.json (class names, sizes, provenance). Point source.root at ``out`` (docs/paper-scale.md).
    """

    # mini | imagenet | a conf/targets name (aircraft birdsnap caltech101 caltech256 cars cifar10 cifar100 flowers
    # food pets sun397) | folder (any target as ImageFolder train/ and test/ trees)
    dataset: str = MISSING
    out: str = MISSING  # folder of prepared datasets (what source.root names)
    # The folder the official archive(s) unpack to (docs/paper-scale.md lists each layout); imagenet: train/ and
    # val/ (unsorted with the devkit, or sorted); folder: train/ and test/; mini: unused (the embedded file).
    src: str = ""
    name: str = ""  # the dataset's folder under out; "" = dataset (folder: required, e.g. pets)
    seed: int = 0  # of the seeded splits (caltech101, caltech256, birdsnap); recorded in meta.json
    # compare the prepared folder's counts per split and class with the expected table (Table 1); exit 2 if
    # they differ. Works on an already prepared folder without src.
    verify: bool = False
    # Image storage, as ffcv-imagenet's ResNet-18 data (write_imagenet.sh 400 0.10 90): long side at most
    # max_resolution px; a compress_probability share stored as JPEG of jpeg_quality, the rest raw.
    # (ffcv-imagenet's ResNet-50 data: 500, 0.50, 90.)
    max_resolution: int = 400
    compress_probability: float = 0.10
    jpeg_quality: int = 90
    workers: int = 0  # writer processes; 0 = every CPU
    overwrite: bool = False  # replace betons that exist
