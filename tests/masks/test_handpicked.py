"""The shipped hand-picked baseline file (datatransfer/masks/handpicked_imagenet.json, written by
scripts/handpicked_wordnet.py): its structure, and matches anyone can check by hand against ImageNet's label
order (151-268: the 118 dog classes; 281-285: tabby, tiger cat, Persian, Siamese, Egyptian cat)."""

import json
import re
from pathlib import Path

import pytest

FILE = Path(__file__).resolve().parents[2] / "datatransfer" / "masks" / "handpicked_imagenet.json"
TARGETS = {"aircraft", "birdsnap", "caltech101", "caltech256", "cars", "cifar10", "cifar100", "flowers", "food",
           "pets", "sun397"}


@pytest.fixture(scope="module")
def handpicked():
    return json.loads(FILE.read_text())


def test_structure(handpicked):
    prov = handpicked["provenance"]
    assert prov["script"] == "scripts/handpicked_wordnet.py" and prov["wordnet"]["version"] == "3.0"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", prov["date"])
    targets = handpicked["targets"]
    # every paper target is either in the file or listed as missing, with its class-name source otherwise
    assert set(targets) | set(prov["missing_targets"]) == TARGETS
    assert not set(targets) & set(prov["missing_targets"])
    for name, t in targets.items():
        assert name in prov["class_names"], name
        assert set(t) == {"classes", "wnids", "matched"}
        assert t["classes"] == sorted(set(t["classes"])) and all(0 <= c < 1000 for c in t["classes"])
        assert len(t["wnids"]) == len(t["classes"]) and all(re.fullmatch(r"n\d{8}", w) for w in t["wnids"])
        assert t["wnids"] == sorted(t["wnids"])  # label order is sorted wnid order
        assert set(t["wnids"]) == {w for ws in t["matched"].values() for w in ws}
        assert all(ws for ws in t["matched"].values())


def test_known_matches(handpicked):
    cifar10 = handpicked["targets"]["cifar10"]
    index = dict(zip(cifar10["wnids"], cifar10["classes"]))
    cats = {"n02123045": 281, "n02123159": 282, "n02123394": 283, "n02123597": 284, "n02124075": 285}
    assert {w: index[w] for w in cats} == cats  # the domestic cats, at their ImageNet indices
    assert set(cats) <= set(cifar10["matched"]["cat"])
    assert set(range(151, 269)) <= set(cifar10["classes"])  # every dog is a child of "dog"
    assert len(cifar10["matched"]["dog"]) == 118
    pets = handpicked["targets"]["pets"]["matched"]
    assert pets["Siamese"] == ["n02123597"] and pets["Beagle"] == ["n02088364"]
