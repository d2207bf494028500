#!/usr/bin/env python
"""Write datatransfer/masks/handpicked_imagenet.json: per paper target, the ImageNet classes that are WordNet
children or parents of its class names (the hand-picked baseline of the paper's Appendix A.4).

The rule, per target class name:

1. the name as WordNet lemmas: lower case, words joined by "_", a parenthesised part ("(outdoor)") and trailing
   numbers (car model years) dropped; the longest trailing run of words that names a WordNet 3.0 noun is used
   ("American Pit Bull Terrier" -> "pit_bull_terrier"? no such noun -> "bull_terrier"; "Acura RL Sedan" ->
   "sedan"), so a name WordNet does not know matches through its head noun, or not at all;
2. every noun sense of that lemma (WordNet's morphology applies: "faces" -> "face");
3. its children (hyponyms and instance hyponyms, transitively), itself, and its parents (hypernyms and instance
   hypernyms, transitively) that are ImageNet-1k classes: an ImageNet wnid is "n" + the WordNet 3.0 noun offset.

Class-name lists (no dataset is downloaded; each list's package and version go into the JSON's provenance):
torchvision.datasets.Flowers102.classes (installed torchvision) for flowers; mmpretrain 1.2.0's
``datasets/categories.py`` for CIFAR-10/100, Aircraft, Cars, Caltech-101, Food-101 and Pets; tensorflow-datasets'
``sun397_labels.txt`` for SUN397; ``--meta name=PATH`` takes a prepared dataset's meta.json instead (e.g. for
Birdsnap and Caltech-256, whose names no package here ships). ImageNet's 1000 wnids in torchvision's label
order (sorted) come from timm's ``data/_info/imagenet_synsets.txt``. The wheels are read, not installed:

    pip download --no-deps mmpretrain==1.2.0 tensorflow-datasets==4.9.10 timm==1.0.31 -d /tmp/wheels
    apt-get install -y wordnet-base          # WordNet 3.0 dict files in /usr/share/wordnet
    pip install nltk                         # (the optional extra: pip install -e '.[handpicked]')
    python scripts/handpicked_wordnet.py --wheels /tmp/wheels [--meta birdsnap=/data/betons/birdsnap/meta.json]
"""

from __future__ import annotations

import argparse
import ast
import glob
import hashlib
import json
import re
import subprocess
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = ["aircraft", "birdsnap", "caltech101", "caltech256", "cars", "cifar10", "cifar100", "flowers", "food",
           "pets", "sun397"]
MMPRETRAIN = {"cifar10": "CIFAR10_CATEGORIES", "cifar100": "CIFAR100_CATEGORIES", "aircraft": "FGVCAIRCRAFT_CATEGORIES",
              "cars": "STANFORDCARS_CATEGORIES", "caltech101": "CALTECH101_CATEGORIES", "food": "FOOD101_CATEGORIES",
              "pets": "OxfordIIITPet_CATEGORIES"}


def _wheel(folder: str, name: str) -> tuple[zipfile.ZipFile, dict]:
    paths = sorted(glob.glob(str(Path(folder) / f"{name}-*.whl")))
    if not paths:
        raise SystemExit(f"no {name}-*.whl in {folder} (pip download --no-deps {name} -d {folder})")
    path = Path(paths[-1])
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return zipfile.ZipFile(path), {"wheel": path.name, "sha256": sha}


def _as_meta(target: str, names: list[str]) -> list[str]:
    """Names as launch.prepare's meta.json writes them for that target (the same release's naming)."""
    if target == "pets":  # torchvision's OxfordIIITPet naming
        return [" ".join(p.title() for p in n.split("_")) for n in names]
    if target == "caltech101":
        return [n.replace("_", " ") for n in names if n != "BACKGROUND_Google"]
    if target == "food":  # meta/labels.txt style
        return [n.replace("_", " ").capitalize() for n in names]
    if target == "sun397":  # "/a/apartment_building/outdoor" -> "apartment building (outdoor)"
        out = []
        for n in names:
            head, *rest = n.strip("/").split("/")[1:]
            words = head.replace("_", " ")
            out.append(f"{words} ({' '.join(r.replace('_', ' ') for r in rest)})" if rest else words)
        return out
    return list(names)


def class_names(args) -> tuple[dict, dict]:
    """{target: names} and {target: where the names came from}."""
    import torchvision
    from torchvision.datasets import Flowers102

    names, sources = {}, {}
    mm, mm_src = _wheel(args.wheels, "mmpretrain")
    tree = ast.parse(mm.read("mmpretrain/datasets/categories.py").decode())
    lists = {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
             and isinstance(n.targets[0], ast.Name) and n.targets[0].id in MMPRETRAIN.values()}
    for target, key in MMPRETRAIN.items():
        names[target] = _as_meta(target, list(lists[key]))
        sources[target] = {**mm_src, "file": "mmpretrain/datasets/categories.py", "list": key}
    tf, tf_src = _wheel(args.wheels, "tensorflow_datasets")
    file = "tensorflow_datasets/image_classification/sun397_labels.txt"
    names["sun397"] = _as_meta("sun397", tf.read(file).decode().split())
    sources["sun397"] = {**tf_src, "file": file}
    names["flowers"] = list(Flowers102.classes)
    sources["flowers"] = {"package": f"torchvision {torchvision.__version__}", "list": "Flowers102.classes"}
    for item in args.meta:
        target, path = item.split("=", 1)
        names[target] = json.loads(Path(path).read_text())["classes"]
        sources[target] = {"meta.json": str(path), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}
    return names, sources


def wordnet_dir(dict_dir: str) -> str:
    """A folder nltk's WordNetCorpusReader reads: Debian's wordnet-base lacks the ``lexnames`` file (the 45
    lexicographer file names), which its lexnames(5WN) man page lists; a temporary copy of the dict files (nltk
    refuses links out of its root) gets one written from that page."""
    import gzip
    import shutil
    import tempfile

    if (Path(dict_dir) / "lexnames").is_file():
        return dict_dir
    page = gzip.open("/usr/share/man/man5/lexnames.5WN.gz", "rt").read()
    rows = re.findall(r"^(\d\d)\t(\S+)", page, flags=re.M)
    assert len(rows) == 45, f"expected 45 lexicographer files in lexnames(5WN), got {len(rows)}"
    pos = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
    tmp = tempfile.mkdtemp(prefix="wordnet-")
    for f in Path(dict_dir).iterdir():
        if f.is_file():
            shutil.copy(f, Path(tmp) / f.name)
    (Path(tmp) / "lexnames").write_text("".join(f"{i}\t{n}\t{pos[n.split('.')[0]]}\n" for i, n in rows))
    return tmp


def lemma(wn, name: str):
    """The longest trailing run of the name's words that is a WordNet noun (see the module doc), or None."""
    words = re.sub(r"\([^)]*\)", " ", name).replace("_", " ").lower().split()
    while words and re.fullmatch(r"[\d.]+", words[-1]):
        words.pop()
    for i in range(len(words)):
        cand = "_".join(words[i:])
        if wn.synsets(cand, pos="n"):
            return cand
    return None


def matches(wn, name: str, imagenet: set) -> list[str]:
    word = lemma(wn, name)
    if word is None:
        return []
    found = set()
    for s in wn.synsets(word, pos="n"):
        down = set(s.closure(lambda x: x.hyponyms() + x.instance_hyponyms()))
        up = set(s.closure(lambda x: x.hypernyms() + x.instance_hypernyms()))
        for t in down | up | {s}:
            wnid = f"n{t.offset():08d}"
            if wnid in imagenet:
                found.add(wnid)
    return sorted(found)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wheels", required=True, help="folder with the mmpretrain, tensorflow_datasets, timm wheels")
    p.add_argument("--wordnet", default="/usr/share/wordnet", help="WordNet 3.0 dict folder (Debian wordnet-base)")
    p.add_argument("--meta", action="append", default=[], help="TARGET=meta.json: class names of a prepared dataset")
    p.add_argument("--out", default=str(REPO / "datatransfer" / "masks" / "handpicked_imagenet.json"))
    args = p.parse_args()

    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class WordNet30(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):  # no mapping to another WordNet: these files are the 3.0 release
            return None

    folder = wordnet_dir(args.wordnet)
    nltk.data.path.append(folder)  # nltk reads only from its data path
    wn = WordNet30(folder, None)
    timm, timm_src = _wheel(args.wheels, "timm")
    wnids = timm.read("timm/data/_info/imagenet_synsets.txt").decode().split()
    assert len(wnids) == 1000 and wnids == sorted(wnids), "expected the 1000 ImageNet wnids in sorted order"
    index = {w: i for i, w in enumerate(wnids)}
    names, sources = class_names(args)

    targets = {}
    for target in TARGETS:
        if target not in names:
            continue
        matched = {n: m for n in names[target] if (m := matches(wn, n, set(index)))}
        union = sorted({w for m in matched.values() for w in m}, key=index.get)
        targets[target] = {"classes": [index[w] for w in union], "wnids": union, "matched": matched}
        print(f"{target}: {len(union)} ImageNet classes from {len(matched)} of {len(names[target])} class names")
    try:
        deb = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "wordnet-base"], capture_output=True,
                             text=True).stdout.strip()
    except OSError:
        deb = ""
    provenance = {
        "script": "scripts/handpicked_wordnet.py",
        "rule": "per target class name: the longest trailing run of its words that is a WordNet noun (parenthesised "
                "parts and trailing numbers dropped); every noun sense of it; the ImageNet-1k classes among its "
                "transitive hyponyms (incl. instance hyponyms), itself and its transitive hypernyms; the union over "
                "the target's class names. 'matched' lists only names that matched a class.",
        "wordnet": {"release": "WordNet", "version": wn.get_version(), "source": f"Debian wordnet-base {deb}".strip(),
                    "reader": f"nltk {nltk.__version__} WordNetCorpusReader"},
        "imagenet_wnids": {**timm_src, "file": "timm/data/_info/imagenet_synsets.txt",
                           "order": "sorted wnids = torchvision ImageFolder / ImageNet label index"},
        "class_names": sources,
        "class_name_counts": {t: len(v) for t, v in names.items()},
        "missing_targets": {t: "no package here ships its class names; rerun with --meta "
                               f"{t}=<prepared {t}>/meta.json" for t in TARGETS if t not in names},
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"provenance": provenance, "targets": targets}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
