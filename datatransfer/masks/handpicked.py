"""The hand-picked baseline of a counterfactual sweep: the source units a fixed rule matches to a target's classes.

- mini source (units named ``mnist:<d>``, ``fashion:<name>``, ``animal:<name>``, docs/data.md): a source class is
  picked when its digit equals a target class name (target ``digits``: classes ``0`` .. ``9``), or when its coarse
  group (:data:`MINI_COARSE`, the grouping that made the ``coarse`` target) equals a target class name. So
  ``digits`` picks the ten MNIST digits and ``coarse``, whose classes are exactly the groups, picks all 30 classes
  (for it the hand-picked baseline is the full source).
- ImageNet source (1000 units): the classes listed for the target (its ``conf/targets`` name) in the shipped file
  ``handpicked_imagenet.json`` (WordNet parents and children of the target's class names, as in the paper's
  Appendix A.4; the file records how it was made). A target absent from the file, or no file, is refused: there
  is no fallback guess.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from datatransfer.errors import ConfigError

IMAGENET_FILE = Path(__file__).with_name("handpicked_imagenet.json")

# coarse group of each non-digit mini source class (docs/data.md, "Target coarse"); every mnist:<d> is "digit"
MINI_COARSE: Dict[str, str] = {
    "fashion:tshirt": "top", "fashion:pullover": "top", "fashion:coat": "top", "fashion:shirt": "top",
    "fashion:trouser": "bottom", "fashion:dress": "bottom",
    "fashion:sandal": "footwear", "fashion:sneaker": "footwear", "fashion:ankle_boot": "footwear",
    "fashion:bag": "bag",
    "animal:cat": "farm animal", "animal:cow": "farm animal", "animal:dog": "farm animal",
    "animal:horse": "farm animal", "animal:sheep": "farm animal",
    "animal:bear": "wild animal", "animal:elephant": "wild animal", "animal:giraffe": "wild animal",
    "animal:zebra": "wild animal",
    "animal:bird": "bird",
}


def is_mini(unit_names: Sequence[str]) -> bool:
    return all(u.startswith("mnist:") or u in MINI_COARSE for u in unit_names)


def mini_group(unit: str) -> str:
    return "digit" if unit.startswith("mnist:") else MINI_COARSE[unit]


def mini_rule(unit_names: Sequence[str], class_names: Sequence[str]) -> np.ndarray:
    """Bool (U,): mini source classes whose digit or coarse group is one of the target's class names."""
    wanted = {str(c).strip().lower() for c in class_names}
    return np.array([(u.startswith("mnist:") and u.split(":", 1)[1] in wanted) or mini_group(u) in wanted
                     for u in unit_names], dtype=bool)


def imagenet_rule(target: str, num_units: int, path: Optional[str | Path] = None) -> np.ndarray:
    """Bool (U,): the ImageNet classes the shipped file lists for ``target``; ConfigError when it cannot say."""
    p = Path(path) if path else IMAGENET_FILE
    if not p.is_file():
        raise ConfigError(f"counterfactual.baselines: handpicked needs the hand-picked ImageNet class lists at {p}, "
                          f"which is not there; drop handpicked from counterfactual.baselines, or set "
                          f"counterfactual.handpicked_file")
    try:
        entry = json.loads(p.read_text())["targets"][target]
        classes = [int(c) for c in entry["classes"]]
    except KeyError:
        raise ConfigError(f"counterfactual.baselines: {p} lists no hand-picked classes for target {target!r}; drop "
                          f"handpicked from counterfactual.baselines for it") from None
    except (ValueError, TypeError) as e:
        raise ConfigError(f"counterfactual.handpicked_file: {p} cannot be read as hand-picked class lists ({e})") \
            from e
    bad = [c for c in classes if not 0 <= c < num_units]
    if bad:
        raise ConfigError(f"counterfactual.handpicked_file: {p} lists classes {bad[:5]} outside [0, {num_units})")
    keep = np.zeros(num_units, dtype=bool)
    keep[classes] = True
    return keep


def handpicked(target: str, unit_names: Sequence[str], class_names: Sequence[str],
               path: Optional[str | Path] = None) -> tuple[np.ndarray, str]:
    """(bool (U,) the hand-picked units for ``target``, a line saying which rule picked them)."""
    if is_mini(unit_names):
        return mini_rule(unit_names, class_names), "mini: source classes whose digit or coarse group is a target class"
    if len(unit_names) == 1000:
        p = Path(path) if path else IMAGENET_FILE
        return imagenet_rule(target, len(unit_names), p), f"imagenet: the classes listed for {target!r} in {p}"
    raise ConfigError(f"counterfactual.baselines: no hand-picked rule for these {len(unit_names)} source units "
                      f"({', '.join(list(unit_names)[:3])}, ...): rules exist for the mini source and ImageNet; drop "
                      f"handpicked from counterfactual.baselines")


def names(keep: np.ndarray, unit_names: Sequence[str]) -> List[str]:
    return [unit_names[i] for i in np.flatnonzero(keep)]
