"""`export`: a package -> model.onnx (checked numerically with onnxruntime) or an aihwkit checkpoint.

    import analogai_deploy as ad
    result = ad.export("runs/lenet")                    # writes runs/lenet/model.onnx
    print("\\n".join(result.validation.lines()))          # a pass/fail line per output
    ad.export("runs/lenet", to="aihwkit")               # writes runs/lenet/model.aihwkit.pt (ad.to_aihwkit's tiles)

The ONNX graph is the package's model with noise off and its analog layers turned back into digital
ones; a `quantization` section (QAT) becomes QuantizeLinear/DequantizeLinear. Its metadata_props carry
the package metadata under `analogai.*` (`package.flat_metadata`) plus the versions used and the target
device. A mismatch between onnxruntime and PyTorch raises `OperationFailed` and writes nothing.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from .._config import ChoiceConfig, expect
from ..errors import UsageError

Target = Literal["onnx", "aihwkit"]
TARGETS = get_args(Target)
ONNX_FILE = "model.onnx"


@dataclass(frozen=True)
class ExportConfig(ChoiceConfig):
    """How to export (change it with dataclasses.replace).

    to: "onnx" (model.onnx, validated) or "aihwkit" (model.aihwkit.pt, the tile state of `to_aihwkit`'s model).
    opset: ONNX opset (13..20; QDQ needs 13+).
    atol / rtol: validation tolerance; None = the per-model default (tighter for float graphs than QDQ).
    samples: batch of sample inputs for the check (the graph is traced at batch 2, so this also checks
        the dynamic batch axis).
    device: target device recorded in the metadata when the package names none, and the aihwkit device.
    """

    to: Target = "onnx"
    opset: int = 17
    atol: float | None = None
    rtol: float | None = None
    samples: int = 8
    device: str = "PCM"

    _choices = {"to": "export target"}

    def __post_init__(self):
        self.set_choices()
        self.coerce("opset", "atol", "rtol", "samples")
        from .graph import MAX_OPSET, MIN_OPSET

        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise UsageError(f"opset {self.opset} is not supported", f"pick {MIN_OPSET}..{MAX_OPSET} (default 17)")
        if self.samples < 1:
            raise UsageError(f"samples must be >= 1, got {self.samples}")
        if (self.atol is not None and self.atol < 0) or (self.rtol is not None and self.rtol < 0):
            raise UsageError("atol and rtol must be >= 0")


@dataclass
class ExportResult:
    package: Path
    to: str
    file: Path
    exporter: str = ""
    opset: int | None = None
    validation: Any = None  # validate.Validation for ONNX
    metadata: dict[str, str] = field(default_factory=dict)
    quantized_layers: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {"package": str(self.package), "to": self.to, "file": str(self.file), "record": self.record,
               "warnings": self.warnings}
        if self.validation is not None:
            out["validation"] = self.validation.to_dict()
            out["metadata"] = self.metadata
        return out


def export(
    package: str | Path | Any,
    config: ExportConfig | None = None,
    *,
    opset: int | None = None,
    to: str | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    samples: int | None = None,
    device: str | None = None,
    graph_pass: Callable[[Any], None] | None = None,
    output: str | Path | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Export the package at `package` (a folder or a `Package`) and write the result into it.

    Keyword arguments override the fields of `config`. `graph_pass(onnx.ModelProto)` may edit the graph
    in place before validation (custom graph rewrites; a rewrite that changes results is caught).
    `output`: write a copy of the package with the export there instead (for read-only packages); an
    existing package there is replaced only with `overwrite`. Checked before the export runs.
    """
    overrides = {"opset": opset, "to": to, "atol": atol, "rtol": rtol, "samples": samples, "device": device}
    config = ExportConfig.from_dict({**(expect(config, ExportConfig) or ExportConfig()).to_dict(),
                                     **{k: v for k, v in overrides.items() if v is not None}})
    from ..package import check_output

    path = Path(getattr(package, "path", package))
    if output is None or Path(output).resolve() == path.resolve():
        dest = check_output(path, in_place=True)
    else:
        dest = check_output(output, overwrite=overwrite)
    if config.to == "aihwkit":
        return _export_aihwkit(path, config, dest, overwrite)
    return _export_onnx(path, config, graph_pass, dest, overwrite)


def _reference(pkg) -> Any:
    """The package's own analog-aware model, as recover left it (QAT quantizers included), to run with
    noise off: the function the exported graph must reproduce. Call before to_digital(pkg.model)."""
    model = copy.deepcopy(pkg.model).eval()
    from .. import package as package_io

    section = package_io.section(pkg.config, "quantization")
    if section:
        try:
            from ..analog import qat
        except ImportError:  # QAT not available: the exporter's own quantizers are the reference
            return None
        if not qat.is_attached(model):
            qat.restore(model, section)
    return model


def _record_stage(config: dict[str, Any], key: str, record: dict[str, Any]) -> dict[str, Any]:
    from ..provenance import now

    config = copy.deepcopy(config)
    config.setdefault("export", {})[key] = record
    prov = config.setdefault("provenance", {})
    brief = {k: v for k, v in record.items() if k in ("file", "sha256", "opset", "max_abs_error", "device")}
    prov.setdefault("history", []).append({"stage": "export", "time": now(), "to": key, **brief})
    return config


def _export_onnx(path: Path, config: ExportConfig, graph_pass, dest: Path, overwrite: bool) -> ExportResult:
    import hashlib

    import onnx
    import torch

    from .. import package as package_io
    from ..analog.convert import noise_off, to_digital
    from ..provenance import now
    from . import graph as graph_io
    from . import metadata as meta_io
    from . import validate

    pkg = package_io.load(path)
    reference_model = _reference(pkg)
    model = to_digital(pkg.model).eval()
    quant = package_io.section(pkg.config, "quantization")
    quantized, warnings = graph_io.apply_quantization(model, quant) if quant else ([], [])
    inputs, source, note = validate.sample_inputs(pkg.config, config.samples)
    # traced at batch 2 (never 1, which tracing could bake in) and checked at `samples`: the dynamic axis
    trace = tuple(torch.cat([t, t])[:2] for t in inputs)
    graph = graph_io.build(model, pkg.config, trace)
    raw, exporter, failures = graph_io.to_onnx(graph, trace, config.opset)

    proto = onnx.load_from_string(raw)
    if graph_pass is not None:
        graph_pass(proto)
    atol = config.atol  # None: per model, scaled by the output's magnitude
    rtol = config.rtol if config.rtol is not None else validate.FLOAT_TOL[1]
    if reference_model is not None:
        wrapped = graph_io.wrap(reference_model, pkg.config)[0]

        def reference(*xs):
            with noise_off(reference_model):
                return wrapped(*xs)
    else:
        reference = graph.module
    result = validate.compare(proto.SerializeToString(), reference, inputs, graph.input_names,
                              graph.output_names, atol, rtol, source=source, qdq=bool(quantized))
    validate.check(result)  # raises before anything is written

    certificate = pkg.certificate()
    record = {
        "file": ONNX_FILE, "opset": config.opset, "exporter": exporter, "time": now(),
        "inputs": graph.input_names, "outputs": graph.output_names, "dynamic_axes": graph.dynamic_axes,
        "qdq": bool(quantized), "max_abs_error": result.max_abs,
        "validation": {"inputs": source, "batch": result.batch, "atol": [o.atol for o in result.outputs], "rtol": rtol},
    }
    device = meta_io.target_device(pkg.config, certificate, config.device)
    if device != config.device and config.device != ExportConfig().device:
        warnings.append(f"the metadata records the device the package was made for, {device}, not {config.device} "
                        "(the device asked for names the target only of a package with no certificate or recipe device)")
    meta = meta_io.onnx_metadata(pkg.config, certificate, device=device, export=record)
    meta_io.set_onnx_metadata(proto, meta)
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()

    warnings += [note] if note else []
    warnings += [f"{failure}; exported with the {exporter} exporter instead" for failure in failures]
    stale = meta_io.stale_keys(meta_io.read_safetensors_metadata(path / package_io.WEIGHTS), meta)
    if stale:
        warnings.append(f"model.safetensors header disagrees with config.json on {', '.join(stale)} "
                        "(the weights were written before the config changed)")
    new_config = _record_stage(pkg.config, "onnx", {**record, "sha256": hashlib.sha256(data).hexdigest(),
                                                    "target_device": device})
    package_io.write(dest, new_config, files={ONNX_FILE: data}, base=path, overwrite=overwrite)
    return ExportResult(dest, "onnx", dest / ONNX_FILE, exporter, config.opset, result, meta, quantized,
                        new_config["export"]["onnx"], warnings)


def _export_aihwkit(path: Path, config: ExportConfig, dest: Path, overwrite: bool) -> ExportResult:
    import hashlib

    from .. import package as package_io
    from ..provenance import now
    from . import aihwkit_ckpt

    data, record, pkg_config, warnings = aihwkit_ckpt.checkpoint(path, config.device)
    record.update(time=now(), sha256=hashlib.sha256(data).hexdigest())
    if pkg_config.get("quantization"):
        warnings.append("the QAT quantizers are not part of the aihwkit checkpoint (aihwkit models DAC/ADC itself)")
    new_config = _record_stage(pkg_config, "aihwkit", record)
    package_io.write(dest, new_config, files={aihwkit_ckpt.FILE: data}, base=path, overwrite=overwrite)
    return ExportResult(dest, "aihwkit", dest / aihwkit_ckpt.FILE, record=record, warnings=warnings)


__all__ = ["ExportConfig", "ExportResult", "export", "TARGETS"]
