"""Test helpers for the zoo: certified package copies made from the session's converted packages.

`FIXTURE_CERTIFICATE` is a test fixture, not a measurement: it follows the certificate schema that
`analogai-deploy certify` writes (metric, device, tile, data, weights_sha256, digital, results,
verdict) so the zoo's gate can be tested without running a Monte Carlo certification.
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

from analogai_deploy import package as pkgio

FIXTURE_CERTIFICATE: dict[str, Any] = {
    "metric": "accuracy",
    "device": {"name": "PCM", "noise_model": "PCMLikeNoiseModel", "g_max": 25.0},
    "tile": "torch",
    "data": {"spec": "digits", "fingerprint": "fixture"},
    "weights_sha256": None,  # filled with the package's own sha256
    "digital": {"accuracy": 0.95},
    "results": [
        {"time": t, "seconds": s, "mean": m, "std": 0.01, "ci95": [m - 0.01, m + 0.01], "min": m - 0.03,
         "normalised": m / 0.95}
        for t, s, m in (("1s", 1.0, 0.94), ("1h", 3600.0, 0.93), ("1d", 86400.0, 0.92), ("1y", 31536000.0, 0.9))
    ],
    "verdict": {"rule": "accuracy(1d) >= 0.9", "passed": True},
}


def certified_copy(src: Path, dest: Path, *, passed: bool | None = True, sha256: str | None = None,
                   recipe: bool = True) -> Path:
    """Copy package `src` to `dest` and give it a fixture certificate (and a recipe section)."""
    shutil.copytree(src, dest)
    config = pkgio.read_config(dest)
    if recipe:
        config["recipe"] = {"name": "msnat", "sha256": "0" * 64, "resolved": {}}
    cert = copy.deepcopy(FIXTURE_CERTIFICATE)
    cert["weights_sha256"] = sha256 or config["weights"]["sha256"]
    if passed is None:
        cert.pop("verdict")
    else:
        cert["verdict"]["passed"] = passed
    pkgio.write(dest, config, files={pkgio.CERTIFICATE: json.dumps(cert, indent=2).encode()}, base=dest)
    return dest


def flip_a_weight_byte(path: Path) -> None:
    """Change one byte inside the tensor data of model.safetensors (header left intact)."""
    (path / pkgio.WEIGHTS).write_bytes(tampered_weights(path))


def tampered_weights(path: Path) -> bytes:
    """model.safetensors of `path` with one byte of tensor data changed."""
    data = bytearray((path / pkgio.WEIGHTS).read_bytes())
    data[-3] ^= 0xFF
    return bytes(data)
