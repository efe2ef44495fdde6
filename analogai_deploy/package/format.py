"""The package format: the names of its files, config.json read in either layout, and the typed view of it.

    config.json          what the model is and where it came from (source, analog settings, provenance,
                         the sha256 of the weights, and later recipe / quantization / certificate summary).
                         Its typed sections (`SECTIONS`) are stored as {"_type", "_version", "_data"}
                         (older packages: the bare dict) and read through `section`.
                         Hugging Face packages: the model's own transformers config, so AutoModel...,
                         AutoTokenizer and pipeline() load the folder as it is, with the toolkit's record
                         under its "analogai" key (`RECORD_KEY`; transformers keeps it as an unused attribute)
    model.safetensors    clean digital weights; the same metadata, flattened, in its header
    README.md            the model card
    certificate.json     after `certify`;  model.onnx after `export`;  tokenizer files for text models
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from .._config import StrictConfig, read_section
from ..analog.config import AnalogConfig
from ..analog.mapping import MappingConfig
from ..analog.placement import Placement
from ..analog.qat import QuantRecord
from ..errors import PackageError, UsageError
from ..tasks import Record
from .storage import restore_interrupted_swap

if TYPE_CHECKING:
    from torch import nn

    from ..analog.convert import ConversionReport

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
KNOWN_FILES = {CONFIG, WEIGHTS, CARD, CERTIFICATE, "certificate.png", "model.onnx", "model.aihwkit.pt", "sweep.csv",
               "sweep.png", "train_log.jsonl", "train_curve.png"}
TOKENIZER_FILES = re.compile(r"^(tokenizer.*\.json|special_tokens_map\.json|added_tokens\.json|vocab\.(txt|json)|"
                             r"merges\.txt|.*\.model|chat_template\.jinja)$")
#: files a package may hold at its top level besides tokenizer files; nothing else is written or read
_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass
class Package:
    """A package folder, read. `model` is the analog-aware model (noise at the package's default level)."""

    path: Path
    config: dict[str, Any]
    model: nn.Module | None = None
    #: what conversion made analog and kept digital; set by `load`
    report: ConversionReport | None = field(default=None, repr=False)
    #: the analog placement the model was built with; set by `load`
    placement: Placement | None = field(default=None, repr=False)

    @property
    def record(self) -> Record:
        """The typed view of config.json: text or image, task, output kind, input shape."""
        return Record.of(self.config)

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


#: config.json's typed sections and their types
SECTIONS: dict[str, type[StrictConfig | Placement]] = {"analog": AnalogConfig, "mapping": MappingConfig,
                                                       "placement": Placement, "quantization": QuantRecord}


@overload
def section(config: dict[str, Any], key: Literal["analog"]) -> AnalogConfig | None: ...
@overload
def section(config: dict[str, Any], key: Literal["mapping"]) -> MappingConfig | None: ...
@overload
def section(config: dict[str, Any], key: Literal["placement"]) -> Placement | None: ...
@overload
def section(config: dict[str, Any], key: Literal["quantization"]) -> QuantRecord | None: ...
def section(config: dict[str, Any], key: str) -> Any:
    """Typed section `key` of a record (None where absent), in the envelope or the bare legacy form
    (_config.read_section); every stage reads a typed section through here, never its dict."""
    return read_section(config, key, SECTIONS[key])


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
    `config_json`) that knows the layout: a Hugging Face package's config.json is the transformers config
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


def config_json(config: dict[str, Any]) -> dict[str, Any]:
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
        restore_interrupted_swap(path)
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


#: a local zoo: a folder of packages with this index (zoo/local.py writes it; stages must not write into it)
ZOO_INDEX = "index.json"
ZOO_FORMAT = "analogai-deploy/zoo"


def in_zoo(path: Path) -> bool:
    """Whether `path` is an entry of a local zoo: its folder holds a zoo index."""
    try:
        return read_json(Path(path).resolve().parent / ZOO_INDEX).get("format") == ZOO_FORMAT
    except (PackageError, OSError, AttributeError):
        return False


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
        elif ours is None and f.name not in KNOWN_FILES and not TOKENIZER_FILES.match(f.name):
            out.append(f.name)
    return out


def unlisted_files(path: Path, config: dict[str, Any]) -> list[str]:
    """Files (or links to files, as in a Hub snapshot) in a package folder that its config.json does not list
    (older packages: outside the names the toolkit writes); hidden files are not counted."""
    listed = config.get("files")
    return [f.name for f in sorted(path.iterdir()) if f.is_file() and not f.name.startswith(".")
            and f.name != CONFIG and (f.name not in listed if isinstance(listed, (list, dict)) else
                                      f.name not in KNOWN_FILES and not TOKENIZER_FILES.match(f.name))]


def short_list(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")
