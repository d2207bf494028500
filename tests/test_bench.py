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


def test_bench_scripts_refuse_bad_input_in_one_line(tmp_path):
    store = make_planted_store(tmp_path / "s.zarr", rows=40, units=6, n=(12,)).store.path  # targets t0, t1

    def run(*args):
        return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300)

    for args, message in [
        (["bench/digit_z.py", str(tmp_path / "missing.zarr")], "no store at"),
        (["bench/digit_z.py", str(store)], "'target digits' is not in"),
        (["bench/digit_z.py", str(store), "--mode", "nosuch"], "--mode: 'nosuch' is not in"),
        (["bench/paired_influence.py", str(store), str(store), "--kind", "nosuch"], "--kind: 'nosuch' is not in"),
        (["bench/demo_summary.py", str(tmp_path / "missing.zarr")], "no store at"),
    ]:
        r = run(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (args, r.stderr)
        assert message in r.stderr.splitlines()[-1], (args, r.stderr)
    r = run("bench/demo_summary.py", str(store))  # a store without a digits target: the other lines, no digit z
    assert r.returncode == 0 and "t0 test accuracy" in r.stdout and "matching digit" not in r.stdout, r.stderr
