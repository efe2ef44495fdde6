"""The inference graph: the package's model with noise off, analog layers back to digital, QAT
quantizers as QuantizeLinear/DequantizeLinear, wrapped to take named inputs and return tensors.
"""
from __future__ import annotations

import io
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import OperationFailed, UsageError

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
            raise OperationFailed(f"the model returns {type(out).__name__}, not a tensor; ONNX export needs a tensor output",
                                  "wrap the model in a factory that returns the logits tensor")
        return out


def _hf_output(model: nn.Module, task: str) -> str:
    if task.endswith("classification") or task.endswith("-lm"):
        return "logits"
    return "last_hidden_state"


def build(model: nn.Module, config: dict[str, Any], sample: tuple[torch.Tensor, ...]) -> GraphSpec:
    """Wrap `model` (already digital, eval, quantizers applied) for export."""
    spec = config["input"]
    if config["source"].get("kind") == "huggingface":
        names = list(spec.get("names") or (["pixel_values"] if spec.get("kind") == "image" else ["input_ids", "attention_mask"]))
        output = _hf_output(model, config.get("task", ""))
        wrapped: nn.Module = _Named(model, names, output)
    else:
        names, output = ["input"], "logits" if str(config.get("task", "")).endswith("classification") else "output"
        wrapped = _Plain(model)
    wrapped.eval()
    axes: dict[str, dict[int, str]] = {}
    for n in names:
        axes[n] = {0: "batch", 1: "sequence"} if spec.get("kind") == "text" else {0: "batch"}
    with torch.no_grad():
        ref = wrapped(*sample)
    axes[output] = {0: "batch", 1: "sequence"} if spec.get("kind") == "text" and ref.dim() >= 3 else {0: "batch"}
    return GraphSpec(wrapped, names, [output], axes)


def to_onnx(graph: GraphSpec, sample: tuple[torch.Tensor, ...], opset: int) -> tuple[bytes, str, list[str]]:
    """Export to ONNX bytes. The TorchScript exporter first (measured: 2 s for MiniLM against 10 s with
    dynamo, same error); the dynamo exporter only if tracing fails. Returns (bytes, exporter, failures)."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UsageError(f"opset {opset} is not supported", f"pick {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})")
    buf = io.BytesIO()
    errors = []
    for exporter in ("torchscript", "dynamo"):
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
    raise OperationFailed("ONNX export failed with both exporters (" + "; ".join(errors) + ")",
                          "rerun with ANALOGAI_DEBUG=1; unsupported ops usually need a simpler model definition")


# --- QAT: fake quantizers that export as QuantizeLinear/DequantizeLinear ---------------------------

def _qmax(bits: int) -> int:
    return 2 ** (int(bits) - 1) - 1


class _QDQWeight:
    """Per-output-channel symmetric weight quantization, scale max|W_row| / (2^(b-1)-1).

    The weights are fixed at export, so the scales are constants of the graph (standard QDQ format)."""

    def __init__(self, bits: int, weight: torch.Tensor):
        if not 2 <= bits <= 8:
            raise UsageError(f"w_bits={bits} cannot be exported as ONNX QuantizeLinear", "ONNX int8 QDQ holds 2..8 bits")
        w = weight.detach()
        self.scale = (w.abs().flatten(1).amax(1) / _qmax(bits)).clamp_min(1e-12).float()
        self.zero = torch.zeros_like(self.scale, dtype=torch.int32)

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        # |W/scale| <= qmax, so the int8 range never clips: this is exactly the symmetric b-bit quantizer
        return torch.fake_quantize_per_channel_affine(w, self.scale, self.zero, 0, -128, 127)


class _QDQInput:
    """Per-tensor symmetric activation quantization, clipped at act_max, scale act_max / (2^(b-1)-1)."""

    def __init__(self, bits: int, act_max: float):
        if not 2 <= bits <= 8:
            raise UsageError(f"a_bits={bits} cannot be exported as ONNX QuantizeLinear", "ONNX int8 QDQ holds 2..8 bits")
        if not act_max > 0:
            raise UsageError(f"act_max must be > 0, got {act_max}", "calibrate the activation range again (recover with QAT)")
        self.act_max, self.scale = float(act_max), float(act_max) / _qmax(bits)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # clip first so a_bits < 8 saturates at +-qmax like the QAT quantizer, not at the int8 limits
        x = torch.clamp(x, -self.act_max, self.act_max)
        return torch.fake_quantize_per_tensor_affine(x, self.scale, 0, -128, 127)


class _QuantLinear(nn.Linear):
    def forward(self, x):
        return F.linear(self.qdq_in(x) if self.qdq_in else x, self.qdq_w(self.weight), self.bias)


class _QuantConv(nn.Module):
    def forward(self, x):
        return self._conv_forward(self.qdq_in(x) if self.qdq_in else x, self.qdq_w(self.weight), self.bias)


def apply_quantization(model: nn.Module, quant: dict[str, Any], analog_names: list[str]) -> list[str]:
    """Install QDQ fake quantizers on the layers named in the package's `quantization` section.

    Layers listed under `layers` get weight QDQ and, when they carry `act_max`, input QDQ; without a
    `layers` map every formerly analog layer gets weight QDQ. Returns the names of quantized layers.
    """
    try:
        w_bits, a_bits = int(quant.get("w_bits", 8)), int(quant.get("a_bits", 8))
    except (TypeError, ValueError):
        raise UsageError(f"bad quantization section {quant!r}", "w_bits and a_bits must be integers") from None
    layers = quant.get("layers")
    targets = dict(layers) if isinstance(layers, dict) else {n: {} for n in analog_names}
    modules = dict(model.named_modules())
    done = []
    for name, info in sorted(targets.items()):
        module = modules.get(name)
        if module is None:
            raise OperationFailed(f"quantization names layer {name!r}, which the model does not have",
                                  "the package's quantization section does not fit its architecture; recover again")
        if type(module) is nn.Linear:
            module.__class__ = type("QuantLinear", (_QuantLinear,), {})
        elif isinstance(module, nn.modules.conv._ConvNd) and not isinstance(module, nn.modules.conv._ConvTransposeNd):
            module.__class__ = type(f"Quant{type(module).__name__}", (_QuantConv, type(module)), {})
        else:
            raise OperationFailed(f"cannot export QAT layer {name!r} of type {type(module).__name__} as QDQ",
                                  "only Linear and Conv layers have QDQ export")
        module.qdq_w = _QDQWeight(w_bits, module.weight)
        act_max = (info or {}).get("act_max")
        module.qdq_in = _QDQInput(a_bits, float(act_max)) if act_max is not None else None
        done.append(name)
    return done
