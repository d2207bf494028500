"""Tiny fake releases in each official layout (real annotation formats: text lists, JSON, MATLAB .mat, a devkit
tarball), as torchvision's own tests build theirs. Each image is a small uniform colour that encodes its id
(``ident_colour`` / ``colour_ident``), so a test can tell from the decoded pixels which file went where.

Each ``make_<name>(root)`` writes the release under ``root`` and returns
``(src, classes, {split: {id: label}}, removable)``: the folder to give ``src=``, the human-readable class names in
label order, the expected membership of each split, and one image file whose removal is a partial download.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

Fake = Tuple[Path, List[str], Dict[str, Dict[int, int]], Path]


def ident_colour(ident: int) -> Tuple[int, int, int]:
    return (16 * (ident % 16) + 8, 16 * ((ident // 16) % 16) + 8, 128)


def colour_ident(rgb: np.ndarray) -> int:
    r, g = (int(v) for v in np.round((np.asarray(rgb[:2], dtype=float) - 8) / 16))
    return r + 16 * g


def image(path: Path, ident: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.broadcast_to(np.array(ident_colour(ident), np.uint8), (12, 16, 3))
    Image.fromarray(np.ascontiguousarray(pixels)).save(path, format="JPEG", quality=95)


class _Ids:
    def __init__(self):
        self.next = 1

    def __call__(self) -> int:
        self.next += 1
        return self.next - 1


def make_aircraft(root: Path) -> Fake:
    data = root / "fgvc-aircraft-2013b" / "data"
    classes = ["707-320", "A300B4", "Cessna 172"]
    (data).mkdir(parents=True)
    (data / "variants.txt").write_text("".join(f"{c}\n" for c in classes))
    new, members = _Ids(), {}
    for split, n in (("trainval", 3), ("test", 2)):
        lines, members[split] = [], {}
        for label, c in enumerate(classes):
            for _ in range(n):
                i = new()
                image(data / "images" / f"{1000000 + i}.jpg", i)
                lines.append(f"{1000000 + i} {c}\n")
                members[split][i] = label
        (data / f"images_variant_{split}.txt").write_text("".join(lines))
    return root, classes, {"train": members["trainval"], "test": members["test"]}, data / "images" / "1000001.jpg"


def _mat_structs(fields: List[str], rows: List[tuple]) -> np.ndarray:
    out = np.empty((1, len(rows)), dtype=[(f, "O") for f in fields])
    for k, row in enumerate(rows):
        out[0, k] = row
    return out


def make_cars(root: Path) -> Fake:
    import scipy.io

    base = root / "stanford_cars"
    classes = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Volvo 240 Sedan 1993"]
    (base / "devkit").mkdir(parents=True)
    scipy.io.savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array(classes, dtype=object)[None, :]})
    new, members = _Ids(), {}
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    for split, folder, mat in (("train", "cars_train", base / "devkit" / "cars_train_annos.mat"),
                               ("test", "cars_test", base / "cars_test_annos_withlabels.mat")):
        rows, members[split] = [], {}
        for label in range(len(classes)):
            for _ in range(2 + label):
                i = new()
                image(base / folder / f"{i:05d}.jpg", i)
                rows.append((1, 1, 10, 10, label + 1, f"{i:05d}.jpg"))
                members[split][i] = label
        scipy.io.savemat(mat, {"annotations": _mat_structs(fields, rows)})
    return root, classes, members, base / "cars_test" / f"{max(members['test']):05d}.jpg"


def make_flowers(root: Path) -> Fake:
    import scipy.io
    from torchvision.datasets import Flowers102

    base = root / "flowers-102"
    n_classes, new = 3, _Ids()
    labels, ids = [], {"trnid": [], "valid": [], "tstid": []}
    for key, n in (("trnid", 2), ("valid", 1), ("tstid", 2)):
        for c in range(n_classes):
            for _ in range(n):
                i = new()
                image(base / "jpg" / f"image_{i:05d}.jpg", i)
                labels.append(c + 1)
                ids[key].append(i)
    scipy.io.savemat(base / "imagelabels.mat", {"labels": np.array(labels)[None, :]})
    scipy.io.savemat(base / "setid.mat", {k: np.array(v)[None, :] for k, v in ids.items()})
    label = {i: labels[i - 1] - 1 for i in range(1, len(labels) + 1)}
    members = {"train": {i: label[i] for i in ids["trnid"] + ids["valid"]}, "test": {i: label[i] for i in ids["tstid"]}}
    return root, list(Flowers102.classes), members, base / "jpg" / "image_00002.jpg"  # the release names all 102


def make_food(root: Path) -> Fake:
    base = root / "food-101"
    ids, names = ["apple_pie", "baby_back_ribs", "ramen"], ["Apple pie", "Baby back ribs", "Ramen"]
    (base / "meta").mkdir(parents=True)
    (base / "meta" / "classes.txt").write_text("\n".join(ids) + "\n")
    (base / "meta" / "labels.txt").write_text("\n".join(names) + "\n")
    new, members = _Ids(), {}
    for split, n in (("train", 3), ("test", 2)):
        listing, members[split] = {}, {}
        for label, c in enumerate(ids):
            listing[c] = []
            for _ in range(n):
                i = new()
                image(base / "images" / c / f"{i}.jpg", i)
                listing[c].append(f"{c}/{i}")
                members[split][i] = label
        (base / "meta" / f"{split}.json").write_text(json.dumps(listing))
        (base / "meta" / f"{split}.txt").write_text("".join(f"{p}\n" for v in listing.values() for p in v))
    return root, names, members, base / "images" / "ramen" / f"{max(members['test'])}.jpg"


def make_pets(root: Path) -> Fake:
    base = root / "oxford-iiit-pet"
    breeds = [("Abyssinian", 1), ("american_bulldog", 2), ("Bengal", 1)]
    (base / "annotations").mkdir(parents=True)
    new, members = _Ids(), {}
    for split, n in (("trainval", 3), ("test", 2)):
        lines, members[split] = [], {}
        for label, (breed, species) in enumerate(breeds):
            for _ in range(n):
                i = new()
                image(base / "images" / f"{breed}_{i}.jpg", i)
                lines.append(f"{breed}_{i} {label + 1} {species} 1\n")
                members[split][i] = label
        (base / "annotations" / f"{split}.txt").write_text("".join(lines))
    names = ["Abyssinian", "American Bulldog", "Bengal"]
    last = base / "images" / f"Bengal_{new.next - 1}.jpg"
    return root, names, {"train": members["trainval"], "test": members["test"]}, last


def _seeded_classes(per_class: Dict[int, List[int]], n_train: int, seed: int, name_of) -> Dict[str, Dict[int, int]]:
    """The expected split of base.seeded_split, restated: per class, its files sorted by name, permuted by
    default_rng([seed, class])."""
    members: Dict[str, Dict[int, int]] = {"train": {}, "test": {}}
    for c, ids in per_class.items():
        ids = sorted(ids, key=name_of)
        order = np.random.default_rng([seed, c]).permutation(len(ids))[:n_train]
        for k, i in enumerate(ids):
            members["train" if k in set(order.tolist()) else "test"][i] = c
    return members


def make_caltech101(root: Path, seed: int = 0) -> Fake:
    cats = root / "101_ObjectCategories"
    folders = ["BACKGROUND_Google", "Faces_easy", "accordion", "crocodile_head"]  # sorted, as listdir sorts
    new, per_class, name = _Ids(), {}, {}
    for folder in folders:
        for k in range(1, 34):
            i = new()
            image(cats / folder / f"image_{k:04d}.jpg", i)
            if folder != "BACKGROUND_Google":
                per_class.setdefault(folders.index(folder) - 1, []).append(i)
                name[i] = f"image_{k:04d}.jpg"
    members = _seeded_classes(per_class, 30, seed, name.get)
    return root, ["Faces easy", "accordion", "crocodile head"], members, cats / "accordion" / "image_0007.jpg"


def make_caltech256(root: Path, seed: int = 0) -> Fake:
    cats = root / "256_ObjectCategories"
    folders = ["001.ak47", "002.american-flag", "003.airplanes-101"]
    new, per_class, name = _Ids(), {}, {}
    for c, folder in enumerate(folders):
        for k in range(1, 63 + c):
            i = new()
            image(cats / folder / f"{c + 1:03d}_{k:04d}.jpg", i)
            per_class.setdefault(c, []).append(i)
            name[i] = f"{c + 1:03d}_{k:04d}.jpg"
    members = _seeded_classes(per_class, 60, seed, name.get)
    return root, ["ak47", "american-flag", "airplanes"], members, cats / "002.american-flag" / "002_0010.jpg"


def make_sun397(root: Path) -> Fake:
    base = root / "SUN397"
    classes = ["/a/abbey", "/a/apartment_building/outdoor", "/b/bakery/shop"]
    base.mkdir(parents=True)
    (base / "ClassName.txt").write_text("".join(f"{c}\n" for c in classes))
    new, members, lists = _Ids(), {"train": {}, "test": {}}, {"train": [], "test": []}
    for label, c in enumerate(classes):
        for k in range(5):  # 2 train, 2 test, 1 in no partition-1 list
            i = new()
            path = f"{c}/sun_{i:08d}.jpg"
            image(base / path.strip("/"), i)
            if k < 4:
                split = "train" if k < 2 else "test"
                members[split][i] = label
                lists[split].append(path)
    (root / "Partitions").mkdir()
    (root / "Partitions" / "Training_01.txt").write_text("".join(f"{p}\n" for p in lists["train"]))
    (root / "Partitions" / "Testing_01.txt").write_text("".join(f"{p}\n" for p in lists["test"]))
    names = ["abbey", "apartment building (outdoor)", "bakery (shop)"]
    return root, names, members, base / lists["test"][0].strip("/")


def make_birdsnap(root: Path, seed: int = 0) -> Fake:
    base = root / "birdsnap"
    species = [(1, "Acadian Flycatcher", "Empidonax virescens", "Acadian_Flycatcher"),
               (2, "Blue Jay", "Cyanocitta cristata", "Blue_Jay"),
               (3, "Cooper's Hawk", "Accipiter cooperii", "Coopers_Hawk")]
    base.mkdir(parents=True)
    (base / "species.txt").write_text("id\tcommon\tscientific\tdir\n" + "".join(
        f"{i}\t{c}\t{s}\t{d}\n" for i, c, s, d in species))
    new, per_class, name, rows = _Ids(), {}, {}, []
    for label, (_, _, _, d) in enumerate(species):
        for k in range(6 + label):
            i = new()
            path = f"{d}/{i:04d}.jpg"
            rows.append(f"url\tmd5\t{path}\t{label + 1}\t1\t1\t9\t9\n")
            if k == 0:
                continue  # listed, but lost from Flickr: not on disk
            image(base / "download" / "images" / path, i)
            per_class.setdefault(label, []).append(i)
            name[i] = path
    (base / "images.txt").write_text("url\tmd5\tpath\tspecies_id\tbb_x1\tbb_y1\tbb_x2\tbb_y2\n" + "".join(rows))
    (base / "test_images.txt").write_text("path\n" + rows[1].split("\t")[2] + "\n")
    members: Dict[str, Dict[int, int]] = {"train": {}, "test": {}}
    for c, ids in per_class.items():
        ids = sorted(ids, key=name.get)
        n_test = max(1, int(round(0.2 * len(ids))))
        chosen = set(np.random.default_rng([seed, c]).permutation(len(ids))[:n_test].tolist())
        for k, i in enumerate(ids):
            members["test" if k in chosen else "train"][i] = c
    return root, [s[1] for s in species], members, None


def _devkit(root: Path, wnids: List[str], words: List[str], truth: List[int]) -> None:
    import scipy.io

    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    rows = [(k + 1, w, t, "gloss", 0, np.zeros(0), 0, 10) for k, (w, t) in enumerate(zip(wnids, words))]
    rows.append((len(wnids) + 1, "n00001740", "entity", "gloss", 2, np.array([1, 2]), 5, 0))  # not a class
    mat = io.BytesIO()
    scipy.io.savemat(mat, {"synsets": _mat_structs(fields, rows).T})
    files = {"ILSVRC2012_devkit_t12/data/meta.mat": mat.getvalue(),
             "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt":
                 "".join(f"{t}\n" for t in truth).encode()}
    with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def make_imagenet(root: Path) -> Fake:
    """train/<wnid>/ sorted; val/ flat as ILSVRC2012_img_val.tar unpacks; the devkit tarball labels it. The devkit's
    ILSVRC2012_IDs are not in wnid order (as in the real one), so the labels must go through the wnids."""
    wnids = ["n01440764", "n01443537", "n01484850"]
    words = ["tench, Tinca tinca", "goldfish, Carassius auratus", "great white shark, white shark"]
    order = [2, 0, 1]  # devkit id k+1 is wnids[order[k]]
    new, members = _Ids(), {"train": {}, "val": {}}
    for label, w in enumerate(wnids):
        for k in range(3):
            i = new()
            image(root / "train" / w / f"{w}_{i}.JPEG", i)
            members["train"][i] = label
    truth = []
    for k in range(7):
        i, label = new(), k % 3
        image(root / "val" / f"ILSVRC2012_val_{k + 1:08d}.JPEG", i)
        members["val"][i] = label
        truth.append(order.index(label) + 1)
    _devkit(root, [wnids[j] for j in order], [words[j] for j in order], truth)
    return root, wnids, members, root / "val" / "ILSVRC2012_val_00000003.JPEG"


MAKERS = {"aircraft": make_aircraft, "birdsnap": make_birdsnap, "caltech101": make_caltech101,
          "caltech256": make_caltech256, "cars": make_cars, "flowers": make_flowers, "food": make_food,
          "pets": make_pets, "sun397": make_sun397, "imagenet": make_imagenet}
