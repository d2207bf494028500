"""Fault injection at scale: SIGKILL a sweep at random moments while its rows are being written, then verify the
store and carry on. Prints: trials, corrupt completed rows found (must be 0), rows recomputed (in flight when
killed), rows lost (must be 0).

    python bench/faults.py --trials 100                      # local launcher, 2 worker processes
    python bench/faults.py --trials 20 --slurm               # Slurm array tasks (scripts/slurm_local.sh up first)

Each trial starts the planted sweep (``experiment=planted``: rows cost milliseconds, so most of a row's time is its
write: 2 modes x 5 kinds x ``--examples`` float32 outputs, 800 KB per row by default) and kills it a random delay
(up to ``--max-delay``) after its first row commits: locally the launcher's whole process group (launcher and
workers) with SIGKILL; on Slurm the running array tasks with ``scancel --signal=KILL``. After each kill the bench

- runs ``launch.verify``'s check (``datatransfer.store.verify.verify``) and counts damaged completed rows;
- counts the rows in flight when killed: claims left on rows that are not completed (the next run takes them over
  and computes those rows again);
- checks that every row completed before is still completed (a completed row is never lost).

At the end every completed row is compared with the row the planted model gives (rows are deterministic): a
mismatch is a lost row.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def overrides(store: Path, args) -> list:
    return ["experiment=planted", f"sweep.num_models={args.rows}", "row.units=50", f"row.examples=[{args.examples}]",
            f"store.path={store}", "launch.claim_stale_s=3600"]


def commits(store: Path) -> int:
    """Rows committed so far (files of the ``completed`` array: one per committed row), from one listing."""
    folder = store / "completed" / "c"
    return len(os.listdir(folder)) if folder.is_dir() else 0


def kill_local(store: Path, args, rng: random.Random) -> float:
    """One local trial: start the sweep in its own process group; once it commits its first row, SIGKILL the whole
    group (launcher and workers) after a random delay, so that the kill lands while rows are being written."""
    cmd = [sys.executable, "-m", "launch", *overrides(store, args), "launcher=local", "launcher.workers=2"]
    before = commits(store)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while commits(store) == before and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    delay = rng.uniform(0.0, args.max_delay)
    time.sleep(delay)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    return delay


def kill_slurm(store: Path, args, rng: random.Random, first: bool) -> float:
    """One Slurm trial: submit (or resume) the sweep's rows; once a task commits a row, SIGKILL every task of the
    array after a random delay (``scancel --signal=KILL --full``) and cancel what had not started."""
    from datatransfer.launchers.slurm.manifest import load_all

    app = ["launch", *overrides(store, args)] if first else ["launch.resume", f"store.path={store}"]
    before = commits(store)
    subprocess.run([sys.executable, "-m", *app, "launcher=slurm", "launcher.cpus_per_task=1",
                    "launcher.mem_gb=0", "launcher.rows_per_task=400"], cwd=REPO, check=True, capture_output=True)
    job = load_all(store)[-1].job_ids[-1]
    deadline = time.time() + 180
    while commits(store) == before and time.time() < deadline:
        time.sleep(0.05)
    delay = rng.uniform(0.0, args.max_delay)
    time.sleep(delay)
    subprocess.run(["scancel", "--signal=KILL", "--full", job], capture_output=True)
    subprocess.run(["scancel", job], capture_output=True)  # and what had not started
    while subprocess.run(["squeue", "--noheader", f"--jobs={job}"], capture_output=True, text=True).stdout.strip():
        time.sleep(0.5)
    return delay


def completed_rows(store: Path) -> set:
    from datatransfer.store.sweep_store import Store

    return set(int(r) for r in np.flatnonzero(Store.open(store).completed()))


def left_claims(store: Path) -> int:
    """Claims killed writers left on rows that are not completed: rows in flight when killed, which the next run
    takes over and computes again. (Claims left on completed rows, a kill between commit and release, are cleared
    by the next local run and cost no recomputation.)"""
    from datatransfer.store import layout

    folder = store / "claims"
    if not folder.is_dir():
        return 0
    done = completed_rows(store)
    return sum(1 for name in os.listdir(folder) if (r := layout.claim_row(name)) is not None and r not in done)


def lost_rows(store: Path, args) -> list:
    """Completed rows whose outputs differ from what the planted model gives for them."""
    from datatransfer.config import compose
    from datatransfer.rows.planted import PlantedRows
    from datatransfer.store.sweep_store import Store

    s = Store.open(store)
    planted = PlantedRows(compose(overrides(store, args)))
    lost = []
    for row in sorted(completed_rows(store)):
        expected = planted.run(row, s.masks[row]).outputs["t0"]
        if not np.array_equal(np.asarray(s.outputs("t0")[row]), expected):
            lost.append(row)
    return lost


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--slurm", action="store_true", help="kill Slurm array tasks instead of local workers")
    p.add_argument("--rows", type=int, default=8000, help="rows in the store (more than the trials complete)")
    p.add_argument("--examples", type=int, default=20000, help="target examples: sets the size of a row's write")
    p.add_argument("--max-delay", type=float, default=1.5, help="kill at most this long after the trial's first commit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", default="", help="work folder (default: a temporary one)")
    args = p.parse_args()
    from datatransfer.store.verify import verify

    rng = random.Random(args.seed)
    store = Path(args.dir or tempfile.mkdtemp(prefix="faults-")) / "store.zarr"
    corrupt = recomputed = vanished = 0
    before: set = set()
    start = time.perf_counter()
    for trial in range(args.trials):
        delay = kill_slurm(store, args, rng, trial == 0) if args.slurm else kill_local(store, args, rng)
        report = verify(store)
        damaged = {d.row for d in report.damaged} | {int(r) for r in report.mask_rows}
        corrupt += len(damaged) + len(report.metadata)
        recomputed += left_claims(store)
        now = completed_rows(store)
        vanished += len(before - now)
        before = now
        print(f"trial {trial + 1}/{args.trials}: killed {delay:.2f} s after the first commit; {len(now)} rows "
              f"completed; {len(damaged)} damaged rows, {len(report.metadata)} metadata problems; "
              f"{left_claims(store)} rows in flight", flush=True)
    lost = lost_rows(store, args)
    print(f"\n{'slurm' if args.slurm else 'local'}: {args.trials} trials in {time.perf_counter() - start:.0f} s; "
          f"rows completed {len(before)} of {args.rows}")
    print(f"corrupt completed rows found: {corrupt} (must be 0)")
    print(f"rows recomputed (in flight when killed): {recomputed}")
    print(f"rows lost: {len(lost) + vanished} (must be 0; {len(lost)} with wrong outputs, {vanished} no longer "
          f"completed)")
    sys.exit(0 if corrupt == 0 and not lost and vanished == 0 else 1)


if __name__ == "__main__":
    main()
