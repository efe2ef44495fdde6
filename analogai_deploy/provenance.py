"""Where an artefact came from: versions, time, and stable hashes."""
from __future__ import annotations

import hashlib
import json
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

TOOLKIT = "analogai-deploy"


def version_of(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    return {
        "analogai-deploy": version_of(TOOLKIT),
        "torch": version_of("torch"),
        "torchvision": version_of("torchvision"),
        "aihwkit": version_of("aihwkit"),
        "python": platform.python_version(),
    }


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """The one identity hash of a JSON value (recipes, placements, config.json's model sections): sorted keys,
    compact separators; a value JSON cannot hold (a Path) is hashed as its str."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()
