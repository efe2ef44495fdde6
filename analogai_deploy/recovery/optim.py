"""A recipe's optimizer and learning-rate schedule, on torch's Adam, AdamW and SGD without the import of
torch._dynamo on their first use.

torch.optim.Optimizer keeps torch.compile out of its own methods: add_param_group (called by __init__),
zero_grad, state_dict and load_state_dict are wrapped in torch._disable_dynamo, and step in
_use_grad_for_differentiable, and each wrapper imports torch._dynamo (with sympy and triton) on its first
call: ~1 s of CPU before the first training step (BENCHMARKS.md, start-up). recover trains eagerly and never
compiles, where those wrappers do nothing but set the grad mode. These subclasses call the very functions the
wrappers wrap (functools' __wrapped__) and set the grad mode as torch's step wrapper does: the same code on the
same tensors, so steps, state dicts and checkpoints are bit for bit torch's (tests/test_startup.py).
Under torch.compile use torch.optim's classes.
"""
from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from .sam import SAM


def _raw(cls: type, name: str):
    """The function under every wrapper of `cls.name` (functools.wraps records it as __wrapped__)."""
    return inspect.unwrap(getattr(cls, name))


def _eager(base: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    raw_step = _raw(base, "step")

    def step(self, closure=None):
        # what torch's _use_grad_for_differentiable does around step, less its torch._dynamo.graph_break()
        prev = torch.is_grad_enabled()
        try:
            torch.set_grad_enabled(self.defaults["differentiable"])
            return raw_step(self, closure)
        finally:
            torch.set_grad_enabled(prev)

    step.__doc__ = raw_step.__doc__
    attrs = {name: _raw(base, name) for name in ("add_param_group", "zero_grad", "state_dict", "load_state_dict")}
    attrs.update(step=step, __module__=__name__, __qualname__=base.__name__,
                 __doc__=f"torch.optim.{base.__name__} without importing torch._dynamo (module doc).")
    # the same class name: torch's profiler labels ("Optimizer.step#Adam.step") stay as they were
    return type(base.__name__, (base,), attrs)


Adam = _eager(torch.optim.Adam)
AdamW = _eager(torch.optim.AdamW)
SGD = _eager(torch.optim.SGD)


def lr_at(cfg, round_: int) -> float:
    """Learning rate of round `round_` (0-based); a pure function of the round, so nothing to checkpoint."""
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "step":
        return cfg.lr * (0.1 ** (round_ // max(1, cfg.rounds // 3)))
    if cfg.schedule == "linear":
        return cfg.lr * (1 - round_ / cfg.rounds)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * round_ / cfg.rounds))


def make_optimizer(model: nn.Module | list[torch.Tensor], recipe):
    """The recipe's optimizer over `model`'s trainable parameters (or these tensors), in SAM when it asks."""
    t = recipe.training
    params = [p for p in (model.parameters() if isinstance(model, nn.Module) else model) if p.requires_grad]
    if t.optimizer in ("adam", "adamw"):  # adamw: weight decay decoupled from the gradient (AdamW)
        cls = Adam if t.optimizer == "adam" else AdamW
        base = cls(params, lr=t.lr, betas=tuple(t.adam_betas), eps=t.adam_eps, weight_decay=t.weight_decay)
    else:
        base = SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    return SAM.from_config(base, recipe.recovery.optimizer)
