"""Models per CPU-hour (or GPU-hour) of the mini recipe: runners side by side in one process (same data, rows and
thread count), interleaved -- the batched row runner against the one-row-at-a-time runner, in float32 and in
mixed precision.

    python bench/models_per_hour.py [--runners 1:fp32,4:fp32,1:amp,4:amp,8:amp] [--rows 4] [--repeats 5]
                                    [--threads 1] [--device cpu] [--override train.epochs=1 ...] [--save]

Each repeat runs the same ``--rows`` rows (the mini sweep's rows 0.., their own masks and seeds) once with each
runner ``K:precision[:solver]``: K=1 is ``TrainedRows.run`` row after row (one source model, then its transfers),
K>1 ``TrainedRows.run_group`` in groups of K (compute.models_per_process=K: K source models trained at once, then
each transferred); precision ``fp32`` (train.amp=false) or ``amp`` (train.amp=true: bf16 autocast on the CPU, fp16
on CUDA); solver ``newton`` or ``lbfgs`` (transfer.fixed.solver; default the recipe's: ``1:fp32:lbfgs`` is the
one-row-at-a-time runner as it was before issue 13). The first runner is the baseline every ratio is taken to. The order of the runners rotates from repeat to
repeat, since a shared machine's speed drifts. A CPU-hour is the CPU time this process used
(``time.process_time``: robust to other processes on a shared machine, which wall time is not): models per
CPU-hour = rows / (CPU seconds / 3600); on CUDA, per GPU-hour of wall time. Printed per runner: median models per
hour over the repeats and the median of the per-repeat ratios to the baseline with its min..max; how each runner's
time splits between source training and the rest (transfers, evaluation); the paired accuracy differences to the
baseline. With ``$OUT`` set, writes ``$OUT/models_per_hour.json``; ``--save`` writes the result where
``launch.dry_run`` reads its seconds per row (``bench/results/models_per_hour-<device>-<processor>.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from datatransfer.config import compose
from datatransfer.launchers.cost import bench_file, processor
from datatransfer.masks import row_mask
from datatransfer.rows.trained import TrainedRows
from datatransfer.train.loop import make_runtime

RESULTS = Path(__file__).resolve().parent / "results"


def run_once(rows_runner: TrainedRows, masks, rows, k: int) -> tuple:
    """(CPU seconds of this process, wall seconds, source-training wall seconds summed over rows) for ``rows`` in
    groups of ``k`` (k=1: today's runner, ``run`` row after row)."""
    cpu, start = time.process_time(), time.perf_counter()
    done = {}
    if k == 1:
        for r in rows:
            done[r] = rows_runner.run(r, masks[r])
    else:
        for i in range(0, len(rows), k):
            group = rows[i:i + k]
            done.update(rows_runner.run_group(group, [masks[r] for r in group], [None] * len(group)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - start
    run_once.accuracies = {r: accuracies(rows_runner, row) for r, row in done.items()}
    return cpu, wall, sum(row.stats["train_seconds"] for row in done.values())


def accuracies(rows_runner: TrainedRows, row) -> list:
    """[source accuracy, then each target's test accuracy per mode] of a computed row."""
    out = [row.stats["source_accuracy"]]
    for key, target in rows_runner.transfer.datasets.items():
        out.extend((row.predictions[key] == target.labels("test")[None, :]).mean(axis=1).tolist())
    return out


def parse_runner(spec: str) -> tuple:
    """'4:amp' -> (4, True, ""); '1' or '1:fp32' -> (1, False, ""); '1:fp32:lbfgs' -> (1, False, "lbfgs"): the
    third field sets transfer.fixed.solver for that runner ("": the recipe's)."""
    k, precision, solver = (spec.strip().split(":") + ["", ""])[:3]
    if precision not in ("", "fp32", "amp"):
        raise SystemExit(f"--runners: precision must be fp32 or amp, got {spec!r}")
    if solver not in ("", "newton", "lbfgs"):
        raise SystemExit(f"--runners: solver must be newton or lbfgs, got {spec!r}")
    return int(k), precision == "amp", solver


def name(runner: tuple) -> str:
    return f"K={runner[0]} {'amp' if runner[1] else 'fp32'}" + (f" {runner[2]}" if runner[2] else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runners", default="1:fp32,4:fp32,1:amp,4:amp",
                    help="K:precision, comma-separated; the first is the baseline")
    ap.add_argument("--rows", type=int, default=4, help="rows per runner per repeat (a multiple of every K)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--override", nargs="*", default=[], help="config overrides, e.g. train.epochs=1")
    ap.add_argument("--save", action="store_true", help=f"write the result to {RESULTS}/ for launch.dry_run")
    args = ap.parse_args()
    ks = [parse_runner(spec) for spec in args.runners.split(",") if spec.strip()]
    runners = {}
    for amp, solver in sorted({(amp, solver) for _, amp, solver in ks}):
        cfg = compose([f"compute.device={args.device}", f"train.amp={str(amp).lower()}", *args.override,
                       *([f"transfer.fixed.solver={solver}"] if solver else [])])
        rt = make_runtime(cfg.compute.device, cfg.train.amp, args.threads)
        runners[amp, solver] = TrainedRows(cfg, rt, {t: i for i, t in enumerate(cfg.targets)})
    some = next(iter(runners.values()))  # the runners differ in precision and solver only: same data and masks
    masks = {r: row_mask(int(cfg.sweep.seed), r, some.source.num_classes, float(cfg.sweep.alpha))
             for r in range(args.rows)}
    rows = list(range(args.rows))
    unit = "GPU" if rt.device.type == "cuda" else "CPU"
    print(f"models per {unit}-hour, experiment=mini {' '.join(args.override)}: {args.rows} rows per runner, "
          f"{args.repeats} repeats, torch threads {rt.threads}, device {rt.device}, runners {[name(k) for k in ks]}",
          flush=True)
    for runner in runners.values():  # warm-up (first-call allocations, oneDNN primitive caches)
        run_once(runner, masks, rows[:1], 1)
    cpus, walls, trains, accs = ({k: [] for k in ks} for _ in range(4))
    for rep in range(args.repeats):
        order = ks[rep % len(ks):] + ks[:rep % len(ks)]
        for k in order:
            cpu, wall, train = run_once(runners[k[1], k[2]], masks, rows, k[0])
            cpus[k].append(cpu)
            walls[k].append(wall)
            trains[k].append(train)
            accs[k].extend(run_once.accuracies[r] for r in rows)
        print(f"  repeat {rep + 1}: " + ", ".join(f"{name(k)} {cpus[k][-1] / args.rows:.2f} CPU-s/row "
                                                  f"({walls[k][-1] / args.rows:.2f} s wall)" for k in ks), flush=True)
    # CPU-hours: the CPU time this process used (robust to other processes on a shared machine); GPU-hours: wall
    hours = {k: [c / 3600 for c in cpus[k]] if unit == "CPU" else [w / 3600 for w in walls[k]] for k in ks}
    per_hour = {k: [args.rows / h for h in hours[k]] for k in ks}
    base = ks[0]
    result = {"device": str(rt.device), "device_type": rt.device.type, "threads": rt.threads, "unit": unit,
              "host": platform.node(), "processor": processor(rt.device.type), "overrides": args.override,
              "rows": args.rows, "repeats": args.repeats, "baseline": name(base), "time": time.time(), "runners": {}}
    for k in ks:
        ratios = [per_hour[k][i] / per_hour[base][i] for i in range(args.repeats)]
        seconds_per_row = statistics.median(hours[k]) * 3600 / args.rows
        share = statistics.median(t / w for t, w in zip(trains[k], walls[k]))
        result["runners"][name(k)] = {"models_per_process": k[0], "amp": k[1], "seconds_per_row": seconds_per_row,
                                      "solver": k[2] or str(some.transfer.probe.solver),
                                      "wall_seconds_per_row": statistics.median(walls[k]) / args.rows,
                                      "models_per_hour": statistics.median(per_hour[k]),
                                      "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
                                      "ratio_max": max(ratios), "source_training_share": share}
        print(f"{name(k):>10}: {statistics.median(per_hour[k]):7.0f} models/{unit}-hour "
              f"({seconds_per_row:.2f} {unit}-s/row, "
              f"source training {share:.0%} of the wall time); ratio to {name(base)} "
              f"{statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f} over {args.repeats} "
              "repeats)")
    names = ["source"] + [f"{t} {m}" for t in some.transfer.datasets for m in some.transfer.modes]
    ref = np.array(accs[base])
    for k in ks[1:]:  # same rows, same seeds: paired differences of accuracy, this runner - the baseline
        diff = np.array(accs[k]) - ref
        result["runners"][name(k)]["accuracy_difference"] = {
            n: {"mean": float(diff[:, i].mean()), "sd": float(diff[:, i].std(ddof=1)) if len(diff) > 1 else 0.0}
            for i, n in enumerate(names)}
        print(f"  accuracy, {name(k)} - {name(base)}, same rows (mean +- sd over {len(diff)} row runs): " +
              ", ".join(f"{n} {diff[:, i].mean():+.4f} +- {diff[:, i].std(ddof=1) if len(diff) > 1 else 0:.4f}"
                        for i, n in enumerate(names)))
    out = [Path(os.environ["OUT"]) / "models_per_hour.json"] if os.environ.get("OUT") else []
    if args.save:
        out.append(bench_file(rt.device.type, result["processor"], RESULTS))
    for path in out:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
        print(f"written {path}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
