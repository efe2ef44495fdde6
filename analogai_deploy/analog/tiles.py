"""The package's placement on aihwkit tiles: every analog module of the record, nothing else.

    analog, simulated = to_aihwkit(digital_model, placement, rpu_config)

aihwkit 1.1 converts exact nn.Linear / nn.Conv classes and simulates convolutions with groups=1 only
(and Conv1d / Conv3d only with indexed tiles, which its PyTorch tile lacks on CPU). Each placement
kind gets aihwkit's own layers, mapped so the tile matrices are exactly the record's:

    linear      aihwkit AnalogLinear
    conv2d      aihwkit AnalogConv2d (groups=1, zero padding given as numbers)
    conv*       other convolutions: `GroupedConv`, one aihwkit layer per group over its channel slice
                (each group its own tile set, the [out/g, in/g*k] matrix of the record), outputs
                concatenated; Conv1d runs as a 1 x k AnalogConv2d, Conv3d as im2col + AnalogLinear;
                string padding ('same') and non-zero padding modes are applied before the tiles
    hf_conv1d   transformers' GPT-2 Conv1D: an AnalogLinear holding the transposed weight
    attention   nn.MultiheadAttention: `AnalogAttention`, its input and output projections as
                AnalogLinear layers around the attention kernel of the original module
    custom      a layer type added with register_layer has no aihwkit mapping: certify exits 1 naming it

Everything else stays digital. The root is wrapped in aihwkit's AnalogWrapper, so program / drift
reach every tile.

    weights = from_aihwkit(analog, placement)

is the way back (the hwa_aihwkit recipe trains on these tiles): every analog module's parameters, read
from its tiles and put back into the digital layout, keyed like the digital model's state_dict.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import OperationFailed
from .placement import placed


def digital_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """A new nn.Linear y = x W^T + b holding copies of `weight` [out, in] and `bias`: what each engine puts on its
    tiles for a projection that is not an nn.Linear itself (GPT-2's Conv1D, attention's packed projections)."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def _linear(weight: torch.Tensor, bias: torch.Tensor | None, rpu) -> nn.Module:
    from aihwkit.nn import AnalogLinear

    return AnalogLinear.from_digital(digital_linear(weight, bias), copy.deepcopy(rpu))


def explicit_padding(conv: nn.Module) -> list[int]:
    """F.pad amounts (last dim first) equal to the conv's padding (all zeros for 'valid')."""
    k, d = conv.kernel_size, conv.dilation
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            per_dim = [(0, 0)] * len(k)
        else:  # 'same': torch puts the odd pixel on the right
            per_dim = [((d[i] * (k[i] - 1)) // 2, d[i] * (k[i] - 1) - (d[i] * (k[i] - 1)) // 2) for i in range(len(k))]
    else:
        per_dim = [(p, p) for p in conv.padding]
    out: list[int] = []
    for lo, hi in reversed(per_dim):
        out += [lo, hi]
    return out


def im2col3d(x: torch.Tensor, k, s, d) -> tuple[torch.Tensor, tuple[int, ...]]:
    """A (padded) [N, C, D, H, W] input's patches as rows [N * D' * H' * W', C * kd * kh * kw], in the order of
    the weight's [out, C, kd, kh, kw] flattening, and (N, D', H', W')."""
    for i in range(3):
        span = d[i] * (k[i] - 1) + 1
        x = x.unfold(2 + i, span, s[i])
    x = x[..., ::d[0], ::d[1], ::d[2]]  # [N, C, D', H', W', kd, kh, kw]
    n, c, od, oh, ow = x.shape[:5]
    cols = x.permute(0, 2, 3, 4, 1, 5, 6, 7).reshape(n * od * oh * ow, c * math.prod(k))
    return cols, (n, od, oh, ow)


class GroupedConv(nn.Module):
    """A Conv1d/2d/3d (any groups) as one aihwkit layer per group, each groups=1 over its channel slice."""

    def __init__(self, conv: nn.Module, rpu):
        super().__init__()
        from aihwkit.nn import AnalogConv2d

        self.dims = conv.weight.dim() - 2
        self.groups = conv.groups
        self.in_per_group = conv.in_channels // conv.groups
        self.out_per_group = conv.out_channels // conv.groups
        self.kernel, self.stride, self.dilation = conv.kernel_size, conv.stride, conv.dilation
        self.pad = explicit_padding(conv)
        self.pad_mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        tiles = []
        for g in range(conv.groups):
            w = conv.weight.detach()[g * self.out_per_group:(g + 1) * self.out_per_group]
            b = None if conv.bias is None else conv.bias.detach()[g * self.out_per_group:(g + 1) * self.out_per_group]
            if self.dims == 3:  # im2col here, the [out/g, in/g*kd*kh*kw] matrix on an AnalogLinear
                tiles.append(_linear(w.reshape(w.shape[0], -1), b, rpu))
                continue
            k = self.kernel if self.dims == 2 else (1, self.kernel[0])
            s = self.stride if self.dims == 2 else (1, self.stride[0])
            dl = self.dilation if self.dims == 2 else (1, self.dilation[0])
            digital = nn.Conv2d(self.in_per_group, self.out_per_group, k, s, 0, dl, bias=b is not None)
            with torch.no_grad():
                digital.weight.copy_(w.reshape(digital.weight.shape))
                if b is not None:
                    digital.bias.copy_(b)
            tiles.append(AnalogConv2d.from_digital(digital, copy.deepcopy(rpu)))
        self.tiles = nn.ModuleList(tiles)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = F.pad(x, self.pad, mode=self.pad_mode)
        outs = []
        for g, tile in enumerate(self.tiles):
            xg = x[:, g * self.in_per_group:(g + 1) * self.in_per_group]
            if self.dims == 1:
                outs.append(tile(xg.unsqueeze(2)).squeeze(2))
            elif self.dims == 2:
                outs.append(tile(xg))
            else:
                cols, (n, od, oh, ow) = im2col3d(xg, self.kernel, self.stride, self.dilation)
                outs.append(tile(cols).reshape(n, od, oh, ow, -1).permute(0, 4, 1, 2, 3))
        return outs[0] if len(outs) == 1 else torch.cat(outs, 1)


class AnalogAttention(nn.Module):
    """nn.MultiheadAttention with its projections on aihwkit tiles.

    The projections run on AnalogLinear layers; the attention itself (masks, dropout, bias_k/v,
    zero attention, head averaging) is the original module's kernel, given identity projections,
    which multiply exactly (x * 1 + 0), so the digital part is unchanged bit for bit.
    """

    # nn.TransformerEncoderLayer's fused fast path reads the projection weights itself and would bypass
    # the tiles; these attributes make it take the ordinary path, which calls this module.
    _qkv_same_embed_dim = False
    in_proj_bias = None

    def __init__(self, mha: nn.MultiheadAttention, linear):
        """`linear(weight, bias)`: a projection's analog layer (aihwkit's here, the fast engine's in
        certification/fast/engine.py)."""
        super().__init__()
        e = mha.embed_dim
        self.embed_dim = e
        self.batch_first = mha.batch_first
        self.packed = mha._qkv_same_embed_dim
        bias = mha.in_proj_bias
        if self.packed:
            self.in_proj = linear(mha.in_proj_weight.detach(), None if bias is None else bias.detach())
        else:
            parts = [None, None, None] if bias is None else bias.detach().split(e)
            self.q_proj, self.k_proj, self.v_proj = (
                linear(w.detach(), b) for w, b in zip((mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight), parts))
        out = mha.out_proj
        self.out_proj = linear(out.weight.detach(), None if out.bias is None else out.bias.detach())
        core = nn.MultiheadAttention(e, mha.num_heads, dropout=mha.dropout, bias=True,
                                     add_bias_kv=mha.bias_k is not None, add_zero_attn=mha.add_zero_attn,
                                     batch_first=mha.batch_first)
        with torch.no_grad():
            core.in_proj_weight.copy_(torch.eye(e).repeat(3, 1))
            core.in_proj_bias.zero_()
            core.out_proj.weight.copy_(torch.eye(e))
            core.out_proj.bias.zero_()
            if mha.bias_k is not None:
                core.bias_k.copy_(mha.bias_k)
                core.bias_v.copy_(mha.bias_v)
        for name, p in core.named_parameters():  # the identity projections are fixed; bias_k/v are the model's
            p.requires_grad_(name in ("bias_k", "bias_v"))
        self.core = core.train(mha.training)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        e = self.embed_dim
        if self.packed:
            if query is key and key is value:
                q, k, v = self.in_proj(query).split(e, dim=-1)
            else:  # cross attention: each input through the same tile matrix, its own third kept
                q = self.in_proj(query)[..., :e]
                k = self.in_proj(key)[..., e:2 * e]
                v = self.in_proj(value)[..., 2 * e:]
        else:
            q, k, v = self.q_proj(query), self.k_proj(key), self.v_proj(value)
        out, weights = self.core(q, k, v, key_padding_mask=key_padding_mask, need_weights=need_weights,
                                 attn_mask=attn_mask, average_attn_weights=average_attn_weights, is_causal=is_causal)
        return self.out_proj(out), weights


def _replacement(kind: str, module: nn.Module, rpu) -> nn.Module:
    from aihwkit.nn import AnalogConv2d, AnalogLinear

    if kind == "linear":
        return AnalogLinear.from_digital(module, copy.deepcopy(rpu))
    if kind == "conv2d" and module.groups == 1 and module.padding_mode == "zeros" and not isinstance(module.padding, str):
        return AnalogConv2d.from_digital(module, copy.deepcopy(rpu))
    if kind in ("conv1d", "conv2d", "conv3d"):
        return GroupedConv(module, rpu)
    if kind == "hf_conv1d":  # y = x @ W + b with W [in, out]: a Linear with weight W^T
        return _linear(module.weight.detach().t(), None if module.bias is None else module.bias.detach(), rpu)
    if kind == "attention":
        return AnalogAttention(module, lambda w, b: _linear(w, b, rpu))
    raise OperationFailed(f"layer {{name}} ({type(module).__name__}, added with register_layer) has no aihwkit "
                          "mapping, so certify cannot simulate it", "keep it digital (`exclude_types="
                          f"{type(module).__name__}`) and convert again, or certify without it")


def set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` at the dotted `name` inside `root` (both engines swap placement layers for tiles with it)."""
    parent, _, child = name.rpartition(".")
    holder = root.get_submodule(parent) if parent else root
    holder._modules[child] = module


def to_aihwkit(digital: nn.Module, placement, rpu) -> tuple[nn.Module, list[str]]:
    """A copy of `digital` with exactly the placement's analog modules on aihwkit tiles.

    Returns (the model, wrapped in AnalogWrapper; the names it put on tiles, in placement order).
    A planned layer that cannot be simulated raises OperationFailed naming it and why.
    """
    from aihwkit.nn.modules.container import AnalogWrapper
    from aihwkit.simulator.tiles.module import TileModule

    model = copy.deepcopy(digital)
    if not placement.analog:
        raise OperationFailed("the package's placement puts no layer on analog tiles, so there is nothing to certify",
                              "convert without excluding every layer")
    simulated = []
    for entry in placement.analog:
        module = placed(model, entry)
        try:
            new = _replacement(entry.kind, module, rpu)
        except OperationFailed as exc:
            raise OperationFailed(exc.message.replace("{name}", repr(entry.name)), exc.hint) from None
        except Exception as exc:  # aihwkit refusing a shape or setting: say which layer
            raise OperationFailed(f"aihwkit cannot simulate layer {entry.name!r} ({entry.type}, kind {entry.kind}): "
                                  f"{type(exc).__name__}: {exc}") from None
        if not any(isinstance(m, TileModule) for m in new.modules()):
            raise OperationFailed(f"layer {entry.name!r} ({entry.type}) got no aihwkit tile")
        if isinstance(getattr(module, "weight", None), torch.Tensor) and "weight" not in new._parameters:
            # model code that reads layer.weight.dtype / .device (HF ViT does) keeps working; the tiles hold the
            # weights the forward uses, this copy is never computed with
            new.weight = module.weight.detach()
        if entry.name:
            set_module(model, entry.name, new)
        else:
            model = new
        simulated.append(entry.name)
    return AnalogWrapper(model).eval(), simulated


def _tile_weights(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An aihwkit layer's weight and bias as its digital counterpart holds them (weight scaling undone).
    Asked of its tile module: the layer may be the model's root, wrapped in AnalogWrapper, whose own
    get_weights returns every layer's."""
    weight, bias = layer.analog_module.get_weights()
    return weight.detach(), None if bias is None else bias.detach()


def _weights_back(entry, new: nn.Module) -> dict[str, torch.Tensor]:
    """The inverse of `_replacement` for one placement entry: {parameter name in the module: tensor}."""
    shape = list(entry.weight_shape)
    if isinstance(new, GroupedConv):
        parts = [_tile_weights(tile) for tile in new.tiles]
        out = {"weight": torch.cat([w.reshape(w.shape[0], -1) for w, _ in parts]).reshape(shape)}
        if parts[0][1] is not None:
            out["bias"] = torch.cat([b for _, b in parts])
        return out
    if isinstance(new, AnalogAttention):
        out = {}
        if new.packed:
            out["in_proj_weight"], bias = _tile_weights(new.in_proj)
            if bias is not None:
                out["in_proj_bias"] = bias
        else:
            parts = [_tile_weights(t) for t in (new.q_proj, new.k_proj, new.v_proj)]
            out["q_proj_weight"], out["k_proj_weight"], out["v_proj_weight"] = (w for w, _ in parts)
            if parts[0][1] is not None:
                out["in_proj_bias"] = torch.cat([b for _, b in parts])
        if new.core.bias_k is not None:  # digital parameters of the attention, kept in its kernel
            out["bias_k"], out["bias_v"] = new.core.bias_k.detach(), new.core.bias_v.detach()
        out["out_proj.weight"], bias = _tile_weights(new.out_proj)
        if bias is not None:
            out["out_proj.bias"] = bias
        return out
    weight, bias = _tile_weights(new)
    if entry.kind == "hf_conv1d":
        weight = weight.t()
    out = {"weight": weight.reshape(shape)}
    if bias is not None:
        out["bias"] = bias
    return out


def from_aihwkit(analog: nn.Module, placement) -> dict[str, torch.Tensor]:
    """The trained weights of `to_aihwkit`'s model, keyed like the digital model's state_dict: every analog
    module's parameters read back from its tiles, every other parameter and buffer as the model holds it.
    (AnalogWrapper shares the wrapped model's modules, so module names are the digital model's.)"""
    names = [e.name for e in placement.analog]
    if "" in names:  # the model itself is one analog layer
        return {k: v.clone() for k, v in _weights_back(placement.analog[names.index("")], analog).items()}
    prefixes = tuple(f"{n}." for n in names)
    out = {k: v.detach().clone() for k, v in analog.state_dict().items() if not k.startswith(prefixes)}
    for entry in placement.analog:
        for param, value in _weights_back(entry, analog.get_submodule(entry.name)).items():
            out[f"{entry.name}.{param}"] = value.clone()
    return out


def conversion(analog: nn.Module, placement, simulated: list[str]) -> dict[str, Any]:
    """The certificate's conversion block, counted from the placement that ran."""
    digital_types: dict[str, int] = {}
    for e in placement.digital:
        digital_types[e.type] = digital_types.get(e.type, 0) + 1
    entries = [placement.entry(n) for n in simulated]
    return {"analog_layers": len(simulated), "tiles": sum(1 for _ in analog.analog_tiles()),
            "analog_weights": sum(e.tile_weights for e in entries), "digital_modules": digital_types,
            "total_params": placement.total_params}
