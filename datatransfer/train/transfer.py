"""Transfer of a source model to a target: fixed-feature (frozen backbone, new head) or full fine-tuning."""

from __future__ import annotations

import copy
import logging
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from datatransfer.train.loop import Runtime, _batchnorms, evaluate, fit
from datatransfer.train.models import Net

log = logging.getLogger(__name__)


def transfer_recipe(recipe, t):
    """A transfer recipe (``transfer.fixed`` or ``transfer.full``) with target ``t``'s own epochs / LR / schedule
    where it sets them."""
    own = {k: t[k] for k in ("epochs", "lr", "schedule") if t[k] is not None}
    if not own:
        return recipe
    r = OmegaConf.to_container(recipe)
    r.update(own)
    return OmegaConf.create(r)


def linear_probe(model: Net, loader, num_classes: int, rt: Runtime, iterations: int,
                 weight_decay: float, solver: str = "newton") -> nn.Linear:
    """A linear head on the frozen backbone: multinomial logistic regression on cached features of ``loader``'s
    examples (the target's train split), L2 ``weight_decay`` on the weights (not the bias). On the CPU.

    solver=newton: solved to float64 precision by scipy's Newton-CG with exact Hessian-vector products (at most
    ``iterations`` Newton steps; 10-20 suffice). solver=lbfgs: torch's L-BFGS in float32, ``iterations`` steps at
    most (stops where float32 stops improving, up to ~1e-3 in p_y from the optimum; 3-4x the time: see
    docs/performance.md). Deterministic given the backbone (zero-initialised head, full-batch solver).
    """
    feats, y = evaluate(model.backbone, loader, rt)
    # Standardise for the solver's sake, then fold the affine map into the head, so it applies to raw features.
    mu, sd = feats.mean(0), feats.std(0) + 1e-6
    z = (feats - mu) / sd
    head = nn.Linear(z.shape[1], num_classes)
    if solver == "newton":
        w, b = _newton_probe(z.double().numpy(), y.numpy(), num_classes, iterations, weight_decay)
        w = w / sd.double().numpy()
        with torch.no_grad():  # the affine map folded in float64, then the head in float32 like the features
            head.weight.copy_(torch.from_numpy(w))
            head.bias.copy_(torch.from_numpy(b - w @ mu.double().numpy()))
        return head
    nn.init.zeros_(head.weight), nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(z), y) + weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        head.weight /= sd
        head.bias -= head.weight @ mu
    return head


def _newton_probe(z: np.ndarray, y: np.ndarray, classes: int, iterations: int,
                  weight_decay: float) -> Tuple[np.ndarray, np.ndarray]:
    """(weights (classes, f), bias (classes,)) minimising mean cross-entropy + weight_decay * |weights|^2 on
    features ``z`` (n, f) float64, from zero, by Newton-CG. One BLAS thread: these are 1,000 x 40 products (more
    threads only cost), and the result then does not depend on the machine's thread count."""
    from scipy.optimize import minimize
    from threadpoolctl import threadpool_limits

    n, f = z.shape
    z1 = np.hstack([z, np.ones((n, 1))])  # the bias as a last, unpenalised feature
    onehot = np.zeros((n, classes))
    onehot[np.arange(n), y] = 1.0
    reg = np.full(f + 1, 2.0 * weight_decay)
    reg[-1] = 0.0
    at = {"theta": None, "p": None}

    def probs(theta: np.ndarray) -> np.ndarray:  # softmax at theta, kept for the Hessian products at that point
        if at["theta"] is None or not np.array_equal(at["theta"], theta):
            logits = z1 @ theta.reshape(classes, f + 1).T
            logits -= logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            at["theta"], at["p"], at["logits"], at["sum"] = theta.copy(), p / p.sum(axis=1, keepdims=True), logits, \
                p.sum(axis=1)
        return at["p"]

    def loss_grad(theta: np.ndarray):
        w = theta.reshape(classes, f + 1)
        p = probs(theta)
        loss = np.log(at["sum"]).mean() - at["logits"][np.arange(n), y].mean() + weight_decay * (w[:, :f] ** 2).sum()
        return loss, (((p - onehot) / n).T @ z1 + reg * w).ravel()

    def hessp(theta: np.ndarray, v: np.ndarray) -> np.ndarray:
        p, v = probs(theta), v.reshape(classes, f + 1)
        a = z1 @ v.T
        return (((p * (a - (p * a).sum(axis=1, keepdims=True))) / n).T @ z1 + reg * v).ravel()

    with threadpool_limits(limits=1, user_api="blas"):
        r = minimize(loss_grad, np.zeros(classes * (f + 1)), jac=True, hessp=hessp, method="Newton-CG",
                     options={"xtol": 1e-10, "maxiter": iterations})
    theta = r.x.reshape(classes, f + 1)
    return theta[:, :f], theta[:, f]


def transfer_fixed(model: Net, target, seed: int, recipe, t, rt: Runtime, tag: str = "") -> torch.Tensor:
    """Fixed-feature transfer: the source backbone's weights frozen, a new linear head. Returns test logits.

    solver=newton / lbfgs: the head is a linear probe on features of the eval-mode backbone. solver=sgd (the paper): the
    head, randomly initialised, trains by SGD through the frozen backbone on augmented batches; with
    ``transfer.fixed.batchnorm=train`` (the release) the backbone's batch-norm layers stay in train mode, so their
    running statistics adapt to the target while no weight changes; ``frozen`` keeps them in eval mode.
    ``recipe``: ``transfer.fixed`` (with the target's overrides, ``transfer_recipe``); ``t``: the target's config
    (decoders, resolution).
    """
    test = target.eval_loader("test", decoder=t.eval_decoder, resolution=t.resolution)
    if recipe.solver in ("newton", "lbfgs"):
        probe = linear_probe(model, target.eval_loader("train", decoder=t.eval_decoder, resolution=t.resolution),
                             target.num_classes, rt, recipe.iterations, recipe.weight_decay, recipe.solver)
        features, _ = evaluate(model.backbone, test, rt)
        with torch.no_grad():
            return probe(features)
    torch.manual_seed(seed)
    net = copy.deepcopy(model)  # batch-norm statistics may change: keep the source model as it is
    net.backbone.requires_grad_(False)
    net.head = nn.Linear(net.num_features, target.num_classes).to(rt.device)
    gen = torch.Generator().manual_seed(seed)
    loader = target.train_loader(batch_size=recipe.batch_size, generator=gen, seed=seed, decoder=t.train_decoder,
                                 resolution=t.resolution)
    fit(net, loader, recipe, gen, rt, params=net.head.parameters(),
        freeze_bn=recipe.batchnorm == "frozen", tag=f"fixed {tag}")
    if log.isEnabledFor(logging.DEBUG):
        before, after = model.backbone.state_dict(), net.backbone.state_dict()
        same = [torch.equal(before[k], after[k]) for k in before]
        stats = [k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in before]
        log.debug("fixed %s: backbone weights unchanged: %s; batch-norm running statistics changed: %s", tag,
                  all(s for s, st in zip(same, stats) if not st), not all(s for s, st in zip(same, stats) if st))
    return evaluate(net, test, rt)[0]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader, rt: Runtime) -> None:
    """Replace batch-norm running statistics by the exact mean/var over ``loader``'s images (as training mode
    will see them)."""
    norms = _batchnorms(model)
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    model.train()
    for x, _ in loader:
        with rt.autocast():
            model(x.to(rt.device, non_blocking=True))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum


def transfer_full(model: Net, target, seed: int, recipe, probe, t, rt: Runtime, tag: str = "") -> torch.Tensor:
    """Every weight trains from the source model. Returns test logits.

    The new head starts random (the paper's recipe) or, with ``transfer.full.head_init=linear_probe``, from a
    linear probe (LP-FT), which needs far fewer epochs. The probe is fitted after re-estimating batch-norm
    statistics on the target, so that the head matches the features training mode will produce.
    ``recipe``: ``transfer.full`` (with the target's overrides); ``probe``: ``transfer.fixed`` (the probe's
    iterations and L2); ``t``: the target's config.
    """
    torch.manual_seed(seed)
    net = copy.deepcopy(model)
    net.head = nn.Linear(net.num_features, target.num_classes).to(rt.device)
    if recipe.head_init == "linear_probe":
        view = dict(decoder=t.eval_decoder, resolution=t.resolution)
        recalibrate_batchnorm(net, target.eval_loader("train", batch_size=256, **view), rt)
        # the fixed-feature solver (with solver=sgd, L-BFGS: what LP-FT always used before solver=newton)
        solver = probe.solver if probe.solver in ("newton", "lbfgs") else "lbfgs"
        net.head = linear_probe(net, target.eval_loader("train", **view), target.num_classes, rt, probe.iterations,
                                probe.weight_decay, solver).to(rt.device)
    gen = torch.Generator().manual_seed(seed)
    loader = target.train_loader(batch_size=recipe.batch_size, generator=gen, seed=seed, decoder=t.train_decoder,
                                 resolution=t.resolution)
    fit(net, loader, recipe, gen, rt, tag=f"full {tag}")
    return evaluate(net, target.eval_loader("test", decoder=t.eval_decoder, resolution=t.resolution), rt)[0]
