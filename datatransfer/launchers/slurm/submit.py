"""Slurm launcher: submit a store's rows as job arrays through submitit, write a manifest, and return at once.

Rows to run = not completed and not already queued or running (so submitting again, or ``launch.resume``, never
submits a row twice). They are packed ``launcher.rows_per_task`` to a task and split into arrays of at most
``MaxArraySize`` tasks (``plan``); each array is one ``SlurmExecutor.submit_array`` of :class:`RowsTask`
(``task``), in a submission folder of its own under ``<store>/submissions/`` (``manifest``). Nothing here
waits for a job: ``python -m launch.status`` watches, ``python -m launch.resume`` reruns what did not complete.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import OmegaConf

from datatransfer import masks
from datatransfer.config.launchers import job_name, validate_launcher
from datatransfer.launchers import cost, rows_to_add
from datatransfer.launchers.slurm import queue as slurm_queue
from datatransfer.launchers.slurm import resources
from datatransfer.launchers.slurm.manifest import Manifest, SubmittedArray, new_id
from datatransfer.launchers.slurm.plan import (
    Plan,
    executor_parameters,
    format_plan,
    make_plan,
    plural,
)
from datatransfer.launchers.slurm.queue import SlurmError
from datatransfer.launchers.slurm.status import QueueView
from datatransfer.store import layout
from datatransfer.store.lock import exclusive
from datatransfer.store.open import resolved_config
from datatransfer.store.sweep_store import Store

log = logging.getLogger(__name__)
DRY_RUN_MAX_ARRAY_SIZE = 1001  # assumed by a dry run where Slurm cannot be asked


def task_config(cfg: Any, store: Store) -> dict:
    """The resolved config the tasks run with: every path absolute (tasks run in the submission folder)."""
    d = resolved_config(cfg)
    d["store"]["path"] = str(Path(store.path).resolve())
    return d


def _max_array_size(launcher: Any, dry_run: bool) -> tuple[int, str]:
    if launcher.max_array_size:
        return int(launcher.max_array_size), "launcher.max_array_size"
    try:
        return slurm_queue.max_array_size(), "MaxArraySize"
    except SlurmError as e:
        if not dry_run:
            raise
        return DRY_RUN_MAX_ARRAY_SIZE, f"assumed: {e}"


def plan_rows(cfg: Any, store: Optional[Store]) -> tuple[Plan, dict, dict, str]:
    """(plan, executor parameters, rows skipped by reason, where the array limit came from).

    ``store`` None: a dry run before the store exists (every row is to run)."""
    launcher = cfg.launcher
    validate_launcher(launcher, cfg)  # job name, a GPU for a CUDA recipe (the config may not come from validate())
    if store is None:
        rows, skipped = list(range(masks.num_rows(cfg))), {}
    else:
        view = QueueView.poll(store.path, accounting=False)  # the queue first, then the store (see slurm_status)
        live = view.live_rows()
        added = rows_to_add(cfg, store)  # a dry run's extension: not made, its rows counted
        missing = [int(r) for r in store.missing_rows()] + added
        rows = [r for r in missing if r not in live]
        skipped = {"already completed": store.num_rows + len(added) - len(missing),
                   "already queued or running": len(missing) - len(rows)}
    limit, source = _max_array_size(launcher, bool(cfg.launch.dry_run))
    plan = make_plan(rows, int(launcher.rows_per_task), limit)
    params = executor_parameters(launcher, job_name(cfg))
    return plan, params, skipped, source


def submit(cfg: Any, store: Optional[Store], overrides: Sequence[str] = ()) -> Optional[Manifest]:
    """Plan, print the plan, and (unless ``launch.dry_run``) submit it. Returns the manifest, or None.

    ``store`` may be None for a dry run only (the store is not created by a dry run)."""
    if store is None or cfg.launch.dry_run:
        return _plan_and_submit(cfg, store, overrides)
    with exclusive(layout.submit_lock(store.path)):  # two submitters would both see the same rows as not queued
        return _plan_and_submit(cfg, store, overrides)


def _plan_and_submit(cfg: Any, store: Optional[Store], overrides: Sequence[str]) -> Optional[Manifest]:
    start = time.perf_counter()
    plan, params, skipped, source = plan_rows(cfg, store)
    where = str(store.path) if store is not None else f"{cfg.store.path} (not created: dry run)"
    text = format_plan(plan, params, where, skipped, source)
    if plan.num_rows == 0:
        log.info("%s", text.splitlines()[0])
        log.info("nothing to submit: every row is completed, queued or running")
        if store is not None:  # its size, now and when the rows in flight are complete
            for line in cost.estimate(cfg, store, 0, int(cfg.launcher.cpus_per_task) or 1, 1).disk_lines():
                log.info("%s", line)
        return None
    if source.startswith("assumed"):  # a dry run where Slurm cannot be asked
        log.warning("the request (CPUs, memory, GPUs, time limit) is not checked against the partition: Slurm "
                    "cannot be asked here")
    else:
        resources.check(cfg.launcher)  # one sinfo call: refuses a request no node of the partition can ever run
    log.info("%s", text)
    if cfg.launch.dry_run or store is None:
        parallel = min(int(cfg.launcher.array_parallelism) or plan.num_tasks, plan.num_tasks)
        for line in cost.estimate(cfg, store, plan.num_rows, int(cfg.launcher.cpus_per_task) or 1, parallel).lines():
            log.info("%s", line)
        log.info("dry run: nothing submitted")
        return None

    sid = new_id()
    folder = layout.submissions(store.path).resolve() / sid
    manifest = Manifest(
        id=sid, folder=str(folder), store=str(Path(store.path).resolve()), fingerprint=store.fingerprint,
        job_name=params["job_name"], overrides=[str(o) for o in overrides],
        launcher=OmegaConf.to_container(cfg.launcher, resolve=True), rows_per_task=plan.rows_per_task,
        max_array_size=plan.max_array_size, arrays=[SubmittedArray(a.tasks) for a in plan.arrays],
        added_targets=list(store.scope or []),
    )
    folder.mkdir(parents=True)
    manifest.config_path.write_text(json.dumps(task_config(cfg, store), indent=1))
    manifest.save()  # before sbatch: a crash mid-submission leaves a record of what was meant
    _submit_arrays(cfg.launcher, params, manifest)
    seconds = time.perf_counter() - start
    ids = ", ".join(f"{a.job_id} ({plural(len(a.tasks), 'task')})" for a in manifest.arrays)
    log.info(f"submitted {plural(manifest.num_rows, 'row')} as {plural(len(manifest.arrays), 'array')} "
          f"in {seconds:.1f} s: {ids}")
    log.info(f"manifest: {manifest.path}")
    log.info(f"watch:    python -m launch.status store.path={store.path}")
    log.info(f"resume:   python -m launch.resume store.path={store.path}   (reruns rows that did not complete)")
    return manifest


def _submit_arrays(launcher: Any, params: dict, manifest: Manifest) -> None:
    import submitit

    from datatransfer.launchers.slurm.task import RowsTask

    params = dict(params)
    extra = dict(params.get("additional_parameters", {}))
    extra.setdefault("chdir", manifest.folder)  # a neutral working directory: not the submitter's cwd
    params["additional_parameters"] = extra
    for i, array in enumerate(manifest.arrays):
        try:
            ex = submitit.SlurmExecutor(folder=manifest.submitit_folder, max_num_timeout=int(launcher.max_num_timeout),
                                        python=launcher.python or None)
            ex.update_parameters(**params)
            jobs = ex.submit_array([RowsTask(str(manifest.config_path), rows, manifest.added_targets)
                                    for rows in array.tasks])
        except Exception as e:  # sbatch refused, srun missing, ...: keep what was submitted on record
            manifest.state, manifest.error = "failed", f"array {i}: {e}"
            manifest.save()
            done = ", ".join(manifest.job_ids) or "none"
            raise SlurmError(f"submitting array {i} of {len(manifest.arrays)} failed: {str(e).strip()}\n"
                             f"arrays already submitted: {done} (recorded in {manifest.path}; "
                             f"launch.resume will not submit their rows again)") from e
        array.job_id = jobs[0].job_id.split("_")[0]
        array.array = "_" in jobs[0].job_id
        manifest.save()
    manifest.state = "submitted"
    manifest.save()


class SlurmLauncher:
    """``launcher=slurm``: submit the store's missing rows as job arrays and return (``submit``)."""

    def run(self, cfg: Any, store: Optional[Store], overrides: Sequence[str] = ()) -> None:
        submit(cfg, store, overrides)  # returns at once; `python -m launch.status` watches
