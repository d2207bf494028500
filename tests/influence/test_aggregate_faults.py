"""`python -m aggregate` under faults, each for real: a real subprocess killed (SIGKILL) or stopped (SIGTERM) while it
writes, two runs at once, a path it cannot write. The influence store is either the previous one or a complete new
one, never half of one; nothing is left behind for good; a refusal is one line and exit 2."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from planted import make_planted_store

from datatransfer.influence.reader import Influence

NAMES = ("per_example", "per_class", "overall", "mean_output", "per_example_se", "per_class_se", "overall_se")


def start(store: Path, *overrides: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "aggregate", f"store.path={store}", "progress=false", "sums_block_rows=16",
           f"hydra.run.dir={store.parent / 'hydra'}", *overrides]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))


def finish(proc: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def hidden(folder: Path, kind: str):
    return sorted(folder.glob(f".influence.zarr.{kind}-*"))


def wait_writing(proc: subprocess.Popen, folder: Path) -> Path:
    """The temporary folder of the run ``proc``, once it exists (the run is then writing its influence store)."""
    deadline = time.time() + 120
    while not hidden(folder, "writing"):
        assert proc.poll() is None, f"finished before writing anything: {proc.communicate()}"
        assert time.time() < deadline
        time.sleep(0.01)
    return hidden(folder, "writing")[0]


def same(a: Path, b: Path) -> None:
    ia, ib = Influence(a), Influence(b)
    np.testing.assert_array_equal(ia.rows(), ib.rows())
    for t in ib.targets:
        for mode in ib.modes:
            for kind in ib.output_kinds:
                for name in NAMES:
                    np.testing.assert_allclose(ia.array(t, mode, kind, name), ib.array(t, mode, kind, name),
                                               rtol=1e-6, atol=1e-9, err_msg=f"{t}/{mode}/{kind}/{name}")


@pytest.fixture
def planted(tmp_path):
    """A store whose aggregation takes a second or two (a window to hit), half of its rows completed."""
    return make_planted_store(tmp_path / "s.zarr", rows=240, units=40, n=(3000,), completed=np.arange(120))


def complete_the_rest(p) -> None:
    """Rows 120.. written the bulk way make_planted_store writes them, then marked completed."""
    for t in p.y:
        p.store.outputs(t)[120:] = p.y[t][120:]
    p.store.group["completed"][:] = True


def test_sigkill_while_writing_then_rerun_equals_a_clean_run(planted, tmp_path):
    store = planted.store.path
    assert finish(start(store)).returncode == 0  # the previous store: 120 rows
    complete_the_rest(planted)
    proc = start(store)
    tmp = wait_writing(proc, tmp_path)
    time.sleep(0.1)  # into the summing (the run takes a second or more from here)
    proc.kill()
    proc.wait()
    assert tmp.exists() and len(Influence(tmp_path / "influence.zarr").rows()) == 120  # the old one, whole
    r = finish(start(store))
    assert r.returncode == 0, r.stderr
    assert not hidden(tmp_path, "writing") and not hidden(tmp_path, "old")  # the killed run's folder is gone
    assert finish(start(store, f"out={tmp_path / 'clean.zarr'}", "incremental=false")).returncode == 0
    same(tmp_path / "influence.zarr", tmp_path / "clean.zarr")


def test_sigterm_cleans_up_like_ctrl_c(planted, tmp_path):
    store = planted.store.path
    proc = start(store)
    wait_writing(proc, tmp_path)
    time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    r = finish(proc)
    assert r.returncode == 130 and "interrupted: nothing was replaced" in r.stderr, r.stderr
    assert not hidden(tmp_path, "writing") and not (tmp_path / "influence.zarr").exists()


def test_killed_between_the_two_renames_the_previous_store_goes_back(planted, tmp_path):
    store = planted.store.path
    assert finish(start(store)).returncode == 0
    # What a kill between `out -> .old-*` and `.writing-* -> out` leaves on disk.
    os.rename(tmp_path / "influence.zarr", tmp_path / ".influence.zarr.old-0000dead")
    (tmp_path / ".influence.zarr.writing-0000dead").mkdir()
    r = finish(start(store))
    assert r.returncode == 0, r.stderr
    assert "0 changed or new" in r.stdout + r.stderr  # refreshed from the store put back, not from scratch
    assert not hidden(tmp_path, "writing") and not hidden(tmp_path, "old")


def test_a_second_run_at_once_is_refused(planted, tmp_path):
    """Another process holds the lock (as a run in progress does, for however long it takes: a real run may finish
    before a second one has started under load, so the holder here waits until it is told to go)."""
    store = planted.store.path
    lock = tmp_path / ".influence.zarr.lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); f.write('pid 1 on elsewhere');"
        " f.flush(); print('held', flush=True); sys.stdin.readline()"), str(lock)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        second = finish(start(store))
        assert second.returncode == 2, second.stderr
        assert "another `python -m aggregate` is writing" in second.stderr and "pid 1 on elsewhere" in second.stderr
        assert "Traceback" not in second.stderr and not (tmp_path / "influence.zarr").exists()
    finally:
        holder.communicate("go\n", timeout=30)
    assert finish(start(store)).returncode == 0  # the lock ends with its holder
    assert len(Influence(tmp_path / "influence.zarr").rows()) == 120


def test_an_unwritable_out_is_one_line_and_exit_2(planted, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    r = finish(start(planted.store.path, f"out={tmp_path / 'file' / 'influence.zarr'}"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: ") and str(tmp_path / "file") in r.stderr and "nothing was replaced" in r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_is_one_line_and_exit_2_and_leaves_nothing(planted, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(small)], check=True)
    try:
        r = finish(start(planted.store.path, f"out={small / 'influence.zarr'}"))
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "No space left on device" in r.stderr and "nothing was replaced" in r.stderr
        assert not hidden(small, "writing") and not (small / "influence.zarr").exists()
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_a_report_whose_influence_store_was_replaced_meanwhile_is_refused_and_the_previous_report_stays(tmp_path):
    from datatransfer.config import ReportConfig
    from datatransfer.errors import AggregationError
    from datatransfer.report import write_report

    p = make_planted_store(tmp_path / "s.zarr", rows=40, units=6, n=(8,))
    assert finish(start(p.store.path)).returncode == 0
    report = tmp_path / "report"
    first = write_report(Influence(tmp_path / "influence.zarr"), report, ReportConfig(), p.store)
    before = {f.name: f.read_bytes() for f in report.iterdir()}
    assert first.index == report / "index.html" and all(f.parent == report for f in first.figures + first.csvs)
    inf = Influence(tmp_path / "influence.zarr")  # a report has opened it ...
    assert finish(start(p.store.path, "incremental=false")).returncode == 0  # ... and another run replaces it
    assert inf.replaced()
    with pytest.raises(AggregationError, match="was replaced by another `python -m aggregate` while this report"):
        write_report(inf, report, ReportConfig(), p.store)
    # the previous report whole (not some new figures beside an old index.html), no temporary folder left
    assert {f.name: f.read_bytes() for f in report.iterdir()} == before
    assert sorted(x.name for x in tmp_path.glob(".report*")) == [".report.lock"]
    assert write_report(Influence(tmp_path / "influence.zarr"), report, ReportConfig(), p.store).index \
        .is_file()  # opened again: fine


def test_a_report_into_a_folder_holding_other_files_is_refused_untouched(tmp_path):
    p = make_planted_store(tmp_path / "s.zarr", rows=40, units=6, n=(8,))
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.md").write_text("keep me")

    def report():
        return subprocess.run([sys.executable, "-m", "aggregate.report", f"store.path={p.store.path}",
                               f"report.out={mine}", f"hydra.run.dir={tmp_path / 'hydra'}"], cwd=REPO,
                              capture_output=True, text=True)

    # refused before any work: with no influence store yet, none is computed first
    r = report()
    assert r.returncode == 2 and "is not a report folder; refusing to replace it" in r.stderr, r.stderr
    assert "aggregating first" not in r.stdout and not (tmp_path / "influence.zarr").exists()
    assert finish(start(p.store.path)).returncode == 0
    r = report()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "is not a report folder; refusing to replace it" in r.stderr
    assert sorted(x.name for x in mine.iterdir()) == ["notes.md", "sub"]
    assert (mine / "notes.md").read_text() == "keep me"
    assert not list(tmp_path.glob(".mine.writing-*"))
