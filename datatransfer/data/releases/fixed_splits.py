"""Targets whose release fixes the train/test split, parsed by torchvision's dataset classes (``download=False``):
FGVC-Aircraft, Stanford Cars, Flowers-102, Food-101, Oxford-IIIT Pet.

Each reader checks the release's files first (a clear message instead of torchvision's "Dataset not found"), then
lets torchvision parse the annotations; images are listed, not opened (``loader=str``)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List

from datatransfer.data.releases.base import (
    Release,
    Samples,
    base_folder,
    checksums,
    real_path,
    require,
    require_images,
    torchvision_root,
)


def _listed(dataset, root: Path, base: str, folder: Path) -> Samples:
    """(image file under the user's folder, label) of a torchvision dataset built with ``loader=str``."""
    return [(real_path(dataset[i][0], root, base, folder), int(dataset[i][1])) for i in range(len(dataset))]


def read_aircraft(src: Path, seed: int = 0) -> Release:
    """FGVC-Aircraft 2013b (fgvc-aircraft-2013b.tar.gz): 100 variants; train = ``trainval`` (6,667), test (3,333)."""
    from torchvision.datasets import FGVCAircraft

    base = "fgvc-aircraft-2013b"
    folder = base_folder(src, base, "data/variants.txt")
    data = folder / "data"
    ann = [data / "variants.txt", data / "images_variant_trainval.txt", data / "images_variant_test.txt"]
    require(src, f"{base}/data/ with variants.txt, images_variant_{{trainval,test}}.txt and images/", *ann,
            data / "images")
    splits = {}
    with torchvision_root(folder, base) as root:
        for ours, theirs in (("train", "trainval"), ("test", "test")):
            ds = FGVCAircraft(str(root), split=theirs, annotation_level="variant", loader=str)
            splits[ours] = _listed(ds, root, base, folder)
            require_images("aircraft", f"data/images_variant_{theirs}.txt", splits[ours])
        classes = list(ds.classes)
    return Release(classes, splits, {"files": checksums(folder, ann), "split": "the release's trainval / test"})


def read_cars(src: Path, seed: int = 0) -> Release:
    """Stanford Cars: devkit (car_devkit.tgz), cars_train/, cars_test/ and cars_test_annos_withlabels.mat;
    196 classes, 8,144 train / 8,041 test; names from devkit/cars_meta.mat."""
    from torchvision.datasets import StanfordCars

    base = "stanford_cars"
    folder = base_folder(src, base, "devkit/cars_meta.mat")
    ann = [folder / "devkit" / "cars_meta.mat", folder / "devkit" / "cars_train_annos.mat",
           folder / "cars_test_annos_withlabels.mat"]
    require(src, f"{base}/ with devkit/cars_meta.mat, devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat, "
            f"cars_train/ and cars_test/", *ann, folder / "cars_train", folder / "cars_test")
    splits = {}
    with torchvision_root(folder, base) as root:
        for split in ("train", "test"):
            ds = StanfordCars(str(root), split=split, loader=str)
            splits[split] = _listed(ds, root, base, folder)
            require_images("cars", ann[1 if split == "train" else 2].name, splits[split])
        classes = [str(c) for c in ds.classes]
    return Release(classes, splits, {"files": checksums(folder, ann), "split": "the release's train / test"})


def _flowers_class():
    from torchvision.datasets import Flowers102

    class _Flowers102(Flowers102):
        """torchvision's parser; the md5 of the .mat files is recorded in meta.json and compared by the reader
        (a warning), instead of torchvision refusing any copy whose bytes differ."""

        def _check_integrity(self) -> bool:
            return self._images_folder.is_dir() and all(
                (self._base_folder / self._file_dict[k][0]).is_file() for k in ("label", "setid"))

    return _Flowers102


def read_flowers(src: Path, seed: int = 0) -> Release:
    """Oxford Flowers-102 (102flowers.tgz unpacked to jpg/, imagelabels.mat, setid.mat): train = the official
    train + validation ids (2,040, 20 per class), test = the test ids (6,149)."""
    import logging

    base = "flowers-102"
    folder = base_folder(src, base, "setid.mat")
    ann = [folder / "imagelabels.mat", folder / "setid.mat"]
    require(src, f"{base}/ with jpg/, imagelabels.mat and setid.mat", *ann, folder / "jpg")
    cls = _flowers_class()
    sums = checksums(folder, ann)
    for key in ("label", "setid"):
        name, official = cls._file_dict[key]
        if sums[name] != official:
            logging.getLogger(__name__).warning(f"{folder / name}: md5 {sums[name]} is not the release's {official}")
    splits = {}
    with torchvision_root(folder, base) as root:
        for ours, theirs in (("train", ("train", "val")), ("test", ("test",))):
            splits[ours] = []
            for t in theirs:
                splits[ours] += _listed(cls(str(root), split=t, loader=str), root, base, folder)
            require_images("flowers", "setid.mat", splits[ours])
    n = max(label for _, label in splits["train"]) + 1
    classes = [str(c) for c in getattr(cls, "classes", [])] or [f"flower {i + 1}" for i in range(n)]
    return Release(classes, splits, {"files": sums, "split": "train = setid.mat trnid + valid; test = tstid"})


def read_food(src: Path, seed: int = 0) -> Release:
    """Food-101 (food-101.tar.gz): meta/train.json and meta/test.json (75,750 / 25,250), images/<class>/;
    readable names from meta/labels.txt (in meta/classes.txt order) where present."""
    from torchvision.datasets import Food101

    base = "food-101"
    folder = base_folder(src, base, "meta/train.json")
    ann = [folder / "meta" / "train.json", folder / "meta" / "test.json"]
    require(src, f"{base}/ with meta/train.json, meta/test.json and images/", *ann, folder / "images")
    splits = {}
    with torchvision_root(folder, base) as root:
        for split in ("train", "test"):
            ds = Food101(str(root), split=split, loader=str)
            splits[split] = _listed(ds, root, base, folder)
            require_images("food", f"meta/{split}.json", splits[split])
        classes = list(ds.classes)
    classes = _food_labels(folder, classes, ann)
    return Release(classes, splits, {"files": checksums(folder, ann), "split": "meta/train.json / meta/test.json"})


def _food_labels(folder: Path, classes: List[str], ann: List[Path]) -> List[str]:
    meta = folder / "meta"
    if (meta / "classes.txt").is_file() and (meta / "labels.txt").is_file():
        ids = (meta / "classes.txt").read_text().split()
        labels = [line.strip() for line in (meta / "labels.txt").read_text().splitlines() if line.strip()]
        if sorted(ids) == classes and len(labels) == len(ids):
            ann += [meta / "classes.txt", meta / "labels.txt"]
            names = dict(zip(ids, labels))
            return [names[c] for c in classes]
    return [c.replace("_", " ") for c in classes]


def read_pets(src: Path, seed: int = 0) -> Release:
    """Oxford-IIIT Pet (images.tar.gz, annotations.tar.gz): annotations/trainval.txt (3,680) and test.txt (3,669),
    37 breeds named as torchvision names them ("Abyssinian", "American Bulldog", ...)."""
    from torchvision.datasets import OxfordIIITPet

    base = "oxford-iiit-pet"
    folder = base_folder(src, base, "annotations/trainval.txt")
    ann = [folder / "annotations" / "trainval.txt", folder / "annotations" / "test.txt"]
    require(src, f"{base}/ with images/ and annotations/trainval.txt, annotations/test.txt", *ann, folder / "images")
    splits, names = {}, {}
    with torchvision_root(folder, base) as root:
        for ours, theirs in (("train", "trainval"), ("test", "test")):
            ds = OxfordIIITPet(str(root), split=theirs)
            # the class does not take a loader: its listed files and labels are read directly
            splits[ours] = [(real_path(p, root, base, folder), int(y)) for p, y in zip(ds._images, ds._labels)]
            require_images("pets", f"annotations/{theirs}.txt", splits[ours])
            names.update(ds.class_to_idx)
    classes = [c for c, _ in sorted(names.items(), key=lambda kv: kv[1])]
    return Release(classes, splits, {"files": checksums(folder, ann), "split": "annotations trainval / test"})


READERS: dict[str, Callable[..., Release]] = {"aircraft": read_aircraft, "cars": read_cars, "flowers": read_flowers,
                                               "food": read_food, "pets": read_pets}
