"""Sparse per-example influences (CSR), written for estimators whose weights are mostly exactly zero (lasso).

Under ``<t>/<mode>/<kind>/sparse/``: ``indptr`` int64 (n_t + 1), ``unit`` int32/int64 (nnz), ``weight`` float32
(nnz). Example j's nonzero weights are ``weight[indptr[j]:indptr[j+1]]`` on the source units
``unit[indptr[j]:indptr[j+1]]`` (ascending). Plain zarr arrays: readable without this package
(docs/influence-format.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np
import zarr


@dataclass
class Csr:
    """Weights (n examples, U units) as compressed sparse rows, float64: what the LASSO's blocks return and are merged
    as, so that the dense (n, U) matrix (100 GB at 10,000 examples x 1.28 M source images) is never formed."""

    indptr: np.ndarray  # int64 (n + 1,)
    unit: np.ndarray  # int32 / int64 (nnz,), ascending within a row
    weight: np.ndarray  # float64 (nnz,)
    units: int

    @classmethod
    def of(cls, w: np.ndarray) -> "Csr":
        rows, units = np.nonzero(w)
        indptr = np.zeros(w.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=w.shape[0]), out=indptr[1:])
        dtype = np.int32 if w.shape[1] < 2 ** 31 else np.int64
        return cls(indptr, units.astype(dtype), np.asarray(w[rows, units], dtype=np.float64), int(w.shape[1]))

    @classmethod
    def concat(cls, parts: Sequence["Csr"]) -> "Csr":
        """The rows of ``parts``, one after the other."""
        ends = np.cumsum([0] + [int(p.indptr[-1]) for p in parts[:-1]])
        indptr = np.concatenate([parts[0].indptr[:1]] + [p.indptr[1:] + e for p, e in zip(parts, ends)])
        return cls(indptr, np.concatenate([p.unit for p in parts]), np.concatenate([p.weight for p in parts]),
                   parts[0].units)

    @property
    def rows(self) -> int:
        return len(self.indptr) - 1

    def row_of_nonzero(self) -> np.ndarray:
        return np.repeat(np.arange(self.rows), np.diff(self.indptr))

    def dense(self) -> np.ndarray:
        out = np.zeros((self.rows, self.units))
        out[self.row_of_nonzero(), self.unit] = self.weight
        return out

    def group_means(self, groups: np.ndarray, count: int) -> np.ndarray:
        """(count, U): the mean row of each group (``groups`` (n,) in 0..count-1); NaN for an empty group."""
        out = np.zeros((count, self.units))
        np.add.at(out, (groups[self.row_of_nonzero()], self.unit), self.weight)
        size = np.bincount(groups, minlength=count).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return out / size[:, None]


def to_csr(w: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, unit, weight float32) of ``w`` (n, U): row j's nonzeros, units ascending."""
    c = Csr.of(w)
    return c.indptr, c.unit, c.weight.astype(np.float32)


def write(g: zarr.Group, w) -> None:
    """The CSR of ``w`` (n_t, U), dense or a :class:`Csr`, into ``g/sparse`` (weights as float32)."""
    c = w if isinstance(w, Csr) else Csr.of(w)
    s = g.require_group("sparse")
    s.attrs.update({"shape": [c.rows, c.units], "format": "csr"})
    chunk = max(1, min(len(c.unit), 2 ** 20))
    s.create_array("indptr", data=c.indptr, dimension_names=("example_edge",))
    s.create_array("unit", data=c.unit, chunks=(chunk,), dimension_names=("nonzero",))
    s.create_array("weight", data=c.weight.astype(np.float32), chunks=(chunk,), dimension_names=("nonzero",))


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
