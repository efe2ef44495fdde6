"""The digital-outlier split (mapping `outliers: digital`): which weights stay off the tiles, and what that costs.

Each Linear layer's tile weights (GPT-2's Conv1D too: a Linear with its weight stored [in, out]), after the
input scaling, are clipped at outlier_std std of their output column (one crossbar column); the clipped-off
rest - a few weights per column - is computed digitally beside the tile, y = tile(x) + x @ R^T, exact in
digital arithmetic. The tile's max|w| per column, and with it every weight's programming noise, shrinks.
Convolutions and attention projections keep every weight on tiles.

    residuals = split(model, mapping, split_layers(model, placement))  # in place: the tiles keep the clipped part
    handles = install(model, residuals)                                # + x @ R^T beside each tile (forward hooks)
    cost(residuals, placement, macs_per_vector(model, placement, batch))   # what the certificate states

What it costs in hardware (`cost`): each digital weight is one digital multiply-accumulate (MAC) per input
vector its layer sees (per token for a transformer's Linear layers), and storage as a sparse matrix per layer
in CSR: fp16 values, int32 column indices, int32 row pointers (one per output row, plus one). Shares are of
all the weights the placement puts on tiles (convolutions and attention included) and of all their MACs.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: the placement kinds whose weights the split acts on
SPLIT_KINDS = ("linear", "hf_conv1d")
#: the sparse part's storage: bytes per value, per column index, per row pointer
SPARSE_FORMAT = "CSR: fp16 values, int32 column indices, int32 row pointers"
VALUE_BYTES, INDEX_BYTES, POINTER_BYTES = 2, 4, 4


#: below this share of the analog weights in SPLIT_KINDS layers, asking for the split warns (it would barely act)
COVERAGE_WARN = 0.05


def coverage_warning(placement) -> str | None:
    """A warning when the split is asked for but the layers it acts on hold under COVERAGE_WARN of the weights
    the placement puts on tiles (a CNN: its convolutions keep every weight on tiles); None otherwise."""
    if placement is None or not placement.analog:
        return None
    total = sum(e.tile_weights for e in placement.analog)
    covered = [e for e in placement.analog if e.kind in SPLIT_KINDS]
    share = sum(e.tile_weights for e in covered) / total if total else 0.0
    if share >= COVERAGE_WARN:
        return None
    rest = sorted({e.type for e in placement.analog if e.kind not in SPLIT_KINDS})
    return (f"--outliers digital acts on Linear and GPT-2 Conv1D layers only: here {len(covered)} of "
            f"{len(placement.analog)} analog layers, {100 * share:.2f}% of the analog weights; the rest "
            f"({', '.join(rest)}) keep every weight on the tiles")


def recorded_split_warning(config: dict[str, Any]) -> str | None:
    """`coverage_warning` for a package whose config.json records the split (convert / recover)."""
    from ..analog.placement import Placement
    from .mapping import package_mapping

    if package_mapping(config).complete().outliers != "digital" or "placement" not in config:
        return None
    return coverage_warning(Placement.from_config(config))


def split_layers(model: nn.Module, placement=None) -> list[tuple[str, nn.Module, bool]]:
    """(name, module, transposed) of the layers the split acts on: the placement's linear and hf_conv1d
    entries (without a placement: every nn.Linear and GPT-2 Conv1D); `transposed`: weight stored [in, out]."""
    from ..analog.placement import kind_of

    if placement is None:
        found = [(n, m, kind_of(m)) for n, m in model.named_modules() if type(m) is nn.Linear
                 or type(m).__name__ == "Conv1D"]
        return [(n, m, k == "hf_conv1d") for n, m, k in found if k in SPLIT_KINDS]
    return [(e.name, model.get_submodule(e.name), e.kind == "hf_conv1d") for e in placement.analog
            if e.kind in SPLIT_KINDS]


def split(model: nn.Module, mapping, layers: list[tuple[str, nn.Module, bool]]) -> dict[str, torch.Tensor]:
    """outliers=digital: clip each layer's tile weights (as they stand: input scales folded in) at outlier_std
    std of their output column, in place. Returns the clipped-off part per layer, [out, in] as the tile holds
    it, for `install` (empty when the mapping keeps every weight on the tiles)."""
    from ..hardware.noise import outlier_split
    from .mapping import own_weight

    m = mapping.complete()
    if m.outliers != "digital":
        return {}
    residuals = {}
    with torch.no_grad():
        for name, mod, transposed in layers:
            w = own_weight(model, mod)
            kept, rest = outlier_split(w, m.outlier_std, channel_dim=1 if transposed else 0)
            residuals[name] = rest.t().contiguous() if transposed else rest
            w.copy_(kept)
    return residuals


def install(model: nn.Module, residuals: dict[str, torch.Tensor]) -> list:
    """Forward hooks adding each layer's digital outlier part, x @ R^T, to the tile's output; by module name,
    on whichever model holds the layers. x is the tile's own input (after the input-scaling pre-hook)."""
    mods = dict(model.named_modules())
    handles = []
    for name, r in residuals.items():
        def post(module, args, out, r=r):
            return out + F.linear(args[0], r.to(args[0].dtype))

        handles.append(mods[name].register_forward_hook(post))
    return handles


def macs_per_vector(model: nn.Module, placement, batch) -> tuple[dict[str, float], str]:
    """How many input vectors each analog layer multiplies per unit of input, from one forward pass of the
    (digital) `model` on `batch`: per token for text (every position of the batch), else per sample.
    Returns ({layer: vectors per unit}, "token" or "sample"). For a convolution the vectors are its output
    positions; for attention, the query, key and value tokens its input projection takes (the output
    projection's are added as query tokens: `_entry_macs`)."""
    seen: dict[str, list[float]] = {}
    handles = []

    def hook(name, kind):
        def count(mod, args, kwargs, out):
            if kind == "attention":
                q, k, v = (list(args) + [kwargs.get(n) for n in ("query", "key", "value")][len(args):])[:3]
                seen[name] = [float(t.shape[0] * t.shape[1] if t.dim() == 3 else t.shape[0]) for t in (q, k, v)]
                return
            y = out[0] if isinstance(out, tuple) else out
            if kind.startswith("conv"):
                seen[name] = [float(y.numel() // y.shape[1])]
            else:
                x = args[0] if args else next(iter(kwargs.values()))
                seen[name] = [float(x.numel() // x.shape[-1])]
        return count

    for e in placement.analog:
        mod = model.get_submodule(e.name) if e.name else model
        handles.append(mod.register_forward_hook(hook(e.name, e.kind), with_kwargs=True))
    try:
        with torch.no_grad():
            model(**batch) if isinstance(batch, dict) else model(batch)
    finally:
        for h in handles:
            h.remove()
    if isinstance(batch, dict):
        units, per = float(batch["input_ids"].numel()), "token"
    else:
        units, per = float(batch.shape[0]), "sample"
    return {n: [v / units for v in vs] for n, vs in seen.items()}, per


def _entry_macs(entry, vectors: list[float] | None) -> float:
    """MACs of one analog layer per unit of input (`macs_per_vector`'s counts)."""
    if not vectors:
        return 0.0
    if entry.kind == "attention":  # q, k, v projections per query / key / value token; out_proj per query
        size = {name.split(".")[0]: rows * cols for name, (rows, cols) in entry.matrices.items()}
        q, k, v = vectors[:3]
        if "in_proj_weight" in size:  # packed [3E, E]: a third per token of each
            return float(size["in_proj_weight"] / 3 * (q + k + v) + size["out_proj"] * q)
        return float(size["q_proj_weight"] * q + size["k_proj_weight"] * k + size["v_proj_weight"] * v
                     + size["out_proj"] * q)
    return float(entry.tile_weights) * vectors[0]


def cost(residuals: dict[str, torch.Tensor], placement, vectors: dict[str, list[float]], per: str) -> dict[str, Any]:
    """What the split costs, for the certificate: the digital weights and their share of every weight the
    placement puts on tiles, the digital MACs per `per` (token / sample) and their share of all analog MACs,
    and the sparse part's bytes in SPARSE_FORMAT."""
    digital = {n: int((r != 0).sum()) for n, r in residuals.items()}
    tile_weights = sum(e.tile_weights for e in placement.analog)
    analog_macs = sum(_entry_macs(e, vectors.get(e.name)) for e in placement.analog)
    digital_macs = sum(digital[n] * (vectors.get(n) or [0.0])[0] for n in digital)
    nnz = sum(digital.values())
    pointers = sum(r.shape[0] + 1 for r in residuals.values())
    return {
        "layers": len(residuals),
        "digital_weights": nnz,
        "analog_weights": tile_weights,  # every weight the placement puts on tiles, convolutions included
        "weight_share": nnz / tile_weights if tile_weights else 0.0,
        "digital_macs": digital_macs,  # per `per`: one MAC per digital weight per input vector of its layer
        "analog_macs": analog_macs,
        "mac_share": digital_macs / analog_macs if analog_macs else 0.0,
        "per": per,
        "sparse_bytes": nnz * (VALUE_BYTES + INDEX_BYTES) + pointers * POINTER_BYTES,
        "sparse_format": SPARSE_FORMAT,
    }
