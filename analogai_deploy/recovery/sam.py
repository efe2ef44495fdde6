"""Sharpness-aware minimisation (SAM, Foret et al. 2021) and adaptive SAM (ASAM, Kwon et al. 2021).

SAM looks for weights whose whole neighbourhood has low loss, which is what a noisy analog tile needs:
the weights it computes with are never exactly the trained ones. Two passes per step:

    loss(model(x)).backward()
    sam.first_step()          # w -> w + e(w),  e = rho * g / ||g||   (ASAM: rho * T^2 g / ||T g||, T = |w|)
    sam.zero_grad()
    loss(model(x)).backward() # the gradient at the perturbed point
    sam.second_step()         # w restored, then the base optimizer steps with that gradient

Any torch optimizer can be the base; its learning-rate schedule, weight decay and state are untouched.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from .._config import StrictConfig
from ..errors import UsageError


@dataclass(frozen=True)
class SamConfig(StrictConfig):
    """Recipe section `recovery.optimizer` (the SAM fields).

    sam: wrap the optimizer in SAM.  adaptive: ASAM (scale-invariant neighbourhood; needs sam).
    rho: radius of the neighbourhood (0.05 as in the seed; ASAM papers often use larger values, e.g. 0.5-2).
    """

    sam: bool = False
    adaptive: bool = False
    rho: float = 0.05

    def __post_init__(self):
        if self.adaptive and not self.sam:
            raise UsageError("recovery.optimizer.adaptive=true needs recovery.optimizer.sam=true",
                             "adaptive SAM is a variant of SAM: set both, or set adaptive=false")
        if not self.rho > 0:
            raise UsageError(f"recovery.optimizer.rho must be > 0, got {self.rho}", "e.g. recovery.optimizer.rho=0.05")


class SAM:
    """Wraps `base_optimizer`; see the module doc for the two-pass protocol."""

    def __init__(self, base_optimizer: torch.optim.Optimizer, rho: float = 0.05, adaptive: bool = False,
                 eps: float = 1e-12):
        if not isinstance(base_optimizer, torch.optim.Optimizer):
            raise TypeError(f"SAM wraps a torch optimizer, got {type(base_optimizer).__name__}")
        if not rho > 0:
            raise UsageError(f"SAM rho must be > 0, got {rho}", "e.g. rho=0.05")
        self.base_optimizer = base_optimizer
        self.rho = float(rho)
        self.adaptive = bool(adaptive)
        self.eps = eps
        self._saved: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    @classmethod
    def from_config(cls, base_optimizer: torch.optim.Optimizer, cfg: SamConfig) -> SAM | torch.optim.Optimizer:
        """SAM around `base_optimizer` when cfg.sam, else the base optimizer itself."""
        return cls(base_optimizer, cfg.rho, cfg.adaptive) if cfg.sam else base_optimizer

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.base_optimizer.param_groups

    @property
    def state(self):
        return self.base_optimizer.state

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.base_optimizer.param_groups for p in g["params"] if p.grad is not None]

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Move to the worst-case point w + e(w) of the rho-ball, remembering w."""
        if self._saved is not None:
            raise RuntimeError("SAM.first_step called twice without second_step")
        params = self._params()
        saved = []
        if params:
            scaled = [(p.abs() * p.grad) if self.adaptive else p.grad for p in params]
            device = params[0].device
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g).to(device) for g in scaled]))
            scale = self.rho / (norm + self.eps)
            for p in params:
                e = (p * p if self.adaptive else 1.0) * p.grad * scale
                saved.append((p, p.detach().clone()))
                p.add_(e)
        self._saved = saved
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Return to w and apply the base optimizer with the gradient taken at w + e(w)."""
        if self._saved is None:
            raise RuntimeError("SAM.second_step called before first_step")
        for p, w in self._saved:
            p.copy_(w)
        self._saved = None
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Both passes at once: `closure` zeroes nothing, computes the loss and calls backward."""
        if closure is None:
            raise RuntimeError("SAM.step needs a closure that recomputes the loss (or call first_step/second_step)")
        loss = closure()
        self.first_step(zero_grad=True)
        with torch.enable_grad():
            closure()
        self.second_step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_optimizer.load_state_dict(state)
