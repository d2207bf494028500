"""Faults, made for real: files that would run code when loaded, worker processes killed mid-row, rows that are not
fit to be stored, damaged chunks and metadata. Nothing under test is mocked."""

import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import zarr
from conftest import REPO, run_app
from omegaconf import OmegaConf
from test_store import MODES, make_spec, row_payload

from datatransfer.errors import StoreError
from datatransfer.store.sweep_store import Store
from datatransfer.train import backbones
from datatransfer.train.checkpoint import RowCheckpoint
from datatransfer.train.models import build

PLANTED = ["experiment=planted", "row.units=20"]


# ---- 1. nothing executable is read from a store ------------------------------------------------------------------
class Touch:
    """Unpickling this creates ``marker`` (what a malicious checkpoint would do, harmlessly)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


class System:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _malicious(path, payload):
    torch.save({"epoch": 1, "model": {"w": torch.zeros(2)}, "extra": payload}, path)
    return path


@pytest.mark.parametrize("kind", [Touch, System])
def test_a_checkpoint_that_would_run_code_is_refused_not_run(tmp_path, kind):
    live = tmp_path / "live-marker"
    torch.load(_malicious(tmp_path / "live.pt", kind(live)), weights_only=False)
    assert live.exists()  # the payload is real: loading it the unsafe way runs it

    marker = tmp_path / "MARKER"
    (tmp_path / "checkpoints").mkdir()
    ckpt = _malicious(tmp_path / "checkpoints" / "row-3.pt", kind(marker))
    with pytest.raises(StoreError) as e:
        RowCheckpoint(ckpt).load()
    assert str(ckpt) in str(e.value) and "nothing in it was run" in str(e.value)
    assert not marker.exists()

    backbone = _malicious(tmp_path / "row-4.pt", kind(marker))
    with pytest.raises(StoreError, match=re.escape(str(backbone))):
        backbones.load(backbone)
    assert not marker.exists()


def test_damaged_checkpoint_is_a_store_error(tmp_path):
    path = tmp_path / "row-0.pt"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(StoreError, match="row-0.pt"):
        RowCheckpoint(path).load()


def test_what_the_code_saves_loads_weights_only(tmp_path):
    model = build(OmegaConf.create({"arch": "small_cnn", "width": 4}), 5, in_channels=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(3, 1, 28, 28)).sum().backward()
    opt.step()  # the optimizer now has per-parameter state
    gen = torch.Generator().manual_seed(3)
    ckpt = RowCheckpoint(tmp_path / "row-0.pt")
    ckpt.save(2, model, opt, gen)
    torch.load(ckpt.path, weights_only=True)  # plain content only

    fresh = build(OmegaConf.create({"arch": "small_cnn", "width": 4}), 5, in_channels=1)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=0.01)
    fresh_gen = torch.Generator().manual_seed(99)
    assert ckpt.restore(fresh, fresh_opt, fresh_gen) == 2
    assert torch.equal(fresh_gen.get_state(), gen.get_state())
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)

    info = {"row": np.int64(4), "seed": np.uint64(123), "source_accuracy": np.float64(0.75)}  # numpy scalars
    file = tmp_path / "backbones" / "row-4.pt"
    backbones.save(file, model, OmegaConf.create({"arch": "small_cnn", "width": 4}), 1, info)
    state = torch.load(file, weights_only=True)
    assert state["model_config"] == {"arch": "small_cnn", "width": 4} and state["source_accuracy"] == 0.75
    loaded = backbones.load(file)
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


# ---- 2. the local launcher survives dead workers -----------------------------------------------------------------
def _children(pid):
    """The worker processes (multiprocessing spawn children) of process ``pid``."""
    try:
        import psutil

        kids = [(c.pid, " ".join(c.cmdline())) for c in psutil.Process(pid).children()]
    except ImportError:
        kids = []
        for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                kids.append((int(child), pathlib.Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
                             .decode()))
    except Exception:  # the process or a child just exited
        return []
    return [p for p, cmd in kids if "spawn_main" in cmd]


def test_a_killed_worker_fails_its_row_the_others_complete_and_a_rerun_finishes(tmp_path):
    store_path = tmp_path / "store.zarr"
    args = [*PLANTED, "row.seconds_per_row=2", "sweep.num_models=6", "launcher.workers=2",
            f"store.path={store_path}"]
    proc = subprocess.Popen([sys.executable, "-m", "launch", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        deadline, workers = time.time() + 120, []
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            workers = _children(proc.pid)
            try:
                if len(workers) == 2 and Store.open(store_path).completed().sum() >= 1:
                    break
            except StoreError:  # not created yet
                pass
        assert proc.poll() is None and workers, "the launcher ended before a worker could be killed"
        os.kill(workers[0], signal.SIGKILL)
        out, err = proc.communicate(timeout=60)  # never hangs
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 2, err[-3000:]
    found = re.search(r"row (\d+): its worker process (\d+) killed by SIGKILL", err)
    assert found and int(found.group(2)) == workers[0], err[-3000:]
    assert f"row {found.group(1)} failed" in out  # logged when it happened
    assert "rerun the same command" in err and "Traceback" not in err
    done = Store.open(store_path).completed()
    assert list(np.flatnonzero(~done)) == [int(found.group(1))]  # every other row completed

    r = run_app("launch", *args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "5 of 6 rows already complete, 1 to run" in r.stdout
    assert Store.open(store_path).completed().all()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_row_that_raises_fails_alone(tmp_path, workers):
    store_path = tmp_path / "store.zarr"
    args = [*PLANTED, "sweep.num_models=5", f"launcher.workers={workers}", f"store.path={store_path}"]
    r = run_app("launch", *args, "launch.fail_rows=[1]", timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "error: 1 of 5 rows failed (rows [1]): row 1: InjectedFault: row 1: injected fault" in r.stderr
    assert "Traceback" not in r.stderr and "row 1 failed" in r.stdout  # the traceback is logged
    assert list(np.flatnonzero(~Store.open(store_path).completed())) == [1]
    r = run_app("launch", *args, timeout=300)
    assert r.returncode == 0 and "4 of 5 rows already complete, 1 to run" in r.stdout, r.stderr[-3000:]


# ---- 3. rows are checked before they are committed ---------------------------------------------------------------
def _chunks(path, row):
    return sorted(p.relative_to(path) for p in path.rglob("*") if p.is_file() and
                  re.search(rf"/c/{row}(/|$)", "/" + str(p.relative_to(path))))


@pytest.mark.parametrize("spoil, problem", [
    (lambda o, p: o["t1"].__setitem__((1, 0, 2), np.nan), r"target t1: 1 of 20 outputs are NaN or infinite"),
    (lambda o, p: o["t0"].__setitem__((0, 1, 0), np.inf), r"target t0: 1 of 28 outputs are NaN or infinite"),
    (lambda o, p: o.__setitem__("t1", o["t1"][:, :, :4]), r"target t1: outputs of shape \(2, 2, 4\)"),
    (lambda o, p: p.__setitem__("t0", p["t0"][:1]), r"target t0: predictions of shape \(1, 7\)"),
    (lambda o, p: p["t1"].__setitem__((0, 3), 3), r"target t1: 1 predictions outside the 3 classes \[0, 3\)"),
    (lambda o, p: p["t0"].__setitem__((1, 0), -1), r"target t0: 1 predictions outside"),
    (lambda o, p: p.__setitem__("t0", p["t0"] + 0.5), r"target t0: predictions of dtype float64"),
    (lambda o, p: o.__setitem__("t0", o["t0"].astype(str)), r"target t0: outputs of dtype <U"),
    (lambda o, p: p.pop("t1"), r"target t1: no usable outputs and predictions"),
])
def test_a_bad_row_is_refused_and_nothing_of_it_written(tmp_path, spoil, problem):
    path = tmp_path / "s.zarr"
    store = Store.create_or_open(path, make_spec())
    store.write_row(2, *row_payload(store, 2))
    outs, preds, stats = row_payload(store, 5)
    spoil(outs, preds)
    with pytest.raises(StoreError, match=problem) as e:
        store.write_row(5, outs, preds, stats)
    assert str(e.value).startswith("row 5, target")
    again = Store.open(path)
    assert not again.completed()[5] and again.completed()[2] and not again.row_done(5)
    # row 2: completed, row_stats, 2 outputs, 2 predictions (and its provenance)
    assert _chunks(path, 5) == [] and len([c for c in _chunks(path, 2) if c.parts[0] != "provenance"]) == 6
    assert np.isnan(again.outputs("t0")[5]).all() and (again.predictions("t1")[5] == -1).all()
    assert list(again.missing_rows()) == [r for r in range(12) if r != 2]  # a resume reruns row 5


def test_good_rows_of_castable_dtypes_are_written(tmp_path):
    store = Store.create_or_open(tmp_path / "s.zarr", make_spec())
    outs, preds, stats = row_payload(store, 1)
    outs = {t: o.astype(np.float64) for t, o in outs.items()}
    preds = {t: p.astype(np.int64) for t, p in preds.items()}
    store.write_row(1, outs, preds, stats)
    assert store.row_done(1) and store.predictions("t0").dtype == np.int32
    with pytest.raises(StoreError, match="row 12 outside"):
        store.write_row(12, outs, preds, stats)
    assert len(MODES) == store.outputs("t0").shape[1]


# ---- 4. damage is diagnosed, never fatal -------------------------------------------------------------------------
def test_undecodable_completed_chunks_count_as_not_completed(tmp_path, caplog):
    path = tmp_path / "s.zarr"
    store = Store.create_or_open(path, make_spec(rows=40))
    for r in range(40):
        store.write_row(r, *row_payload(store, r))
    (path / "completed" / "c" / "3").write_bytes(b"")  # a node crash
    (path / "completed" / "c" / "17").write_bytes(b"\x00garbage\xff" * 3)
    with zarr.config.set({"async.concurrency": 4}):
        with pytest.raises(Exception):  # what zarr itself does: the whole read fails
            zarr.open_group(str(path), mode="r")["completed"][:]
    again = Store.open(path, mode="r+")
    caplog.set_level("WARNING")
    done = again.completed()
    assert list(np.flatnonzero(~done)) == [3, 17]
    assert not again.row_done(3) and not again.row_done(17) and again.row_done(4)
    assert list(again.missing_rows()) == [3, 17]
    assert again.target_completed("t0").sum() == 38
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 2  # once per row, however often it is read
    assert any("row 3 counts as not completed" in w and str(path / "completed" / "c" / "3") in w for w in warned)
    assert any("row 17 counts as not completed" in w and str(path / "completed" / "c" / "17") in w for w in warned)
    again.write_row(3, *row_payload(again, 3))  # a rerun rewrites it
    assert list(np.flatnonzero(~Store.open(path).completed())) == [17]


def test_undecodable_row_chunks_leave_the_row_out_of_summaries(tmp_path, caplog):
    path = tmp_path / "s.zarr"
    store = Store.create_or_open(path, make_spec(rows=4))
    for r in range(4):
        store.write_row(r, *row_payload(store, r))
    (path / "predictions" / "t0" / "c" / "1" / "0" / "0").write_bytes(b"")
    (path / "row_stats" / "c" / "2" / "0").write_bytes(b"junk")
    caplog.set_level("WARNING")
    again = Store.open(path)
    acc = again.target_accuracy("t0", np.arange(4))
    assert np.isnan(acc[1]).all() and not np.isnan(acc[[0, 2, 3]]).any()
    stats = again.row_stats_of(np.arange(4))
    assert np.isnan(stats[2]).all() and stats[3, 0] == pytest.approx(0.03)
    text = caplog.text
    assert str(path / "predictions" / "t0" / "c" / "1" / "0" / "0") in text and "row 1" in text
    assert str(path / "row_stats" / "c" / "2" / "0") in text


def test_damaged_metadata_is_a_store_error_naming_the_file(tmp_path):
    path = tmp_path / "s.zarr"
    Store.create_or_open(path, make_spec(rows=4))
    (path / "completed" / "zarr.json").write_text('{"shape": [4], "data_')
    with pytest.raises(StoreError, match=re.escape(str(path / "completed" / "zarr.json"))):
        Store.open(path)
    (path / "zarr.json").write_text("")
    with pytest.raises(StoreError, match=re.escape(str(path / "zarr.json"))):
        Store.open(path)


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory):
    """An 8-row planted store made by the app (a few seconds)."""
    path = tmp_path_factory.mktemp("planted") / "store.zarr"
    r = run_app("launch", *PLANTED, "sweep.num_models=8", f"store.path={path}")
    assert r.returncode == 0, r.stderr[-3000:]
    return path


def test_the_apps_count_a_damaged_row_as_not_completed_and_a_rerun_repairs_it(planted_store, tmp_path):
    path = tmp_path / "store.zarr"
    subprocess.run(["cp", "-r", str(planted_store), str(path)], check=True)
    (path / "completed" / "c" / "3").write_bytes(b"")  # `: > STORE/completed/c/3`
    chunk = str(path / "completed" / "c" / "3")

    status = run_app("launch.status", f"store.path={path}")
    assert status.returncode == 0, status.stderr[-3000:]
    assert "rows: 7 completed" in status.stdout
    assert "row 3 counts as not completed" in status.stdout and chunk in status.stdout

    agg = run_app("aggregate", f"store.path={path}", f"out={tmp_path / 'influence.zarr'}")
    assert agg.returncode == 0, agg.stderr[-3000:]
    assert "used 7 of 8 rows" in agg.stdout and "row 3 counts as not completed" in agg.stdout

    rerun = run_app("launch", *PLANTED, "sweep.num_models=8", f"store.path={path}")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "7 of 8 rows already complete, 1 to run" in rerun.stdout
    assert Store.open(path).completed().all()
    assert np.array_equal(Store.open(path).outputs("t0")[3], Store.open(planted_store).outputs("t0")[3])


def test_the_apps_report_a_corrupt_zarr_json_in_one_line(planted_store, tmp_path):
    path = tmp_path / "store.zarr"
    subprocess.run(["cp", "-r", str(planted_store), str(path)], check=True)
    meta = path / "zarr.json"
    meta.write_text(meta.read_text()[:200])  # cut short, as by a full disk
    for app, args in (("launch.status", []), ("aggregate", []), ("launch", [*PLANTED, "sweep.num_models=8"])):
        r = run_app(app, *args, f"store.path={path}")
        assert r.returncode == 2, (app, r.stderr[-3000:])
        assert re.search(rf"^error: {re.escape(str(meta))} cannot be read", r.stderr, re.M), (app, r.stderr[-3000:])
        assert "Traceback" not in r.stderr + r.stdout, app
