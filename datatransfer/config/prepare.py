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

    dataset: str = MISSING  # mini | imagenet | cifar10 | cifar100 | folder
    out: str = MISSING  # folder of prepared datasets (what source.root names)
    # imagenet: ImageFolder root with train/ and val/; folder: with train/ and test/; cifar10/cifar100: the folder
    # of the python pickles (cifar-10-batches-py, cifar-100-python); mini: unused (the embedded file).
    src: str = ""
    name: str = ""  # the dataset's folder under out; "" = dataset (folder: required, e.g. pets)
    # Image storage, as ffcv-imagenet's ResNet-18 data (write_imagenet.sh 400 0.10 90): long side at most
    # max_resolution px; a compress_probability share stored as JPEG of jpeg_quality, the rest raw.
    # (ffcv-imagenet's ResNet-50 data: 500, 0.50, 90.)
    max_resolution: int = 400
    compress_probability: float = 0.10
    jpeg_quality: int = 90
    workers: int = 0  # writer processes; 0 = every CPU
    overwrite: bool = False  # replace betons that exist
