"""Slurm's commands faked at the subprocess boundary, for tests/launchers/test_slurm_*.py (not a test module)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sbatch / squeue / sacct / scontrol / srun on PATH as small scripts: sbatch keeps each script it is given
    and answers with job ids 4242, 4243, ...; squeue prints $FAKE/squeue.txt ('id|state|reason|name' lines);
    scontrol reports MaxArraySize=5; sinfo prints $FAKE/sinfo.txt, by default one big node (64 CPUs, 512 GB, 8 GPUs,
    no time limit) in the default partition 'main'."""
    fake = tmp_path / "fake-slurm"
    bin_ = fake / "bin"
    bin_.mkdir(parents=True)
    scripts = {
        "sbatch": 'n=$(cat "$FAKE/next" 2>/dev/null || echo 4242); cp "$1" "$FAKE/sbatch-$n.sh"; '
                  'echo $((n + 1)) > "$FAKE/next"; echo "Submitted batch job $n"',
        "squeue": 'echo "$@" >> "$FAKE/squeue-calls"; cat "$FAKE/squeue.txt" 2>/dev/null; true',
        "sacct": 'echo "$@" >> "$FAKE/sacct-calls"; cat "$FAKE/sacct.txt" 2>/dev/null; true',
        "scontrol": 'echo "MaxArraySize            = 5"',
        "sinfo": 'echo "$@" >> "$FAKE/sinfo-calls"; cat "$FAKE/sinfo.txt"',
        "srun": "exit 0",
    }
    for name, body in scripts.items():
        (bin_ / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_ / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE", str(fake))
    (fake / "sinfo.txt").write_text("main*|64|524288|gpu:8|infinite\n")
    return fake
