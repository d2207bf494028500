"""A reduced mini sweep, end to end, through the real app: real images, real training, real store."""

import signal
import subprocess
import sys
import time

import numpy as np
from conftest import REPO, TINY, run_app

from datatransfer.config import compose
from datatransfer.rows.trained import TrainedRows
from datatransfer.store.sweep_store import Store
from datatransfer.train.loop import make_runtime
from datatransfer.train.precision import resolve_amp


def test_mini_sweep_end_to_end_and_rerun(tmp_path):
    store_path = tmp_path / "store.zarr"
    r = run_app("launch", *TINY, f"store.path={store_path}", "launcher.workers=2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rows completed: 3 / 3" in r.stdout

    store = Store.open(store_path)
    assert store.completed().all()
    assert store.targets == ["digits", "coarse"] and store.modes == ["fixed", "full"]
    rows = np.arange(3)
    for t, chance in (("digits", 0.1), ("coarse", 0.125)):
        out = store.outputs(t)[:]
        assert np.isfinite(out).all()
        acc = store.target_accuracy(t, rows)
        assert (acc[:, 0] > 3 * chance).all(), (t, acc)  # fixed-feature: well above chance
        assert (acc[:, 1] > 2 * chance).all(), (t, acc)  # full fine-tuning, one epoch
        # is_correct agrees with the stored predictions
        k = store.output_kinds.index("is_correct")
        np.testing.assert_allclose(out[:, :, k].mean(-1), acc)
        p = out[:, :, store.output_kinds.index("softmax_gt")]
        assert ((p >= 0) & (p <= 1)).all()
    stats = store.row_stats()[:]
    assert (stats[:, 0] > 0.5).all()  # source accuracy on the kept classes
    # provenance
    assert store.attrs["config"]["sweep"]["num_models"] == 3

    # a rerun finds nothing to do and changes nothing
    before = store.outputs("digits")[:]
    r2 = run_app("launch", *TINY, f"store.path={store_path}")
    assert r2.returncode == 0 and "3 of 3 rows already complete, 0 to run" in r2.stdout
    np.testing.assert_array_equal(Store.open(store_path).outputs("digits")[:], before)

    # rerunning a row reproduces it (same seed from (sweep seed, row), same thread count, same group: the CPU's
    # auto compute.models_per_process=4 trained rows 0-2 together, docs/configuration.md "Determinism")
    cfg = compose(TINY + [f"store.path={store_path}"])
    assert all(store.provenance(i)["models_per_process"] == 3 for i in range(3))
    rows = TrainedRows(cfg, make_runtime("cpu", resolve_amp(cfg), threads=1), {"digits": 0, "coarse": 1})
    row = dict(rows.run_group([0, 1, 2], [store.masks[i] for i in range(3)], [None] * 3))[1]
    np.testing.assert_allclose(row.outputs["digits"], before[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(row.predictions["coarse"], store.predictions("coarse")[1])


def test_interrupt_keeps_completed_rows_and_rerun_continues(tmp_path):
    store_path = tmp_path / "store.zarr"
    # enough rows that the sweep is still running when the first row is done, however fast rows are
    args = [sys.executable, "-m", "launch", *TINY, "sweep.num_models=16", "transfer.modes=[fixed]",
            f"store.path={store_path}"]
    # Ctrl-C acts as in a terminal even where this suite runs with SIGINT ignored (e.g. started with & from a
    # script): an ignored SIGINT is inherited, and Python then never raises KeyboardInterrupt.
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline, problem = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None:  # wait for the first completed row, then Ctrl-C
        time.sleep(0.5)
        try:
            if Store.open(store_path).completed().sum() >= 1:
                break
        except Exception as e:  # not created yet
            problem = e
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, f"{err[-2000:]}\nlast problem reading the store: {problem!r}"
    assert "completed rows are kept" in err
    done = Store.open(store_path).completed()
    assert 1 <= done.sum() < 16

    r = run_app("launch", *TINY, "sweep.num_models=16", "transfer.modes=[fixed]", f"store.path={store_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{done.sum()} of 16 rows already complete" in r.stdout
    assert Store.open(store_path).completed().all()
