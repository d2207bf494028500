"""`python -m aggregate launcher=slurm`: the row blocks summed as a Slurm array (submitit) on the project's
single-node Slurm (scripts/slurm_local.sh), then reduced: the same influences as summing them in this process."""

import os
import re
import subprocess

import numpy as np
import pytest
from conftest import REPO, run_app
from planted import make_planted_store

from datatransfer.influence.aggregate import aggregate
from datatransfer.influence.reader import Influence

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
SCRIPT = REPO / "scripts" / "slurm_local.sh"


@pytest.fixture(scope="module")
def cluster():
    """A usable Slurm (started if needed, left running: other sessions share it)."""
    ok = subprocess.run([str(SCRIPT), "status"], capture_output=True, timeout=120, cwd="/").returncode == 0
    if not ok and (os.geteuid() != 0 or subprocess.run([str(SCRIPT), "up"], capture_output=True, timeout=900,
                                                       cwd="/").returncode != 0):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("no Slurm for the distributed aggregation test")
        pytest.skip("no single-node Slurm (scripts/slurm_local.sh up needs root and apt)")


def test_slurm_array_equals_local(cluster, tmp_path):
    p = make_planted_store(tmp_path / "s.zarr", rows=50, units=6, n=(8, 5), noise=1.0, scheme="bernoulli",
                           completed=np.arange(45))
    local = aggregate(p.store.path, out=tmp_path / "local.zarr", progress=False, sums_block_rows=10).out
    common = [f"store.path={p.store.path}", f"out={tmp_path / 'slurm.zarr'}", "sums_block_rows=10", "launcher=slurm",
              "launcher.cpus_per_task=1", "launcher.mem_gb=0.5", "launcher.timeout_min=10", "progress=false"]
    r = run_app("aggregate", *common, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "submitted 10 row-block tasks as Slurm array" in r.stdout + r.stderr  # 5 blocks x 2 targets
    a, b = Influence(local), Influence(tmp_path / "slurm.zarr")
    for t in a.targets:
        for mode in a.modes:
            for kind in a.output_kinds:
                for name in ("per_example", "per_class", "overall", "per_example_se", "overall_se"):
                    np.testing.assert_array_equal(a.array(t, mode, kind, name), b.array(t, mode, kind, name))
    np.testing.assert_array_equal(a.diagnostics("t0", "full", "is_correct")["lds"],
                                  b.diagnostics("t0", "full", "is_correct")["lds"])
    assert not list(tmp_path.glob(".slurm.zarr.slurm-*"))  # the array's logs are removed once it succeeded
    # a refresh on Slurm after new rows: only their block is submitted
    for i in (45, 46):
        p.store.write_row(i, {t: p.y[t][i] for t in p.y}, {t: np.zeros((2, p.y[t].shape[-1]), np.int32) for t in p.y},
                          {})
    r = run_app("aggregate", *common, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "submitted 2 row-block tasks" in r.stdout + r.stderr and "read 4 target rows" in r.stdout


def test_an_array_that_will_never_start_is_cancelled_and_refused_instead_of_waited_for(cluster, tmp_path):
    """QA: an array pending for a reason Slurm never resolves (here a dependency on a failed job; in practice a QOS
    or association limit the up-front partition check cannot see) made `aggregate` wait for good, silently."""
    import time

    failed = subprocess.run(["sbatch", "--parsable", "-o", "/dev/null", "--wrap", "exit 1"], capture_output=True,
                            text=True, check=True).stdout.strip().split(";")[0]
    deadline = time.time() + 120
    while subprocess.run(["squeue", "--noheader", "-j", failed], capture_output=True, text=True).stdout.strip():
        assert time.time() < deadline
        time.sleep(1)
    p = make_planted_store(tmp_path / "s.zarr", rows=20, units=4, n=(6,))
    r = run_app("aggregate", f"store.path={p.store.path}", "sums_block_rows=10", "launcher=slurm",
                "launcher.cpus_per_task=1", "launcher.mem_gb=0.5", "launcher.timeout_min=10", "progress=false",
                f"+launcher.additional_parameters.dependency=afterok:{failed}", cwd=tmp_path, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout[-2000:] + r.stderr[-3000:]
    assert "are PENDING (DependencyNeverSatisfied) and will never start" in r.stderr
    assert "change launcher.additional_parameters" in r.stderr
    assert not (tmp_path / "influence.zarr").exists()
    array = re.search(r"array (\d+): ", r.stderr).group(1)
    deadline = time.time() + 60  # the array was cancelled, not left in the queue
    while subprocess.run(["squeue", "--noheader", "-j", array], capture_output=True, text=True).stdout.strip():
        assert time.time() < deadline
        time.sleep(1)
