"""Test helpers for the zoo: certified packages with real certificates, and the ways to forge one.

`certified_copy` gives a package the zoo admits: the shipped entry's MSNAT-trained LeNet (or, for
`variant` k > 0, the same weights moved by k * 1e-4: other weights, same architecture), certified
for real on aihwkit PCM at 1 d (5 repeats on 128 test digits, so its publish spot check is cheap).
Each variant is certified once per session and copied from there.
"""
from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from analogai_deploy import package as pkgio

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "model_zoo" / "digits-cnn-msnat-pcm"
#: how the test certificates are made (cheap, and passing the default zoo policy); on aihwkit's tiles, whose
#: 5 repeats drop below digital at 1 d (on the fast engine all 5 keep the digital 126 / 128, so no gate fails)
CERTIFY = dict(device="PCM", data="digits", times="1d", repeats=5, seed=0, limit=128, at="1d", engine="aihwkit")
_CACHE: dict[tuple[int, float | None], Path] = {}
_TMP = Path(tempfile.mkdtemp(prefix="analogai-zoo-helpers-"))
atexit.register(shutil.rmtree, _TMP, True)


def _variant(k: int) -> Path:
    """The shipped entry's model (k = 0) or its weights + k * 1e-4, as a fresh uncertified package."""
    import torch

    src = _TMP / f"variant-{k}"
    if not src.exists():
        pkg = pkgio.load(SHIPPED)
        with torch.no_grad():
            for p in pkg.model.parameters():
                p.add_(k * 1e-4)
        config = {key: v for key, v in pkg.config.items()
                  if key not in ("certificate", "zoo", "export", "weights", "files")}
        pkgio.write(src, config, pkg.model)
    return src


def _certified(k: int, max_drop: float | None) -> Path:
    key = (k, max_drop)
    if key not in _CACHE:
        import analogai_deploy as ad

        out = _TMP / f"certified-{k}-{max_drop}"
        shutil.copytree(_variant(k), out)
        ad.certify(out, max_drop=max_drop, **CERTIFY)
        _CACHE[key] = out
    return _CACHE[key]


def certified_copy(dest: Path, *, variant: int = 0, max_drop: float | None = 3.0, passed: bool = True,
                   sha256: str | None = None) -> Path:
    """A copy at `dest` of a really certified package. `passed=False`: certified with --max-drop 0, which
    its 1 d lower CI bound fails. `max_drop=None`: certified without a gate. `sha256`: the certificate
    then names other weights (a hand edit)."""
    shutil.copytree(_certified(variant, 0.0 if not passed else max_drop), dest)
    if sha256 is not None:
        edit_certificate(dest, lambda c: c.update(weights_sha256=sha256))
    return dest


def shipped_copy(dest: Path) -> Path:
    """The shipped zoo entry as it is (its own certificate: 10 repeats at 1 s, 1 h, 1 d, 1 y)."""
    shutil.copytree(SHIPPED, dest)
    return dest


def _edit_json(file: Path, change) -> dict[str, Any]:
    data = json.loads(file.read_text())
    change(data)
    file.write_text(json.dumps(data, indent=2))
    return data


def edit_certificate(path: Path, change) -> dict[str, Any]:
    """Hand-edit certificate.json in place, as a forger who knows the format would: the file, and its sha256
    in config.json (`files`), so the checks behind the hash are the ones tested. (The file alone: the
    sha256 refuses it first, test_package.py.)"""
    data = _edit_json(path / pkgio.CERTIFICATE, change)
    rehash(path, pkgio.CERTIFICATE)
    return data


def rehash(path: Path, name: str) -> None:
    """Record the sha256 of `name` as it is now in config.json's `files` (a forger's second step)."""
    from analogai_deploy.provenance import sha256_file

    def update(data):
        record = data.get(pkgio.RECORD_KEY, data)  # a Hugging Face package keeps the record under this key
        if isinstance(record.get("files"), dict):
            record["files"][name] = sha256_file(path / name)

    _edit_json(path / pkgio.CONFIG, update)


def edit_config(path: Path, change) -> dict[str, Any]:
    """Hand-edit config.json in place."""
    return _edit_json(path / pkgio.CONFIG, change)


def fixture_certificate(path: Path) -> Path:
    """A certificate.json that only has the schema's shape (no real measurement): for refusals that must
    happen before any certificate is read (a local-code source, a spoiled weights file)."""
    config = pkgio.read_config(path)
    cert = {"metric": "accuracy", "device": {"name": "PCM"}, "weights_sha256": config["weights"]["sha256"],
            "results": [{"time": "1d", "seconds": 86400.0, "mean": 0.9}]}
    pkgio.write(path, config, files={pkgio.CERTIFICATE: json.dumps(cert).encode()}, base=path)
    return path


def flip_a_weight_byte(path: Path) -> None:
    """Change one byte inside the tensor data of model.safetensors (header left intact)."""
    (path / pkgio.WEIGHTS).write_bytes(tampered_weights(path))


def tampered_weights(path: Path) -> bytes:
    """model.safetensors of `path` with one byte of tensor data changed."""
    data = bytearray((path / pkgio.WEIGHTS).read_bytes())
    data[-3] ^= 0xFF
    return bytes(data)
