"""Which estimates the report presents as findings, and which as noise (docs/estimators.md, "Noise in the report").

An influence is *noise* when its 95% interval covers the null level, or (overall influences) when it lies inside
the knockoff band. The null level is 0 for Bernoulli masks; under fixed-size masks influences are identified only
relative to the average unit, and the null level of each row of influences (one target class, one example, the
overall) is the centre of the bulk of its units' influences (``diagnostics.null_centre``). The knockoff band is the
null level +- the largest |overall influence| of a knockoff unit. ``z`` = (influence - null level) / SE; without
standard errors (ridge without ``estimator.bootstrap``) the SE is replaced by the robust spread (1.4826 MAD) of
that row's influences over units (their standard deviation where that is 0: LASSO, most influences exactly 0),
and only the knockoff band marks overall influences. A panel that picks the
most extreme of many estimates (hard examples) uses a family-wise threshold instead of 1.96 (``familywise_z``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from datatransfer.influence.diagnostics import null_centre
from datatransfer.influence.reader import Influence
from datatransfer.report.tables import Z95


def familywise_z(tests: int, level: float = 0.05) -> float:
    """|z| beyond which one of ``tests`` estimates is a finding at family-wise error ``level`` (two-sided,
    Bonferroni): for picking the most extreme of many estimates, as the hard-examples panel does."""
    from statistics import NormalDist

    return float(NormalDist().inv_cdf(1 - level / (2 * max(int(tests), 1))))


def fixed_size(inf: Influence) -> bool:
    """Whether the sweep's masks all hold the same number of units (the store's config, else the diagnostics)."""
    sweep = (inf.attrs.get("config") or {}).get("sweep") or {}
    scheme = sweep.get("scheme") or (inf.attrs.get("diagnostics") or {}).get("mask_scheme", "fixed_size")
    return scheme == "fixed_size"


@dataclass
class Judged:
    """Estimates (..., U) with their null level (...,), SE (..., U) or None, z and noise flags (..., U)."""

    values: np.ndarray
    null: np.ndarray
    se: Optional[np.ndarray]
    z: np.ndarray
    noise: np.ndarray
    band: Optional[float] = None  # knockoff band half-width (overall influences only)

    @property
    def signal(self) -> np.ndarray:
        return ~self.noise


def judge(values: np.ndarray, se: Optional[np.ndarray], fixed: bool, band: Optional[float] = None) -> Judged:
    """Null levels, z and noise flags of ``values`` (..., U); ``band`` (overall only): knockoff band half-width."""
    v = np.asarray(values, dtype=np.float64)
    flat = v.reshape(-1, v.shape[-1])
    null = np.array([null_centre(row) for row in flat]) if fixed else np.zeros(len(flat))
    null = null.reshape(v.shape[:-1])
    dev = v - null[..., None]
    if se is not None:
        scale = np.asarray(se, dtype=np.float64)
    else:
        spread = 1.4826 * np.median(np.abs(dev), axis=-1, keepdims=True)
        # LASSO: most influences exactly at the null, a MAD of 0; their standard deviation then sets the scale
        spread = np.where(spread > 0, spread, np.std(dev, axis=-1, keepdims=True))
        scale = np.broadcast_to(np.where(spread > 0, spread, np.nan), v.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = dev / scale
    if se is not None:
        noise = ~(np.abs(z) >= Z95)  # the interval covers the null level (or no SE: NaN)
    else:
        noise = np.zeros(v.shape, dtype=bool)
    if band is not None and np.isfinite(band):
        noise = noise | (np.abs(dev) <= band)
    return Judged(v, null, None if se is None else np.asarray(se, dtype=np.float64), z, noise, band)


def overall(inf: Influence, t: str, mode: str, kind: str) -> Judged:
    """The overall influences of target ``t`` judged against their SEs and the knockoff band."""
    d = inf.diagnostics(t, mode, kind)
    band = float(np.nanmax(np.abs(d["knockoff_overall"]))) if d is not None else None
    return judge(inf.array(t, mode, kind, "overall"), inf.se(t, mode, kind, "overall"), fixed_size(inf), band)


def level(inf: Influence, t: str, mode: str, kind: str, name: str) -> Judged:
    """Per-class or per-example influences of target ``t`` judged against their SEs."""
    return judge(inf.array(t, mode, kind, name), inf.se(t, mode, kind, name), fixed_size(inf))
