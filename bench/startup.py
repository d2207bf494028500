"""Start-up of a process with and without compiled bytecode, side by side.

    python bench/startup.py [--repeats 3]

Where PYTHONDONTWRITEBYTECODE is set, Python reads .pyc files but never writes them, so a package that was
installed without compiling (uv's default) is compiled from source by every process that imports it. The Makefile
compiles the venv's packages once (``compileall``); this script measures what that buys. "without" runs the same
command with PYTHONPYCACHEPREFIX pointing at an empty folder, so Python finds no .pyc and compiles everything it
imports, as before. The commands, alternated (without, with, with, without, ...):

- ``import``: ``python -c "import torch, zarr, hydra, numba, scipy.optimize"`` (what an app or worker imports);
- ``launch``: ``python -m launch experiment=planted`` with 4 planted rows in a temporary store (an app start-up,
  its worker process and the store writes; no training).

Printed: wall and CPU seconds (user + system of the child) of each run, and the ratio without / with per pair.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed(cmd: list, env: dict) -> tuple:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="pairs of runs per command")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "no-pycache"
        empty.mkdir()
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        envs = {"with": env, "without": dict(env, PYTHONPYCACHEPREFIX=str(empty))}
        n = [0]

        def launch() -> list:
            n[0] += 1
            return [sys.executable, "-m", "launch", "experiment=planted", "row.units=8", "row.examples=[6]",
                    "sweep.num_models=4", f"store.path={tmp}/s{n[0]}.zarr", f"hydra.run.dir={tmp}/h{n[0]}"]

        commands = {"import": lambda: [sys.executable, "-c", "import torch, zarr, hydra, numba, scipy.optimize"],
                    "launch": launch}
        for name, cmd in commands.items():
            res = {"with": [], "without": []}
            for rep in range(args.repeats):
                for which in (("without", "with") if rep % 2 == 0 else ("with", "without")):
                    res[which].append(timed(cmd(), envs[which]))
                    wall, cpu = res[which][-1]
                    print(f"  {name}, {which:7} bytecode: {wall:5.2f} s wall, {cpu:5.2f} CPU-s", flush=True)
            ratio = [a[0] / b[0] for a, b in zip(res["without"], res["with"])]
            cratio = [a[1] / b[1] for a, b in zip(res["without"], res["with"])]
            print(f"{name}: without / with bytecode, wall median {statistics.median(ratio):.2f} (min {min(ratio):.2f}, "
                  f"max {max(ratio):.2f}); CPU median {statistics.median(cratio):.2f} (min {min(cratio):.2f}, "
                  f"max {max(cratio):.2f})", flush=True)


if __name__ == "__main__":
    main()
