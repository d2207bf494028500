"""Sparse per-example influences (CSR), written for estimators whose weights are mostly exactly zero (lasso).

Under ``<t>/<mode>/<kind>/sparse/``: ``indptr`` int64 (n_t + 1), ``unit`` int32/int64 (nnz), ``weight`` float32
(nnz). Example j's nonzero weights are ``weight[indptr[j]:indptr[j+1]]`` on the source units
``unit[indptr[j]:indptr[j+1]]`` (ascending). Plain zarr arrays: readable without this package
(docs/influence-format.md)."""

from __future__ import annotations

from typing import Tuple

import numpy as np
import zarr


def to_csr(w: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, unit, weight) of ``w`` (n, U): row j's nonzeros, units ascending."""
    rows, units = np.nonzero(w)
    indptr = np.zeros(w.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=w.shape[0]), out=indptr[1:])
    dtype = np.int32 if w.shape[1] < 2 ** 31 else np.int64
    return indptr, units.astype(dtype), w[rows, units].astype(np.float32)


def write(g: zarr.Group, w: np.ndarray) -> None:
    """The CSR of ``w`` (n_t, U) into ``g/sparse``."""
    indptr, unit, weight = to_csr(w)
    s = g.require_group("sparse")
    s.attrs.update({"shape": [int(w.shape[0]), int(w.shape[1])], "format": "csr"})
    chunk = max(1, min(len(unit), 2 ** 20))
    s.create_array("indptr", data=indptr, dimension_names=("example_edge",))
    s.create_array("unit", data=unit, chunks=(chunk,), dimension_names=("nonzero",))
    s.create_array("weight", data=weight, chunks=(chunk,), dimension_names=("nonzero",))


def read(g: zarr.Group) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, unit, weight) from ``g/sparse``."""
    s = g["sparse"]
    return np.asarray(s["indptr"][:]), np.asarray(s["unit"][:]), np.asarray(s["weight"][:])


def to_dense(indptr: np.ndarray, unit: np.ndarray, weight: np.ndarray, units: int) -> np.ndarray:
    n = len(indptr) - 1
    out = np.zeros((n, units), dtype=np.float32)
    out[np.repeat(np.arange(n), np.diff(indptr)), unit] = weight
    return out


def top(indptr: np.ndarray, unit: np.ndarray, weight: np.ndarray, j: int, k: int, sign: int = 1):
    """Example j's ``k`` largest (sign=1) or most negative (sign=-1) weights: (units, weights), strongest first;
    only nonzero weights of that sign."""
    u, wt = unit[indptr[j]:indptr[j + 1]], weight[indptr[j]:indptr[j + 1]]
    keep = sign * wt > 0
    u, wt = u[keep], wt[keep]
    order = np.argsort(-sign * wt, kind="stable")[:k]
    return u[order], wt[order]
