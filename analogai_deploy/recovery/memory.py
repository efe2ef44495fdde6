"""Will a training run fit in memory? An estimate made before anything is allocated, so a batch size far
too large fails at once with a message instead of an out-of-memory kill (which loses the run silently,
or swaps the machine to a halt) minutes later.

The estimate: activations per sample, measured with one forward pass of one sample (every leaf module's
output), times the batch, times the forward passes kept for backward (1 + the feedback loops), times 2
(the activations and their gradients); plus the programmed tile weights each of those passes keeps for its
backward (the weights with their noise: one copy of every analog weight per pass); plus the clients'
weights, gradients and Adam moments; plus the dataset when it moves to a GPU. It errs high (in-place
outputs count twice) on training, and it only refuses runs that need more than all the memory there is.
Validation batches (256 samples) are not counted: for an LM with a large vocabulary they can cost more than
training (SmolLM2: 16.2 GB peak against 5.1 GiB asked, BENCHMARKS.md section 6).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..analog.convert import analog_layers
from ..errors import UsageError

GiB = 2**30


def activations_per_sample(model: nn.Module, input_shape: list[int], example=None) -> int:
    """Floats produced by all leaf modules for one sample (zeros of `input_shape`, or `example`: a text
    sample's keyword inputs).

    The analog layers' noise draws happen in a forked RNG, so training's random stream is untouched."""
    total = 0

    def hook(_module, _inputs, output):
        nonlocal total
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, torch.Tensor):
                total += t.numel()

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if isinstance(example, dict):
                model(**{k: v.to(device) for k, v in example.items()})
            else:
                model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total


def available_bytes(device: torch.device) -> int | None:
    """Free memory on `device`: CUDA's free memory, or on CPU the smaller of MemAvailable and the cgroup limit."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except OSError:
        return None
    try:  # cgroup v2: a container's limit can be far below the machine's memory
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            free = min(free, int(limit) - used) if free is not None else int(limit) - used
    except (OSError, ValueError):
        pass
    return free


def check_fits(model: nn.Module, recipe, data, device: torch.device, teacher: bool = False) -> dict[str, float]:
    """Raise UsageError when the run cannot fit in `device`'s memory; returns the estimate (GiB) otherwise.

    `teacher`: distillation keeps a frozen digital copy of the model (one more set of weights)."""
    t, r = recipe.training, recipe.recovery
    clients = len(r.sigmas) if t.use_FI and len(r.sigmas) > 1 else 1
    passes = 1 + (len(r.feedback.deltas) if t.use_FL else 0)
    example = data.example()
    per_sample = activations_per_sample(model, list(data.input_shape), example) * 4 * passes * 2
    if t.mode == "batched":
        per_sample *= clients
    batch = min(t.batch_size, len(data.train))
    params = sum(p.numel() for p in model.parameters()) * 4
    fixed = params * (clients * 4 + 3 + int(teacher))  # per client: weights, grads, 2 Adam moments; + fused, best,
    # input copies (+ the teacher)
    analog = sum(m.get_parameter(n).numel() for _, m in analog_layers(model) for n in m.analog_weights)
    programmed = analog * 4 * passes * (clients if t.mode == "batched" else 1)  # SmolLM2 with FL: 4 x 0.5 GiB
    fixed += programmed
    if device.type == "cuda":
        fixed += sum(x.numel() * x.element_size() for ds in (data.train, data.val)
                     for x in getattr(ds, "tensors", ()))
    need = fixed + per_sample * batch
    free = available_bytes(device)
    estimate = {"need_gib": need / GiB, "free_gib": (free or 0) / GiB, "programmed_gib": programmed / GiB}
    if free is not None and need > free:
        fits = max(0, (free - fixed) // per_sample)
        hint = (f"lower training.batch_size (about {fits} fits)" if fits >= 1
                else "the model alone does not fit: use a machine with more memory")
        raise UsageError(
            f"training.batch_size={t.batch_size} would need about {need / GiB:.1f} GiB on {device} "
            f"({free / GiB:.1f} GiB free)", hint)
    return estimate
