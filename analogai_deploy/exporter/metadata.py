"""The `analogai.*` metadata of exported files: write it into ONNX, read it back from ONNX or safetensors.

The schema is `package.flat_metadata` (one schema, written into config.json, the safetensors header and the
ONNX metadata_props); export adds the versions it ran with and the target device.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from ..errors import PackageError, UsageError

PREFIX = "analogai."
#: keys that describe the weights themselves; the safetensors header must agree with the ONNX on these
WEIGHT_KEYS = ("analogai.source", "analogai.task", "analogai.num_classes", "analogai.input", "analogai.analog",
               "analogai.recipe", "analogai.recipe_sha256", "analogai.quantization", "analogai.format")


def export_versions() -> dict[str, str | None]:
    from ..provenance import TOOLKIT, version_of

    return {name: version_of(name) for name in (TOOLKIT, "torch", "aihwkit", "onnx", "onnxruntime")}


def target_device(config: dict[str, Any], certificate: dict[str, Any] | None, default: str) -> str:
    """The device the model was made for: the certified one, else the recipe's, else `default`."""
    if certificate and (certificate.get("device") or {}).get("name"):
        return str(certificate["device"]["name"])
    resolved = (config.get("recipe") or {}).get("resolved") or {}
    device = ((resolved.get("inference") or {}).get("platform") or {}).get("aihwkit", {}).get("device")
    return str(device) if device else default


def onnx_metadata(config: dict[str, Any], certificate: dict[str, Any] | None, *, device: str,
                  export: dict[str, Any]) -> dict[str, str]:
    from ..package import flat_metadata

    meta = flat_metadata(config, certificate)
    meta["analogai.versions"] = json.dumps(export_versions(), sort_keys=True)
    meta["analogai.target_device"] = device
    meta["analogai.export"] = json.dumps(export, sort_keys=True)
    return meta


def set_onnx_metadata(model, meta: dict[str, str]) -> None:
    """Replace the model's analogai.* metadata_props with `meta` (other props are kept)."""
    keep = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    for key, value in keep + sorted(meta.items()):
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The header's __metadata__ map, read without touching the tensors."""
    from ..package import check_safetensors

    path = Path(path)
    check_safetensors(path)
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"{path} has a corrupt safetensors header: {exc}") from None
    meta = header.get("__metadata__") or {} if isinstance(header, dict) else {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise PackageError(f"{path} has a malformed __metadata__ map in its header")
    return dict(meta)


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises its own DecodeError types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PackageError(f"{path} is not a readable ONNX model: {reason}") from None
    return {p.key: p.value for p in model.metadata_props}


def read_metadata(path: str | Path) -> dict[str, str]:
    """All metadata of a model.onnx or model.safetensors (by content, not only by suffix)."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a folder", f"pass a file: {path / 'model.onnx'} or {path / 'model.safetensors'}")
    if not path.is_file():
        raise UsageError(f"no file at {path}", "pass a model.onnx or model.safetensors")
    if path.suffix == ".safetensors":
        return read_safetensors_metadata(path)
    if path.suffix == ".onnx":
        return read_onnx_metadata(path)
    raise UsageError(f"cannot inspect {path.name}: only .onnx and .safetensors files carry analog metadata",
                     "pass model.onnx or model.safetensors from a package")


def analog_only(meta: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in sorted(meta.items()) if k.startswith(PREFIX)}


def decoded(meta: dict[str, str]) -> dict[str, Any]:
    """Values parsed as JSON where they are JSON (the schema JSON-encodes structured values)."""
    out: dict[str, Any] = {}
    for key, value in meta.items():
        try:
            out[key] = json.loads(value)
        except (json.JSONDecodeError, TypeError):
            out[key] = value
    return out


def stale_keys(safetensors_meta: dict[str, str], onnx_meta: dict[str, str]) -> list[str]:
    """Weight-describing keys on which the safetensors header and the ONNX metadata disagree."""
    return [k for k in WEIGHT_KEYS if safetensors_meta.get(k) != onnx_meta.get(k)]
