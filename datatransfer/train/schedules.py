"""Learning-rate and resolution schedules: functions of training progress alone."""

from __future__ import annotations

import math

import numpy as np


def lr_factor(schedule: str, t: float, epochs: float, peak_epoch: float, step_every: int = 5,
              step_gamma: float = 0.1) -> float:
    """Multiplier of the peak LR at training progress ``t`` (in epochs, 0..epochs)."""
    if schedule == "constant":
        return 1.0
    if schedule == "step":  # x step_gamma every step_every epochs (Food-101); t in (e, e + 1] is epoch e
        return step_gamma ** (max(math.ceil(t) - 1, 0) // step_every)
    peak = min(max(peak_epoch, 1e-8), epochs)
    if schedule == "cyclic":  # the paper's triangle: linear 0 -> 1 at peak, linear -> 0 at the end
        return float(np.interp(t, [0.0, peak, epochs], [0.0, 1.0, 0.0]))
    if schedule == "onecycle":  # the same shape with cosine ramps
        if t <= peak:
            return 0.5 * (1 - math.cos(math.pi * t / peak))
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (t - peak) / max(epochs - peak, 1e-8))))
    raise ValueError(f"unknown LR schedule {schedule!r} (constant | cyclic | onecycle | step)")


def resolution_at(recipe, epoch: int) -> int:
    """Progressive resizing as in ffcv-imagenet: min_res up to epoch start_ramp, then linear to max_res at
    end_ramp, rounded to a multiple of res_step. Paper recipe: 160 px for epochs 0-11, 192 for 12-15."""
    if epoch <= recipe.start_ramp:
        return int(recipe.min_res)
    if epoch >= recipe.end_ramp:
        return int(recipe.max_res)
    r = np.interp(epoch, [recipe.start_ramp, recipe.end_ramp], [recipe.min_res, recipe.max_res])
    return int(round(r / recipe.res_step)) * int(recipe.res_step)
