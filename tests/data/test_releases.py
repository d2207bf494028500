"""launch.prepare from the official release layouts (datatransfer.data.releases) on tiny fake releases made by
tests/fake_releases.py: prepared, read back through the loaders (data.open_target / open_source), class names,
counts per class and split membership (from the decoded pixels) checked; bad input refused before anything is
written; verify against the expected table."""

import gc
import json

import pytest
import torch
from conftest import require_ffcv, run_app

require_ffcv()

import fake_releases  # noqa: E402

from datatransfer import data  # noqa: E402
from datatransfer.config import compose  # noqa: E402
from datatransfer.data import prepare, releases  # noqa: E402
from datatransfer.data.releases.expected import Expected  # noqa: E402
from datatransfer.data.releases.expected import verify as compare  # noqa: E402
from datatransfer.errors import DataError  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
RAW = ["compress_probability=0", "max_resolution=32", "workers=1"]  # stored raw: decoded colours are exact


@pytest.fixture(autouse=True)
def _threads():
    threads = torch.get_num_threads()
    yield
    gc.collect()
    torch.set_num_threads(threads)


def _prepare(dataset, src, out, *more):
    cfg = compose([f"dataset={dataset}", f"src={src}", f"out={out}", *RAW, *more], config_name="prepare")
    return prepare.prepare(cfg)


def _read_back(name, out):
    """(class names, {split: {ident: label}}) through the loaders the sweeps use."""
    cfg = compose(["experiment=imagenet_transfer", f"source.root={out}", "compute.loader_workers=1"])
    if name == "imagenet":
        ds, splits = data.open_source(cfg), {"train": "train", "val": "test"}
    else:
        cfg = compose(["experiment=imagenet_transfer", f"source.root={out}", f"targets=[{name}]",
                       "compute.loader_workers=1"])
        ds, splits = data.open_target(cfg, name), {"train": "train", "test": "test"}
    mean, std = torch.tensor(ds.mean)[:, None, None], torch.tensor(ds.std)[:, None, None]
    members = {}
    for ours, theirs in splits.items():
        labels = ds.labels(theirs)
        got = {}
        for x, y in ds.eval_loader(theirs, batch_size=64, decoder="center_crop", resolution=8):
            pixels = ((x.float().cpu() * std + mean) * 255).mean(dim=(2, 3)).numpy()
            for rgb, label in zip(pixels, y.tolist()):
                got[fake_releases.colour_ident(rgb)] = label
        assert sorted(got.values()) == sorted(labels.tolist())
        members[ours] = got
    return ds.class_names, members


@pytest.mark.parametrize("name", sorted(fake_releases.MAKERS))
def test_release_prepared_and_read_back(name, tmp_path):
    src, classes, expected, _ = fake_releases.MAKERS[name](tmp_path / "raw")
    out = tmp_path / "betons"
    assert _prepare(name, src, out) == [out / name]
    names, members = _read_back(name, out)
    assert names == classes
    assert members == expected  # every image in its split with its label, none missing, none extra
    meta = json.loads((out / name / "meta.json").read_text())
    assert meta["splits"] == {s: len(v) for s, v in expected.items()}
    assert set(meta["origin"]["split_sha256"]) == set(expected)
    assert [p.name for p in out.iterdir()] == [name]  # no staging folder left
    if name == "imagenet":
        assert meta["names"][0] == "tench, Tinca tinca"
    if name in ("caltech101", "caltech256", "birdsnap"):
        assert meta["origin"]["seed"] == 0 and len(meta["origin"]["images_sha256"]) == 64


def test_seeded_split_depends_on_the_seed_only(tmp_path):
    src = fake_releases.make_caltech101(tmp_path / "raw")[0]
    a, b = releases.read("caltech101", src, seed=0), releases.read("caltech101", src, seed=0)
    c = releases.read("caltech101", src, seed=1)
    assert a.splits == b.splits and a.splits["train"] != c.splits["train"]
    assert [sum(1 for _, y in a.splits["train"] if y == k) for k in range(3)] == [30, 30, 30]
    src2 = fake_releases.make_caltech101(tmp_path / "raw2", seed=1)
    assert src2[2]["train"] != fake_releases.make_caltech101(tmp_path / "raw3", seed=0)[2]["train"]


def test_imagenet_presorted_imagefolder_still_accepted(tmp_path):
    import tiny_data

    classes = ["n01440764", "n01443537"]
    tiny_data.image_folder(tmp_path / "raw" / "train", classes, 3, seed=0)
    tiny_data.image_folder(tmp_path / "raw" / "val", classes, 2, seed=1)
    release = releases.read("imagenet", tmp_path / "raw")
    assert release.classes == classes and len(release.splits["val"]) == 4 and release.extra_meta == {}


@pytest.mark.parametrize("name", sorted(n for n in fake_releases.MAKERS if n != "birdsnap"))
def test_partial_download_refused_before_writing(name, tmp_path):
    src, _, _, removable = fake_releases.MAKERS[name](tmp_path / "raw")
    removable.unlink()
    with pytest.raises(DataError, match=r"missing|partial"):
        _prepare(name, src, tmp_path / "betons")
    assert not (tmp_path / "betons").exists()


def test_birdsnap_species_without_images_refused(tmp_path):
    src = fake_releases.make_birdsnap(tmp_path / "raw")[0]
    for f in (src / "birdsnap" / "download" / "images" / "Blue_Jay").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="Blue Jay"):
        releases.read("birdsnap", src)


@pytest.mark.parametrize("name, remove, message", [
    ("aircraft", "fgvc-aircraft-2013b/data/images_variant_test.txt", "images_variant_test.txt"),
    ("cars", "stanford_cars/cars_test_annos_withlabels.mat", "cars_test_annos_withlabels.mat"),
    ("flowers", "flowers-102/setid.mat", "setid.mat"),
    ("food", "food-101/meta/test.json", "test.json"),
    ("pets", "oxford-iiit-pet/annotations/test.txt", "test.txt"),
    ("sun397", "Partitions/Testing_01.txt", "Testing_01.txt"),
    ("birdsnap", "birdsnap/images.txt", "images.txt"),
    ("imagenet", "ILSVRC2012_devkit_t12.tar.gz", "devkit"),
])
def test_missing_annotation_file_named(name, remove, message, tmp_path):
    src = fake_releases.MAKERS[name](tmp_path / "raw")[0]
    (src / remove).unlink()
    with pytest.raises(DataError, match=message):
        releases.read(name, src)


def test_wrong_src_through_the_app_exits_2_and_writes_nothing(tmp_path):
    src = fake_releases.make_pets(tmp_path / "raw")[0]
    out = tmp_path / "betons"
    r = run_app("launch.prepare", "dataset=aircraft", f"src={src}", f"out={out}")  # pets given as aircraft
    assert r.returncode == 2, r.stderr[-2000:]
    assert "fgvc-aircraft-2013b" in r.stderr and "data/variants.txt" in r.stderr
    r = run_app("launch.prepare", "dataset=pets", f"src={tmp_path / 'nothing'}", f"out={out}")
    assert r.returncode == 2 and "no such folder" in r.stderr
    assert not out.exists()


def test_verify_reports_differences_and_exits_2(tmp_path):
    src = fake_releases.make_pets(tmp_path / "raw")[0]
    out = tmp_path / "betons"
    r = run_app("launch.prepare", "dataset=pets", f"src={src}", f"out={out}", *RAW, "verify=true")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "train: 9 images, expected 3,680" in r.stdout and "classes: 3, expected 37" in r.stdout
    assert (out / "pets" / "meta.json").is_file()  # prepared; only the comparison failed
    r = run_app("launch.prepare", "dataset=pets", f"out={out}", "verify=true")  # the prepared folder alone: no src
    assert r.returncode == 2 and "DIFFERENT train: 9 images, expected 3,680" in r.stdout, r.stderr[-2000:]
    # verify alone (no src) on the prepared folder, against sizes this fake release has: no difference
    lines, diffs = compare(out / "pets", Expected(3, {"train": 9, "test": 6}, {"train": 3, "test": 2}))
    assert diffs == [] and "train: 9 images" in lines[1]
    lines, diffs = compare(out / "pets", Expected(3, {"train": 9, "test": 6}, {"test": 3}))
    assert diffs == [f"test: class {c!r} has 2 images, expected 3" for c in ("Abyssinian", "American Bulldog",
                                                                              "Bengal")]


def test_existing_folder_without_meta_refused_and_complete_one_kept(tmp_path):
    src = fake_releases.make_food(tmp_path / "raw")[0]
    out = tmp_path / "betons"
    (out / "food").mkdir(parents=True)
    (out / "food" / "mine.txt").write_text("not a prepared dataset")
    with pytest.raises(DataError, match="not a prepared dataset"):
        _prepare("food", src, out)
    assert (out / "food" / "mine.txt").is_file()
    (out / "food" / "mine.txt").unlink()
    (out / "food").rmdir()
    _prepare("food", src, out)
    before = (out / "food" / "meta.json").read_text()
    _prepare("food", src, out)  # complete: skipped
    assert (out / "food" / "meta.json").read_text() == before
    _prepare("food", src, out, "overwrite=true")  # replaced as a whole
    assert json.loads((out / "food" / "meta.json").read_text())["splits"] == {"train": 9, "test": 6}
    assert sorted(p.name for p in out.iterdir()) == ["food"]


def test_cifar_from_the_folder_it_unpacks_in_and_a_damaged_pickle_refused(tmp_path):
    import tiny_data

    tiny_data.cifar10_pickles(tmp_path / "raw" / "cifar-10-batches-py", per_batch=4, test=6)
    out = tmp_path / "betons"
    _prepare("cifar10", tmp_path / "raw", out)  # src: the folder the archive was unpacked in
    cfg = compose(["experiment=imagenet_transfer", f"source.root={out}", "targets=[cifar10]"])
    ds = data.open_target(cfg, "cifar10")
    assert ds.class_names == [f"c{i}" for i in range(10)]
    assert len(ds.labels("train")) == 20 and len(ds.labels("test")) == 6
    files = json.loads((out / "cifar10" / "meta.json").read_text())["origin"]["files"]
    assert sorted(files) == ["batches.meta", "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                             "data_batch_5", "test_batch"]
    # the other release under this one's name: refused before anything is written (it wrote 10 classes as cifar100)
    for src in (tmp_path / "raw", tmp_path / "raw" / "cifar-10-batches-py"):
        with pytest.raises(DataError, match="holds the cifar10 release .*, not cifar100's"):
            _prepare("cifar100", src, tmp_path / "wrong")
    assert not (tmp_path / "wrong").exists()
    (tmp_path / "raw" / "cifar-10-batches-py" / "test_batch").write_bytes(b"\x80\x04truncated")
    with pytest.raises(DataError, match="not a complete CIFAR"):
        _prepare("cifar10", tmp_path / "raw", tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_truncated_image_refused_without_hanging_the_writer(tmp_path):
    src, _, members, removable = fake_releases.make_pets(tmp_path / "raw")
    data_bytes = removable.read_bytes()
    removable.write_bytes(data_bytes[: len(data_bytes) // 2])  # an interrupted extraction
    with pytest.raises(DataError, match=rf"1 of 6 images do not decode .*{removable.name}"):
        _prepare("pets", src, tmp_path / "betons", "workers=2")
    assert not (tmp_path / "betons").exists()  # the staging folder is gone, and the out folder it made
