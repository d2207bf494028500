"""A row interrupted after an epoch resumes from its checkpoint and ends exactly like an uninterrupted run."""

import numpy as np
import pytest
import torch

from datatransfer import data
from datatransfer.config import compose
from datatransfer.masks import row_mask
from datatransfer.train.checkpoint import RowCheckpoint
from datatransfer.train.loop import make_runtime
from datatransfer.train.source import train_source


class Stop(Exception):
    pass


@pytest.mark.parametrize("amp", [False, True], ids=["float32", "bf16"])
def test_resume_from_epoch_checkpoint_matches_uninterrupted(tmp_path, monkeypatch, amp):
    rt = make_runtime("cpu", amp, threads=1)
    cfg = compose(["train.epochs=2", "model.width=8"])
    source = data.load_source(cfg)
    sub_split = data.memory.Split
    mask = row_mask(0, 0, source.num_classes, 0.5)
    # keep it quick: a subset of the kept classes' images
    keep = source.train.select_classes(mask)
    sub = sub_split(keep.x[:1024], keep.y[:1024])
    monkeypatch.setattr(sub_split, "select_classes", lambda self, m: sub if self is source.train else self)

    reference, _ = train_source(source, mask, 5, cfg.model, cfg.train, rt)

    ckpt = RowCheckpoint(tmp_path / "row-0.pt")
    real_save = RowCheckpoint.save

    def save_then_die(self, epoch, *args):
        real_save(self, epoch, *args)
        raise Stop  # the job is killed right after epoch 1 is saved

    monkeypatch.setattr(RowCheckpoint, "save", save_then_die)
    try:
        train_source(source, mask, 5, cfg.model, cfg.train, rt, checkpoint=ckpt)
    except Stop:
        pass
    monkeypatch.setattr(RowCheckpoint, "save", real_save)
    assert ckpt.load()["epoch"] == 1

    torch.manual_seed(12345)  # a restarted process has other RNG state; the checkpoint must restore it
    resumed, _ = train_source(source, mask, 5, cfg.model, cfg.train, rt, checkpoint=ckpt)
    assert ckpt.load()["epoch"] == 2
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    ckpt.delete()
    assert not ckpt.path.exists()
