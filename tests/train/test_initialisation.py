"""sweep.init: a row's initial weights come from its own training seed (per_row, the paper) or from the sweep seed
(shared: one initialisation for every row, common random numbers); the rest of the row stays its own."""

import pytest
import torch
import zarr

from datatransfer import data
from datatransfer.config import compose
from datatransfer.errors import StoreError
from datatransfer.masks import init_seed, row_mask, row_seed
from datatransfer.rows.trained import TrainedRows
from datatransfer.store.open import store_spec
from datatransfer.store.sweep_store import Store
from datatransfer.train.loop import make_runtime
from datatransfer.train.models import build
from datatransfer.train.source import initial_model, train_source, train_sources


def weights(model):
    return torch.cat([p.detach().flatten() for p in model.state_dict().values() if p.is_floating_point()])


def test_shared_init_gives_every_row_the_same_initial_weights_and_per_row_does_not():
    cfg = compose(["compute.device=cpu"])
    src = data.open_source(cfg, torch.device("cpu"))
    seeds = [row_seed(0, r) for r in range(3)]
    shared = [weights(initial_model(cfg.model, src, s, init_seed(0))) for s in seeds]
    own = [weights(initial_model(cfg.model, src, s)) for s in seeds]
    assert all(torch.equal(shared[0], w) for w in shared[1:])
    assert not torch.equal(own[0], own[1]) and not torch.equal(own[1], own[2])
    assert not torch.equal(weights(initial_model(cfg.model, src, seeds[0], init_seed(1))), shared[0])


def test_per_row_init_draws_what_it_drew_before_the_option_existed_and_shared_keeps_the_row_stream():
    cfg = compose(["compute.device=cpu"])
    src = data.open_source(cfg, torch.device("cpu"))
    seed = row_seed(0, 4)
    torch.manual_seed(seed)
    before = weights(build(cfg.model, src.num_classes, in_channels=src.channels))
    after_build = torch.rand(4)
    assert torch.equal(weights(initial_model(cfg.model, src, seed)), before)
    assert torch.equal(torch.rand(4), after_build)  # the global stream continues as it did
    initial_model(cfg.model, src, seed, init_seed(0))
    shared_next = torch.rand(4)
    torch.manual_seed(seed)
    assert torch.equal(shared_next, torch.rand(4))  # shared: the row's own stream from its start


def test_a_group_trained_with_shared_init_starts_from_it():
    """A row alone in its group trains bitwise as the one-at-a-time runner with the same shared initialisation, and
    differs from the same row with its own initialisation."""
    cfg = compose(["compute.device=cpu", "train.epochs=1"])
    rt = make_runtime("cpu", False, 1)
    src = data.open_source(cfg, rt.device)
    mask, seed, shared = row_mask(0, 0, 30, 0.5), row_seed(0, 0), init_seed(0)
    one = train_sources(src, [mask], [seed], cfg.model, cfg.train, rt, [None], shared)[0][0]
    ref = train_source(src, mask, seed, cfg.model, cfg.train, rt, init_seed=shared)[0]
    assert torch.equal(weights(one), weights(ref))
    assert not torch.equal(weights(ref), weights(train_source(src, mask, seed, cfg.model, cfg.train, rt)[0]))


def test_the_worker_reads_sweep_init_and_per_row_is_the_default():
    rt = make_runtime("cpu", False, 1)
    targets = {"digits": 0, "coarse": 1}
    assert TrainedRows(compose(["sweep.seed=3", "sweep.init=shared"]), rt, targets).init_seed == init_seed(3)
    assert TrainedRows(compose([]), rt, targets).init_seed is None
    assert compose(["experiment=imagenet_transfer"]).sweep.init == "per_row"


def test_a_store_from_before_sweep_init_reopens_with_the_default_and_refuses_shared(tmp_path):
    path = tmp_path / "s.zarr"
    base = ["experiment=planted", "row.units=20", "sweep.num_models=6", f"store.path={path}"]
    spec = store_spec(compose(base))
    assert "init" not in spec.sweep_defining["sweep"]  # per_row: the fingerprint a store had before the key
    Store.create_or_open(path, spec)
    group = zarr.open_group(str(path), mode="r+")
    config = dict(group.attrs["config"])
    config["sweep"] = {k: v for k, v in config["sweep"].items() if k != "init"}
    group.attrs["config"] = config  # as a store written before sweep.init existed holds it
    before = group.attrs.asdict()
    assert Store.create_or_open(path, store_spec(compose(base))).num_rows == 6
    with pytest.raises(StoreError, match="sweep.init: '<absent>' -> 'shared'"):
        Store.create_or_open(path, store_spec(compose([*base, "sweep.init=shared"])))
    assert zarr.open_group(str(path), mode="r").attrs.asdict() == before
