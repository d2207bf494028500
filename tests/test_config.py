"""Strict configuration and bad input: a clear message, a non-zero exit, and no store left behind."""

import pytest
from conftest import TINY, run_app

from datatransfer.config import ConfigError, compose, validate


def test_default_is_the_mini_experiment():
    cfg = compose()
    assert cfg.name == "mini" and cfg.store.path == "runs/mini/store.zarr"
    assert list(cfg.targets) == ["digits", "coarse"] and cfg.launcher.name == "local"
    validate(cfg)


def test_interface_key_names_exist():
    cfg = compose(["sweep.alpha=0.25", "sweep.num_models=7", "sweep.seed=3", "store.path=/x/s.zarr",
                   "launcher.workers=2", "targets=[digits]"])
    assert (cfg.sweep.alpha, cfg.sweep.num_models, cfg.sweep.seed) == (0.25, 7, 3)
    assert cfg.store.path == "/x/s.zarr" and cfg.launcher.workers == 2 and list(cfg.targets) == ["digits"]


def test_local_workers_default_to_one_per_cpu():
    from datatransfer.launchers.local import local_workers
    from datatransfer.rows.worker import cpus_allotted

    assert local_workers(compose(["compute.device=cpu"])) == cpus_allotted()
    assert local_workers(compose(["compute.device=cpu", "launcher.workers=3"])) == 3
    # the key belongs to the local launcher only: with launcher=slurm it is an unknown key
    r = run_app("launch", "launcher=slurm", "launcher.workers=2", "--cfg", "job")
    assert r.returncode != 0 and "workers" in r.stderr


def test_print_resolved_config():
    r = run_app("launch", "--cfg", "job", "sweep.num_models=9")
    assert r.returncode == 0, r.stderr
    assert "num_models: 9" in r.stdout and "alpha: 0.5" in r.stdout


@pytest.mark.parametrize(
    "override,needle",
    [
        ("sweep.nm=3", "nm"),  # misspelt key
        ("sweep.num_models=many", "num_models"),  # wrong type
        ("bogus=1", "bogus"),  # unknown top-level key
        ("targets=[nosuch]", "nosuch"),  # unknown target
    ],
)
def test_bad_overrides_exit_nonzero_naming_the_key(tmp_path, override, needle):
    store = tmp_path / "store.zarr"
    r = run_app("launch", override, f"store.path={store}")
    assert r.returncode != 0
    assert needle in r.stderr
    assert not store.exists()


@pytest.mark.parametrize(
    "override,needle",
    [
        ("sweep.alpha=0", "sweep.alpha"),
        ("sweep.alpha=1.5", "sweep.alpha"),
        ("sweep.num_models=0", "sweep.num_models"),
        ("source.root=/nonexistent/data", "data file not found"),
        ("transfer.modes=[fixed,linear]", "transfer.modes"),
        ("launcher.workers=-1", "launcher.workers"),
    ],
)
def test_bad_values_exit_nonzero_and_leave_no_store(tmp_path, override, needle):
    store = tmp_path / "store.zarr"
    r = run_app("launch", *TINY, override, f"store.path={store}")
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_unwritable_store_path(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    r = run_app("launch", *TINY, f"store.path={blocker / 'store.zarr'}")
    assert r.returncode == 2 and "cannot create the store" in r.stderr
    assert blocker.read_text() == "not a folder" and [p.name for p in tmp_path.iterdir()] == ["a-file"]


def test_validate_names_key():
    cfg = compose(["sweep.outputs=[softmax_gt,accuracy]"])
    with pytest.raises(ConfigError, match="sweep.outputs"):
        validate(cfg)
