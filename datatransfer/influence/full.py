"""Aggregation by one pass over a target's rows with an estimator object: ridge, and any estimator with
bootstrap replicates (difference of means without bootstrap goes through the row-block sums, refresh.py)."""

from __future__ import annotations

from typing import List, Set, Tuple

import numpy as np
import zarr

from datatransfer.errors import AggregationError, EstimatorError
from datatransfer.influence.blocks import blas_limit, plan, read_blocks
from datatransfer.influence.estimators import Estimator, make
from datatransfer.influence.sums import averaging
from datatransfer.influence.write import Collected, Job, check_finite, write_diagnostics, write_influences, write_target


def aggregate_target(job: Job, t: str, rows: np.ndarray, root: zarr.Group) -> Tuple[np.ndarray, str]:
    """Influences (and diagnostics) of target ``t`` from ``rows``, into ``root/t``; returns the rows used (``rows``
    but those whose outputs chunk cannot be decoded: each left out with a warning) and the diagnostics note."""
    store = job.store
    labels, class_names = store.labels(t), store.class_names(t)
    tg = root.require_group(t)
    block_rows, passes = plan(store, t, job.estimator, job.block_rows, job.memory_mb)
    pairs = [p for group in passes for p in group]
    collected = Collected.empty(len(rows), len(pairs), store.outputs(t).shape[-1], job.diagnostics)
    skipped: Set[int] = set()
    for i, group in enumerate(passes):
        before = len(skipped)
        ests = read_pass(job, t, rows, group, block_rows, np.array([pairs.index(p) for p in group]), collected,
                          skipped)
        if i > 0 and len(skipped) > before:  # rows used by the earlier passes' estimates: they would disagree
            raise AggregationError(f"outputs/{t}: rows {sorted(skipped)[before:]} became unreadable while being "
                                   f"aggregated (written right now?); run the command again")
        for (m, k), est in zip(group, ests):
            try:
                res = est.result(store.unit_names)
            except EstimatorError as e:
                raise AggregationError(f"target {t!r}, mode {store.modes[m]!r}, kind "
                                       f"{store.output_kinds[k]!r}: {e}") from e
            write_influences(tg.require_group(store.modes[m]).require_group(store.output_kinds[k]),
                             res, labels, class_names, store.unit_names)
            del res
    keep = ~np.isin(rows, sorted(skipped))
    rows = rows[keep]
    write_target(tg, labels, class_names, rows, store.mask_counts(rows)[0], store.unit_names)
    if not job.diagnostics:
        return rows, ""
    return rows, write_diagnostics(job, t, rows, store.masks[rows], collected.of(keep), root)


def read_pass(job: Job, t: str, rows: np.ndarray, group: List[Tuple[int, int]], block_rows: int,
               pidx: np.ndarray, collected: Collected, skipped: Set[int]) -> List[Estimator]:
    """One pass over ``rows`` of target ``t``: an estimator per (mode, kind) pair of ``group``, fed block by block
    (rows whose chunk cannot be decoded are left out and added to ``skipped``). Difference of means also gets each
    row's output averaged over each target class and over all examples as extra columns (:func:`averaging`): the
    Welch standard errors of per-class and overall influences come from those."""
    ests: List[Estimator] = [make(job.estimator, **job.settings) for _ in group]
    mi, ki = np.array([m for m, _ in group]), np.array([k for _, k in group])
    avg = averaging(job.store.labels(t), len(job.store.class_names(t))) if job.estimator == "dim" else None
    with blas_limit():
        for block, data in read_blocks(job.store.outputs(t), rows, block_rows, skipped):
            y = data[:, mi, ki, :]  # (b, pairs of this pass, n)
            check_finite(job.store, t, block, y, mi, ki)
            mb = job.store.mask_rows(block)  # a block's masks only: the whole matrix may not fit (example units)
            for j, est in enumerate(ests):
                yj = y[:, j, :] if avg is None else np.hstack([y[:, j, :], y[:, j, :].astype(np.float64) @ avg])
                est.update(block, mb, yj)
            collected.add(np.searchsorted(rows, block), pidx, y)
            if job.bar is not None:
                job.bar.update(len(block))
    return ests
