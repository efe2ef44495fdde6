"""The `analogai.*` metadata of exported files: write it into ONNX, read it back from ONNX or safetensors.

The schema is `package.flat_metadata` (one schema, written into config.json, the safetensors header and the
ONNX metadata_props); export adds the versions it ran with and the target device.
"""
from __future__ import annotations

import json
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

    header = check_safetensors(Path(path))
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise PackageError(f"{path} has a malformed __metadata__ map in its header")
    return dict(meta)


def verify_file(path: str | Path) -> tuple[Path, list[str], list[str]]:
    """What `inspect` checks before it shows anything: (the file shown, checks passed, warnings).

    A package folder: every file against its sha256 in config.json, the certificate's binding (weights,
    model_sha256, tokenizer), then model.safetensors is shown. A model.safetensors: its header's structure (every
    tensor's dtype, shape and data_offsets, the data tiled exactly) and, inside a package, its sha256
    against config.json. A model.onnx inside a package: its sha256 against the export record. Raises
    PackageError naming what differs."""
    from .. import package as pkgio
    from ..provenance import sha256_file

    path = Path(path)
    checks: list[str] = []
    warnings: list[str] = []
    if path.is_dir():
        config = pkgio.read_config(path)
        pkgio.verify(path, config)
        checks.append("model.safetensors matches the sha256 in config.json")
        bound = [name for name, _ in pkgio.recorded_files(config)]
        if bound:
            checks.append(f"{len(bound)} files match their sha256 in config.json ({', '.join(bound)})")
        unbound = pkgio.unbound_files(path, config)
        if unbound:
            warnings.append(f"an older package: config.json records no sha256 for {', '.join(unbound)}; the next "
                            "stage that writes the package (e.g. certify) records them as they are now")
        if (path / pkgio.CERTIFICATE).exists():
            cert = pkgio.read_json(path / pkgio.CERTIFICATE)
            checks.append("certificate.json names these weights" + (
                " and this config.json (model_sha256)" if cert.get("model_sha256")
                else " (an older certificate: it does not name the config)")
                + (" and the tokenizer it measured with" if cert.get("files_sha256") else ""))
        path = path / pkgio.WEIGHTS
    elif not path.is_file():
        raise UsageError(f"no file at {path}", "pass a model.onnx, a model.safetensors or a package folder")
    package = path.parent if pkgio.is_package(path.parent) else None
    config = pkgio.read_config(package) if package is not None else {}
    if path.suffix == ".safetensors":
        header = pkgio.check_safetensors(path)
        checks.append(f"safetensors header: {len([k for k in header if k != '__metadata__'])} tensors, each with a "
                      "known dtype, its shape and data_offsets that tile the data exactly")
        if package is not None and path.name == pkgio.WEIGHTS:
            if sha256_file(path) != config["weights"].get("sha256"):
                raise PackageError(f"{path} does not match the sha256 recorded in {package / pkgio.CONFIG} "
                                   "(a byte changed: tampered or corrupt)",
                                   "fetch the package again; never load weights you cannot verify")
            if "model.safetensors matches the sha256 in config.json" not in checks:
                checks.append("sha256 matches config.json")
        else:
            warnings.append(f"{path} is not inside a package: its sha256 cannot be checked against a config.json")
    elif path.suffix == ".onnx":
        record = ((config.get("export") or {}).get("onnx") or {}) if package is not None else {}
        if record.get("sha256") and path.name == record.get("file"):
            if sha256_file(path) != record["sha256"]:
                raise PackageError(f"{path} does not match the sha256 that export recorded in "
                                   f"{package / pkgio.CONFIG} (a byte changed: tampered or corrupt)",
                                   "export the package again")
            checks.append("sha256 matches the export record in config.json")
        else:
            warnings.append(f"{path} has no export record beside it: its sha256 cannot be checked")
    return path, checks, warnings


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
