"""Batched MSNAT: the K FI clients trained as one stacked model (training.mode=batched).

Every parameter and buffer gets a leading client axis [K, ...]; one `torch.func.functional_call`
under `vmap` (randomness="different") runs all K clients on their own mini-batches in one pass,
and one optimizer over the stacked tensors equals K independent optimizers (Adam and SGD act
element-wise). Each client's weight noise is drawn in one operation per layer for all K at once,
s_k = c * sigma_k * max|W_k|, added straight through, before the functional call (the layers
themselves run at sigma 0 here). BatchNorm statistics update per client inside vmap.

The client modules of the loop trainer (loop.py) stay the record: they are refreshed from the stacked
tensors at the end of each round, so fusion, validation and checkpoints are shared with it.
Plain MSNAT only (no SAM, adversarial or QAT, whose hooks work on one module at a time), tensor
datasets only. On CPU small models gain nothing measurable from it, so `mode: auto` keeps the loop.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..analog.convert import analog_layers
from ..analog.layers import AnalogMultiheadAttention, AnalogState
from ..errors import OperationFailed, UsageError
from ..hardware.draws import add_noise
from . import msnat
from .loop import LoopTrainer
from .optim import make_optimizer
from .recipe import Recipe


def blockers(recipe: Recipe, data) -> list[str]:
    """Why this run cannot use the batched mode ([] = it can)."""
    r = recipe.recovery
    out = []
    if recipe.clients == 1:
        out.append("it needs FI with several noise levels")
    for name, on in (("SAM", r.optimizer.sam), ("adversarial training", r.adversarial.FGSM.use or r.adversarial.PGD.use),
                     ("QAT", r.qat)):
        if on:
            out.append(f"{name} is on")
    if data.text:
        out.append("text packages train in loop mode (the batched mode stacks image classifiers)")
    from torch.utils.data import TensorDataset

    if not isinstance(data.train, TensorDataset):
        out.append("the dataset is not an in-memory tensor dataset")
    return out


def resolve_mode(recipe: Recipe, data) -> str:
    """batched where training.mode asks for it (refused where it cannot run), else loop."""
    mode = recipe.training.mode
    if mode == "batched":
        why = blockers(recipe, data)
        if why:
            raise UsageError(f"training.mode=batched cannot run here: {'; '.join(why)}", "use training.mode=loop")
        return "batched"
    return "loop"


class BatchedTrainer(LoopTrainer):
    mode = "batched"

    def __init__(self, model: nn.Module, recipe: Recipe, data, state_dir, **kwargs):
        super().__init__(model, recipe, data, state_dir, **kwargs)
        base = copy.deepcopy(self.clients[0])
        if any(isinstance(m, AnalogMultiheadAttention) for _, m in analog_layers(base)):
            raise UsageError("training.mode=batched does not handle MultiheadAttention layers", "use training.mode=loop")
        msnat.NoiseControl(base).set(0.0)  # the noise is added to the stacked weights, once
        self.base = base
        self.analog_weights = [(f"{name}.{w}" if name else w, layer.analog.c)
                               for name, layer in analog_layers(base) for w in layer.analog_weights]
        self.params = {n: torch.stack([dict(c.named_parameters())[n].detach() for c in self.clients]).requires_grad_()
                       for n, p in base.named_parameters() if p.requires_grad}
        self.buffers = {n: torch.stack([dict(c.named_buffers())[n] for c in self.clients])
                        for n, _ in base.named_buffers()}
        self.optimizers = [make_optimizer(list(self.params.values()), recipe)]
        self.sigma_t = torch.tensor(self.sigmas, device=self.device)
        self._vf = torch.func.vmap(self._forward, randomness="different")
        self._state = AnalogState()  # holds the noise buffers, one per stacked weight

    def _forward(self, params, buffers, x):
        return torch.func.functional_call(self.base, {**params, **buffers}, (x,))

    @torch.no_grad()
    def _restack(self) -> None:
        for k, c in enumerate(self.clients):
            for n, p in c.named_parameters():
                if n in self.params:
                    self.params[n][k].copy_(p)
            for n, b in c.named_buffers():
                self.buffers[n][k].copy_(b)

    @torch.no_grad()
    def _unstack(self) -> None:
        for k, c in enumerate(self.clients):
            for n, p in c.named_parameters():
                if n in self.params:
                    p.copy_(self.params[n][k])
            for n, b in c.named_buffers():
                b.copy_(self.buffers[n][k])

    def noisy_params(self, sigma: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stacked weights plus each client's noise at its own level, one draw per layer for all K."""
        out = dict(self.params)
        for name, c in self.analog_weights:
            w = self.params[name]
            lo, hi = torch.aminmax(w.detach().flatten(1), dim=1)  # per client max|W|, no |W| temporary
            scale = c * sigma * torch.maximum(hi, lo.neg())
            out[name] = add_noise(w, scale, self._state, name)  # each client's slice at its own scale
        return out

    def train_clients(self, bar) -> list[dict[str, float]]:
        self._restack()
        self.base.train()
        fl, cfg = self.t.use_FL, self.r.feedback
        opt = self.optimizers[0]
        xs, ys = self.train_batches.tensors
        k, n, b = len(self.clients), self.train_batches.n, self.t.batch_size
        for e in range(self.t.epochs_per_round):
            orders = torch.stack([torch.randperm(n, generator=self.data_order(e, i)) for i in range(k)]).to(self.device)
            total = torch.zeros(k, device=self.device)
            correct = torch.zeros(k, device=self.device)
            for start in range(0, n, b):
                idx = orders[:, start:start + b]
                x, y = xs[idx], ys[idx]
                opt.zero_grad(set_to_none=True)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                    z0 = self._vf(self.noisy_params(self.sigma_t), self.buffers, x)
                    z = z0
                    if fl and cfg.deltas:
                        extra = sum(g * self._vf(self.noisy_params(self.sigma_t + d), self.buffers, x)
                                    for d, g in zip(cfg.deltas, cfg.gammas))
                        z = z0 - cfg.beta * extra
                logits = z.float() / cfg.temperature if fl else z.float()
                per = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(k, -1).mean(1)
                per.sum().backward()  # client k's gradient reaches only client k's slice
                opt.step()
                total += per.detach() * y.shape[1]
                correct += (z0.argmax(-1) == y).sum(1)
                if bar is not None:
                    bar.update(k)
        losses, accs = (total / n).tolist(), (correct / n).tolist()
        bad = [s for s, v in zip(self.sigmas, losses) if not math.isfinite(v)]
        if bad:
            raise OperationFailed(
                f"training diverged: loss is not finite in round {self.round + 1} (client sigma={bad[0]})",
                self.divergence_hint(),
            )
        if bar is not None:
            bar.set_postfix(loss=f"{sum(losses) / k:.3g}", acc=f"{sum(accs) / k:.3f}", refresh=False)
        self._unstack()
        return [{"loss": lo, "acc": a, "sigma": s} for lo, a, s in zip(losses, accs, self.sigmas)]
