"""The inference graph: the package's model with noise off, analog layers back to digital, QAT
quantizers as QuantizeLinear/DequantizeLinear, wrapped to take named inputs and return tensors.
"""
from __future__ import annotations

import io
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import OperationFailed, UsageError
from ..tasks import Record, hf_output_name, output_kind

if TYPE_CHECKING:
    from ..analog.qat import QuantRecord

MIN_OPSET, MAX_OPSET, DEFAULT_OPSET = 13, 20, 17  # 13: per-channel QuantizeLinear; 17: native LayerNormalization


@dataclass
class GraphSpec:
    """What the exported graph takes and returns."""

    module: nn.Module  # the wrapped PyTorch reference (the exact function the ONNX graph must compute)
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]


class _Named(nn.Module):
    """A Hugging Face model called with its own input names, returning one output tensor."""

    def __init__(self, model: nn.Module, names: list[str], output: str):
        super().__init__()
        self.model, self.names, self.output = model, list(names), output

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = self.model(**dict(zip(self.names, inputs)), return_dict=True)
        return out[self.output]


class _Plain(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if not isinstance(out, torch.Tensor):
            raise OperationFailed(f"the model returns {type(out).__name__}, not a tensor; ONNX export needs one",
                                  "wrap the model in a factory that returns the logits tensor")
        return out


def wrap(model: nn.Module, config: dict[str, Any]) -> tuple[nn.Module, list[str], str]:
    """(the model called as the graph is, its input names, its output name)."""
    spec = config["input"]
    if config["source"].get("kind") == "huggingface":
        default = ["pixel_values"] if spec.get("kind") == "image" else ["input_ids", "attention_mask"]
        names = list(spec.get("names") or default)
        output = hf_output_name(config)
        return _Named(model, names, output).eval(), names, output
    output = "logits" if output_kind(config) == "logits" else "output"
    return _Plain(model).eval(), ["input"], output


def build(model: nn.Module, config: dict[str, Any], sample: tuple[torch.Tensor, ...]) -> GraphSpec:
    """Wrap `model` (already digital, eval, quantizers applied) for export."""
    wrapped, names, output = wrap(model, config)
    text = Record.of(config).text
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} if text else {0: "batch"} for n in names}
    with torch.no_grad():
        ref = wrapped(*sample)
    axes[output] = {0: "batch", 1: "sequence"} if text and ref.dim() >= 3 else {0: "batch"}
    return GraphSpec(wrapped, names, [output], axes)


EXPORTERS = ("torchscript", "dynamo")


def to_onnx(graph: GraphSpec, sample: tuple[torch.Tensor, ...], opset: int,
            exporters: tuple[str, ...] = EXPORTERS) -> tuple[bytes, str, list[str]]:
    """Export to ONNX bytes. The TorchScript exporter first (measured: 2 s for MiniLM against 10 s with
    dynamo, same error); the dynamo exporter only if tracing fails. Returns (bytes, exporter, failures)."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UsageError(f"opset {opset} is not supported", f"pick {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})")
    buf = io.BytesIO()
    errors = []
    for exporter in exporters:
        buf.seek(0)
        buf.truncate()
        try:
            # no torch.no_grad() here: under it nn.MultiheadAttention takes a fused fast path
            # (aten::_native_multi_head_attention) that has no ONNX symbolic
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings about Python control flow are expected
                if exporter == "torchscript":
                    torch.onnx.export(graph.module, sample, buf, input_names=graph.input_names,
                                      output_names=graph.output_names, dynamic_axes=graph.dynamic_axes,
                                      opset_version=opset, do_constant_folding=True, dynamo=False)
                else:
                    dims = {n: {a: torch.export.Dim.AUTO for a in ax} for n, ax in graph.dynamic_axes.items()
                            if n in graph.input_names}
                    program = torch.onnx.export(graph.module, sample, input_names=graph.input_names,
                                                output_names=graph.output_names,
                                                dynamic_shapes=tuple(dims[n] for n in graph.input_names),
                                                opset_version=opset, dynamo=True, verbose=False)
                    with tempfile.TemporaryDirectory() as tmp:
                        program.save(f"{tmp}/model.onnx", external_data=False)
                        return Path(tmp, "model.onnx").read_bytes(), exporter, errors
            return buf.getvalue(), exporter, errors
        except (OperationFailed, UsageError):
            raise
        except Exception as exc:  # each exporter fails in its own ways; report both if both fail
            errors.append(f"{exporter}: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
    raise OperationFailed("ONNX export failed (tried " + "; ".join(errors) + ")",
                          "rerun with ANALOGAI_DEBUG=1; unsupported ops usually need a simpler model definition")


# --- QAT: fake quantizers that export as QuantizeLinear/DequantizeLinear ---------------------------
# Same arithmetic as analog/qat.py (symmetric grids, round half to even, clip then round), written
# with the ops the ONNX exporter turns into QDQ nodes. ONNX QuantizeLinear below opset 21 holds int8,
# so widths above 8 bits are written as Div/Round/Clip/Mul instead (same values, no QDQ node).

QDQ_MAX_BITS = 8


def _qmax(bits: int) -> int:
    return 2 ** (int(bits) - 1) - 1


class _QDQWeight:
    """Per-output-channel symmetric weight quantization, scale max|W_row| / (2^(b-1)-1).

    The weights are fixed at export, so the scales are constants of the graph (standard QDQ format)."""

    def __init__(self, bits: int, weight: torch.Tensor, axis: int = 0):
        self.bits, self.axis = int(bits), int(axis) % weight.dim()
        w = weight.detach()
        dims = [d for d in range(w.dim()) if d != self.axis]
        self.scale = (w.abs().amax(dim=dims) / _qmax(bits)).clamp_min(1e-30).float()
        self.zero = torch.zeros_like(self.scale, dtype=torch.int32)

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        if self.bits <= QDQ_MAX_BITS:
            # |W/scale| <= qmax, so the int8 range never clips: this is exactly the symmetric b-bit grid
            return torch.fake_quantize_per_channel_affine(w, self.scale, self.zero, self.axis, -128, 127)
        shape = [1] * w.dim()
        shape[self.axis] = -1
        s = self.scale.view(shape)
        return torch.round(w / s).clamp(-_qmax(self.bits), _qmax(self.bits)) * s


class _QDQInput:
    """Per-tensor symmetric input quantization, clipped at act_max, scale act_max / (2^(b-1)-1).

    Without a recorded act_max (a quantizer that never saw a batch) the range is each batch's max|x|,
    as in QAT; the scale is then computed in the graph."""

    def __init__(self, bits: int, act_max: float | None):
        if act_max is not None and not act_max > 0:
            raise OperationFailed(f"act_max must be > 0, got {act_max}",
                                  "calibrate the activation ranges again (recover with QAT)")
        self.bits, self.act_max = int(bits), None if act_max is None else float(act_max)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            return x
        n = _qmax(self.bits)
        if self.act_max is not None:
            m: float | torch.Tensor = self.act_max
            # clip first so a_bits < 8 saturates at +-qmax like the QAT quantizer, not at the int8 limits
            x = torch.clamp(x, -self.act_max, self.act_max)
        else:
            m = x.detach().abs().amax().clamp_min(1e-30)
            x = torch.maximum(torch.minimum(x, m), -m)
        if self.bits > QDQ_MAX_BITS:
            return torch.round(x / (m / n)) * (m / n)
        if isinstance(m, float):
            return torch.fake_quantize_per_tensor_affine(x, m / n, 0, -128, 127)
        scale = (m / n).float().reshape(1)
        return torch.fake_quantize_per_tensor_affine(x, scale, torch.zeros(1, dtype=torch.int32), -128, 127)


class _WeightParam(nn.Module):
    """A parametrization: reading `layer.weight` yields the fake-quantized weight (traced as QDQ nodes)."""

    def __init__(self, quantizer: _QDQWeight):
        super().__init__()
        self.quantizer = quantizer

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.quantizer(w)


def _quantize_weight(module: nn.Module, name: str, bits: int, axis: int) -> None:
    from torch.nn.utils import parametrize

    owner_name, _, param = name.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    parametrize.register_parametrization(owner, param, _WeightParam(_QDQWeight(bits, getattr(owner, param), axis)))


def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvNd) and not isinstance(module, nn.modules.conv._ConvTransposeNd)


def _hf_conv1d():
    try:
        from transformers.pytorch_utils import Conv1D
    except Exception:  # transformers absent: no such layers to quantize
        return None
    return Conv1D


def apply_quantization(model: nn.Module, quant: QuantRecord) -> tuple[list[str], list[str]]:
    """Install QDQ fake quantizers as the package's `quantization` section (analog/qat.py) describes.

    Layers under `layers` get weight QDQ (per channel, on `weight_axis`) and input QDQ (per tensor,
    `act_max`). Returns (quantized layer names, notes).
    """
    w_bits, a_bits = quant.w_bits, quant.a_bits
    if not (2 <= w_bits <= 16 and 2 <= a_bits <= 16):
        raise OperationFailed(f"quantization bits w_bits={w_bits}, a_bits={a_bits} are outside 2..16",
                              "the package's quantization section is corrupt; recover again")
    targets = quant.layers
    modules = dict(model.named_modules())
    conv1d = _hf_conv1d()
    done: list[str] = []
    for name, info in sorted(targets.items()):
        info = info or {}
        module = modules.get(name)
        if module is None:
            raise OperationFailed(f"quantization names layer {name!r}, which the model does not have",
                                  "the package's quantization section does not fit its architecture; recover again")
        if isinstance(module, nn.MultiheadAttention):
            # weights only: the attention kernel reads query/key/value directly (as in QAT)
            weights = (("in_proj_weight", "out_proj.weight") if module._qkv_same_embed_dim
                       else ("q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj.weight"))
            quant_input = False
        elif (conv1d is not None and type(module) is conv1d) or type(module) is nn.Linear or _is_conv(module):
            weights, quant_input = ("weight",), True
        else:
            raise OperationFailed(f"cannot export QAT layer {name!r} of type {type(module).__name__} as QDQ",
                                  "QDQ export covers Linear, Conv, MultiheadAttention and Hugging Face Conv1D layers")
        default_axis = 1 if conv1d is not None and type(module) is conv1d else 0
        for weight in weights:
            _quantize_weight(module, weight, w_bits, int(info.get("weight_axis", default_axis)))
        if quant_input:
            q_in = _QDQInput(a_bits, info.get("act_max"))
            module.register_forward_pre_hook(lambda _m, args, q=q_in: (q(args[0]), *args[1:]))
        done.append(name)
    notes = [f"{kind}={bits} > {QDQ_MAX_BITS}: written as Round/Clip ops, not QuantizeLinear "
             f"(ONNX int8 QDQ holds at most {QDQ_MAX_BITS} bits)"
             for kind, bits in (("w_bits", w_bits), ("a_bits", a_bits)) if bits > QDQ_MAX_BITS]
    return done, notes
