"""recover on several ranks: data parallel for one model, MSNAT clients spread over ranks, fusion as an
all-reduce. Built on the stage-free helpers of `analogai_deploy.distributed`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import distributed
from ..errors import UsageError


class DataParallel:
    """DDP's arithmetic for the loop trainer: each rank takes its slice of every global mini-batch, and
    the gradients are summed with weights n_rank / n_batch, so every rank applies the full batch's mean
    gradient (bitwise the same on every rank, so the replicas never drift apart). All ranks draw the
    same weight noise (same seed, same calls), as one process would; a replica's batch-norm statistics
    and QAT activation ranges are averaged at the end of each epoch. Several forward passes per step (FL)
    and SAM's two backward passes need no special hooks this way, which DDP's wrapper would.
    """

    def __init__(self):
        self.world, self.rank = distributed.world(), distributed.rank()
        self.weight = 1.0

    def slice(self, x, y):
        n = len(y)
        if n < self.world:  # a tiny last batch: every rank takes all of it, each a 1/world share
            self.weight = 1.0 / self.world
            return x, y
        part = distributed.share(n, self.world, self.rank)
        self.weight = len(part) / n
        return x[part.start:part.stop], y[part.start:part.stop]

    def sync_grads(self, model) -> None:
        import torch
        import torch.distributed as dist

        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads]).mul_(self.weight)
        dist.all_reduce(flat)
        torch._foreach_copy_(grads, [t.view_as(g) for t, g in zip(flat.split([g.numel() for g in grads]), grads)])

    def sum(self, *values):
        """Per-epoch totals (loss sums, correct counts) over all ranks."""
        import torch
        import torch.distributed as dist

        flat = torch.stack([v.reshape(()).float() for v in values])
        dist.all_reduce(flat)
        return list(flat.unbind())

    def sync_state(self, model) -> None:
        """Average the float buffers (batch-norm statistics) and QAT activation ranges over the replicas."""
        import torch

        from .msnat import act_quantizers

        buffers = [b for b in model.buffers() if b.is_floating_point()]
        quant = [q for q in act_quantizers(model) if q is not None and q.act_max is not None]
        tensors = buffers + [q.act_max for q in quant]
        if tensors:
            averaged = distributed.all_reduce_flat([t.detach().reshape(-1).float() for t in tensors], 1.0 / self.world)
            with torch.no_grad():
                for b, v in zip(buffers, averaged):
                    b.copy_(v.view_as(b))
            for q, v in zip(quant, averaged[len(buffers):]):
                q.act_max = v.view_as(q.act_max).to(q.act_max.dtype)


def check_recover(recipe, data: Any = "digits", recipe_arg: Any = "msnat", nproc: int = 1) -> None:
    """What a distributed recover cannot do, refused before any process starts training."""
    t = recipe.training
    if t.engine == "aihwkit_hwa":
        raise UsageError("training.engine=aihwkit_hwa (aihwkit's own trainer) runs on one process",
                         "drop `nproc` / torchrun, or use an MSNAT-family recipe (vanilla, single_noise, msnat, ...)")
    if t.mode == "batched":
        raise UsageError("training.mode=batched stacks every client in one process", "use training.mode=loop")
    if nproc > 1:
        if not isinstance(data, str):
            raise UsageError("with nproc the dataset goes by name", "pass data as a spec, e.g. 'digits'")
        if not isinstance(recipe_arg, (str, Path)):
            raise UsageError("with nproc the recipe goes by name or file", "pass 'msnat' or a YAML path, plus overrides")
        if recipe.clients > 1 and nproc > recipe.clients:
            raise UsageError(f"{nproc} processes for {recipe.clients} MSNAT clients: a process would have no client",
                             f"use `nproc={recipe.clients}` or fewer")


def client_share(k: int) -> range:
    """The MSNAT clients this rank trains; every rank needs at least one."""
    n = distributed.world()
    if n > k:
        raise UsageError(f"{n} processes for {k} MSNAT clients: a process would have no client to train",
                         f"run with at most {k} processes (`nproc={k}`), or use a recipe without FI")
    return distributed.share(k)


def fuse(clients, weights, into, mine: range) -> None:
    """Fusion injection across ranks: into <- sum_k a_k w_k, each rank adding its own clients, then an
    all-reduce sum; integer buffers (num_batches_tracked) come from client 0, which rank 0 trains."""
    import torch
    import torch.distributed as dist

    from . import msnat

    msnat.fuse([clients[k] for k in mine], [weights[k] for k in mine], into)
    state = into.state_dict()
    keys = msnat.float_keys(state)
    quant = [q for q in msnat.act_quantizers(into) if q is not None and q.act_max is not None]
    parts = [state[k] for k in keys] + [q.act_max.reshape(-1).float() for q in quant]
    summed = distributed.all_reduce_flat([t.detach() for t in parts])
    with torch.no_grad():
        for key, v in zip(keys, summed):
            state[key].copy_(v.view_as(state[key]))
        for key, t in state.items():
            if not t.is_floating_point():
                dist.broadcast(t, src=0)
    for q, v in zip(quant, summed[len(keys):]):
        q.act_max = v.view_as(q.act_max).to(q.act_max.dtype)


def gather_clients(items: dict[int, Any], k: int) -> list[Any]:
    """Per-client values from the ranks that own them (stats, accuracies, checkpoint parts) -> a list of k."""
    merged: dict[int, Any] = {}
    for part in distributed.all_gather(items):
        merged.update(part)
    return [merged[i] for i in range(k)]
