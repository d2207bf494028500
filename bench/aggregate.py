"""Benchmark: aggregation vs plain zarr reading of the same arrays, at the paper's CIFAR-10 size; and a refresh
after 1% new rows vs a full aggregation.

    python bench/aggregate.py                        # M=7,540 rows, U=1,000 units, n=10,000 examples, 1 kind
    python bench/aggregate.py --rows 800 --units 200 --examples 2000   # a quick, smaller run

The full aggregation is difference of means with Welch standard errors and its row-block sums written to the
influence store (``incremental=False``: every row read). The refresh: the last 1% of the rows are marked not
completed, a full aggregation runs (not timed against anything), the rows are marked completed again and
``python -m aggregate``'s default (incremental) run is timed; it is compared with the full aggregation of all rows.

The synthetic store is generated once (about 300 MB at full size) into --dir (default: a folder in the system temp
dir named after the sizes) and reused by later runs. Each measurement runs in its own subprocess, which reports its
wall time and its peak resident memory (ru_maxrss), so one measurement's memory does not leak into another's.
Targets (issue 12): aggregation time <= 1.25x the plain read, refresh <= 0.05x a full run, peak memory <= 2 GB.
The plain read and the reference (the aggregation before issue 12: read + one float64 BLAS product M^T Y) run
interleaved with it, so the printed ratios hold for the load of the moment; so do two sides that split the
aggregation's cost: "read + sums" (the read and M^T [Y, Y^2] by the four-Russians kernel of influence/masksum.py,
nothing written) and the "refresh floor" (what a refresh does whatever the number of new rows: read the totals,
Welch influences and errors of all U x K entries, write the influence arrays). Not a test: timings on a shared machine are noisy, so each side runs --repeat
times, interleaved, and the best time counts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import zarr

from datatransfer.config.aggregate import AggregateConfig

READ_CHILD = r"""
import json, resource, sys, time
import numpy as np, zarr
from datatransfer.store.sweep_store import bulk_reads
path, block = sys.argv[1], int(sys.argv[2])
t0, c0 = time.perf_counter(), time.process_time()
total = 0.0
with bulk_reads():   # the same zarr settings as the aggregation's reads
    g = zarr.open_group(path, mode="r")
    completed = np.flatnonzero(g["completed"][:])
    masks = g["masks"][:]
    arr = g["outputs/target"]
    for i in range(0, len(completed), block):
        r = completed[i:i + block]
        total += float(arr[int(r[0]):int(r[-1]) + 1].sum(dtype=np.float64))  # touch the data
secs = time.perf_counter() - t0
print(json.dumps({"seconds": secs, "cpu": time.process_time() - c0, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

# The same read as READ_CHILD, from the chunk files by the arrays' own codecs (store/chunk_files.py), as the
# aggregation now reads: how fast the data can be had at all, beside zarr's own read.
FILES_READ_CHILD = r"""
import json, resource, sys, time
import numpy as np, zarr
from datatransfer.store import chunk_files
path, block = sys.argv[1], int(sys.argv[2])
t0, c0 = time.perf_counter(), time.process_time()
total = 0.0
g = zarr.open_group(path, mode="r")
completed = np.flatnonzero(chunk_files.rows(g["completed"], 0, g["completed"].shape[0]))
masks = g["masks"][:]
arr = g["outputs/target"]
for i in range(0, len(completed), block):
    r = completed[i:i + block]
    total += float(chunk_files.take(arr, r).sum(dtype=np.float64))  # touch the data
secs = time.perf_counter() - t0
print(json.dumps({"seconds": secs, "cpu": time.process_time() - c0, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

AGG_CHILD = r"""
import json, resource, sys, time
from datatransfer.influence.aggregate import aggregate
from datatransfer.config import DiagnosticsConfig
path, out, block, diag = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
incremental, sums_block = sys.argv[5] == "1", int(sys.argv[6])
t0, c0 = time.perf_counter(), time.process_time()
s = aggregate(path, out=out, diagnostics=DiagnosticsConfig() if diag else None, block_rows=block,
              progress=sys.stderr.isatty(), incremental=incremental, sums_block_rows=sums_block)
secs = time.perf_counter() - t0
print(json.dumps({"seconds": secs, "cpu": time.process_time() - c0, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rows_read": s.rows_read}))
"""

# The aggregation as it was before standard errors and row-block sums (issue 12): the same blocked, prefetched read
# and one float64 product M^T Y per block, nothing else. Run beside the others, it separates the cost of the extra
# sums from the machine's load of the moment.
REF_CHILD = r"""
import json, resource, sys, time
import numpy as np, zarr
from datatransfer.influence.blocks import blas_limit, read_blocks
from datatransfer.store.sweep_store import Store
path, block = sys.argv[1], int(sys.argv[2])
t0, c0 = time.perf_counter(), time.process_time()
store = Store.open(path)
rows = np.flatnonzero(store.completed())
masks = store.masks
s = None
with blas_limit():
    for b, data in read_blocks(store.outputs("target"), rows, block):
        y = data[:, 0, 0, :].astype(np.float64)
        p = masks[b].T.astype(np.float64) @ y
        s = p if s is None else s + p
secs = time.perf_counter() - t0
print(json.dumps({"seconds": secs, "cpu": time.process_time() - c0, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

# Read + the sums of the aggregation (M^T [Y, Y^2] by the kernel of influence/masksum.py, and the totals), nothing
# written: what the aggregation costs beyond the read before anything is stored.
SUMS_CHILD = r"""
import json, resource, sys, time
import numpy as np
from datatransfer.influence.blocks import blas_limit, completed_rows
from datatransfer.influence.sums import averaging, read_sums
from datatransfer.store.sweep_store import Store
path, block = sys.argv[1], int(sys.argv[2])
t0, c0 = time.perf_counter(), time.process_time()
store = Store.open(path)
rows = completed_rows(store)
avg = averaging(store.labels("target"), len(store.class_names("target")))
with blas_limit():
    s, _ = read_sums(store.outputs("target"), store.masks, rows, np.array([0]), np.array([0]), avg,
                     np.zeros(0, np.int64), block, None, lambda b, y: None, lambda n: None)
secs = time.perf_counter() - t0
print(json.dumps({"seconds": secs, "cpu": time.process_time() - c0, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

# What any refresh does whatever the number of new rows, with this layout: read the previous totals (U x 2K float64),
# the Welch influences and errors of all U x K entries, and writing the per-example, per-class and overall arrays.
FLOOR_CHILD = r"""
import json, resource, shutil, sys, time
import numpy as np, zarr
from datatransfer.influence import sums_store as ss
from datatransfer.influence.write import write_influences
from datatransfer.store.sweep_store import Store
path, out = sys.argv[1], sys.argv[2]
store = Store.open(path)
labels, names = store.labels("target"), store.class_names("target")
t0, c0 = time.perf_counter(), time.process_time()
tot = ss.read_total(zarr.open_group(out + "/sums/target", mode="r"), 0)
res = tot.estimate(0, store.unit_names)
g = zarr.open_group(out + ".floor", mode="w")
write_influences(g, res, labels, names, store.unit_names)
secs = time.perf_counter() - t0
shutil.rmtree(out + ".floor")
print(json.dumps({"seconds": secs, "cpu": time.process_time() - c0, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

BASELINE_CHILD = r"""
import json, resource
import numpy as np, zarr
import datatransfer.influence.aggregate
print(json.dumps({"maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_store(path: Path, rows: int, units: int, n: int) -> None:
    """A store in the documented format: one target, one mode, one kind (softmax_gt-like values in [0, 1])."""
    from tqdm import tqdm

    from datatransfer.masks import mask_matrix
    from datatransfer.store.spec import StoreSpec, TargetSpec
    from datatransfer.store.sweep_store import Store

    rng = np.random.default_rng(0)
    masks = mask_matrix(0, rows, units, 0.5)
    sweep = {"alpha": 0.5, "num_models": rows, "seed": 0, "scheme": "fixed_size"}
    spec = StoreSpec(
        config={"sweep": sweep, "name": "bench"}, sweep_defining={"sweep": sweep, "bench": [rows, units, n]},
        unit_names=[f"class{u}" for u in range(units)],
        targets=[TargetSpec("target", np.arange(n) % 10, [str(c) for c in range(10)])],
        modes=["fixed"], output_kinds=["softmax_gt"], masks=masks,
    )
    store = Store.create_or_open(path, spec)
    arr = store.outputs("target")
    # p_y = sigmoid(per-example base + effect of 50 relevant units + noise): realistic values (and compressibility)
    # without a full (rows x units) @ (units x n) product.
    base = rng.normal(1.0, 1.5, size=n)
    w = rng.normal(0, 0.05, size=(50, n))
    step = 256
    with tqdm(total=rows, unit="row", desc="generating rows") as bar:
        for i in range(0, rows, step):
            m = masks[i:i + step, :50].astype(np.float64)
            logit = base + m @ w + rng.normal(0, 0.5, size=(len(m), n))
            arr[i:i + len(m)] = (1 / (1 + np.exp(-logit))).astype(np.float32)[:, None, None, :]
            bar.update(len(m))
    store.group["completed"][:] = np.ones(rows, dtype=bool)


def child(code: str, *args: str) -> dict:
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"benchmark child failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=7540)
    ap.add_argument("--units", type=int, default=1000)
    ap.add_argument("--examples", type=int, default=10000)
    ap.add_argument("--dir", type=Path, default=None, help="where the synthetic store lives (kept for reuse)")
    ap.add_argument("--block", type=int, default=256, help="rows per read, for both sides")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--diagnostics", action="store_true", help="also time a default run with diagnostics")
    ap.add_argument("--sums-block", type=int, default=AggregateConfig.sums_block_rows,
                    help="sums_block_rows: store rows per block of sums")
    ap.add_argument("--new", type=float, default=0.01, help="share of rows new to the refresh")
    a = ap.parse_args()

    folder = a.dir or Path(tempfile.gettempdir()) / f"datatransfer-bench-{a.rows}x{a.units}x{a.examples}"
    store = folder / "store.zarr"
    if not (store / "zarr.json").is_file():
        print(f"creating a {a.rows} x {a.units} store with {a.examples} examples at {store} (once)")
        make_store(store, a.rows, a.units, a.examples)
    size_mb = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 2 ** 20
    print(f"store {store}: {a.rows} rows x {a.units} units, {a.examples} examples, one kind; {size_mb:.0f} MB "
          f"on disk")
    out = folder / "influence.zarr"

    child(READ_CHILD, str(store), str(a.block))  # warm the page cache: both sides then read from memory
    reads, files, aggs, diags, refreshes, refs, sums, floors = [], [], [], [], [], [], [], []
    sb = str(a.sums_block)
    completed = zarr.open_array(str(store / "completed"), mode="r+")
    new = max(1, int(round(a.rows * a.new)))
    try:
        for _ in range(a.repeat):  # interleaved, so background load hits every side alike
            reads.append(child(READ_CHILD, str(store), str(a.block)))
            files.append(child(FILES_READ_CHILD, str(store), str(a.block)))
            aggs.append(child(AGG_CHILD, str(store), str(out), str(a.block), "0", "0", sb))
            refs.append(child(REF_CHILD, str(store), str(a.block)))
            sums.append(child(SUMS_CHILD, str(store), str(a.block)))
            if a.diagnostics:
                diags.append(child(AGG_CHILD, str(store), str(out), str(a.block), "1", "0", sb))
            completed[a.rows - new:] = False
            child(AGG_CHILD, str(store), str(out), str(a.block), "0", "0", sb)  # the state before the new rows
            completed[a.rows - new:] = True
            refreshes.append(child(AGG_CHILD, str(store), str(out), str(a.block), "0", "1", sb))
            floors.append(child(FLOOR_CHILD, str(store), str(out)))
    finally:
        completed[:] = True
    base = child(BASELINE_CHILD)["maxrss_mb"]

    def best(xs):
        return min(x["seconds"] for x in xs), max(x["maxrss_mb"] for x in xs)

    def cpu(xs):  # CPU seconds (all threads) of the fastest run: the work, whatever the load
        return min(xs, key=lambda x: x["seconds"])["cpu"]

    (tr, mr), (ta, ma) = best(reads), best(aggs)
    print(f"plain zarr read of masks + outputs   : {tr:7.2f} s   peak memory {mr:7.0f} MB")
    (tc, mc) = best(files)
    print(f"the same read from the chunk files   : {tc:7.2f} s   peak memory {mc:7.0f} MB   (store/chunk_files.py, "
          f"as the aggregation reads)")
    print(f"aggregation (difference of means)    : {ta:7.2f} s   peak memory {ma:7.0f} MB   (+ Welch SEs, "
          f"row-block sums written)")
    (tp, mp) = best(refs)
    print(f"reference: read + M^T Y only (before): {tp:7.2f} s   peak memory {mp:7.0f} MB   (float64 BLAS, "
          f"nothing written)")
    (tk, mk) = best(sums)
    print(f"read + sums M^T [Y, Y^2] (kernel)    : {tk:7.2f} s   peak memory {mk:7.0f} MB   (nothing written)")
    if diags:
        td, md = best(diags)
        print(f"aggregation + diagnostics (defaults) : {td:7.2f} s   peak memory {md:7.0f} MB")
    tf, mf = best(refreshes)
    print(f"refresh after {new} new rows ({100 * new / a.rows:.1f}%)  : {tf:7.2f} s   peak memory {mf:7.0f} MB   "
          f"(rows read: {refreshes[0]['rows_read']})")
    (tl, _) = best(floors)
    print(f"refresh floor: totals read, Welch, influences written: {tl:7.2f} s   (what any refresh does)")
    print(f"ratio aggregation / read: {ta / tr:.2f}  (target <= 1.25); reference / read: {tp / tr:.2f}; read + "
          f"sums / read: {tk / tr:.2f}; aggregation / chunk-file read: {ta / tc:.2f}")
    print(f"ratio refresh / full aggregation: {tf / ta:.3f}  (target <= 0.05); its floor / full aggregation: "
          f"{tl / ta:.3f}")
    print(f"CPU seconds (all threads; the work, whatever the load): read {cpu(reads):.2f}, chunk-file read "
          f"{cpu(files):.2f}, aggregation "
          f"{cpu(aggs):.2f} ({cpu(aggs) / cpu(reads):.2f}x), reference {cpu(refs):.2f}, read + sums {cpu(sums):.2f}, "
          f"refresh {cpu(refreshes):.2f} ({cpu(refreshes) / cpu(aggs):.3f}x the aggregation), refresh floor "
          f"{cpu(floors):.2f}")
    print(f"peak memory of aggregation: {ma / 1024:.2f} GB (target <= 2 GB; python + numpy + zarr alone: "
          f"{base:.0f} MB)")
    print(f"all times (s): read {[round(x['seconds'], 2) for x in reads]}, chunk-file read "
          f"{[round(x['seconds'], 2) for x in files]}, aggregate "
          f"{[round(x['seconds'], 2) for x in aggs]}, reference {[round(x['seconds'], 2) for x in refs]}, "
          f"read + sums {[round(x['seconds'], 2) for x in sums]}, refresh "
          f"{[round(x['seconds'], 2) for x in refreshes]}, refresh floor {[round(x['seconds'], 2) for x in floors]}"
          + (f", with diagnostics {[round(x['seconds'], 2) for x in diags]}" if diags else ""))
    infl = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2 ** 20
    print(f"influence store on disk: {infl:.0f} MB (row-block sums of {a.sums_block} rows included)")
    print(f"machine: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
