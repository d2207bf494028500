"""The bench scripts the docs quote, on planted stores (tests/planted.py)."""

import shutil
import subprocess
import sys

from conftest import REPO
from planted import make_planted_store


def test_paired_influence_of_two_bitwise_equal_sweeps(tmp_path):
    # Two runs of one sweep on the same device and threads give bitwise equal rows (README, make demo): comparing
    # them must say so, not fail on the zero spread of their differences.
    a = make_planted_store(tmp_path / "a.zarr", rows=60, units=6, n=(12,)).store.path
    shutil.copytree(a, tmp_path / "b.zarr")
    r = subprocess.run([sys.executable, "bench/paired_influence.py", str(a), str(tmp_path / "b.zarr")], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "accuracy A - B +0.0000" in r.stdout
    assert "no z score: the differences have no spread (A and B equal on these rows)" in r.stdout
