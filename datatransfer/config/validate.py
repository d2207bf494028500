"""Value checks of the launch config (config/sweep.py) that a type cannot express. Each raises ConfigError naming the
key; `python -m launch` runs them before any store is created."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, List, Sequence, Tuple

from omegaconf import DictConfig, OmegaConf

from datatransfer.config.launchers import validate_launcher
from datatransfer.config.recipe import OPTIMIZERS, SCHEDULES
from datatransfer.config.sweep import (
    COUNTERFACTUAL_BASELINES,
    COUNTERFACTUAL_ORDERS,
    EVAL_DECODERS,
    OUTPUT_KINDS,
    TRAIN_DECODERS,
    TRANSFER_MODES,
    CounterfactualConfig,
    LaunchConfig,
    row_kind,
    sweep_kind,
)
from datatransfer.errors import ConfigError

TRAIN_SCHEDULES = ("constant", "cyclic", "onecycle")  # the source recipe's (no step schedule)


def need(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {msg}")


def unknown_keys(node: Any, path: str = "") -> List[Tuple[str, List[str]]]:
    """(key, the section's keys) of every key that is not a field of its section's schema: Hydra's ``+key=value``
    adds keys to a structured config, where a typo (``+train.epoch=3``) would otherwise pass silently and even
    change the sweep's fingerprint. Sections typed as plain dicts (``targets``, ``additional_parameters``) take any
    key."""
    out = []
    schema = OmegaConf.get_type(node)
    names = [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else None
    for key in node.keys():
        if names is not None and key not in names:
            out.append((f"{path}{key}", names))
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
            out += unknown_keys(child, f"{path}{key}.")
    return out


def check_known_keys(cfg: Any) -> None:
    """A ConfigError naming the first key that no schema has (see :func:`unknown_keys`), with the closest names."""
    bad = unknown_keys(cfg)
    if bad:
        key, names = bad[0]
        close = difflib.get_close_matches(key.rsplit(".", 1)[-1], names, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"its section has: {', '.join(names)}"
        more = f" (and {len(bad) - 1} more: {', '.join(k for k, _ in bad[1:4])})" if len(bad) > 1 else ""
        raise ConfigError(f"{key}: no such setting{more}; {hint}")


def validate(cfg: Any) -> None:
    """Check the launch config's values. Raises ConfigError naming the key."""
    check_known_keys(cfg)
    _validate_sweep(cfg.sweep)
    _validate_counterfactual(cfg)
    bad = [m for m in cfg.transfer.modes if m not in TRANSFER_MODES]
    need(not bad, "transfer.modes", f"unknown modes {bad}; choose from {list(TRANSFER_MODES)}")
    need(len(cfg.transfer.modes) > 0, "transfer.modes", f"select at least one of {list(TRANSFER_MODES)}")
    planted = row_kind(cfg) == "planted"
    if planted:
        _validate_planted(cfg.row)
    else:
        need(len(cfg.targets) > 0, "targets", "select at least one target, e.g. targets=[digits]")
    need(cfg.source.loader in ("memory", "ffcv"), "source.loader",
         f"must be 'memory' or 'ffcv', got {cfg.source.loader!r}")
    need(cfg.train.epochs >= 1, "train.epochs", f"must be at least 1, got {cfg.train.epochs}")
    need(cfg.train.batch_size >= 1, "train.batch_size", f"must be at least 1, got {cfg.train.batch_size}")
    need(cfg.train.lr > 0, "train.lr", f"must be positive, got {cfg.train.lr}")
    need(cfg.transfer.full.head_init in ("random", "linear_probe"), "transfer.full.head_init",
         f"must be 'random' or 'linear_probe', got {cfg.transfer.full.head_init!r}")
    need(cfg.model.arch in ("small_cnn", "resnet18"), "model.arch",
         f"unknown architecture {cfg.model.arch!r} (small_cnn | resnet18)")
    if not planted:
        _validate_trained(cfg)
    validate_launcher(cfg.launcher, cfg)
    claim_settings(cfg.launch)
    need(bool(str(cfg.store.path)), "store.path", "must not be empty")


def _validate_sweep(sw: Any) -> None:
    if sw.kind in ("random_subsets", "example_subsets"):  # random masks (a counterfactual's come from influences)
        need(0.0 < sw.alpha < 1.0, "sweep.alpha", f"must lie strictly between 0 and 1, got {sw.alpha}")
        need(sw.num_models >= 1, "sweep.num_models", f"must be at least 1, got {sw.num_models}")
        need(sw.scheme in ("fixed_size", "bernoulli"), "sweep.scheme",
             f"must be 'fixed_size' or 'bernoulli', got {sw.scheme!r}")
    if sw.kind == "random_subsets":
        need(sw.get("repeats", 0) == 0 or sw.get("repeats", 0) >= 2, "sweep.repeats",
             f"must be 0 (no repeated rows) or at least 2 (every k-th row repeats a mask), got {sw.get('repeats')}")
        need(sw.get("init", "per_row") in ("per_row", "shared"), "sweep.init",
             f"must be 'per_row' (each row's own initial weights) or 'shared' (one for the sweep), "
             f"got {sw.get('init')!r}")
    need(0 <= sw.seed < 2 ** 63, "sweep.seed", f"must be a non-negative integer below 2**63, got {sw.seed}")
    unit = "example" if sw.kind == "example_subsets" else "class"
    need(sw.unit == unit, "sweep.unit", f"sweep={sw.kind} has unit {unit!r}, got {sw.unit!r}"
         + (" (example units: sweep=example_subsets)" if sw.unit == "example" else ""))
    if sw.kind == "example_subsets":
        need(sw.select in ("all", "classes"), "sweep.select", f"must be 'all' or 'classes', got {sw.select!r}")
        need(sw.select != "classes" or len(sw.classes) > 0, "sweep.classes", "select=classes needs class names")
        need(sw.select == "classes" or len(sw.classes) == 0, "sweep.classes",
             f"read only with sweep.select=classes (select={sw.select} takes every source training image); add "
             f"sweep.select=classes, or leave sweep.classes out")
        need(sw.count >= 0, "sweep.count", f"must be >= 0, got {sw.count}")
    bad = [k for k in sw.outputs if k not in OUTPUT_KINDS]
    need(not bad and len(sw.outputs) > 0, "sweep.outputs",
         f"unknown output kinds {bad}; choose from {list(OUTPUT_KINDS)}")


def _validate_counterfactual(cfg: Any) -> None:
    """The ``counterfactual`` section: checked values under sweep=counterfactual, its defaults under any other kind
    (a key set there would silently do nothing). What needs the influence store is checked when the store is
    created (datatransfer/counterfactual/plan.py)."""
    cf = cfg.get("counterfactual")
    if cf is None:
        return
    if sweep_kind(cfg) != "counterfactual":
        changed = [k for k, v in OmegaConf.to_container(cf).items() if v != getattr(CounterfactualConfig(), k)]
        need(not changed, f"counterfactual.{changed[0] if changed else ''}",
             f"is read only by sweep=counterfactual (this sweep is {cfg.sweep.kind!r}); add sweep=counterfactual")
        return
    need(bool(cf.influence), "counterfactual.influence",
         "set it to an influence store (python -m aggregate writes <store parent>/influence.zarr)")
    need(bool(cf.target), "counterfactual.target", "set it to the target whose influences rank the units")
    need(cf.mode in TRANSFER_MODES, "counterfactual.mode", f"must be one of {list(TRANSFER_MODES)}, got {cf.mode!r}")
    need(cf.kind in OUTPUT_KINDS, "counterfactual.kind", f"must be one of {list(OUTPUT_KINDS)}, got {cf.kind!r}")
    for key, allowed in (("orders", COUNTERFACTUAL_ORDERS), ("baselines", COUNTERFACTUAL_BASELINES)):
        values = list(cf[key])
        bad = [v for v in values if v not in allowed]
        need(not bad and len(set(values)) == len(values), f"counterfactual.{key}",
             f"must be distinct values of {list(allowed)}, got {values}")
    need(len(cf.orders) + len(cf.baselines) + len(cf.examples) + cf.auto_examples > 0, "counterfactual.orders",
         "nothing to run: orders, baselines and examples are all empty")
    need(not cf.orders or len(cf.k) > 0, "counterfactual.k", "needs at least one number of units to remove")
    need(all(k >= 0 for k in cf.k) and len(set(cf.k)) == len(cf.k), "counterfactual.k",
         f"must be distinct numbers >= 0, got {list(cf.k)}")
    need(cf.runs >= 1, "counterfactual.runs", f"must be at least 1, got {cf.runs}")
    need(0 <= cf.seed < 2 ** 63, "counterfactual.seed", f"must be a non-negative integer below 2**63, got {cf.seed}")
    need(all(e >= 0 for e in cf.examples) and len(set(cf.examples)) == len(cf.examples), "counterfactual.examples",
         f"must be distinct target test indices >= 0, got {list(cf.examples)}")
    need(cf.auto_examples >= 0, "counterfactual.auto_examples", f"must be >= 0, got {cf.auto_examples}")
    modes = list(cfg.row.modes) if row_kind(cfg) == "planted" else list(cfg.transfer.modes)
    need(cf.mode in modes, "counterfactual.mode", f"{cf.mode!r} is not among the sweep's transfer modes {modes}")
    need(cf.kind in cfg.sweep.outputs, "counterfactual.kind", f"{cf.kind!r} is not among sweep.outputs")


def _validate_planted(p: Any) -> None:
    need(p.units >= 2, "row.units", f"must be at least 2, got {p.units}")
    need(len(p.examples) > 0 and all(n >= 1 for n in p.examples), "row.examples",
         f"needs at least one target with >= 1 example, got {list(p.examples)}")
    need(len(p.modes) > 0, "row.modes", "must not be empty")
    need(p.classes >= 2, "row.classes", f"must be at least 2, got {p.classes}")
    need(p.noise >= 0, "row.noise", f"must be >= 0, got {p.noise}")
    need(p.seconds_per_row >= 0, "row.seconds_per_row", f"must be >= 0, got {p.seconds_per_row}")


def _validate_trained(cfg: Any) -> None:
    """Data, resolution, recipe and compute values of a sweep of trained rows."""
    src = cfg.source
    if src.loader == "ffcv":
        need(not OmegaConf.is_missing(src, "root") and bool(src.root), "source.root",
             "loader=ffcv reads prepared datasets from <source.root>/<name>/: set it to the folder that "
             "`python -m launch.prepare ... out=FOLDER` wrote (docs/paper-scale.md)")
    need(len(src.mean) in (1, 3) and len(src.std) == len(src.mean), "source.mean",
         f"mean and std need one value per channel (1 or 3), got {list(src.mean)} and {list(src.std)}")
    need(all(v > 0 for v in src.std), "source.std", f"must be positive, got {list(src.std)}")
    tr = cfg.train
    _validate_recipe("train", tr, TRAIN_SCHEDULES)
    need(0 < tr.min_res <= tr.max_res, "train.min_res", f"need 0 < min_res <= max_res, got {tr.min_res}, {tr.max_res}")
    need(tr.start_ramp <= tr.end_ramp, "train.start_ramp", f"must be <= train.end_ramp, got {tr.start_ramp}")
    need(tr.res_step >= 1 and tr.eval_res >= 1, "train.res_step", "res_step and eval_res must be positive")
    need(isinstance(tr.amp, bool) or tr.amp == "auto", "train.amp", f"must be true, false or auto, got {tr.amp!r}")
    fx = cfg.transfer.fixed
    need(fx.solver in ("newton", "lbfgs", "sgd"), "transfer.fixed.solver",
         f"must be newton, lbfgs or sgd, got {fx.solver!r}")
    need(fx.batchnorm in ("train", "frozen"), "transfer.fixed.batchnorm",
         f"must be train or frozen, got {fx.batchnorm!r}")
    for mode in TRANSFER_MODES:
        _validate_recipe(f"transfer.{mode}", cfg.transfer[mode], SCHEDULES)
    need(cfg.transfer.normalization in ("source", "target"), "transfer.normalization",
         f"must be source or target, got {cfg.transfer.normalization!r}")
    for name, t in cfg.targets.items():
        _validate_target(f"targets.{name}", t, cfg)
    dev = str(cfg.compute.device)
    need(dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit()), "compute.device",
         f"must be auto, cpu, cuda or cuda:<index>, got {dev!r}")
    need(cfg.compute.loader_workers >= 0, "compute.loader_workers", f"must be >= 0, got {cfg.compute.loader_workers}")


def _validate_recipe(key: str, r: Any, schedules: Sequence[str]) -> None:
    need(r.schedule in schedules, f"{key}.schedule", f"must be one of {list(schedules)}, got {r.schedule!r}")
    need(r.optimizer in OPTIMIZERS, f"{key}.optimizer", f"must be sgd or adam, got {r.optimizer!r}")
    need(r.epochs >= 1 and r.batch_size >= 1 and r.lr > 0, key, "epochs, batch_size and lr must be positive")
    need(r.step_every >= 1, f"{key}.step_every", f"must be at least 1, got {r.step_every}")


def _validate_target(key: str, t: Any, cfg: Any) -> None:
    need(t.schedule is None or t.schedule in SCHEDULES, f"{key}.schedule",
         f"must be one of {list(SCHEDULES)}, got {t.schedule!r}")
    need(t.epochs is None or t.epochs >= 1, f"{key}.epochs", f"must be at least 1, got {t.epochs}")
    need(t.lr is None or t.lr > 0, f"{key}.lr", f"must be positive, got {t.lr}")
    need(t.train_decoder in TRAIN_DECODERS, f"{key}.train_decoder",
         f"must be one of {list(TRAIN_DECODERS)}, got {t.train_decoder!r}")
    need(t.eval_decoder in EVAL_DECODERS, f"{key}.eval_decoder",
         f"must be one of {list(EVAL_DECODERS)}, got {t.eval_decoder!r}")
    need(t.resolution >= 1, f"{key}.resolution", f"must be positive, got {t.resolution}")
    if cfg.transfer.normalization == "target":
        n = len(cfg.source.mean)
        need(len(t.mean) == n and len(t.std) == n and all(v > 0 for v in t.std),
             f"{key}.mean", f"transfer.normalization=target needs {n} mean and std value(s) per "
             f"channel for every target, got {list(t.mean)} and {list(t.std)}")


def claim_settings(launch) -> Tuple[float, float]:
    """(``launch.claim_heartbeat_s``, ``launch.claim_stale_s``), checked; a key that is absent (a config written
    before claims existed) takes the schema's default. Raises ConfigError naming the key."""
    heartbeat = float(launch.get("claim_heartbeat_s", LaunchConfig.claim_heartbeat_s))
    stale = float(launch.get("claim_stale_s", LaunchConfig.claim_stale_s))
    if not heartbeat > 0:
        raise ConfigError(f"launch.claim_heartbeat_s: must be positive, got {heartbeat:g}")
    if not stale > heartbeat:
        raise ConfigError(f"launch.claim_stale_s: must be greater than launch.claim_heartbeat_s ({heartbeat:g}), "
                          f"got {stale:g}")
    return heartbeat, stale
