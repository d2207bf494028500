#!/usr/bin/env bash
# The counterfactual measurement on mini (docs/counterfactual.md, "Measured on mini"): a random-subsets sweep and
# its influences, then for digits and coarse a counterfactual sweep (fixed-mode influences, bottom/top/random
# removal of k in K classes, RUNS runs per point, full and (digits) hand-picked baselines), then the results.
# Usage: bench/counterfactual_mini.sh OUT_DIR   (env: PYTHON, WORKERS=2, RUNS=5, K=[3,6,10,15])
set -euo pipefail
OUT=${1:?usage: bench/counterfactual_mini.sh OUT_DIR}
PY=${PYTHON:-python}
WORKERS=${WORKERS:-2}
RUNS=${RUNS:-5}
K=${K:-[3,6,10,15]}
mkdir -p "$OUT"
t0=$(date +%s)
$PY -m launch experiment=mini store.path="$OUT/store.zarr" launcher.workers="$WORKERS"
$PY -m aggregate store.path="$OUT/store.zarr"
t1=$(date +%s)
sweep() {  # target, baselines: the two counterfactual sweeps run side by side, one worker each
  $PY -m launch experiment=mini sweep=counterfactual "targets=[$1]" "transfer.modes=[fixed]" \
    counterfactual.influence="$OUT/influence.zarr" counterfactual.target="$1" counterfactual.mode=fixed \
    "counterfactual.k=$K" counterfactual.runs="$RUNS" "counterfactual.baselines=$2" \
    store.path="$OUT/cf_$1/store.zarr" launcher.workers=1 > "$OUT/cf_$1.log" 2>&1
}
sweep digits "[full,handpicked]" &
sweep coarse "[full]" &   # coarse's hand-picked classes are all 30: the full source
wait
t2=$(date +%s)
for t in digits coarse; do $PY -m aggregate.counterfactual store.path="$OUT/cf_$t/store.zarr"; done
$PY -m aggregate.report store.path="$OUT/store.zarr"
echo "wall time: influence sweep + aggregation $((t1 - t0)) s, counterfactual sweeps $((t2 - t1)) s"
