"""The two MSNAT operations, as plain functions the MSNAT trainer (loop.py) and the tests call.

Fusion injection (FI): the K clients' full states (parameters and norm statistics) are averaged,
w = sum_k a_k w_k, and broadcast back (w_k <- w, or w_k <- keep * w_k + (1 - keep) * w).
Feedback loops (FL): z = z0 - beta * sum_j gamma_j z_j, z_j the logits at sigma + delta_j; loss = CE(z / T, y).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..analog.convert import analog_layers
from .recipe_training import FeedbackConfig


class NoiseControl:
    """The analog layers of one model, found once, so setting the noise level per pass is a short loop."""

    def __init__(self, model: nn.Module):
        self.layers = [m for _, m in analog_layers(model)]
        self.sigma = 0.0

    def set(self, sigma: float) -> None:
        self.sigma = float(sigma)
        for layer in self.layers:
            layer.analog.sigma = self.sigma


def feedback_logits(model: nn.Module, x, noise: NoiseControl, cfg: FeedbackConfig,
                    use_fl: bool = True, forward=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, z0): the combined outputs and the plain ones at the current noise level; backward reaches all passes.

    `forward(model, x)` reads the tensor the loss looks at (default: model(x), the logits; for text the
    pooled embedding or the LM logits, see objectives.py)."""
    forward = forward or (lambda m, inp: m(inp))
    z0 = forward(model, x)
    if not use_fl or not cfg.deltas:
        return z0, z0
    sigma = noise.sigma
    extra = None
    try:
        for delta, gamma in zip(cfg.deltas, cfg.gammas):
            noise.set(sigma + delta)
            zj = forward(model, x) * gamma
            extra = zj if extra is None else extra + zj
    finally:
        noise.set(sigma)
    return z0 - cfg.beta * extra, z0


def fusion_weights(k: int, accuracies: Sequence[float] | None = None) -> list[float]:
    """a_k: uniform, or proportional to the clients' accuracies (uniform when they are all zero)."""
    if accuracies is None:
        return [1.0 / k] * k
    total = float(sum(accuracies))
    return [a / total for a in accuracies] if total > 0 else [1.0 / k] * k


def float_keys(state: dict[str, torch.Tensor]) -> list[str]:
    """The floating-point entries, each tensor once: a tied weight (an LM head that is its embedding table)
    sits under two keys, and an in-place update through both would apply twice."""
    seen, keys = set(), []
    for key, t in state.items():
        if t.is_floating_point() and (t.data_ptr(), t.shape, t.stride()) not in seen:
            seen.add((t.data_ptr(), t.shape, t.stride()))
            keys.append(key)
    return keys


@torch.no_grad()
def fuse(clients: Sequence[nn.Module], weights: Sequence[float], into: nn.Module) -> None:
    """into <- sum_k a_k * client_k over the full state_dict; integer buffers (e.g. num_batches_tracked) from client 0."""
    states = [c.state_dict() for c in clients]
    target = into.state_dict()
    keys = float_keys(states[0])
    out = [target[k] for k in keys]
    torch._foreach_copy_(out, [states[0][k] for k in keys])
    torch._foreach_mul_(out, float(weights[0]))
    for state, a in zip(states[1:], weights[1:]):
        torch._foreach_add_(out, [state[k] for k in keys], alpha=float(a))
    for key, t in states[0].items():
        if not t.is_floating_point():
            target[key].copy_(t)
    _fuse_act_ranges(clients, weights, into)


@torch.no_grad()
def broadcast(fused: nn.Module, clients: Sequence[nn.Module], keep: float = 0.0) -> None:
    """w_k <- w (keep = 0) or w_k <- keep * w_k + (1 - keep) * w (momentum broadcast)."""
    source = fused.state_dict()
    keys = float_keys(source)
    src = [source[k] for k in keys]
    for client in clients:
        if client is fused:
            continue
        state = client.state_dict()
        dst = [state[k] for k in keys]
        if keep > 0:
            torch._foreach_lerp_(dst, src, 1.0 - keep)
        else:
            torch._foreach_copy_(dst, src)
        for key, t in source.items():
            if not t.is_floating_point():
                state[key].copy_(t)
        _copy_act_ranges(fused, client)


def act_quantizers(model: nn.Module) -> list:
    """Each analog layer's QAT input quantizer (None where it has none)."""
    return [layer.analog.input_quant for _, layer in analog_layers(model)]


def act_ranges(model: nn.Module) -> dict[str, torch.Tensor]:
    """The QAT activation ranges by layer index: they live on the quantizers, not in the state_dict."""
    return {f"{i}": q.act_max.detach().cpu().reshape(()).clone() for i, q in enumerate(act_quantizers(model))
            if q is not None and q.act_max is not None}


def set_act_ranges(model: nn.Module, ranges: dict[str, torch.Tensor], device) -> None:
    for i, q in enumerate(act_quantizers(model)):
        if q is not None and f"{i}" in ranges:
            q.act_max = ranges[f"{i}"].to(device)


def _fuse_act_ranges(clients: Sequence[nn.Module], weights: Sequence[float], into: nn.Module) -> None:
    """QAT activation ranges live on the quantizers, not in the state_dict: average them the same way."""
    per_client = [act_quantizers(c) for c in clients]
    for i, q in enumerate(act_quantizers(into)):
        ranges = [qs[i].act_max for qs in per_client if qs[i] is not None and qs[i].act_max is not None]
        if q is not None and len(ranges) == len(clients):
            q.act_max = sum(float(a) * r.float() for a, r in zip(weights, ranges))


def _copy_act_ranges(src: nn.Module, dst: nn.Module) -> None:
    for qs, qd in zip(act_quantizers(src), act_quantizers(dst)):
        if qs is not None and qd is not None and qs.act_max is not None:
            qd.act_max = qs.act_max.clone()
