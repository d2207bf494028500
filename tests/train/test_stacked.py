"""The batched row runner's training half (train/stacked.py): K models stacked as grouped convolutions follow the
same recipe as each model alone."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from datatransfer.train.checkpoint import RowCheckpoint
from datatransfer.train.loop import make_runtime
from datatransfer.train.models import build
from datatransfer.train.stacked import StackedCheckpoints, StackedNet, ZipLoader, optimizer_state_of, stackable

MODEL = OmegaConf.create({"arch": "small_cnn", "width": 4})


def _models(k, classes=5):
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(build(MODEL, classes))
    return out


def _batches(k, b=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, 1, 28, 28, generator=g), torch.randint(0, 5, (b,), generator=g)) for _ in range(k)]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_stacked_step_is_each_models_own_step(optimizer):
    k = 3
    alone, stacked = _models(k), StackedNet(_models(k))
    batches = _batches(k)
    make = {"adam": lambda p: torch.optim.Adam(p, lr=1e-2),
            "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3)}[optimizer]
    opts = [make(m.parameters()) for m in alone]
    opt = make(stacked.parameters())
    for _ in range(3):  # a few steps: optimizer state (momentum, Adam moments) carries over
        for m, o, (x, y) in zip(alone, opts, batches):
            o.zero_grad()
            F.cross_entropy(m(x), y).backward()
            o.step()
        x = torch.cat([b[0] for b in batches], dim=1).contiguous(memory_format=torch.channels_last)
        y = torch.cat([b[1] for b in batches])
        opt.zero_grad()
        (F.cross_entropy(stacked(x), y) * k).backward()  # fit(models=k): the sum of the models' mean losses
        opt.step()
    for i, m in enumerate(alone):
        mine, theirs = m.state_dict(), stacked.state_of(i)
        for name, value in mine.items():
            assert torch.allclose(value.float(), theirs[name].float(), atol=2e-5, rtol=1e-4), (i, name)
    # evaluation (batch norm's running statistics) agrees too
    stacked.eval()
    x = torch.cat([b[0] for b in batches], dim=1).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        z = stacked(x).view(k, 16, -1)
        for i, m in enumerate(alone):
            assert torch.allclose(m.eval()(batches[i][0]), z[i], atol=1e-4)


def test_unstack_gives_an_ordinary_net_and_stacking_is_lossless():
    models = _models(2)
    stacked = StackedNet(models)
    for i, m in enumerate(models):
        back = stacked.unstack(i)
        for (n, a), b in zip(m.state_dict().items(), back.state_dict().values()):
            assert torch.equal(a, b), n
    assert not stackable(build(OmegaConf.create({"arch": "resnet18", "width": 4}), 5))


def test_a_groups_checkpoints_are_ordinary_row_checkpoints(tmp_path):
    k = 2
    stacked = StackedNet(_models(k))
    opt = torch.optim.Adam(stacked.parameters(), lr=1e-2)
    x = torch.cat([b[0] for b in _batches(k)], dim=1).contiguous(memory_format=torch.channels_last)
    y = torch.cat([b[1] for b in _batches(k)])
    (F.cross_entropy(stacked(x), y) * k).backward()
    opt.step()
    gens = [torch.Generator().manual_seed(s) for s in range(k)]
    cks = [RowCheckpoint(tmp_path / f"row-{i}.pt") for i in range(k)]
    StackedCheckpoints(cks, [torch.get_rng_state()] * k).save(1, stacked, opt, gens)
    for i in range(k):  # the unbatched runner resumes each row from its own file
        net = _models(1)[0]
        single = torch.optim.Adam(net.parameters(), lr=1e-2)
        gen = torch.Generator()
        assert cks[i].restore(net, single, gen) == 1
        for name, value in stacked.state_of(i).items():
            assert torch.equal(net.state_dict()[name], value), name
        mine = optimizer_state_of(opt, stacked, i)["state"]
        for j, p in enumerate(net.parameters()):
            assert torch.equal(single.state[p]["exp_avg"], mine[j]["exp_avg"])
        assert torch.equal(gen.get_state(), gens[i].get_state())


def test_zip_loader_refuses_loaders_of_different_lengths():
    class L(list):
        resolution = None
    with pytest.raises(ValueError, match="differ in steps per epoch"):
        ZipLoader([L([1, 2]), L([1])])


def test_a_batched_group_matches_rows_trained_one_at_a_time():
    """Same classes, seeds and data order; the weights differ by floating-point summation order only, so the
    models' accuracies agree closely (not bitwise: docs/performance.md)."""
    from datatransfer import data
    from datatransfer.config import compose
    from datatransfer.masks import row_mask, row_seed
    from datatransfer.train.source import train_source, train_sources

    cfg = compose(["compute.device=cpu", "train.epochs=1"])
    rt = make_runtime("cpu", False, 1)
    src = data.open_source(cfg, rt.device)
    masks = [row_mask(0, r, 30, 0.5) for r in range(2)]
    seeds = [row_seed(0, r) for r in range(2)]
    alone = [train_source(src, m, s, cfg.model, cfg.train, rt)[1]["source_accuracy"] for m, s in zip(masks, seeds)]
    batched = [st["source_accuracy"] for _, st in train_sources(src, masks, seeds, cfg.model, cfg.train, rt,
                                                                [None, None])]
    assert np.allclose(alone, batched, atol=0.03), (alone, batched)
    # a row alone in its group trains exactly as the unbatched runner does: bitwise
    one = train_sources(src, masks[:1], seeds[:1], cfg.model, cfg.train, rt, [None])[0][0]
    ref = train_source(src, masks[0], seeds[0], cfg.model, cfg.train, rt)[0]
    for a, b in zip(one.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)
