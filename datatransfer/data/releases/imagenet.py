"""ImageNet (ILSVRC2012) as the official archives unpack, or as a pre-sorted ImageFolder tree.

* ``train/<wnid>/*.JPEG``: ILSVRC2012_img_train.tar unpacked, and each class's ``<wnid>.tar`` in it unpacked;
* ``val/``: ILSVRC2012_img_val.tar unpacked (50,000 flat ``ILSVRC2012_val_NNNNNNNN.JPEG``), labelled by the devkit
  (``ILSVRC2012_devkit_t12.tar.gz`` or its unpacked ``ILSVRC2012_devkit_t12/``: ``data/meta.mat`` and
  ``data/ILSVRC2012_validation_ground_truth.txt``), or already sorted into ``val/<wnid>/`` folders.

Labels are torchvision's (``torchvision.datasets.ImageNet``): the wnids in sorted order. meta.json's ``classes``
stay the wnids (the store's unit names); ``names`` holds the devkit's words for each class when it is there.
torchvision's own ImageNet class is not used to read the files: it unpacks archives into ``src`` and insists on
the archives' md5; its devkit parsing (meta.mat's leaf synsets, the ground-truth ids) is repeated here.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from datatransfer.data.releases.base import Release, Samples, md5, require_images
from datatransfer.errors import DataError

DEVKIT = "ILSVRC2012_devkit_t12"
_META, _TRUTH = "data/meta.mat", "data/ILSVRC2012_validation_ground_truth.txt"


def read_devkit(src: Path) -> Optional[Tuple[Dict[int, str], Dict[str, str], List[int], Dict[str, str]]]:
    """(ILSVRC2012_ID -> wnid, wnid -> words, validation ids in file order, md5 of the devkit) or None."""
    import scipy.io

    folder, archive = src / DEVKIT, src / f"{DEVKIT}.tar.gz"
    if (folder / _META).is_file():
        meta_bytes, truth = (folder / _META).read_bytes(), (folder / _TRUTH).read_text() \
            if (folder / _TRUTH).is_file() else None
        sums = {f"{DEVKIT}/{_META}": md5(folder / _META)}
    elif archive.is_file():
        try:
            with tarfile.open(archive) as tar:
                meta_bytes = tar.extractfile(f"{DEVKIT}/{_META}").read()
                member = f"{DEVKIT}/{_TRUTH}"
                truth = tar.extractfile(member).read().decode() if member in tar.getnames() else None
        except (tarfile.TarError, KeyError, OSError) as e:
            raise DataError(f"{archive}: not a readable devkit archive with {DEVKIT}/{_META} ({e})") from e
        sums = {archive.name: md5(archive)}
    else:
        return None
    if truth is None:
        raise DataError(f"{src}: the devkit has no {_TRUTH} (the validation labels)")
    synsets = scipy.io.loadmat(io.BytesIO(meta_bytes), squeeze_me=True)["synsets"]
    leaves = [s for s in synsets if int(s[4]) == 0]  # num_children == 0: the 1000 classes
    id_to_wnid = {int(s[0]): str(s[1]) for s in leaves}
    words = {str(s[1]): str(s[2]) for s in leaves}
    return id_to_wnid, words, [int(v) for v in truth.split()], sums


def read_imagenet(src: Path, seed: int = 0) -> Release:
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    for split in ("train", "val"):
        if not (src / split).is_dir():
            raise DataError(f"src={src}: no {split}/ folder; expected train/<wnid>/ (ILSVRC2012_img_train.tar and its "
                            f"class archives unpacked) and val/ (ILSVRC2012_img_val.tar unpacked, or sorted)")
    tars = sorted((src / "train").glob("*.tar"))
    if tars:
        raise DataError(f"{src / 'train'}: {len(tars)} class archives still packed (e.g. {tars[0].name}); unpack "
                        f"each into train/<wnid>/")
    classes, class_to_idx = find_classes(str(src / "train"))
    train = [(p, int(y)) for p, y in make_dataset(str(src / "train"), class_to_idx, IMG_EXTENSIONS)]
    devkit = read_devkit(src)
    sorted_val = any(p.is_dir() for p in (src / "val").iterdir())
    if sorted_val:
        val_classes = find_classes(str(src / "val"))[0]
        if val_classes != classes:
            raise DataError(f"{src / 'val'}: its class folders differ from train/'s: "
                            f"{sorted(set(val_classes) ^ set(classes))[:10]}")
        val = [(p, int(y)) for p, y in make_dataset(str(src / "val"), class_to_idx, IMG_EXTENSIONS)]
    else:
        if devkit is None:
            raise DataError(f"{src / 'val'} holds unsorted images and there is no devkit ({src / DEVKIT}.tar.gz or "
                            f"{src / DEVKIT}/) to label them")
        val = _flat_val(src / "val", devkit[0], devkit[2], class_to_idx)
    require_images("imagenet", "train/", train)
    require_images("imagenet", "val/", val)
    origin = {"files": devkit[3] if devkit else {}, "split": "ILSVRC2012 train / val",
              "val": "sorted folders" if sorted_val else "devkit ground truth"}
    extra = {"names": [devkit[1].get(w, w) for w in classes]} if devkit else {}
    return Release(list(classes), {"train": train, "val": val}, origin, extra)


def _flat_val(folder: Path, id_to_wnid: Dict[int, str], truth: List[int], class_to_idx: Dict[str, int]) -> Samples:
    files = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    expected = [f"ILSVRC2012_val_{i + 1:08d}.JPEG" for i in range(len(truth))]
    if files != expected:
        missing = sorted(set(expected) - set(files))
        raise DataError(f"{folder}: {len(files):,} images, the devkit labels {len(truth):,} "
                        f"(ILSVRC2012_val_00000001.JPEG ...); missing e.g. {missing[:2]} (a partial download?)")
    unknown = sorted({id_to_wnid.get(t, str(t)) for t in truth} - set(class_to_idx))
    if unknown:
        raise DataError(f"{folder}: the devkit labels validation images with classes train/ does not have: "
                        f"{unknown[:5]}")
    return [(str(folder / f), class_to_idx[id_to_wnid[t]]) for f, t in zip(files, truth)]
