"""Example units (sweep=example_subsets): which images are units, loaders that train on exactly the masked images,
the store's unit names / unit_index, and a tiny sweep of trained rows end to end."""

import numpy as np
import pytest
import torch
from conftest import run_app

from datatransfer import data, masks
from datatransfer.config import ConfigError, compose, validate
from datatransfer.masks import examples
from datatransfer.store.open import store_spec
from datatransfer.store.sweep_store import Store


def _rows(x, y):
    return sorted((int(label), image.numpy().tobytes()) for image, label in zip(x, y))


def test_memory_loader_trains_on_exactly_the_given_images():
    source = data.open_source(compose())
    idx = np.sort(np.random.default_rng(0).choice(len(source.labels("train")), size=77, replace=False))
    loader = source.train_loader(batch_size=7, generator=torch.Generator().manual_seed(1), examples=idx)
    xs, ys = zip(*[(x.clone(), y.clone()) for x, y in loader])
    x, y = torch.cat(xs), torch.cat(ys)
    assert len(y) == 77  # 11 full batches: every image once
    assert _rows(x, y) == _rows(source.train.x[idx], source.train.y[idx])


def test_selection():
    labels = np.repeat(np.arange(4), 10)
    names = ["a", "b", "c", "d"]
    cfg = compose(["sweep=example_subsets"]).sweep
    np.testing.assert_array_equal(examples.select(cfg, labels, names), np.arange(40))
    cfg.select, cfg.classes = "classes", ["b", "d"]
    np.testing.assert_array_equal(examples.select(cfg, labels, names), np.r_[10:20, 30:40])
    cfg.count = 5
    picked = examples.select(cfg, labels, names)
    assert len(picked) == 5 and np.all(np.diff(picked) > 0) and set(labels[picked]) <= {1, 3}
    np.testing.assert_array_equal(picked, examples.select(cfg, labels, names))  # a function of select_seed
    cfg.select_seed = 1
    assert not np.array_equal(picked, examples.select(cfg, labels, names))
    cfg.classes = ["zebra"]
    with pytest.raises(ConfigError, match="zebra"):
        examples.select(cfg, labels, names)


def test_config_checks():
    with pytest.raises(ConfigError, match="sweep.unit.*sweep=example_subsets"):
        validate(compose(["sweep.unit=example"]))
    with pytest.raises(ConfigError, match="sweep.select"):
        validate(compose(["sweep=example_subsets", "sweep.select=some"]))


def test_store_spec_of_example_units():
    cfg = compose(["sweep=example_subsets", "sweep.select=classes", "sweep.classes=[mnist:3,mnist:5]",
                   "sweep.count=50", "sweep.num_models=6", "targets=[digits]"])
    spec = store_spec(cfg)
    labels = data.open_source(cfg).labels("train")
    assert spec.unit == "example" and len(spec.unit_names) == 50 and spec.num_rows == 6
    assert spec.masks(0, 6).shape == (6, 50)  # made a block at a time (the whole matrix may not fit in memory)
    np.testing.assert_array_equal(spec.masks(2, 5), masks.matrix(cfg.sweep, 50)[2:5])
    assert set(labels[spec.unit_index]) == {3, 5}
    assert spec.unit_names[0] == f"#{spec.unit_index[0]} mnist:{labels[spec.unit_index[0]]}"


@pytest.mark.slow
def test_a_tiny_example_sweep_end_to_end(tmp_path):
    store = tmp_path / "store.zarr"
    r = run_app("launch", "sweep=example_subsets", "sweep.select=classes", "sweep.classes=[mnist:1,mnist:7]",
                "sweep.count=60", "sweep.num_models=2", "train.epochs=1", "targets=[digits]",
                "transfer.modes=[fixed]", "transfer.fixed.iterations=10", "launcher.workers=1",
                f"store.path={store}")
    assert r.returncode == 0, r.stderr[-3000:]
    s = Store.open(store)
    assert s.attrs["unit"] == "example" and s.completed().all() and s.masks.shape == (2, 60)
    assert (s.masks.sum(axis=1) == 30).all() and np.isfinite(s.outputs("digits")[:]).all()


def test_classes_without_select_classes_are_refused():
    """QA: sweep.classes was ignored under select=all (the default) while still changing the fingerprint."""
    with pytest.raises(ConfigError, match="sweep.classes: read only with sweep.select=classes"):
        validate(compose(["sweep=example_subsets", "sweep.classes=[mnist:1]"]))
