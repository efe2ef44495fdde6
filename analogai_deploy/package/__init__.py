"""The package: a folder in the Hugging Face layout that every stage reads and writes.

    config.json          what the model is and where it came from (source, analog settings, provenance,
                         the sha256 of the weights, and later recipe / quantization / certificate summary).
                         Hugging Face packages: the model's own transformers config, so AutoModel...,
                         AutoTokenizer and pipeline() load the folder as it is, with the toolkit's record
                         under its "analogai" key (`RECORD_KEY`; transformers keeps it as an unused attribute)
    model.safetensors    clean digital weights; the same metadata, flattened, in its header
    README.md            the model card
    certificate.json     after `certify`;  model.onnx after `export`;  tokenizer files for text models

No pickle anywhere. Every write builds the new folder beside the old one and swaps it in, so a crash
leaves either the old package or the complete new one. config.json records every file's sha256 (`files`);
loading checks each one, and a certificate binds the tokenizer it measured with. A package written before
`files` held hashes is checked on what it records (weights, reference, exports) and gets the rest's hashes
at its next write (docs/reliability.md).

Nothing is replaced that the toolkit did not write: `check_output` (run by every command before its slow
part, and by `write` itself) refuses a folder that is not a package, a package that holds anything besides
the files its config.json lists (`files`), an existing package without `overwrite`, and the working
directory, its parents and the home directory.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .. import lock
from ..errors import PackageError, UsageError, no_room
from ..provenance import sha256_file

FORMAT = "analogai-deploy/package"
FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CARD = "README.md"
CERTIFICATE = "certificate.json"
#: a distilled package's reference: the weights it was distilled from (the package before recovery); label-free
#: metrics (cosine, agreement, next-token agreement, perplexity ratio) compare with it, not with the student itself
REFERENCE = "reference.safetensors"
#: Hugging Face packages keep the toolkit's record under this key of the model's transformers config.json
RECORD_KEY = "analogai"
MAX_JSON = 64 * 1024 * 1024  # config.json / certificate.json: a few kB in practice
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit; anything larger is hostile or corrupt
#: what packages written before config.json listed its files (`files`) can hold: these names, and tokenizer files
_KNOWN_FILES = {CONFIG, WEIGHTS, CARD, CERTIFICATE, "certificate.png", "model.onnx", "model.aihwkit.pt", "sweep.csv",
                "sweep.png", "train_log.jsonl", "train_curve.png"}
_TOKENIZER_FILES = re.compile(r"^(tokenizer.*\.json|special_tokens_map\.json|added_tokens\.json|vocab\.(txt|json)|"
                              r"merges\.txt|.*\.model|chat_template\.jinja)$")
#: files a package may hold at its top level besides tokenizer files; nothing else is written or read
_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass
class Package:
    """A package folder, read. `model` is the analog-aware model (noise at the package's default level)."""

    path: Path
    config: dict[str, Any]
    model: nn.Module | None = None
    report: Any = field(default=None, repr=False)
    #: the analog placement (analog.placement.Placement) the model was built with; set by `load`
    placement: Any = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def weights_sha256(self) -> str:
        return self.config["weights"]["sha256"]

    def file(self, name: str) -> Path:
        return self.path / safe_name(name)

    def certificate(self) -> dict[str, Any] | None:
        p = self.path / CERTIFICATE
        return read_json(p) if p.exists() else None


def safe_name(name: str) -> str:
    """A file name inside a package: no folders, no '..', nothing hidden."""
    if not name or name.startswith(".") or not set(name) <= _NAME_OK:
        raise PackageError(f"refusing file name {name!r} in a package", "package files are plain names like model.onnx")
    return name


def read_json(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_JSON:  # checked before reading: a hostile file could be any size
            raise PackageError(f"{path} is {path.stat().st_size} bytes; package JSON files are small "
                               "(corrupt or hostile)")
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PackageError(f"{path.name} missing in {path.parent}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PackageError(f"{path} must hold a JSON object")
    return data


def read_record(path: Path) -> dict[str, Any]:
    """The package record of config.json, in either layout, as every stage sees it. The one place (with
    `_config_json`) that knows the layout: a Hugging Face package's config.json is the transformers config
    with the record under RECORD_KEY, and the record's source["config"] is that transformers config (so
    the record, and every hash over it, is the same in both layouts)."""
    data = read_json(path / CONFIG)
    record = data.get(RECORD_KEY)
    if record is None:
        return data  # the record is the whole file: non-HF packages, and HF packages made before the layout
    if not isinstance(record, dict) or not isinstance(record.get("source"), dict):
        raise PackageError(f"{path / CONFIG} has a malformed {RECORD_KEY!r} section",
                           "fetch the package again, or convert the model again")
    record = dict(record)
    record["source"] = {**record["source"], "config": {k: v for k, v in data.items() if k != RECORD_KEY}}
    return record


def hf_native(config: dict[str, Any]) -> bool:
    """Is this record written in the Hugging Face layout (config.json = the transformers config)?"""
    source = config.get("source") or {}
    return source.get("kind") == "huggingface" and isinstance(source.get("config"), dict)


def _config_json(config: dict[str, Any]) -> dict[str, Any]:
    """What config.json holds for this record (the inverse of `read_record`)."""
    if not hf_native(config):
        return config
    record = dict(config)
    hf_config = record["source"]["config"]
    record["source"] = {k: v for k, v in record["source"].items() if k != "config"}
    return {**hf_config, RECORD_KEY: record}


def read_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_dir():
        _restore_interrupted_swap(path)
    if not path.is_dir():
        raise UsageError(f"no package at {path}", "pass a folder made by `analogai-deploy convert`")
    config = read_record(path)
    if config.get("format") != FORMAT:
        raise PackageError(f"{path / CONFIG} is not an analogai-deploy package config (format {config.get('format')!r})")
    if config.get("format_version") != FORMAT_VERSION:
        raise PackageError(f"{path / CONFIG}: package format version {config.get('format_version')} is not supported "
                           f"(this toolkit reads {FORMAT_VERSION})")
    for key in ("source", "analog", "weights", "input"):
        if not isinstance(config.get(key), dict):
            raise PackageError(f"{path / CONFIG} lacks the {key!r} section")
    if config["weights"].get("file") != WEIGHTS:
        raise PackageError(f"{path / CONFIG} names weights file {config['weights'].get('file')!r}; only {WEIGHTS} is allowed")
    return config


def is_package(path: Path) -> bool:
    """A folder whose config.json says it is an analogai-deploy package (nothing else is parsed)."""
    try:
        return (path / CONFIG).is_file() and read_record(path).get("format") == FORMAT
    except (PackageError, OSError):
        return False


def foreign_entries(path: Path) -> list[str]:
    """What a package folder holds that the toolkit did not write: names outside its config.json `files`
    list (older packages: outside the names the toolkit writes), folders, links and special files."""
    try:
        listed = read_record(path).get("files")
    except (PackageError, OSError):
        listed = None
    ours = set(listed) | {CONFIG} if isinstance(listed, (list, dict)) else None
    out = []
    for f in sorted(path.iterdir()):
        if f.is_symlink() or not f.is_file():
            out.append(f.name + ("/" if f.is_dir() and not f.is_symlink() else ""))
        elif ours is not None and f.name not in ours:
            out.append(f.name)
        elif ours is None and f.name not in _KNOWN_FILES and not _TOKENIZER_FILES.match(f.name):
            out.append(f.name)
    return out


def unlisted_files(path: Path, config: dict[str, Any]) -> list[str]:
    """Files (or links to files, as in a Hub snapshot) in a package folder that its config.json does not list
    (older packages: outside the names the toolkit writes); hidden files are not counted."""
    listed = config.get("files")
    return [f.name for f in sorted(path.iterdir()) if f.is_file() and not f.name.startswith(".")
            and f.name != CONFIG and (f.name not in listed if isinstance(listed, (list, dict)) else
                                      f.name not in _KNOWN_FILES and not _TOKENIZER_FILES.match(f.name))]


def _names(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def check_output(dest: str | Path, *, overwrite: bool = False, in_place: bool = False,
                 flag: str = "-o") -> Path:
    """Refuse a package output that would delete what the toolkit did not write (exit 2, naming it).

    Refused: the working directory, a parent of it, the home directory; a file; a folder that is not a
    package (unless empty); a package that holds anything else (`foreign_entries`); an existing package
    without `overwrite` (`in_place`: the command updates that package, so it may be replaced); a folder
    inside another package; a place that cannot be written (probed now, before any slow work).
    """
    dest = Path(os.path.expanduser(dest))  # ~user that does not exist stays as written
    if len(os.fsencode(dest.name)) > 200:  # the temp folder beside it adds a prefix and a suffix
        raise UsageError(f"the folder name {dest.name[:40]!r}... is too long ({len(os.fsencode(dest.name))} bytes)",
                         f"choose a shorter name for {flag}")
    live = lock.busy(dest, flag)  # another run writing this output now (lock.py)
    if live is not None:
        raise live
    where = dest.resolve()
    cwd = Path.cwd().resolve()
    try:
        home = Path.home().resolve()
    except RuntimeError:  # no HOME and no passwd entry: there is no home directory to protect
        home = None
    if where == cwd or where in cwd.parents or where == home:
        what = "the working directory" if where == cwd else "your home directory" if where == home else \
            "a parent of the working directory"
        raise UsageError(f"refusing to write a package at {dest}: it is {what}, and replacing it would delete "
                         "everything in it", f"name a new folder, e.g. {flag} runs/NAME")
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise UsageError(f"{dest} exists and is not a package folder (a file or a link)",
                         f"choose a new folder for {flag}")
    if dest.is_dir() and any(dest.iterdir()):
        if not is_package(dest):
            raise UsageError(f"{dest} exists and is not an analogai-deploy package (it holds "
                             f"{_names(sorted(f.name for f in dest.iterdir()))}); refusing to replace it",
                             f"choose a new folder for {flag}")
        foreign = foreign_entries(dest)
        if foreign:
            them = "them" if len(foreign) > 1 else "it"
            raise UsageError(f"{dest} holds {_names(foreign)} besides the package; refusing to replace it "
                             f"(that would delete {them})",
                             f"move {them} out of the folder, or write elsewhere ({flag} NEW_FOLDER)")
        if not overwrite and not in_place:
            raise UsageError(f"{dest} already holds a package", f"pass --overwrite to replace it, or choose another {flag}")
    for parent in where.parents:
        if parent.is_dir() and is_package(parent):
            raise UsageError(f"{dest} is inside the package {parent}", f"choose a folder outside it for {flag}")
    check_writable(dest, hint=("pass -o NEW_FOLDER to write a copy of the package elsewhere" if in_place
                               else f"choose a folder you can write to for {flag}"))
    return dest


def check_writable(dest: Path, hint: str) -> None:
    """Can a package be created at `dest` (a temp folder beside it, then a rename)? Probed, not guessed:
    permissions, read-only file systems and root's privileges all answer the same way they will later."""
    parent = Path(os.path.expanduser(dest)).resolve().parent
    while not parent.exists() and not parent.is_symlink():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"cannot create {dest}: {parent} is a file, not a folder", hint)
    try:
        probe = tempfile.mkdtemp(prefix=".analogai-probe-", dir=parent)
    except OSError as exc:
        raise UsageError(f"cannot write into {parent} ({exc.strerror or exc})", hint) from None
    with contextlib.suppress(OSError):
        os.rmdir(probe)


#: the config.json sections that decide what function the weights compute. A certificate binds them by hash
#: (`model_sha256`), so an edit after certification is refused. A helper that adds a model-defining section
#: to config.json adds its key here; a key absent from a package hashes as absent (null).
MODEL_KEYS = ("source", "task", "num_classes", "input", "analog", "placement", "mapping", "quantization", "tokenizer")
#: model-defining sections hashed only where present, so packages made before them keep their model_sha256
OPTIONAL_MODEL_KEYS = ("reference", "labels")


def _json_sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def model_sections(config: dict[str, Any]) -> dict[str, str]:
    """sha256 of each model-defining section (MODEL_KEYS), so a mismatch can name the edited one."""
    return {key: _json_sha256(config.get(key)) for key in _model_keys(config)}


def _model_keys(config: dict[str, Any]) -> tuple[str, ...]:
    return MODEL_KEYS + tuple(k for k in OPTIONAL_MODEL_KEYS if config.get(k) is not None)


def model_sha256(config: dict[str, Any]) -> str:
    """One hash over the model-defining part of config.json (MODEL_KEYS, in that order, then the optional ones
    present)."""
    return _json_sha256([[key, config.get(key)] for key in _model_keys(config)])


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
                               f"{_names(changed)}", "restore the tokenizer as certified: fetch the package "
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
        _verify_reference(path, config)
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
            what = " (the tokenizer: it turns text into the model's inputs)" if _TOKENIZER_FILES.match(name) else ""
            raise PackageError(f"{file} changed after the package was written{what}: its sha256 differs from the "
                               "one in config.json (tampered or corrupt)", _FILE_FIX.get(name, _REFETCH))
    for name in unlisted_files(path, config):
        if name in _KNOWN_FILES or _TOKENIZER_FILES.match(name):
            raise PackageError(f"{path / name} is not one of the files config.json lists: it was added after the "
                               "package was written, and a stage would read it",
                               f"remove it from {path}, or fetch the package again")


def measured_files(path: Path) -> dict[str, str]:
    """sha256 of the files besides the weights and config.json that a certificate's numbers depend on: a text
    package's tokenizer (the reference is bound through config.json's `reference` section)."""
    return {f.name: sha256_file(f) for f in sorted(Path(path).iterdir())
            if f.is_file() and _TOKENIZER_FILES.match(f.name)}


def _verify_reference(path: Path, config: dict[str, Any]) -> Path:
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


def load(path: str | Path, *, verify_hash: bool = True) -> Package:
    """Rebuild the analog-aware model of a package: same weights bit for bit, checked against their sha256."""
    path = Path(path)
    config = read_config(path)
    if verify_hash:
        verify(path, config)
    else:
        check_safetensors(path / WEIGHTS)
    return Package(path, config, *_build(path, config, path / WEIGHTS, config.get("quantization")))


def load_reference(pkg: Package, *, verify_hash: bool = True) -> nn.Module | None:
    """The model a distilled package was distilled from (config.json `reference`), digital, eval mode; None
    for packages without one (their own digital model is their reference). `verify_hash=False` for a package
    `load` has just verified (its `verify` hashed the reference already)."""
    if pkg.config.get("reference") is None:
        return None
    from ..analog.convert import to_digital

    file = _verify_reference(pkg.path, pkg.config) if verify_hash else pkg.path / REFERENCE
    model, _, _ = _build(pkg.path, pkg.config, file, pkg.config["reference"].get("quantization"))
    return to_digital(model).eval()


def _build(path: Path, config: dict[str, Any], weights: Path, quantization: dict[str, Any] | None):
    """(model, conversion report, placement): the architecture config.json names, analog as its placement
    says, with the tensors of `weights`."""
    from ..analog.config import AnalogConfig
    from ..analog.convert import convert
    from ..analog.placement import Placement, plan
    from ..sources import rebuild

    _refuse_bundled_code(path, config["source"])
    model = rebuild(config["source"])
    analog = AnalogConfig.from_dict(config["analog"])
    if "placement" in config:  # the record convert wrote: exactly those modules go analog
        placement = Placement.from_dict(config["placement"])
    else:  # a package made before the record: derive it once, the way convert did then
        placement = plan(model, analog)
        placement.derived = True
    report = convert(model, analog, placement)
    try:
        missing, unexpected = _load_weights(model, weights)
    except Exception as exc:  # safetensors raises its own types for corrupt files
        raise PackageError(f"cannot read {weights}: {_one_line(exc)}",
                           "the weights do not fit config.json; fetch the package again") from None
    if missing or unexpected:
        raise PackageError(f"{weights} does not fit the architecture in config.json "
                           f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
    if quantization:  # QAT: fake-quantizers with their frozen activation ranges
        from ..analog import qat

        qat.restore(model, quantization)
    model.eval()
    return model, report, placement


def _load_weights(model: nn.Module, file: Path):
    """safetensors' load_model, with the module versions torch keeps in state_dict metadata (_state.py)."""
    from safetensors.torch import load_model

    from .._state import with_versions

    original = model.load_state_dict

    def with_metadata(state, *args, **kwargs):
        return original(with_versions(model, state), *args, **kwargs)

    model.load_state_dict = with_metadata  # instance attribute: load_model's one call goes through it
    try:
        return load_model(model, str(file), strict=False)
    finally:
        del model.load_state_dict


def _refuse_bundled_code(path: Path, source: dict[str, Any]) -> None:
    """A local-code source names the user's own model file by absolute path. A package that ships the code
    it asks to run (or names it relatively) came from someone else: loading it would run their code."""
    if source.get("kind") != "local":
        return
    file = Path(str(source.get("file", "")))
    if not file.is_absolute() or path.resolve() in file.resolve().parents:
        raise PackageError(f"{path / CONFIG} asks to run Python code from {file}, which comes with the package",
                           "never load a package that brings its own code; convert the model from code you trust")


def _one_line(exc: Exception) -> str:
    """torch's load_state_dict errors list every mismatch on its own line: count them instead."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    shapes = [line for line in lines if line.startswith("size mismatch")]
    if shapes:
        return f"{len(shapes)} tensors have another shape than the architecture in config.json ({shapes[0]})"
    return lines[0] if lines else type(exc).__name__


def flat_metadata(config: dict[str, Any], certificate: dict[str, Any] | None = None) -> dict[str, str]:
    """The package metadata as flat string -> string under `analogai.` (safetensors header, ONNX metadata_props)."""
    keys = ("source", "task", "num_classes", "labels", "input", "analog", "mapping", "recipe", "quantization")
    out = {f"analogai.{k}": json.dumps(config[k], sort_keys=True) for k in keys if config.get(k) is not None}
    prov = config.get("provenance") or {}
    # No timestamps: the same model, seed and settings give a byte-identical weights file (and sha256).
    out["analogai.provenance"] = json.dumps(
        {"seed": prov.get("seed"), "versions": prov.get("versions"),
         "stages": [h.get("stage") for h in prov.get("history", [])]}, sort_keys=True)
    out["analogai.format"] = f"{FORMAT}/{FORMAT_VERSION}"
    if isinstance(config.get("placement"), dict):
        out["analogai.placement_sha256"] = str(config["placement"].get("sha256", ""))
    if config.get("recipe"):
        out["analogai.recipe_sha256"] = config["recipe"].get("sha256", "")
    if certificate:
        from .card import certificate_summary

        out["analogai.certificate"] = json.dumps(certificate_summary(certificate), sort_keys=True)
    return out


def write(
    dest: str | Path,
    config: dict[str, Any],
    model: nn.Module | None = None,
    files: dict[str, bytes] | None = None,
    *,
    base: str | Path | None = None,
    overwrite: bool = False,
) -> Package:
    """Write a package atomically.

    With `model`, its state_dict becomes model.safetensors and config.json records its sha256. With
    `base`, the files of an existing package are carried over first (e.g. certify adding a certificate);
    `base` == `dest` is an update in place. An existing package at `dest` is replaced only with
    `overwrite` (or in place); anything else there is refused (`check_output`). The README.md model card
    is regenerated from config.json and certificate.json; config.json lists the files (`files`).
    """
    dest = Path(dest)
    with lock.held(dest):  # one writer per output; re-entrant for a caller (recover) that holds it already
        return _write(dest, config, model, files, base=base, overwrite=overwrite)


def _write(dest: Path, config: dict[str, Any], model: nn.Module | None, files: dict[str, bytes] | None, *,
           base: str | Path | None, overwrite: bool) -> Package:
    from safetensors.torch import save_model

    from .card import render

    in_place = base is not None and Path(base).resolve() == dest.resolve()
    check_output(dest, overwrite=overwrite, in_place=in_place)  # in place: refuses a package holding other files
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        if base is not None:
            foreign = set(foreign_entries(Path(base)))  # a copy carries the package, not what lies beside it
            for f in Path(base).iterdir():
                if f.is_file() and f.name not in foreign:
                    shutil.copy2(f, tmp / safe_name(f.name))
        for name, data in (files or {}).items():
            (tmp / safe_name(name)).write_bytes(data)
        config = dict(config)
        config["format"], config["format_version"] = FORMAT, FORMAT_VERSION
        cert_path = tmp / CERTIFICATE
        certificate = read_json(cert_path) if cert_path.exists() else None
        if model is not None:
            state_model = model
            # "format": "pt" as transformers' save_pretrained writes it (transformers 4 refuses a header without it)
            save_model(state_model, str(tmp / WEIGHTS), metadata={**flat_metadata(config, certificate), "format": "pt"})
            _canonicalise_safetensors(tmp / WEIGHTS)
            config["weights"] = {"file": WEIGHTS, "sha256": sha256_file(tmp / WEIGHTS)}
        elif not (tmp / WEIGHTS).exists():
            raise ValueError("write() needs a model or a base package holding model.safetensors")
        (tmp / CARD).write_text(render(config, certificate, dest.name), encoding="utf-8")
        # what this package holds and each file's sha256 (CONFIG itself is implied): `verify` checks every
        # one, and a later write knows what it may replace
        config["files"] = {f.name: sha256_file(f) for f in sorted(tmp.iterdir()) if f.name != CONFIG}
        (tmp / CONFIG).write_text(json.dumps(_config_json(config), indent=2, sort_keys=False) + "\n",
                                  encoding="utf-8")
        _follow_umask(tmp)
        _fsync_tree(tmp)
        _swap(tmp, dest)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = "the package there is kept as it was" if dest.exists() else "nothing was written"
        if (err := no_room(exc, dest, kept)) is not None:  # a full disk: one line naming the output
            raise err from None
        raise
    return Package(dest, config, model)


def migrate(path: str | Path) -> bool:
    """Rewrite a package written in an earlier layout (a Hugging Face package whose config.json is the
    toolkit's record) in today's, in place. Only config.json and the card change: the weights, the
    certificate and the record (so model_sha256, and the certificate's binding) stay as they are.
    Verified first, so nothing tampered is re-written as if it were sound. Returns whether it changed."""
    path = Path(path)
    config = verify(path)
    if read_json(path / CONFIG) == _config_json(config):
        return False
    write(path, config, base=path)
    if read_record(path) != {**config, "files": read_record(path)["files"]}:  # the record survived exactly
        raise PackageError(f"migrating {path} changed its record", "restore the package from a copy")
    verify(path)
    return True


def _canonicalise_safetensors(path: Path) -> None:
    """Rewrite the header with sorted keys: safetensors orders it arbitrarily, and a reproducible run
    should give a byte-identical file (so the same sha256). Tensor offsets are relative to the data
    section, so only the header and its 8-byte-aligned padding change."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (else set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _follow_umask(folder: Path) -> None:
    """mkdtemp makes the folder 0700 and safetensors writes 0600; a package is an ordinary output, so
    it gets the modes every other tool gives under the user's umask (0755 / 0644 for umask 022)."""
    mask = _umask()
    folder.chmod(0o777 & ~mask)
    for f in folder.iterdir():
        if f.is_file():
            f.chmod(0o666 & ~mask)


def _fsync_tree(folder: Path) -> None:
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap(tmp: Path, dest: Path) -> None:
    """Replace dest with tmp. A crash between the two renames leaves only `.NAME.old-*`; reading restores it."""
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.rename(dest, old)
        os.rename(tmp, dest)
        # renamed before deleting: a kill mid-delete must not leave a partial `.old-*` that a read would restore
        trash = dest.parent / f".{dest.name}.trash-{os.getpid()}"
        os.rename(old, trash)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, dest)


def _restore_interrupted_swap(path: Path) -> None:
    olds = sorted(path.parent.glob(f".{path.name}.old-*")) if path.parent.is_dir() else []
    if olds:
        os.rename(olds[-1], path)
