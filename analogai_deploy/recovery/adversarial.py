"""FGSM and PGD adversarial training, with perturbations measured in real pixels.

The data pipeline normalises images, x_n = (x - mean) / std. An attack of eps in pixel units is
eps / std in normalised units, and a valid image keeps its pixels in [0, 1], i.e. x_n in
[(0 - mean)/std, (1 - mean)/std] = `Data.pixel_bounds()`. (The seed's reference clamps the normalised
input to [0, 1], which cuts off every pixel below the mean and lets others exceed white.)

    extra = adversarial_loss(model, loss_fn, x, y, cfg, low, high, std)   # None when both are off
    loss = loss + extra

FGSM: x + eps*sign(grad) (one step).  PGD (Madry et al.): optional uniform random start in the eps ball,
`steps` signed-gradient steps of alpha, each projected back onto the eps ball and the pixel range.
Attacks are searched with the model's batch-norm statistics and QAT ranges held still, and without
touching parameter gradients; the returned loss is then differentiated by the training loop as usual.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .._config import StrictConfig
from ..errors import UsageError

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class FGSMConfig(StrictConfig):
    """eps: L-inf radius in pixel units (pixels in [0, 1]); weight: factor of the FGSM loss."""

    use: bool = False
    eps: float = 0.03
    weight: float = 0.2

    def __post_init__(self):
        _check_eps("FGSM", self.eps)
        _check_weight("FGSM", self.weight)


@dataclass(frozen=True)
class PGDConfig(StrictConfig):
    """eps / alpha: L-inf radius and step in pixel units; steps: iterations; random_start: uniform start."""

    use: bool = False
    eps: float = 0.03
    steps: int = 10
    alpha: float = 0.01
    random_start: bool = True
    weight: float = 0.05

    def __post_init__(self):
        _check_eps("PGD", self.eps)
        _check_weight("PGD", self.weight)
        if self.steps < 1:
            raise UsageError(f"recovery.adversarial.PGD.steps must be >= 1, got {self.steps}",
                             "e.g. recovery.adversarial.PGD.steps=10")
        if not 0 < self.alpha <= 1:
            raise UsageError(f"recovery.adversarial.PGD.alpha must be in (0, 1] (pixel units), got {self.alpha}",
                             "e.g. recovery.adversarial.PGD.alpha=0.01")


@dataclass(frozen=True)
class AdversarialConfig(StrictConfig):
    """Recipe section `recovery.adversarial` (the seed's names: FGSM, PGD)."""

    FGSM: FGSMConfig = field(default_factory=FGSMConfig)
    PGD: PGDConfig = field(default_factory=PGDConfig)

    @property
    def enabled(self) -> bool:
        return self.FGSM.use or self.PGD.use


def _check_eps(kind: str, eps: float) -> None:
    if not 0 < eps <= 1:
        raise UsageError(f"recovery.adversarial.{kind}.eps must be in (0, 1] (pixel units, pixels in [0, 1]), "
                         f"got {eps}", f"e.g. recovery.adversarial.{kind}.eps=0.03 (about 8/255)")


def _check_weight(kind: str, weight: float) -> None:
    if weight < 0:
        raise UsageError(f"recovery.adversarial.{kind}.weight must be >= 0, got {weight}",
                         f"e.g. recovery.adversarial.{kind}.weight=0.2")


@contextmanager
def _statistics_frozen(model: nn.Module):
    """Batch-norm running stats and QAT activation ranges stay put while attacks are searched."""
    from ..analog import qat

    # train-mode forward passes still normalise with batch statistics; only the running buffers are restored
    buffers = [b for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
               for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    saved = [b.clone() for b in buffers]
    try:
        with qat.paused(model):
            yield
    finally:
        # `.data`: a value restore autograd must not see (an earlier pass of this step may have saved the
        # buffers for backward; train-mode batch norm does not use their values there)
        for b, v in zip(buffers, saved):
            b.data.copy_(v)


def _bounds(x: torch.Tensor, low, high, std):
    """Broadcastable tensors for the valid range and the pixel->normalised factor (None = unbounded / 1)."""
    def as_t(v, default):
        if v is None:
            return torch.tensor(default, dtype=x.dtype, device=x.device)
        return torch.as_tensor(v, dtype=x.dtype, device=x.device)

    return as_t(low, float("-inf")), as_t(high, float("inf")), as_t(std, 1.0)


def _grad_sign(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(model, x, y)
        (grad,) = torch.autograd.grad(loss, x)  # parameter .grad fields are untouched
    return grad.sign()


def fgsm(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, eps: float,
         low=None, high=None, std=None) -> torch.Tensor:
    """One signed-gradient step of eps pixels, kept inside the pixel range."""
    lo, hi, sd = _bounds(x, low, high, std)
    with _statistics_frozen(model):
        step = eps / sd * _grad_sign(model, loss_fn, x, y)
    return torch.max(torch.min(x + step, hi), lo).detach()


def pgd(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
        alpha: float, random_start: bool = True, low=None, high=None, std=None) -> torch.Tensor:
    """L-inf PGD; every iterate lies in the eps ball (pixel units) and inside the pixel range."""
    lo, hi, sd = _bounds(x, low, high, std)
    x0 = x.detach()
    radius = eps / sd
    ball_lo, ball_hi = torch.max(x0 - radius, lo), torch.min(x0 + radius, hi)
    adv = x0
    if random_start:
        adv = x0 + (torch.rand_like(x0) * 2 - 1) * radius
    adv = torch.max(torch.min(adv, ball_hi), ball_lo)
    with _statistics_frozen(model):
        for _ in range(steps):
            adv = adv + alpha / sd * _grad_sign(model, loss_fn, adv, y)
            adv = torch.max(torch.min(adv, ball_hi), ball_lo)
    return adv.detach()


def adversarial_loss(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor,
                     cfg: AdversarialConfig, low=None, high=None, std=None) -> torch.Tensor | None:
    """weight_FGSM * loss(x_FGSM) + weight_PGD * loss(x_PGD), or None when both attacks are off.

    low / high: the normalised values of pixels 0 and 1 (`Data.pixel_bounds()`); std: the normalisation
    std (`Data.std_tensor`); all broadcast against one input, e.g. shaped (C, 1, 1).
    """
    if not cfg.enabled:
        return None
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise UsageError("adversarial training needs real-valued inputs (images); these are token ids",
                         "set recovery.adversarial.FGSM.use=false and recovery.adversarial.PGD.use=false "
                         "for text models")
    total = None
    if cfg.FGSM.use and cfg.FGSM.weight > 0:
        x_adv = fgsm(model, loss_fn, x, y, cfg.FGSM.eps, low, high, std)
        total = cfg.FGSM.weight * loss_fn(model, x_adv, y)
    if cfg.PGD.use and cfg.PGD.weight > 0:
        x_adv = pgd(model, loss_fn, x, y, cfg.PGD.eps, cfg.PGD.steps, cfg.PGD.alpha, cfg.PGD.random_start,
                    low, high, std)
        term = cfg.PGD.weight * loss_fn(model, x_adv, y)
        total = term if total is None else total + term
    return total
