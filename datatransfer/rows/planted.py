"""Row kind ``planted`` (``row=planted``, selected by experiment=planted): rows that skip training and write
outputs from a known linear model.

Row i's output on target t's example j, in every (mode, kind), is

    y = b[t][j] + mask_i . w[t][:, j] + noise * N(0, 1)

with ``w[t]`` (U, n_t) and ``b[t]`` (n_t,) drawn from ``row.seed`` (:func:`truth`) and the noise from the row's
seed (``sweep.seed``, i), independently per (mode, kind). ``w`` is scaled so that ``mask . w`` has an sd of about 1
across rows, whatever the number of units. The prediction for an example is its label when ``y >= b`` (the mask
helped), else the next label, so target accuracies come out near one half.

The rows go through the same worker, store and launchers as trained rows (the worker picks this kind when
``cfg.row.kind`` is ``planted``), so a planted sweep validates a cluster in minutes, exercises orchestration at
scale, and gives the aggregator a ground truth: a difference-of-means estimate of unit u's influence on (t, j) tends to
``w[t][u, j]`` minus a constant per example (with fixed-size masks only differences between units are identified).
Numpy only: a planted task does not need the training stack.
"""

from __future__ import annotations

import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from datatransfer.masks import row_seed
from datatransfer.rows.result import Row

_TRUTH_STREAM = 7  # spawn-key slot of the truth's generator, apart from the mask and training streams


def unit_names(planted) -> List[str]:
    width = len(str(int(planted.units) - 1))
    return [f"u{u:0{width}d}" for u in range(int(planted.units))]


def target_names(planted) -> List[str]:
    return [f"t{i}" for i in range(len(planted.examples))]


def labels(planted, target: str) -> np.ndarray:
    n = int(planted.examples[target_names(planted).index(target)])
    return np.arange(n, dtype=np.int64) % int(planted.classes)


def class_names(planted) -> List[str]:
    return [f"c{c}" for c in range(int(planted.classes))]


def truth(planted, alpha: float = 0.5) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """target -> (w (U, n_t), b (n_t,)), a function of the planted row config (``cfg.row``) alone."""
    units = int(planted.units)
    scale = 1.0 / np.sqrt(units * alpha * (1.0 - alpha))
    out = {}
    for ti, (t, n) in enumerate(zip(target_names(planted), planted.examples)):
        rng = np.random.default_rng(np.random.SeedSequence(int(planted.seed), spawn_key=(_TRUTH_STREAM, ti)))
        w = rng.normal(size=(units, int(n))) * scale
        b = rng.normal(size=int(n))
        out[str(t)] = (w, b)
    return out


class PlantedRows:
    """Row kind ``planted``: ``run(row, mask, checkpoint) -> Row`` from the known linear model."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.planted = cfg.row  # PlantedRowConfig
        self.truth = truth(self.planted, cfg.sweep.get("alpha", 0.5))  # a counterfactual sweep has no alpha
        self.labels = {t: labels(self.planted, t) for t in self.truth}

    def runnable(self, row: int) -> bool:
        return True

    def run(self, row: int, mask: np.ndarray, checkpoint: Optional[object] = None) -> Row:
        start = time.perf_counter()
        p, kinds = self.planted, list(self.cfg.sweep.outputs)
        rng = np.random.default_rng(row_seed(self.cfg.sweep.seed, row))
        x = np.asarray(mask, dtype=np.float64)
        outputs, predictions = {}, {}
        for t, (w, b) in self.truth.items():
            clean = b + x @ w  # (n_t,)
            y = clean + float(p.noise) * rng.normal(size=(len(p.modes), len(kinds), len(b)))
            outputs[t] = y.astype(np.float32)
            right = y[:, 0, :] >= b  # per mode, from the first kind
            lab = self.labels[t]
            predictions[t] = np.where(right, lab, (lab + 1) % int(p.classes)).astype(np.int32)
        if p.seconds_per_row > 0:
            time.sleep(float(p.seconds_per_row))
        seconds = time.perf_counter() - start
        stats = {"source_accuracy": float("nan"), "train_seconds": 0.0, "total_seconds": seconds}
        return Row(outputs, predictions, stats)
