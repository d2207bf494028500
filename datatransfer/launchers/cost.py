"""What a sweep will cost before it runs (``launch.dry_run=true``) and what it has cost so far (``launch.status``):
rows x seconds per row, in CPU- or GPU-hours and in wall time at the requested parallelism, and the store's size.

Seconds per row come from the best source there is, named in the output:

1. *measured, this store*: the mean wall time of its completed rows (provenance start/end times; rows of a batched
   group are timed so that their times add up to the group's), with the thread count they ran with;
2. *measured, bench*: the last ``python bench/models_per_hour.py --save`` on this device kind, for the group size the
   sweep will use: from ``bench/results/models_per_hour-<cpu|cuda>-<processor>.json`` when this processor was
   measured (two CPU kinds of the same core count: 2.8 and 3.4 CPU-s a mini row), else from any processor of the
   device kind (``models_per_hour-<cpu|cuda>.json``), saying which (planted rows train nothing: for them
   ``row.seconds_per_row``, their sleep, comes instead);
3. *estimate*: ``ESTIMATES`` below, per experiment and device kind, labelled as such (docs/performance.md says where
   each comes from); otherwise the cost is unknown, and the output says how to measure it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np

from datatransfer.store import size

BENCH_RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
# (experiment name, device type) -> (seconds per row in one process, threads of that process, where it comes from)
ESTIMATES = {
    ("mini", "cpu"): (2.8, 1, "make demo on 2026-12-05: 2.8 s a row per 1-thread worker, bf16, 8 models per process "
                              "(README; machines differ 2x)"),
    ("imagenet_transfer", "cuda"): (2160.0, 8, "~0.6 A100-hours a row, arithmetic from published timings "
                                              "(docs/paper-scale.md, section 5), not measured"),
}


@dataclass
class Cost:
    rows: int  # rows to run (or done, for the status)
    seconds_per_row: float  # wall seconds of one row in one process (NaN: unknown)
    source: str  # where seconds_per_row comes from
    device_type: str  # cpu | cuda
    threads: int  # CPU threads of one process (CPU-hours count them)
    parallel: int  # processes running at once
    store_bytes: Optional[int] = None
    elapsed: Optional[float] = None  # rows done: measured wall seconds, first row's start to last row's end
    concurrency: Optional[float] = None  # rows done: their wall seconds summed / elapsed (rows at a time, mean)
    started: Optional[float] = None  # rows done: unix time the first of them started
    projected_bytes: Optional[int] = None  # the store's size on disk when all its rows are complete
    projected_how: str = ""  # where projected_bytes comes from
    total_rows: Optional[int] = None  # the rows of the store when complete

    @property
    def unit(self) -> str:
        return "CPU" if self.device_type == "cpu" else "GPU"

    def more(self, rows: int, source: str = "at the completed rows' mean") -> "Cost":
        """The cost of ``rows`` more rows at this one's seconds per row, threads and parallelism."""
        return Cost(rows, self.seconds_per_row, source, self.device_type, self.threads, self.parallel)

    @property
    def device_hours(self) -> float:
        per_process = self.threads if self.device_type == "cpu" else 1
        return self.rows * self.seconds_per_row * per_process / 3600

    @property
    def wall_seconds(self) -> float:
        return self.rows * self.seconds_per_row / max(1, min(self.parallel, self.rows or 1))

    def lines(self, what: str = "to run") -> List[str]:
        unit = self.unit
        per = f"{self.threads} thread(s) a process" if self.device_type == "cpu" else "one GPU a process"
        if math.isnan(self.seconds_per_row):
            out = [f"cost: {self.rows} rows {what}; seconds per row unknown ({self.source})"]
        else:
            wall = f"{duration(self.wall_seconds)} at {self.parallel} process(es) in parallel" \
                if self.elapsed is None else (f"{duration(self.elapsed)} measured, the first row's start to the "
                                              f"last row's end ({self.concurrency:.1f} rows at a time on average)")
            out = [f"cost: {self.rows} rows {what} x {self.seconds_per_row:.1f} s/row ({self.source}) = "
                   f"{self.device_hours:.2f} {unit}-hours ({per}); wall time {wall}"]
        return out + self.disk_lines()

    def disk_lines(self) -> List[str]:
        """The store's size on disk, now and projected (none if neither is known)."""
        disk = [f"{self.store_bytes / 1e6:.1f} MB now"] if self.store_bytes is not None else []
        if self.projected_bytes is not None:
            disk.append(f"{'' if disk else 'new store: '}{self.projected_bytes / 1e6:.1f} MB projected when its "
                        f"{self.total_rows} rows are complete ({self.projected_how})")
        elif self.projected_how:
            disk.append(f"{'' if disk else 'new store: '}{self.projected_how}")
        return ["store size on disk: " + "; ".join(disk)] if disk else []


def duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "unknown"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def from_store(store, completed: Optional[np.ndarray] = None) -> Optional[tuple]:
    """(mean seconds per row, median threads, how many rows) from a store's completed rows (``completed``: its
    ``completed()``, if already read), or None."""
    if store is None:
        return None
    spans, threads = store.row_times(completed)
    if len(spans) == 0:
        return None
    return (_per_row(store, spans, completed), int(np.median(threads)) if len(threads) else 1, len(spans))


def _per_row(store, spans: np.ndarray, completed: Optional[np.ndarray] = None) -> float:
    """Seconds a row costs: the mean of the rows' own times (``Store.row_seconds``: a batched group's training shared
    among its rows), else of their provenance spans (stores without row statistics)."""
    own = store.row_seconds(completed)
    return float(np.mean(own)) if len(own) else float(np.mean(spans))


def processor(device_type: str) -> str:
    """This machine's processor of ``device_type``: the first GPU's name, or the CPU's model name with its widest
    vector extension ('AMD EPYC, AVX2'): one model name covers CPUs of several generations whose speeds, and whose
    best precision (native bf16 or not), differ several-fold. '' if unknown."""
    if device_type == "cuda":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    name, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not name:
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:  # not Linux
        import platform

        return platform.processor()
    isa = next((label for flag, label in CPU_EXTENSIONS if flag in flags), "")
    return f"{name}, {isa}" if name and isa else name


# The widest extension first: what bench results of CPUs sharing a model name are told apart by.
CPU_EXTENSIONS = (("amx_tile", "AMX"), ("avx512_bf16", "AVX-512 BF16"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))


def bench_file(device_type: str, model: str = "", folder: Path = BENCH_RESULTS) -> Path:
    """Where bench/models_per_hour.py --save keeps its result for this device kind and processor ``model`` (the
    device kind's file, whatever its processor, without one)."""
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")
    return folder / (f"models_per_hour-{device_type}-{slug}.json" if slug else f"models_per_hour-{device_type}.json")


def from_bench(device_type: str, k: int, amp: bool = False, folder: Path = BENCH_RESULTS,
               model: Optional[str] = None, cfg=None) -> Optional[tuple]:
    """(seconds per row, threads, label) from the last saved bench/models_per_hour.py run on this processor
    (``model``; default: this machine's), else on any of this device kind (the label says so), for the precision
    asked (train.amp) and the group size nearest to ``k`` that it measured, or None. With the sweep's ``cfg``, the
    label names the recipe keys in which it differs from the bench's."""
    model = processor(device_type) if model is None else model
    for path in (bench_file(device_type, model, folder), bench_file(device_type, "", folder)):
        if not path.is_file():
            continue
        result = json.loads(path.read_text())
        runners = {}
        solver = str(cfg.transfer.fixed.solver) if cfg is not None else "newton"
        for key, v in result.get("runners", {}).items():  # "K=4 amp" entries; before precision was measured: "4"
            # runners of another probe solver than the sweep's are left out (results without the field: any)
            if bool(v.get("amp", False)) == bool(amp) and v.get("solver", solver) == solver:
                runners[int(v.get("models_per_process", key))] = v
        if runners:
            break
    else:
        return None
    nearest = min(runners, key=lambda m: (abs(m - k), m))
    measured_on = result.get("processor") or "a processor it did not record"
    label = f"measured by bench/models_per_hour.py at K={nearest}, {'amp' if amp else 'fp32'}, on {measured_on}"
    if measured_on != model:
        label += f", not this machine's {model or 'processor'}: its rows may run at another speed"
    other = other_recipe(cfg, result.get("overrides") or []) if cfg is not None else []
    if other:
        label += (f", for the mini recipe, not this sweep's ({'; '.join(other[:3])}{'; ...' if len(other) > 3 else ''})"
                  f": its rows may cost otherwise")
    return float(runners[nearest]["seconds_per_row"]), int(result.get("threads", 1)), label


# What a row's cost depends on (besides the device, the precision and K, which the bench result is picked by).
RECIPE_SECTIONS = ("source", "targets", "model", "train", "transfer")


def other_recipe(cfg, overrides: List[str]) -> List[str]:
    """The keys (``key: bench's -> this sweep's``) in which ``cfg``'s row recipe differs from the one
    bench/models_per_hour.py measured (``experiment=mini`` with the ``overrides`` its result recorded)."""
    from omegaconf import OmegaConf

    from datatransfer.config import compose
    from datatransfer.store.spec import config_diff

    def sections(c) -> dict:
        resolved = OmegaConf.to_container(c, resolve=True)
        return {**{k: resolved.get(k) for k in RECIPE_SECTIONS}, "sweep.alpha": resolved["sweep"].get("alpha"),
                "sweep.unit": resolved["sweep"].get("unit")}

    return config_diff(sections(compose(["experiment=mini", *overrides])), sections(cfg))


def rows_device(cfg) -> str:
    """The device type the rows will run on (cpu | cuda). On Slurm it is the tasks' nodes', not the submitting
    machine's: with ``compute.device=auto`` a task that asks for a GPU (``launcher.gpus_per_task`` > 0) runs on it
    even when the login node that plans the sweep has none. Elsewhere: this machine's (``resolve_device``)."""
    from datatransfer.train.loop import resolve_device  # torch: not imported by launch.status

    device = str(cfg.compute.device)
    if device == "auto" and str(cfg.launcher.get("name", "")) == "slurm":
        return "cuda" if int(cfg.launcher.get("gpus_per_task", 0) or 0) > 0 else "cpu"
    return resolve_device(device).type


def estimate(cfg, store, rows: int, threads: int, parallel: int) -> Cost:
    """The cost of running ``rows`` more rows of ``cfg`` with ``parallel`` processes of ``threads`` threads."""
    from datatransfer.rows.worker import models_per_process  # torch: not imported by launch.status

    device_type = rows_device(cfg)
    completed = store.completed() if store is not None else None  # read once: seconds at thousands of rows
    projected, how, total, now = projection(cfg, store, device_type, completed)
    measured = from_store(store, completed)
    if measured is not None:
        spr, used, n = measured
        source = f"measured: mean of this store's {n} completed rows, {used} thread(s) each"
    elif cfg.row.kind == "planted":  # no model: the bench's trained rows say nothing of these
        spr = float(cfg.row.seconds_per_row)
        source = "row.seconds_per_row: planted rows train nothing and sleep this long each, besides their store writes"
    elif (bench := from_bench(device_type, models_per_process(cfg), bool(cfg.train.amp), cfg=cfg)) is not None:
        spr, used, source = bench
        source += f", {used} thread(s)"
    elif (key := (str(cfg.name), device_type)) in ESTIMATES:
        spr, used, why = ESTIMATES[key]
        source = f"ESTIMATE, not measured here: {why}"
    else:
        spr, source = float("nan"), (f"no completed rows, no saved bench run for {device_type} and no estimate for "
                                     f"experiment {cfg.name}: run bench/models_per_hour.py --save, or a few rows")
    return Cost(rows, spr, source, device_type, threads, parallel, now, projected_bytes=projected,
                projected_how=how, total_rows=total)


def projection(cfg, store, device_type: str, completed: Optional[np.ndarray] = None) -> tuple:
    """(bytes on disk or None, how it was found, rows, bytes on disk now or None) of the store of ``cfg`` once all
    its rows are complete (store/size.py): those this run would run, those queued, running or held by another run,
    and those an extension adds (``sweep.num_models`` raised). From ``store``'s written rows when it has some
    (``completed``: its ``completed()``, if already read), else an upper bound from its arrays' shapes (a new store's:
    from the spec, which reads the data's labels as creating the store would). None when the data it needs is not
    there yet: the rest of the cost is still worth printing."""
    from datatransfer import masks
    from datatransfer.errors import DataError
    from datatransfer.store.open import store_spec

    total = max(masks.num_rows(cfg), store.num_rows if store is not None else 0)
    done = int((store.completed() if completed is None else completed).sum()) if store is not None else 0
    use = size.usage(store.path, store.group) if store is not None else None
    now = use.total if use is not None else None
    saves = bool(cfg.store.get("save_backbones")) and cfg.row.kind != "planted"
    try:
        # the models this store has saved price the next ones; without any yet, one saved here
        models = ((use.per_model if use is not None else None) or size.backbone_bytes(cfg)) if saves else 0
        if store is None:  # the store of the spec, made of incompressible rows
            return (size.new_store_bytes(store_spec(cfg), size.info_bytes(device_type)) + total * models,
                    BOUND + _models(models), total, now)
    except DataError as e:
        return None, f"not projected: {e}", total, now
    if not done:  # nothing written yet to measure
        return (*_bounded(store, use, total, models, size.info_bytes(device_type)), total, now)
    projected, how = _measured(store, use, done, total, models, size.info_bytes(device_type))
    return projected, how + f", from its {done} completed rows", total, now


BOUND = "an upper bound: rows of random values, which zarr cannot compress as it does real ones"


def _models(models: float) -> str:
    return f"; + {models / 1e3:.1f} kB a row of saved source models" if models else ""


def _bounded(store, use, total: int, models: float, string_bytes: int) -> tuple:
    """(bytes, how) of ``store``, which has no completed row yet, at ``total`` rows: the store now without its
    training checkpoints, plus each row at the upper bound of ``size.row_bound`` and ``models`` bytes of saved
    source model, plus an extension's rows of the arrays written whole."""
    added = max(0, total - store.num_rows)
    whole = size.whole_row_bytes(store.group, string_bytes) if added else 0
    projected = use.total - use.transient + total * (size.row_bound(store.path, string_bytes) + models) \
        + added * whole
    return int(projected), BOUND + _models(models)


def _measured(store, use, done: int, total: int, models: float, string_bytes: int) -> tuple:
    """(bytes, how) of ``store`` at ``total`` rows from its ``done`` written ones (``use``: ``size.usage``):
    the store now without its training checkpoints (deleted as their rows complete), plus each row left at the
    written rows' mean and ``models`` bytes of saved source model, plus an extension's rows of the arrays written
    whole (the masks, uncompressed)."""
    per = use.per_row(done)
    added = max(0, total - store.num_rows)
    whole = size.whole_row_bytes(store.group, string_bytes) if added else 0
    projected = use.total - use.transient + (total - done) * (per + models) + added * whole
    how = f"measured: {per / 1e3:.1f} kB a written row"
    return int(projected), how + _models(models)


def unmeasured(store) -> Cost:
    """What ``launch.status`` knows of a store with no completed row yet: not its cost, but its size now and the
    upper bound of it complete (``disk_lines``)."""
    use = size.usage(store.path, store.group)
    projected, how = _bounded(store, use, store.num_rows, use.per_model or 0, size.info_bytes("cpu"))
    return Cost(0, float("nan"), "no completed row", "cpu", 1, 1, use.total, projected_bytes=projected,
                projected_how=how, total_rows=store.num_rows)


def spent(store, completed: Optional[np.ndarray] = None) -> Optional[Cost]:
    """What the completed rows of ``store`` cost (``launch.status``), from their provenance, with the wall time they
    took (first start to last end: idle time between runs of a resumed sweep included) and how many ran at a time
    on average (``parallel``: that, rounded); None if none has times. ``completed``: ``store.completed()``, if
    already read (reading it takes seconds at thousands of rows)."""
    completed = store.completed() if completed is None else completed
    start, end, threads = store.row_spans(completed)
    if len(start) == 0:
        return None
    spr, threads = _per_row(store, end - start, completed), int(np.median(threads))
    elapsed = float(end.max() - start.min())
    concurrency = float((end - start).sum() / elapsed) if elapsed > 0 else 1.0
    info = store.provenance(int(np.flatnonzero(completed)[0]))
    device_type = "cuda" if str(info.get("device", "")).startswith("cuda") else "cpu"
    use = size.usage(store.path, store.group)
    # the rows left save a source model each if the rows so far did (store.save_backbones)
    projected, how = _measured(store, use, int(completed.sum()), store.num_rows, use.per_model or 0, 0)
    return Cost(len(start), spr, f"mean of the completed rows' times, {threads} thread(s) each",
                device_type, threads, max(1, round(concurrency)), use.total, elapsed, concurrency,
                float(start.min()), projected_bytes=projected, total_rows=store.num_rows, projected_how=how)


def transfers(cfg) -> Cost:
    """What ``launch.add_targets`` will cost (its dry run): the saved source models of the store at ``store.path``
    not yet transferred to all of ``cfg.targets``, no source model trained. Seconds per row: the store's completed
    rows' transfer time (``total_seconds`` − ``train_seconds``) per original target, times the targets added; in
    this launcher's processes (local: its workers; Slurm: ``cpus_per_task`` and ``array_parallelism``)."""
    from datatransfer.store import layout
    from datatransfer.store.sweep_store import Store

    store = Store.open(cfg.store.path)
    saved = layout.saved_backbones(store.path, store.num_rows)
    added = [store.target_completed(t) for t in cfg.targets if t in store.added_targets]
    rows = int((saved & ~np.logical_and.reduce(added) if added else saved).sum())  # added before: its rows left
    if str(cfg.launcher.name) == "slurm":
        threads = int(cfg.launcher.cpus_per_task) or 1
        tasks = math.ceil(rows / max(1, int(cfg.launcher.rows_per_task)))
        parallel = min(int(cfg.launcher.array_parallelism) or tasks, tasks) if tasks else 1
    else:
        from datatransfer.launchers.local import local_workers, worker_threads

        parallel = local_workers(cfg)
        threads = worker_threads(parallel)
    done = np.flatnonzero(store.completed())
    fields = store.row_stat_fields
    per_target, spr, source = float("nan"), float("nan"), "no completed row of this store has its times"
    if len(done) and {"train_seconds", "total_seconds"} <= set(fields):
        stats = store.row_stats_of(done).astype(np.float64)
        transfer = stats[:, fields.index("total_seconds")] - stats[:, fields.index("train_seconds")]
        transfer = transfer[np.isfinite(transfer) & (transfer > 0)]
        if len(transfer):
            per_target = float(np.mean(transfer)) / len(store.targets)
            spr = per_target * len(cfg.targets)
            source = (f"measured: this store's {len(transfer)} completed rows transferred to its {len(store.targets)} "
                      f"target(s) in {per_target:.2f} s a target, {len(cfg.targets)} target(s) added (targets of "
                      f"other sizes cost otherwise)")
    return Cost(rows, spr, source, rows_device(cfg), threads, parallel, size.disk_bytes(store.path))
