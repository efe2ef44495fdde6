"""Every export is checked: onnxruntime runs sample inputs and its outputs are compared with PyTorch's.

Like optimum's `validate_model_outputs`: per output, the max absolute and relative error against a
tolerance (|ort - torch| <= atol + rtol * |torch| everywhere), and one pass/fail line each.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from ..errors import OperationFailed

#: default tolerance (atol, rtol): onnxruntime and PyTorch are fp32 rounding apart. The default atol is
#: per model: 1e-4 times the output's magnitude (max|torch|, at least 1), because rounding errors
#: accumulate in proportion to the values summed, also in elements that end up near zero.
FLOAT_TOL = (1e-4, 1e-3)
#: QDQ graphs, same tolerance: an fp32 rounding difference just before a quantizer can flip one value to
#: the next level, so a small share of output elements may be off by about one step (a broken graph moves
#: nearly all of them). They are compared with onnxruntime's graph optimizations off (its QDQ fusions into
#: integer kernels re-round legitimately); the optimized session's prediction agreement is reported beside.
QDQ_OUTSIDE = 0.01


@dataclass
class OutputCheck:
    name: str
    shape: list[int]
    max_abs: float
    max_rel: float
    atol: float
    rtol: float
    passed: bool
    agreement: float | None = None  # share of samples whose argmax (prediction) is the same, for logits
    outside: float = 0.0  # share of elements beyond atol + rtol * |ref|
    allowed: float = 0.0  # share allowed (QDQ rounding-boundary flips; 0 for float graphs)
    optimized_agreement: float | None = None  # QDQ: predictions of onnxruntime with all graph optimizations

    def line(self) -> str:
        word = "PASS" if self.passed else "FAIL"
        text = (f"{word} {self.name} {tuple(self.shape)}: max abs err {self.max_abs:.3g} (atol {self.atol:.3g}), "
                f"max rel err {self.max_rel:.3g} (rtol {self.rtol:g})")
        if self.allowed or (self.outside and not self.passed):
            text += f", {self.outside:.2%} of elements beyond tolerance (allowed {self.allowed:.2%})"
        if self.agreement is not None:
            text += f", predictions agree {self.agreement:.1%}"
        if self.optimized_agreement is not None:
            text += f" ({self.optimized_agreement:.1%} with onnxruntime's integer QDQ kernels)"
        return text


@dataclass
class Validation:
    inputs: str  # where the sample inputs came from
    batch: int
    outputs: list[OutputCheck] = field(default_factory=list)
    note: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and all(o.passed for o in self.outputs)

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    def lines(self) -> list[str]:
        return [o.line() for o in self.outputs]

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "batch": self.batch, "passed": self.passed, "max_abs": self.max_abs,
                "outputs": [asdict(o) for o in self.outputs]}


def sample_inputs(config: dict[str, Any], n: int, seed: int = 0) -> tuple[tuple[torch.Tensor, ...], str, str]:
    """(inputs, where they came from, a note) for a package: its dataset's test images when
    config["data"]["spec"] names one that loads here, else inputs generated from config["input"]."""
    spec = config["input"]
    data_spec = (config.get("data") or {}).get("spec")
    note = ""
    if data_spec and spec.get("kind") == "image":
        from ..data import load
        from ..errors import AnalogAIError

        try:
            data = load(data_spec, input_shape=spec.get("shape"))
            test = data.test
            x = torch.stack([test[i][0] for i in range(min(n, len(test)))])
            return (x.float(),), f"dataset {data_spec} (test split, {len(x)} samples)", note
        except AnalogAIError as exc:
            note = f"dataset {data_spec} is not available here ({exc.message}); using generated inputs"
    elif data_spec:
        note = f"dataset {data_spec} does not give {spec.get('kind')} inputs; using generated inputs"
    g = torch.Generator().manual_seed(seed)
    if spec.get("kind") == "text":
        seq = int(spec.get("seq_len") or 32)
        vocab = int(spec.get("vocab_size") or 1000)
        ids = torch.randint(0, vocab, (n, seq), generator=g)
        lengths = torch.randint(max(1, seq // 4), seq + 1, (n,), generator=g)
        mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()  # padded sequences of several lengths
        tensors = {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
        names = spec.get("names") or ["input_ids", "attention_mask"]
        missing = [name for name in names if name not in tensors]
        if missing:
            raise OperationFailed(f"cannot generate sample inputs named {missing}",
                                  "record a dataset in the package (recover with `data=...`)")
        return tuple(tensors[name] for name in names), f"generated token ids ({n} x {seq}, padded)", note
    shape = spec.get("shape")
    if not shape:
        raise OperationFailed("the package's input spec has no shape", "convert again with `input_shape=C,H,W`")
    return (torch.randn(n, *shape, generator=g),), f"generated N(0,1) images ({n} x {list(shape)})", note


def compare(onnx_bytes: bytes, reference: Callable[..., Any], inputs: tuple[torch.Tensor, ...], input_names: list[str],
            output_names: list[str], atol: float | None, rtol: float, *, source: str = "given inputs",
            qdq: bool = False) -> Validation:
    """Run the ONNX graph in onnxruntime and the reference in PyTorch on `inputs`; never raises on mismatch
    (see `check`). `atol=None`: the per-model default (see FLOAT_TOL). `qdq`: judge as a quantized graph
    (see QDQ_OUTSIDE)."""
    base_atol = atol
    feeds = {n: t.numpy() for n, t in zip(input_names, inputs)}
    got = _run(onnx_bytes, output_names, feeds, optimize=not qdq)
    optimized = _run(onnx_bytes, output_names, feeds, optimize=True) if qdq else None
    allowed = QDQ_OUTSIDE if qdq else 0.0
    with torch.no_grad():
        ref = reference(*inputs)
    refs = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    result = Validation(source, int(inputs[0].shape[0]))
    for i, (name, o, r) in enumerate(zip(output_names, got, refs)):
        r = r.detach().float().numpy()
        o = np.asarray(o, dtype=np.float32)
        scale = max(1.0, float(np.abs(r).max())) if r.size else 1.0
        atol = base_atol if base_atol is not None else FLOAT_TOL[0] * scale
        if o.shape != r.shape:
            inf = float("inf")
            result.outputs.append(OutputCheck(name, list(o.shape), inf, inf, atol, rtol, False, outside=1.0))
            continue
        diff = np.abs(o - r)
        finite = bool(np.isfinite(o).all() and np.isfinite(r).all())
        max_abs = float(diff.max()) if diff.size else 0.0
        max_rel = float((diff / np.maximum(np.abs(r), 1e-12)).max()) if diff.size else 0.0
        outside = float((diff > atol + rtol * np.abs(r)).mean()) if diff.size else 0.0
        passed = finite and outside <= allowed
        agreement = opt_agreement = None
        if name == "logits" and r.ndim == 2:
            agreement = float((o.argmax(-1) == r.argmax(-1)).mean())
            if optimized is not None:
                opt_agreement = float((np.asarray(optimized[i]).argmax(-1) == r.argmax(-1)).mean())
        result.outputs.append(OutputCheck(name, list(o.shape), max_abs, max_rel, atol, rtol, passed, agreement,
                                          outside, allowed, opt_agreement))
    return result


def _run(onnx_bytes: bytes, output_names: list[str], feeds: dict[str, np.ndarray], optimize: bool) -> list:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    return session.run(output_names, feeds)


def check(result: Validation) -> Validation:
    """Raise OperationFailed unless every output passed."""
    if not result.passed:
        failed = "; ".join(o.line() for o in result.outputs if not o.passed)
        exc = OperationFailed(f"onnxruntime does not match PyTorch: {failed}",
                              "nothing was written; loosen --atol/--rtol only if the error is benign")
        exc.validation_lines = result.lines()  # the CLI prints every output's line, passing ones too
        raise exc
    return result
