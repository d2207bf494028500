"""Sweeps through FFCV loaders on the CPU: the mini betons (experiment=mini_ffcv) and the paper recipe
(experiment=imagenet_transfer) on a tiny ImageFolder "ImageNet", shrunk to run here.

Each new FFCV loader compiles its pipeline with numba (seconds), so these tests use few loaders and few rows.
"""

import gc

import numpy as np
import pytest
import torch
import yaml
from conftest import require_ffcv, run_app

require_ffcv()

import tiny_data  # noqa: E402

from datatransfer import data
from datatransfer.config import compose  # noqa: E402
from datatransfer.data import prepare  # noqa: E402
from datatransfer.data.ffcv_reader import BetonDataset, read_labels  # noqa: E402
from datatransfer.errors import DataError  # noqa: E402
from datatransfer.masks import row_mask  # noqa: E402
from datatransfer.store.open import open_store  # noqa: E402
from datatransfer.store.sweep_store import Store  # noqa: E402

# numba's dispatcher finalizer raises a harmless KeyError when an FFCV loader is collected
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def mini_betons(tmp_path_factory):
    out = tmp_path_factory.mktemp("betons") / "mini"
    threads = torch.get_num_threads()
    prepare.write_mini(out, workers=2)
    torch.set_num_threads(threads)
    yield out
    gc.collect()


def _epoch(loader):
    xs, ys = zip(*[(x.clone(), y.clone()) for x, y in loader])
    return torch.cat(xs), torch.cat(ys)


def _rows(x, y):
    """Order-independent view: sorted (label, image bytes)."""
    return sorted((int(label), image.numpy().tobytes()) for image, label in zip(x, y))


def test_beton_loaders_give_the_in_memory_examples(mini_betons):
    memory = data.open_source(compose())
    betons = data.open_source(compose(["experiment=mini_ffcv", f"source.root={mini_betons}"]))
    assert isinstance(betons, BetonDataset) and betons.channels == 1
    assert betons.class_names == memory.class_names
    for split in ("train", "test"):
        np.testing.assert_array_equal(betons.labels(split), memory.labels(split))

    gen = torch.Generator().manual_seed(0)
    for row in (0, 1):  # two rows' masks through the same (re-aimed) loaders
        mask = row_mask(0, row, memory.num_classes, 0.5)
        # 15 kept classes x 600 images: batches of 120 cover every example, nothing dropped
        mem = memory.train_loader(batch_size=120, generator=gen, keep=mask)
        ffc = betons.train_loader(batch_size=120, seed=row, keep=mask)
        assert len(ffc) == len(mem) == 75
        (xm, ym), (xf, yf) = _epoch(mem), _epoch(ffc)
        assert set(yf.tolist()) == set(np.flatnonzero(mask).tolist())
        assert _rows(xf, yf) == _rows(xm, ym)  # the same examples, bitwise, in another order
        assert not torch.equal(yf, _epoch(ffc)[1])  # a new order every epoch

        # evaluation: the kept classes' validation images, in file order, bitwise equal
        xm, ym = _epoch(memory.eval_loader("test", keep=mask))
        xf, yf = _epoch(betons.eval_loader("test", keep=mask))
        assert torch.equal(yf, ym) and torch.equal(xf, xm)

    cfg = compose(["experiment=mini_ffcv", f"source.root={mini_betons}"])
    target = data.open_target(cfg, "digits")  # a target without a root of its own: source.root
    xm, ym = _epoch(data.open_target(compose(), "digits").eval_loader("test"))
    xf, yf = _epoch(target.eval_loader("test"))
    assert torch.equal(yf, ym) and torch.equal(xf, xm)


def test_mini_ffcv_sweep_through_the_app(mini_betons, tmp_path):
    store_path = tmp_path / "store.zarr"
    r = run_app("launch", "experiment=mini_ffcv", f"source.root={mini_betons}", "sweep.num_models=2",
                "train.epochs=1", "targets=[digits]", "transfer.full.epochs=1", "transfer.fixed.iterations=30",
                f"store.path={store_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rows completed: 2 / 2" in r.stdout
    store = Store.open(store_path)
    assert store.attrs["config"]["source"]["loader"] == "ffcv"
    np.testing.assert_array_equal(store.labels("digits"), data.load_target(compose(), "digits").test.y.numpy())
    acc = store.target_accuracy("digits", np.arange(2))
    assert (acc > 0.5).all(), acc  # 10 classes: chance is 0.1
    assert (store.row_stats()[:, 0] > 0.5).all()  # source accuracy on the kept classes


def test_missing_betons_say_how_to_write_them(tmp_path):
    cfg = compose(["experiment=mini_ffcv", f"source.root={tmp_path / 'nothing'}", f"store.path={tmp_path / 's.zarr'}"])
    with pytest.raises(DataError, match="launch.prepare"):
        open_store(cfg)
    assert not (tmp_path / "s.zarr").exists()


def test_imagenet_recipe_end_to_end_on_a_tiny_imagefolder(tmp_path):
    """The paper's config, shrunk (2 rows, 2 epochs, 32-64 px, batches of 8), through the real apps: betons from
    raw folders, progressive resolution, AMP-ready loop, fixed-feature SGD head with batch-norm in train mode,
    full fine-tuning, a step schedule (food), CIFAR upsampling, backbones saved."""
    raw, betons = tmp_path / "raw", tmp_path / "betons"
    classes = [f"n0{i:07d}" for i in range(6)]
    tiny_data.image_folder(raw / "imagenet" / "train", classes, 8, seed=0)
    tiny_data.image_folder(raw / "imagenet" / "val", classes, 2, seed=1)
    tiny_data.image_folder(raw / "food" / "train", ["apple_pie", "bread", "curry"], 8, seed=2)
    tiny_data.image_folder(raw / "food" / "test", ["apple_pie", "bread", "curry"], 3, seed=3)
    tiny_data.cifar10_pickles(raw / "cifar", per_batch=8, test=12)

    r = run_app("launch.prepare", "dataset=imagenet", f"src={raw / 'imagenet'}", f"out={betons}",
                "max_resolution=64", "workers=2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "6 classes, train 48, val 12" in r.stdout
    threads = torch.get_num_threads()
    for overrides in (["dataset=folder", "name=food", f"src={raw / 'food'}"],
                      ["dataset=cifar10", f"src={raw / 'cifar'}"]):
        prepare.prepare(compose([*overrides, f"out={betons}", "workers=2"], config_name="prepare"))
    torch.set_num_threads(threads)
    assert (betons / "imagenet" / "meta.json").is_file() and (betons / "food" / "test.beton").is_file()

    store_path = tmp_path / "store.zarr"
    shrink = [
        "experiment=imagenet_transfer", f"source.root={betons}", "targets=[food,cifar10]", "sweep.num_models=2",
        "train.epochs=2", "train.batch_size=8", "train.min_res=32", "train.max_res=64", "train.start_ramp=0",
        "train.end_ramp=1", "train.eval_res=48",
        "transfer.fixed.batch_size=8", "transfer.full.batch_size=8", "transfer.fixed.step_every=1",
        "targets.food.epochs=2", "targets.food.resolution=48", "targets.cifar10.epochs=1",
        "targets.cifar10.resolution=64", "compute.loader_workers=2", f"store.path={store_path}",
    ]
    r = run_app("launch", *shrink, "hydra.verbose=datatransfer.train")
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    log = r.stdout
    assert "rows completed: 2 / 2" in log
    # progressive resolution of the source model: 32 px, then 64
    assert "source epoch 1/2: 3 steps, resolution 32, cyclic" in log
    assert "source epoch 2/2: 3 steps, resolution 64, cyclic" in log
    # fixed-feature: an SGD head on the frozen backbone, batch-norm in train mode; food's step schedule drops x0.1
    assert "fixed food epoch 1/2: 3 steps, resolution 48, step lr 0.1..0.1, batch-norm training" in log
    assert "fixed food epoch 2/2: 3 steps, resolution 48, step lr 0.01..0.01, batch-norm training" in log
    assert log.count("fixed food: backbone weights unchanged: True; batch-norm running statistics changed: True") == 2
    assert "fixed cifar10 epoch 1/1: 5 steps, resolution 64, cyclic" in log  # 32 px upsampled to 64
    # full-network: every weight trains (food's step schedule for this mode is the block's: every 5 epochs)
    assert "full food epoch 2/2: 3 steps, resolution 48, step lr 0.1..0.1" in log
    assert "full cifar10 epoch 1/1: 5 steps, resolution 64" in log

    store = Store.open(store_path)
    assert store.targets == ["food", "cifar10"] and store.modes == ["fixed", "full"]
    assert store.unit_names == classes and store.masks.sum(axis=1).tolist() == [3, 3]
    np.testing.assert_array_equal(store.labels("food"), np.repeat([0, 1, 2], 3))
    np.testing.assert_array_equal(store.labels("cifar10"), read_labels(betons / "cifar10" / "test.beton"))
    assert store.class_names("cifar10")[:2] == ["c0", "c1"]
    for t, n in (("food", 9), ("cifar10", 12)):
        out = store.outputs(t)[:]
        assert out.shape == (2, 2, 5, n) and np.isfinite(out).all()
        assert ((store.predictions(t)[:] >= 0) & (store.predictions(t)[:] < len(store.class_names(t)))).all()
    stats = store.row_stats()[:]
    assert np.isfinite(stats).all() and (stats[:, 0] >= 0).all()
    assert sorted(p.name for p in (store_path / "backbones").glob("row-*")) == ["row-0.pt", "row-1.pt"]
    saved = yaml.safe_load(yaml.safe_dump(store.attrs["config"]))
    assert saved["train"]["optimizer"] == "sgd" and saved["transfer"]["fixed"]["batchnorm"] == "train"


def test_beton_loader_trains_on_exactly_the_given_images(mini_betons):
    """Example units: the FFCV train loader reads exactly the images at ``examples``, as the in-memory one does."""
    memory = data.open_source(compose())
    betons = data.open_source(compose(["experiment=mini_ffcv", f"source.root={mini_betons}"]))
    idx = np.sort(np.random.default_rng(3).choice(len(memory.labels("train")), size=96, replace=False))
    x, y = _epoch(betons.train_loader(batch_size=32, seed=5, examples=idx, decoder="upsample", resolution=28))
    assert len(y) == 96 and _rows(x, y) == _rows(memory.train.x[idx], memory.train.y[idx])
