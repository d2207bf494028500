"""train.amp=auto: resolved once, before a store is created, to what is fast on this machine; a store records the
bool, and an existing store's precision wins over this machine's choice (a sweep keeps one recipe)."""

import pytest

from datatransfer.config import compose
from datatransfer.errors import ConfigError
from datatransfer.store.open import open_store
from datatransfer.store.sweep_store import Store
from datatransfer.train.loop import make_runtime
from datatransfer.train.precision import amp_here, native_bf16, resolve_amp


def test_auto_is_mixed_precision_where_it_is_native():
    cfg = compose([])
    assert cfg.train.amp == "auto"
    assert amp_here(compose(["compute.device=cpu"])) is native_bf16()  # the small CNN on a CPU
    assert amp_here(compose(["compute.device=cuda"])) is True  # no GPU needed to say so
    assert amp_here(compose(["compute.device=cpu", "model.arch=resnet18"])) is True  # a GPU recipe stays one
    for explicit in (True, False):
        assert amp_here(compose(["compute.device=cpu", f"train.amp={str(explicit).lower()}"])) is explicit
    with pytest.raises(ConfigError, match="train.amp: must be true, false or auto, got 'fp16'"):
        resolve_amp(compose(["train.amp=fp16"]))
    with pytest.raises(TypeError, match="resolve_amp"):
        make_runtime("cpu", "auto", 1)  # never guessed from a truthy string


def test_a_store_records_the_resolved_precision_and_keeps_it_on_another_machine(tmp_path):
    path = tmp_path / "store.zarr"
    here = amp_here(compose(["compute.device=cpu"]))
    cfg = compose(["compute.device=cpu", "sweep.num_models=2", f"store.path={path}"])
    store = open_store(cfg)  # made with auto: records this machine's choice
    assert cfg.train.amp is here and Store.open(path).attrs["config"]["train"]["amp"] is here

    # A store made with the other precision (as on a machine that chooses otherwise) is continued in it: auto
    # defers to the store, so the same command reopens it instead of refusing it as another sweep.
    other = tmp_path / "other.zarr"
    open_store(compose(["compute.device=cpu", "sweep.num_models=2", f"store.path={other}",
                        f"train.amp={str(not here).lower()}"]))
    again = compose(["compute.device=cpu", "sweep.num_models=2", f"store.path={other}"])
    reopened = open_store(again)
    assert again.train.amp is (not here) and reopened.fingerprint == Store.open(other).fingerprint
    assert store.fingerprint != reopened.fingerprint  # the precision is part of the sweep
