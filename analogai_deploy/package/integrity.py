"""Integrity of a package: every file bound by its sha256 in config.json, the weights' safetensors structure
checked before a tensor is read, and a certificate bound to the weights, the model-defining record and the
tokenizer it measured with. A package written before `files` held hashes is checked on what it records
(weights, reference, exports) and gets the rest's hashes at its next write (docs/reliability.md).
"""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

from ..errors import PackageError
from ..provenance import sha256_file, sha256_json
from .format import (CARD, CERTIFICATE, CONFIG, KNOWN_FILES, MAX_HEADER, REFERENCE, TOKENIZER_FILES, WEIGHTS,
                     read_config, read_json, safe_name, short_list, unlisted_files)

#: the config.json sections that decide what function the weights compute. A certificate binds them by hash
#: (`model_sha256`), so an edit after certification is refused. A helper that adds a model-defining section
#: to config.json adds its key here; a key absent from a package hashes as absent (null).
MODEL_KEYS = ("source", "task", "num_classes", "input", "analog", "placement", "mapping", "quantization", "tokenizer")


#: model-defining sections hashed only where present, so packages made before them keep their model_sha256
OPTIONAL_MODEL_KEYS = ("reference", "labels")


def model_sections(config: dict[str, Any]) -> dict[str, str]:
    """sha256 of each model-defining section (MODEL_KEYS), so a mismatch can name the edited one."""
    return {key: sha256_json(config.get(key)) for key in _model_keys(config)}


def _model_keys(config: dict[str, Any]) -> tuple[str, ...]:
    return MODEL_KEYS + tuple(k for k in OPTIONAL_MODEL_KEYS if config.get(k) is not None)


def model_sha256(config: dict[str, Any]) -> str:
    """One hash over the model-defining part of config.json (MODEL_KEYS, in that order, then the optional ones
    present)."""
    return sha256_json([[key, config.get(key)] for key in _model_keys(config)])


def check_certificate_binding(path: Path, config: dict[str, Any], certificate: dict[str, Any],
                              *, required: bool = False) -> None:
    """The certificate names these weights (sha256) and this model (model_sha256 of config.json).
    `required`: a certificate from before the model binding is refused too (the zoo needs it)."""
    cert = path / CERTIFICATE
    if certificate.get("weights_sha256") != config["weights"].get("sha256"):
        raise PackageError(f"{cert} was issued for other weights (sha256 mismatch)", "certify the package again")
    measured = certificate.get("files_sha256")
    if isinstance(measured, dict):  # certificates made before it bind no tokenizer: they stay valid
        now = measured_files(path)
        changed = [f"{n} ({'missing' if n not in now else 'added' if n not in measured else 'changed'})"
                   for n in sorted(set(measured) | set(now)) if measured.get(n) != now.get(n)]
        if changed:
            raise PackageError(f"the tokenizer of {path} is not the one {CERTIFICATE} measured with: "
                               f"{short_list(changed)}", "restore the tokenizer as certified: fetch the package "
                               "again (every stage refuses it until then, certify too)")
    recorded = certificate.get("model_sha256")
    if recorded is None:
        if required:
            raise PackageError(f"{cert} does not name the model it certified (no model_sha256: made by an older "
                               "analogai-deploy)", f"certify {path} again")
        return
    if recorded != model_sha256(config):
        sections = certificate.get("model_sections") or {}
        now = model_sections(config)
        edited = [k for k in MODEL_KEYS if k in sections and sections[k] != now[k]]
        edited += [k for k in OPTIONAL_MODEL_KEYS if sections.get(k) != now.get(k)]
        what = f"its {', '.join(edited)}" if edited else "its model-defining part"
        raise PackageError(f"{path / CONFIG} was edited after certification ({what} differs from what "
                           f"{CERTIFICATE} certified)", "restore the package as certified, or certify it again")


#: bytes per element of each safetensors dtype
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def check_safetensors(path: Path) -> dict[str, Any]:
    """Structural check of a safetensors file before any tensor is read: the header length is sane and
    inside the file, the header is a JSON object, and every tensor entry has exactly a known dtype, a shape
    and data_offsets that match its size, with the entries tiling the data section exactly. Returns the
    header. (A changed byte in the tensor data keeps this structure: the sha256 in config.json finds it.)"""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            (n,) = struct.unpack("<Q", raw) if len(raw) == 8 else (None,)
            text = f.read(n) if n is not None and n <= MAX_HEADER and 8 + n <= size else b""
    except FileNotFoundError:
        raise PackageError(f"{path.name} missing in {path.parent}") from None
    if n is None:
        raise PackageError(f"{path} is truncated (no safetensors header)")
    if n > MAX_HEADER or 8 + n > size:
        raise PackageError(f"{path} has a corrupt or oversized safetensors header ({n} bytes, file {size})")
    try:
        header = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"{path} has a corrupt safetensors header (not JSON: {exc})") from None
    if not isinstance(header, dict):
        raise PackageError(f"{path} has a corrupt safetensors header (not a JSON object)")
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise PackageError(f"{path} has a malformed __metadata__ map in its header")
            continue
        problem = _tensor_entry_problem(entry)
        if problem:
            raise PackageError(f"{path} has a corrupt safetensors header: tensor {name!r} {problem}",
                               "the file was changed after it was written; fetch the package again")
        spans.append((entry["data_offsets"][0], entry["data_offsets"][1], name))
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            raise PackageError(f"{path} has a corrupt safetensors header: tensor {name!r} starts at byte {begin} "
                               f"of the data, not {end} (overlapping or missing data)")
        end = stop
    if 8 + n + end != size:
        raise PackageError(f"{path} has a corrupt safetensors header: its tensors cover {end} bytes, the file holds "
                           f"{size - 8 - n} (truncated or padded)")
    return header


def _tensor_entry_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return "is not an object"
    if set(entry) != {"dtype", "shape", "data_offsets"}:
        extra = sorted(set(entry) - {"dtype", "shape", "data_offsets"})
        missing = sorted({"dtype", "shape", "data_offsets"} - set(entry))
        return (f"has unknown field(s) {', '.join(map(repr, extra))}" if extra else "") + \
            (" and " if extra and missing else "") + (f"lacks {', '.join(missing)}" if missing else "")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in _DTYPE_BYTES:
        return f"has an unknown dtype {dtype!r}"
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        return f"has a malformed shape {shape!r}"
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(
            isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)):
        return f"has malformed data_offsets {offsets!r}"
    numel = 1
    for d in shape:
        numel *= d
    if offsets[1] - offsets[0] != numel * _DTYPE_BYTES[dtype]:
        return f"spans {offsets[1] - offsets[0]} bytes, but {dtype} {shape} needs {numel * _DTYPE_BYTES[dtype]}"
    return None


def verify(path: str | Path, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check every file against its sha256 in config.json (`check_files`; the weights and the reference
    structurally too) and the certificate's binding, if there is one. Raises PackageError naming the file."""
    path = Path(path)
    config = config or read_config(path)
    weights = path / WEIGHTS
    check_safetensors(weights)
    actual = sha256_file(weights)
    if actual != config["weights"].get("sha256"):
        raise PackageError(
            f"{weights} does not match the sha256 recorded in config.json (tampered or corrupt)",
            "fetch the package again; never load weights you cannot verify",
        )
    verified = {WEIGHTS: actual}
    if config.get("reference") is not None:
        verify_reference(path, config)
        verified[REFERENCE] = config["reference"]["sha256"]
    cert = path / CERTIFICATE
    if cert.exists():  # first: what it names (weights, model, tokenizer) says more than its own sha256
        check_certificate_binding(path, config, read_json(cert))
    check_files(path, config, verified)
    return config


#: what to do when a file differs from its sha256 in config.json, by file
_REFETCH = "fetch the package again; never use files you cannot verify"
#: (no stage re-exports in place from a package that fails its own check: the fix is always the intact copy)
_FILE_FIX = {"model.onnx": "fetch the package again, or export again from the package before its export "
                           "(analogai-deploy export SRC -o NEW)",
             "model.aihwkit.pt": "never load it: it is not the file export wrote; fetch the package again, or export "
                                 "again from the package before its export (export SRC --to aihwkit -o NEW)",
             CARD: "restore README.md as it was written, or fetch the package again (the card states the certified "
                   "numbers, so it is bound like every other file)"}


def recorded_files(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(file, sha256) pairs config.json binds: `files` (every file but config.json), and the export records
    (`export.onnx`, `export.aihwkit`), which packages written before `files` held hashes already carry."""
    pairs: list[tuple[str, str]] = []
    listed = config.get("files")
    if isinstance(listed, dict):
        for name, digest in listed.items():
            if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise PackageError(f"config.json records a malformed sha256 for {name!r}", _REFETCH)
            pairs.append((safe_name(name), digest))
    for record in (config.get("export") or {}).values():
        if isinstance(record, dict) and isinstance(record.get("file"), str) and isinstance(record.get("sha256"), str):
            pairs.append((safe_name(record["file"]), record["sha256"]))
    return list(dict.fromkeys(pairs))


def unbound_files(path: Path, config: dict[str, Any]) -> list[str]:
    """Files of an older package (written before config.json recorded every file's sha256) that no sha256
    binds yet; the package's next write records theirs."""
    bound = {name for name, _ in recorded_files(config)} | {CONFIG, WEIGHTS}
    if config.get("reference") is not None:
        bound.add(REFERENCE)
    unlisted = unlisted_files(path, config)
    return sorted(f.name for f in path.iterdir() if f.is_file() and not f.name.startswith(".")
                  and f.name not in bound and f.name not in unlisted)


def check_files(path: Path, config: dict[str, Any], verified: dict[str, str] | None = None) -> None:
    """Every file config.json binds (`recorded_files`) is there with its sha256, and no file a stage reads
    (a tokenizer file, model.onnx, ...) lies in the folder unlisted. Raises PackageError naming the file.
    `verified`: files already hashed by the caller (name -> sha256)."""
    hashed = dict(verified or {})  # each file is read once, however many records name it
    for name, digest in recorded_files(config):
        file = path / name
        if not file.is_file():
            raise PackageError(f"{file} is missing: config.json lists it (sha256 {digest[:12]}...)",
                               "fetch the whole package again")
        if name not in hashed:
            hashed[name] = sha256_file(file)
        if hashed[name] != digest:
            what = " (the tokenizer: it turns text into the model's inputs)" if TOKENIZER_FILES.match(name) else ""
            raise PackageError(f"{file} changed after the package was written{what}: its sha256 differs from the "
                               "one in config.json (tampered or corrupt)", _FILE_FIX.get(name, _REFETCH))
    for name in unlisted_files(path, config):
        if name in KNOWN_FILES or TOKENIZER_FILES.match(name):
            raise PackageError(f"{path / name} is not one of the files config.json lists: it was added after the "
                               "package was written, and a stage would read it",
                               f"remove it from {path}, or fetch the package again")


def measured_files(path: Path) -> dict[str, str]:
    """sha256 of the files besides the weights and config.json that a certificate's numbers depend on: a text
    package's tokenizer (the reference is bound through config.json's `reference` section)."""
    return {f.name: sha256_file(f) for f in sorted(Path(path).iterdir())
            if f.is_file() and TOKENIZER_FILES.match(f.name)}


def verify_reference(path: Path, config: dict[str, Any]) -> Path:
    ref = config["reference"]
    if not isinstance(ref, dict) or ref.get("file") != REFERENCE or not isinstance(ref.get("sha256"), str):
        raise PackageError(f"{path / CONFIG} has a malformed reference section",
                           "fetch the package again, or recover it again from its source")
    file = path / REFERENCE
    if not file.is_file():
        raise PackageError(f"{file} is missing: config.json says the package was distilled from it",
                           "fetch the whole package again (its label-free certificates compare with that model)")
    check_safetensors(file)
    if sha256_file(file) != ref["sha256"]:
        raise PackageError(f"{file} does not match the sha256 recorded in config.json (tampered or corrupt)",
                           "fetch the package again; never load weights you cannot verify")
    return file
