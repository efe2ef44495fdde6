"""The MSNAT trainer (mode "loop"): rounds of K noise-level clients, fusion, validation.

One round: every client trains `epochs_per_round` epochs on the whole training set at its own noise
level (its own optimizer state), the clients are fused (FI) and broadcast, the fused model is
validated under noise, and a checkpoint is written (trainer.py). Without FI there is one model; with
several noise levels it takes them in turn, one per mini-batch.

Nothing is rebuilt per round: the K clients are deep copies made once, data sits on the device once
(tensor datasets), and loss/accuracy stay on the device until the end of a client's epoch. The
checkpoint holds everything the next round depends on (the clients, their optimizer states, the RNG
states, the best model so far), so a resumed run ends bitwise where an uninterrupted one ends (CPU).
"""
from __future__ import annotations

import copy
import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .. import distributed
from .._state import load_state
from ..errors import OperationFailed, UsageError
from . import checkpoint, hardware_noise, msnat, parallel
from .optim import lr_at, make_optimizer
from .recipe import Recipe
from .trainer import Trainer
from .validation import evaluate


class LoopTrainer(Trainer):
    """The K FI clients one after the other (BatchedTrainer: all at once)."""

    mode = "loop"

    def __init__(self, model: nn.Module, recipe: Recipe, data, state_dir: Path, **kwargs):
        super().__init__(model, recipe, data, state_dir, **kwargs)
        self.amp = self.t.amp and self.device.type == "cuda"
        self.sigmas = self.r.sigmas
        self.fi = recipe.clients > 1
        model.to(self.device).train()
        if self.r.qat:
            from ..analog import qat

            self.quant = qat.attach(model, self.r.quant)
        n_clients = len(self.sigmas) if self.fi else 1
        # torch.distributed (distributed.py): with FI each rank trains its share of the clients, without FI
        # the ranks split every mini-batch (data parallel); one process trains everything
        self.dist = distributed.world() > 1
        self.mine = parallel.client_share(n_clients) if self.dist and self.fi else range(n_clients)
        self.dp = parallel.DataParallel() if self.dist and not self.fi else None
        # K deep copies made once; the fused model is separate so momentum broadcast keeps the clients distinct
        self.clients = [model] + [copy.deepcopy(model) for _ in range(n_clients - 1)]
        self.fused = copy.deepcopy(model) if self.fi else model
        self.noise = [msnat.NoiseControl(c) for c in self.clients]
        self.optimizers = [make_optimizer(c, recipe) for c in self.clients]
        self.step_clip = hardware_noise.has_step_clip(model)
        self.adv = self.r.adversarial.FGSM.use or self.r.adversarial.PGD.use
        if self.adv:
            low, high = data.pixel_bounds()
            self.bounds = (low.to(self.device), high.to(self.device), data.std_tensor.to(self.device))

    def steps_per_round(self) -> int:
        return len(self.mine) * self.t.epochs_per_round * len(self.train_batches)

    def round_model(self) -> nn.Module:
        return self.fused

    # ---- one mini-batch ------------------------------------------------------------------------------
    def make_loss_fn(self, noise: msnat.NoiseControl) -> Callable:
        fl, cfg, obj = self.t.use_FL, self.r.feedback, self.objective

        def loss_fn(model, x, y):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                z, _ = msnat.feedback_logits(model, x, noise, cfg, fl, forward=obj.forward)
            return obj.loss(z, y, x, cfg.temperature if fl else None)

        return loss_fn

    def _loss(self, model, noise, loss_fn, x, y) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, the metric summed over the batch); `y` holds the targets (labels or the teacher's outputs)."""
        fl, cfg, obj = self.t.use_FL, self.r.feedback, self.objective
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            z, z0 = msnat.feedback_logits(model, x, noise, cfg, fl, forward=obj.forward)
        loss = obj.loss(z, y, x, cfg.temperature if fl else None)
        if self.adv:
            from .adversarial import adversarial_loss

            extra = adversarial_loss(model, loss_fn, x, y, self.r.adversarial, *self.bounds)
            if extra is not None:
                loss = loss + extra
        return loss, obj.score(z0.detach(), y, x)

    def train_step(self, k: int, x, y, loss_fn) -> tuple[torch.Tensor, torch.Tensor]:
        model, noise, opt = self.clients[k], self.noise[k], self.optimizers[k]
        y = self.objective.targets(x, y)  # a causal LM's teacher logits, once per batch (SAM reuses them)
        opt.zero_grad(set_to_none=True)
        loss, correct = self._loss(model, noise, loss_fn, x, y)
        loss.backward()
        if self.dp is not None:
            self.dp.sync_grads(model)
        if hasattr(opt, "first_step"):  # SAM: gradient at the perturbed point, then the real step
            opt.first_step(zero_grad=True)
            loss2, _ = self._loss(model, noise, loss_fn, x, y)
            loss2.backward()
            if self.dp is not None:
                self.dp.sync_grads(model)
            opt.second_step()
        else:
            opt.step()
        if self.step_clip:
            hardware_noise.clip_step(model)  # noise.clip_when: step (aihwkit-lightning's clip_weights)
        return loss.detach(), correct

    def _warm(self, step: int) -> None:
        """training.warmup: the learning rate ramps up linearly over the first warmup x all steps of the run (a
        pure function of the step, like lr_at of the round: nothing to checkpoint)."""
        per_round = self.t.epochs_per_round * len(self.train_batches)
        total = self.t.rounds * per_round
        done = self.round * per_round + step + 1
        self.set_lr(lr_at(self.t, self.round) * min(1.0, done / max(1.0, self.t.warmup * total)))

    # ---- one round -----------------------------------------------------------------------------------
    # ---- one round -----------------------------------------------------------------------------------
    def _client_epoch(self, k: int, epoch: int, bar) -> dict[str, float]:
        model, noise = self.clients[k], self.noise[k]
        model.train()
        loss_fn = self.make_loss_fn(noise)
        g = self.data_order(epoch, k)
        total = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        for step, (x, y) in enumerate(self.train_batches.iterate(g)):
            if self.t.warmup > 0:
                self._warm(epoch * len(self.train_batches) + step)
            if not self.fi:  # one model: it takes the noise levels in turn
                noise.set(self.sigmas[(step + self.round) % len(self.sigmas)])
            if self.dp is not None:  # this rank's slice of the global mini-batch
                x, y = self.dp.slice(x, y)
            loss, c = self.train_step(k, x, y, loss_fn)
            total += loss * len(y)
            correct += c
            if bar is not None:
                bar.update(1)
        if self.dp is not None:
            total, correct = self.dp.sum(total, correct)
            self.dp.sync_state(model)
        n = self.train_batches.n
        stats = {"loss": total.item() / n, "acc": correct.item() / n, "sigma": noise.sigma}
        if not math.isfinite(stats["loss"]):
            raise OperationFailed(
                f"training diverged: loss is {stats['loss']} in round {self.round + 1} (client sigma={noise.sigma})",
                self.divergence_hint(),
            )
        if bar is not None:  # significant digits: a distillation KL starts near 1e-4, which .3f shows as 0.000
            bar.set_postfix(loss=f"{stats['loss']:.3g}", acc=f"{stats['acc']:.3f}", refresh=False)
        return stats

    def data_order(self, epoch: int, k: int) -> torch.Generator:
        """The data order is a pure function of (seed, round, epoch, client): nothing to checkpoint."""
        return torch.Generator().manual_seed(self.t.seed * 1_000_003 + self.round * 1009 + epoch * 101 + k)

    def _client_seed(self, k: int) -> int:
        """Client k's noise stream in a round: a pure function, so a client draws the same noise in any process."""
        return self.t.seed * 1_000_003 + self.round * 1009 + k + 7

    def train_clients(self, bar) -> list[dict[str, float]]:
        clients = {}
        with distributed.guard() if self.dist else nullcontext():  # a failing rank stops every rank
            for k in self.mine:
                if self.fi:
                    self.noise[k].set(self.sigmas[k])
                    torch.manual_seed(self._client_seed(k))
                for e in range(self.t.epochs_per_round):
                    stats = self._client_epoch(k, e, bar)
                clients[k] = stats
        if self.dist and self.fi:
            return parallel.gather_clients(clients, len(self.clients))
        return list(clients.values())

    def train_round(self, bar) -> dict[str, Any]:
        out: dict[str, Any] = {"clients": self.train_clients(bar)}
        if self.fi:
            accs = None
            if self.r.fusion.weights == "accuracy":
                accs = {k: evaluate(self.clients[k], self.val_batches, self.sigmas[k], 1)["acc"] for k in self.mine}
                accs = parallel.gather_clients(accs, len(self.clients)) if self.dist else list(accs.values())
            a = msnat.fusion_weights(len(self.clients), accs)
            if self.dist:  # FI as an all-reduce: each rank adds its clients' a_k w_k
                parallel.fuse(self.clients, a, self.fused, self.mine)
            else:
                msnat.fuse(self.clients, a, self.fused)
            msnat.broadcast(self.fused, self.clients, self.r.fusion.keep if self.r.fusion.momentum_broadcast else 0.0)
            out["fusion_weights"] = a
        return out

    def snapshot_best(self) -> None:
        super().snapshot_best()
        self.best_ranges = msnat.act_ranges(self.fused)

    # ---- checkpoints ---------------------------------------------------------------------------------
    def _collect_clients(self) -> None:
        """Distributed FI: every rank receives the clients (and optimizer states) other ranks trained."""
        mine = {}
        for k in self.mine:
            opt_tensors: dict[str, torch.Tensor] = {}
            opt_meta = checkpoint.flatten(self.optimizers[k].state_dict(), "opt", opt_tensors)
            state = {key: v.detach().cpu() for key, v in self.clients[k].state_dict().items()}
            mine[k] = (state, msnat.act_ranges(self.clients[k]), opt_meta, opt_tensors)
        for k, (state, ranges, opt_meta, opt_tensors) in enumerate(parallel.gather_clients(mine, len(self.clients))):
            if k not in self.mine:
                load_state(self.clients[k], state)
                msnat.set_act_ranges(self.clients[k], ranges, self.device)
                self.optimizers[k].load_state_dict(checkpoint.unflatten(opt_meta, opt_tensors))


    def save(self) -> None:
        if self.dist and self.fi:
            self._collect_clients()
        if self.dist and not distributed.is_main():
            return  # rank 0 writes the checkpoint; it is the same as one process's
        super().save()

    def model_tensors(self, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        # Only what a bitwise resume needs: a client that equals the fused model (every client after a plain
        # broadcast) and a best state that equals it (the best round is this one) are stored once, as the
        # fused model, and named in `same_as_fused`; checked tensor by tensor, so momentum broadcast and an
        # earlier best round still store their own.
        ref = self.fused.state_dict() if self.fi else None
        ref_ranges = msnat.act_ranges(self.fused) if self.fi else None
        same: list[str] = []
        for k, client in enumerate(self.clients):
            state, ranges = client.state_dict(), msnat.act_ranges(client)
            if ref is not None and checkpoint.same_state(state, ref) and checkpoint.same_state(ranges, ref_ranges):
                same.append(f"client{k}")
                continue
            _put(tensors, f"client{k}", state, ranges)
        if ref is not None and self.best_state and checkpoint.same_state(self.best_state, ref) and \
                checkpoint.same_state(self.best_ranges, ref_ranges):
            same.append("best")
        else:
            _put(tensors, "best", self.best_state, self.best_ranges)
        if self.fi:
            _put(tensors, "fused", ref, ref_ranges)
        return {"clients": len(self.clients), "same_as_fused": same}

    def load_models(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        if meta["clients"] != len(self.clients):
            raise UsageError(f"the checkpoint in {self.state_dir} has {meta['clients']} clients, this recipe "
                             f"{len(self.clients)}", "resume with the same recipe, or pass `restart=True`")
        if len(meta["optimizers"]) != len(self.optimizers):
            raise UsageError(f"the checkpoint in {self.state_dir} holds {len(meta['optimizers'])} optimizer states, "
                             f"this run {len(self.optimizers)}", "resume with the same recipe, or pass `restart=True`")
        same = set(meta.get("same_as_fused", []))  # stored once, as the fused model

        def part(name: str, suffix: str = "") -> dict[str, torch.Tensor]:
            prefix = f"{'fused' if name in same else name}{suffix}/"
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        for k, client in enumerate(self.clients):
            load_state(client, part(f"client{k}"))
            msnat.set_act_ranges(client, part(f"client{k}", ".act"), self.device)
        if self.fi:
            load_state(self.fused, part("fused"))
            msnat.set_act_ranges(self.fused, part("fused", ".act"), self.device)
        self.best_state = {k: v.to(self.device) for k, v in part("best").items()}
        self.best_ranges = part("best", ".act")


def _put(tensors: dict[str, torch.Tensor], name: str, state: dict[str, torch.Tensor],
         ranges: dict[str, torch.Tensor]) -> None:
    """A model's state as `name/key` and its QAT activation ranges as `name.act/i`."""
    for key, v in state.items():
        tensors[f"{name}/{key}"] = v.detach().contiguous().cpu()
    for key, v in ranges.items():
        tensors[f"{name}.act/{key}"] = v
