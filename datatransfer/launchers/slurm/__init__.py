"""Slurm job arrays through submitit: ``plan.py`` (rows -> tasks -> arrays), ``submit.py`` (the launcher),
``manifest.py`` (what was submitted), ``queue.py`` (one squeue / sacct call per poll), ``status.py`` (where rows
are) and ``task.py`` (what an array task runs)."""
