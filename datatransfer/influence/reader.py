"""Reading an influence store (format in docs/influence-format.md)."""


import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import zarr

from datatransfer.errors import AggregationError
from datatransfer.influence import sparse
from datatransfer.influence.blocks import completed_rows
from datatransfer.store.sweep_store import Store

FORMAT = "datatransfer-influence"
FORMAT_VERSION = 1


def of_store(attrs: Any, store: Store) -> bool:
    """Whether an influence store (root ``attrs``) was computed from the sweep store ``store``: the same store
    identity (``store_id``, kept by a moved or copied store folder), or for influence stores written before they
    recorded it, the same path."""
    if attrs.get("store_id") and store.store_id:
        return attrs.get("store_id") == store.store_id
    return attrs.get("store") == str(store.path.resolve())


def _identity(p: Path) -> Optional[Tuple[int, int]]:
    """The root zarr.json's inode and modification time: a new influence store put at ``p`` has another file."""
    try:
        st = os.stat(p / "zarr.json")
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


class Influence:
    """Reader of an influence store."""

    def __init__(self, path: str | os.PathLike):
        p = Path(path)
        if not (p / "zarr.json").is_file():
            raise AggregationError(f"no influence store at {p}; run `python -m aggregate store.path=...` first")
        self.path = p
        self._identity = _identity(p)  # before opening: a store replaced in between reads as replaced
        self.group = zarr.open_group(str(p), mode="r")
        a = dict(self.group.attrs)
        if a.get("format") != FORMAT:
            raise AggregationError(f"{p} is not a {FORMAT} (attrs.format={a.get('format')!r})")
        if a.get("format_version") != FORMAT_VERSION:
            raise AggregationError(f"{p} has format_version {a.get('format_version')}; this code reads "
                                   f"{FORMAT_VERSION}: rerun `python -m aggregate`")
        self.attrs = a
        self.targets: List[str] = list(a["targets"])
        self.modes: List[str] = list(a["modes"])
        self.output_kinds: List[str] = list(a["output_kinds"])
        self.unit_names: List[str] = list(a["unit_names"])

    def replaced(self) -> bool:
        """Whether another ``python -m aggregate`` has replaced (or removed) the store at ``path`` since this was
        opened: arrays read from then on come from the new store, or read as fill values while it is moved."""
        return _identity(self.path) != self._identity

    def rows(self, t: Optional[str] = None) -> np.ndarray:
        """The store rows used: for target ``t`` (its own, if it was added to the store later), or the root's."""
        return np.asarray(self.group[f"{t}/rows" if t else "rows"][:])

    def labels(self, t: str) -> np.ndarray:
        return np.asarray(self.group[f"{t}/labels"][:])

    def class_names(self, t: str) -> List[str]:
        return list(self.group[t].attrs["class_names"])

    def array(self, t: str, mode: str, kind: str, name: str) -> np.ndarray:
        """``name`` in per_example, per_class, overall, mean_output, their standard errors per_example_se,
        per_class_se, overall_se (and lambda for ridge; lambda, heldout_r2, heldout_mse, nnz for lasso).
        per_example is rebuilt from the CSR when only that was written."""
        path = f"{t}/{mode}/{kind}"
        if name == "per_example" and f"{path}/per_example" not in self.group and f"{path}/sparse" in self.group:
            return sparse.to_dense(*self.sparse(t, mode, kind), len(self.unit_names))
        return np.asarray(self.group[f"{path}/{name}"][:])

    def has_sparse(self, t: str, mode: str, kind: str) -> bool:
        return f"{t}/{mode}/{kind}/sparse" in self.group

    def sparse(self, t: str, mode: str, kind: str):
        """(indptr (n_t+1), unit (nnz), weight (nnz)): the CSR of per-example weights (estimator=lasso)."""
        return sparse.read(self.group[f"{t}/{mode}/{kind}"])

    def se(self, t: str, mode: str, kind: str, level: str = "overall") -> Optional[np.ndarray]:
        """Standard errors of ``level`` (per_example, per_class or overall), same shape as its estimates; None when
        the store has none (ridge without ``estimator.bootstrap``)."""
        name = f"{t}/{mode}/{kind}/{level}_se"
        return np.asarray(self.group[name][:]) if name in self.group else None

    def se_method(self, t: str, mode: str, kind: str) -> Optional[str]:
        """"welch", "bootstrap" or None (no standard errors)."""
        return self.group[f"{t}/{mode}/{kind}"].attrs.get("se_method")

    def interval(self, t: str, mode: str, kind: str, level: str = "overall",
                 confidence: float = 0.95) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """(low, high): the normal-approximation interval estimate -/+ z * se (z = 1.96 for 95%), or None without
        standard errors."""
        se = self.se(t, mode, kind, level)
        if se is None:
            return None
        from statistics import NormalDist

        z = NormalDist().inv_cdf(0.5 + confidence / 2)
        est = self.array(t, mode, kind, level).astype(np.float64)
        return est - z * se, est + z * se

    def diagnostics(self, t: str, mode: str, kind: str) -> Optional[Dict[str, Any]]:
        if f"diagnostics/{t}" not in self.group:
            return None
        dg = self.group[f"diagnostics/{t}"]
        m, k = self.modes.index(mode), self.output_kinds.index(kind)
        out = {name: np.asarray(dg[name][m, k]) for name in ("bootstrap_std", "rank_corr", "lds", "fdr",
                                                            "knockoff_overall")}
        out["num_rows"] = np.asarray(dg["num_rows"][:])
        out.update(dict(dg.attrs))
        return out

    def top_lines(self, kind: str = "softmax_gt", k: int = 3) -> List[str]:
        """One line per target and mode: the k most helpful and k most harmful units by overall influence, each
        with z (distance from the null level in standard errors, as the report judges it) and "noise" where its
        95% interval covers the null level or it lies inside the knockoff band."""
        from datatransfer.report import noise

        kind = kind if kind in self.output_kinds else self.output_kinds[0]
        lines = []
        for t in self.targets:
            for mode in self.modes:
                overall = self.array(t, mode, kind, "overall")
                j = noise.overall(self, t, mode, kind)
                order = np.argsort(-overall, kind="stable")

                def show(u: int) -> str:
                    z = "" if not np.isfinite(j.z[u]) or j.se is None else f" (z {j.z[u]:+.1f}" + (
                        ", noise)" if j.noise[u] else ")")
                    return f"{self.unit_names[u]} {overall[u]:+.4f}{z}"

                best, worst = (", ".join(show(u) for u in idx) for idx in (order[:k], order[::-1][:k]))
                lines.append(f"{t} ({mode}, {kind}): most helpful {best}; most harmful {worst}")
        return lines

    def of_store(self, store: Store) -> bool:
        """Whether these are the influences of ``store`` (:func:`of_store`)."""
        return of_store(self.attrs, store)

    def is_current(self, store: Store) -> bool:
        """Whether this was computed from exactly the store's current completed rows (every target's); completed
        rows that were left out because their outputs could not be read (``rows_unreadable``) count as seen."""
        if self.attrs.get("store_fingerprint") != store.fingerprint:
            return False
        unreadable = self.attrs.get("rows_unreadable") or {}
        skipped = [r for t in store.targets for r in unreadable.get(t, [])]
        if not np.array_equal(np.union1d(self.rows(), skipped), completed_rows(store)):
            return False
        for t in store.all_targets:
            if t in store.targets:
                continue
            done = completed_rows(store, t)
            seen = np.union1d(self.rows(t), unreadable.get(t, [])) if t in self.targets else np.zeros(0)
            if (t in self.targets and not np.array_equal(seen, done)) or (t not in self.targets and len(done)):
                return False
        return True
