"""Will a training run fit in memory? An estimate made before anything is allocated, so a batch size far
too large fails at once with a message instead of an out-of-memory kill (which loses the run silently,
or swaps the machine to a halt) minutes later.

The estimate: activations per sample, measured with one forward pass of one sample (every leaf module's
output), times the batch, times the forward passes kept for backward (1 + the feedback loops), times 2
(the activations and their gradients); plus the loss's tensors the size of the model's output (LOSS_COPIES:
an LM's vocabulary-sized logits make them the largest of a step); plus the programmed tile weights each of
those passes keeps for its backward (the weights with their noise: one copy of every analog weight per pass);
plus the clients' weights, gradients and Adam moments; plus the dataset when it moves to a GPU. It errs high
(in-place outputs count twice), and it only refuses runs that need more than all the memory there is.
Validation runs at `validation_batch`: at most a training step's activations, so the estimate covers it too.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..analog.convert import analog_layers
from ..errors import UsageError

GiB = 2**30
#: validation's batch where memory allows (throughput), and training's batch where that is larger
VAL_BATCH = 256
#: tensors the size of the model's output per sample and forward pass beside the leaf outputs (measured on a
#: 30k-vocabulary LM, KL distillation: ~12 in a training pass (the teacher's outputs, the softmaxes, the
#: loss's terms and their gradients), 6 in a validation pass (the model's and the teacher's outputs, the loss))
LOSS_COPIES = 12
VAL_COPIES = 6


def _tensors(output) -> list[torch.Tensor]:
    """The tensors of a module's output: a tensor, a tuple / list, or a transformers ModelOutput (a dict)."""
    items = output.values() if isinstance(output, dict) else output if isinstance(output, (tuple, list)) else (output,)
    return [t for t in items if isinstance(t, torch.Tensor)]


def forward_floats(model: nn.Module, input_shape: list[int], example=None) -> tuple[int, int]:
    """(floats produced by all leaf modules, floats of the model's largest output) for one sample (zeros of
    `input_shape`, or `example`: a text sample's keyword inputs).

    The analog layers' noise draws happen in a forked RNG, so training's random stream is untouched."""
    total = 0
    largest = 0

    def hook(_module, _inputs, output):
        nonlocal total
        total += sum(t.numel() for t in _tensors(output))

    def on_output(_module, _inputs, output):
        nonlocal largest
        largest = max((t.numel() for t in _tensors(output)), default=0)

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves] + [model.register_forward_hook(on_output)]
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
    return total, largest


def step_bytes(model: nn.Module, recipe, data) -> tuple[int, int]:
    """(bytes of one training sample's activations, bytes of one sample's output-sized validation tensors)."""
    leaves, output = forward_floats(model, list(data.input_shape), data.example())
    per_sample = (leaves * 2 + output * LOSS_COPIES) * 4 * recipe.passes
    if recipe.training.mode == "batched":  # every client's pass at once
        per_sample *= recipe.clients
    return per_sample, output * VAL_COPIES * 4


def validation_batch(model: nn.Module, recipe, data) -> int:
    """Validation's batch size: VAL_BATCH or training's, fewer where that many samples' output-sized tensors
    would outgrow a training step's activations (an LM's logits), so validation never sets the run's peak
    (a 30k-vocabulary LM validated 76 sentences in one batch with 1.7 GiB against a 0.5 GiB step). It depends
    on the model and the recipe only, so a resumed run validates alike."""
    per_sample, per_val = step_bytes(model, recipe, data)
    batch = min(recipe.training.batch_size, len(data.train))
    return max(1, min(max(VAL_BATCH, recipe.training.batch_size), per_sample * batch // max(per_val, 1)))


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
    t, clients, passes = recipe.training, recipe.clients, recipe.passes
    per_sample = step_bytes(model, recipe, data)[0]
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
