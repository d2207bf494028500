"""Per-example outputs recorded for every row: functions of a model's logits on a target's test split."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def output_kinds(logits: torch.Tensor, labels: torch.Tensor, kinds: Sequence[str]) -> np.ndarray:
    """float32 (len(kinds), n) from logits (n, C) and labels (n,).

    softmax_gt p_y; gt_logit z_y; raw_margin z_y - max_{j!=y} z_j; softmax_margin p_y - max_{j!=y} p_j;
    is_correct 1 if argmax = y.
    """
    logits = logits.double()
    probs = torch.softmax(logits, dim=1)
    y = labels.long()[:, None]
    others = torch.ones_like(logits, dtype=torch.bool).scatter_(1, y, False)
    z_y, p_y = logits.gather(1, y)[:, 0], probs.gather(1, y)[:, 0]
    z_other = logits.masked_fill(~others, -torch.inf).max(dim=1).values
    p_other = probs.masked_fill(~others, -torch.inf).max(dim=1).values
    table = {
        "softmax_gt": lambda: p_y,
        "gt_logit": lambda: z_y,
        "raw_margin": lambda: z_y - z_other,
        "softmax_margin": lambda: p_y - p_other,
        "is_correct": lambda: (logits.argmax(dim=1) == labels).double(),
    }
    return torch.stack([table[k]() for k in kinds]).float().numpy()
