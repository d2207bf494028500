"""The headline numbers of the embedded mini experiment: does the matching MNIST digit lead each digit class of
target ``digits``, and are each coarse class's top influencers its own member classes (target ``coarse``)?"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from datatransfer.influence.reader import Influence
from datatransfer.report import noise
from datatransfer.report.tables import ranking

# The embedded coarse target: each coarse class and the source classes it is made of (docs/data.md).
COARSE_MEMBERS = {
    "digit": [f"mnist:{d}" for d in range(10)],
    "top": ["fashion:tshirt", "fashion:pullover", "fashion:coat", "fashion:shirt"],
    "bottom": ["fashion:trouser", "fashion:dress"],
    "footwear": ["fashion:sandal", "fashion:sneaker", "fashion:ankle_boot"],
    "bag": ["fashion:bag"],
    "farm animal": ["animal:cat", "animal:cow", "animal:dog", "animal:horse", "animal:sheep"],
    "wild animal": ["animal:bear", "animal:elephant", "animal:giraffe", "animal:zebra"],
    "bird": ["animal:bird"],
}


def headline(inf: Influence, kind: str = "softmax_gt", top: int = 3) -> Dict[str, Any]:
    """For target ``digits``: how many digit classes have the matching MNIST digit as top positive influencer and
    within the top ``top``; for ``coarse``: the share of each coarse class's top-k influencers (k = its number of
    member fine classes) that are members. Per mode; empty where the targets or source classes are absent."""
    out: Dict[str, Any] = {}
    if kind not in inf.output_kinds:
        return out
    if "digits" in inf.targets:
        rows = _per_mode(inf, lambda mode: _digits(inf, mode, kind, top))
        if rows:
            out["digits"] = {"kind": kind, "top": top, "modes": rows}
    if "coarse" in inf.targets:
        rows = _per_mode(inf, lambda mode: _coarse(inf, mode, kind))
        if rows:
            out["coarse"] = {"kind": kind, "modes": rows}
    return out


def _per_mode(inf: Influence, numbers) -> Dict[str, Dict[str, Any]]:
    """mode -> ``numbers(mode)``, for the modes where it has any."""
    rows = {mode: numbers(mode) for mode in inf.modes}
    return {mode: r for mode, r in rows.items() if r is not None}


def _digits(inf: Influence, mode: str, kind: str, top: int) -> Optional[Dict[str, Any]]:
    """Rank of the matching MNIST digit among each digit class's influencers; None without any MNIST digit."""
    units = inf.unit_names
    pc = inf.array("digits", mode, kind, "per_class")
    z = noise.level(inf, "digits", mode, kind, "per_class").z
    per = {}
    for c, name in enumerate(inf.class_names("digits")):
        want = f"mnist:{name}"
        if want in units:
            order = [units[i] for i in ranking(pc[c])]
            per[name] = {"top": order[:top], "rank": order.index(want) + 1, "z": float(z[c, units.index(want)])}
    if not per:
        return None
    first = [v for v in per.values() if v["rank"] == 1]
    return {"classes": len(per), "top1": len(first), f"top{top}": sum(v["rank"] <= top for v in per.values()),
            "top1_z2": sum(v["z"] >= 2 for v in first), "top1_z3": sum(v["z"] >= 3 for v in first),
            "z_from": "se" if inf.se("digits", mode, kind, "per_class") is not None else "spread",
            "per_class": per}


def _coarse(inf: Influence, mode: str, kind: str) -> Optional[Dict[str, Any]]:
    """Share of member classes among each coarse class's top-k influencers; None without any member class."""
    units = inf.unit_names
    pc = inf.array("coarse", mode, kind, "per_class")
    per = {}
    for c, name in enumerate(inf.class_names("coarse")):
        members = [m for m in COARSE_MEMBERS.get(str(name), []) if m in units]
        if members:
            top_k = [units[i] for i in ranking(pc[c])[:len(members)]]
            per[str(name)] = {"k": len(members), "share": sum(u in members for u in top_k) / len(members),
                              "top": top_k}
    if not per:
        return None
    return {"mean_share": float(np.mean([v["share"] for v in per.values()])), "per_class": per}


def headline_lines(h: Dict[str, Any]) -> List[str]:
    """The headline numbers of :func:`headline` as one sentence per target and mode."""
    lines = []
    for mode, r in h.get("digits", {}).get("modes", {}).items():
        top = h["digits"]["top"]
        z = "standard error" if r["z_from"] == "se" else "spread of the class's influences (no standard errors)"
        lines.append(f"digits ({mode}, {h['digits']['kind']}): the matching MNIST digit is the top positive "
                     f"influencer for {r['top1']}/{r['classes']} digit classes and in the top {top} for "
                     f"{r[f'top{top}']}/{r['classes']}; top and beyond noise (z = distance from the null level "
                     f"in units of its {z}) at z >= 2 for {r['top1_z2']}/{r['classes']}, at z >= 3 for "
                     f"{r['top1_z3']}/{r['classes']}")
    for mode, r in h.get("coarse", {}).get("modes", {}).items():
        shares = ", ".join(f"{c} {v['share']:.0%}" for c, v in r["per_class"].items())
        lines.append(f"coarse ({mode}, {h['coarse']['kind']}): share of member fine classes among each coarse "
                     f"class's top-k influencers (k = its number of members): mean {r['mean_share']:.0%} "
                     f"({shares})")
    return lines
