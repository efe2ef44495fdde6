"""torch's Adam, AdamW and SGD without the import of torch._dynamo on their first use.

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

import torch


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
