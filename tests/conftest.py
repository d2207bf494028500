import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_app(module: str, *overrides: str, cwd=None, timeout: int = 600, env=None) -> subprocess.CompletedProcess:
    """Run a Hydra app the way a user does: `python -m <module> overrides...`."""
    e = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", module, *overrides], cwd=cwd or REPO, capture_output=True,
                          text=True, timeout=timeout, env=e)


# A mini sweep small enough for tests: few rows, one epoch, short transfers.
TINY = [
    "sweep.num_models=3",
    "train.epochs=1",
    "transfer.full.epochs=1",
    "transfer.fixed.iterations=30",
]


@pytest.fixture
def tiny_overrides(tmp_path):
    return TINY + [f"store.path={tmp_path / 'store.zarr'}"]


def pytest_collection_modifyitems(items):
    """The real-Slurm module first, then the files with more tests (stable: a file's tests keep their order). Under
    `make test` (pytest-xdist, a file to a worker, in this order) the longest file, the Slurm one, mostly waiting on
    the cluster, then starts at once instead of being what the run waits for at its end."""
    per_file = Counter(item.path for item in items)
    items.sort(key=lambda item: (not item.get_closest_marker("slurm"), -per_file[item.path]))


def require_ffcv():
    """Skip a test module where ffcv is not installed -- except under CI (CI=true), where `make test` installs it,
    so that a broken install fails instead of skipping. Keeps torch's thread count (importing ffcv sets 1)."""
    import torch

    threads = torch.get_num_threads()
    try:
        if os.environ.get("CI", "").lower() == "true":
            import ffcv.loader  # noqa: F401
        else:
            pytest.importorskip("ffcv", reason="ffcv is not installed (scripts/install_ffcv.sh VENV_DIR installs it)")
    finally:
        torch.set_num_threads(threads)
