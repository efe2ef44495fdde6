"""The gate every zoo package passes, on the way in (publish) and on the way out (pull).

A package is admitted only when it rebuilds from a trusted source (never from a stranger's
Python file), its weights match the sha256 in config.json, and it carries a certificate that
was issued for exactly these weights and whose verdict, when it has one, passed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import package as pkgio
from ..errors import OperationFailed, PackageError

#: certificate keys a zoo entry relies on (the rest of the schema is certify's business)
_REQUIRED = ("metric", "device", "weights_sha256", "results")


def check_source(config: dict[str, Any], where: Path | str) -> None:
    """Refuse packages that rebuild by running local Python code: code from strangers must not run."""
    kind = config.get("source", {}).get("kind")
    if kind == "local":
        raise OperationFailed(
            f"{where} was built from a local Python file ({config['source'].get('file')}); the zoo refuses it "
            "because loading it would run that code on every user's machine",
            "convert from a built-in, torchvision or Hugging Face model (or register the architecture) "
            "and publish that",
        )


def check_certificate(config: dict[str, Any], certificate: dict[str, Any] | None, where: Path | str) -> dict[str, Any]:
    """The certificate must exist, be complete, match the weights and not have failed its gate."""
    if certificate is None:
        raise OperationFailed(f"{where} has no certificate.json; only certified packages enter the zoo",
                              f"run `analogai-deploy certify {where}` first")
    missing = [k for k in _REQUIRED if k not in certificate]
    results = certificate.get("results")
    if missing or not isinstance(results, list) or not results or not all(
        isinstance(r, dict) and "time" in r and "mean" in r for r in results
    ):
        raise PackageError(
            f"{where}/certificate.json is incomplete ({'missing ' + ', '.join(missing) if missing else 'no results'})",
            f"run `analogai-deploy certify {where}` again",
        )
    if certificate["weights_sha256"] != config.get("weights", {}).get("sha256"):
        raise PackageError(f"{where}/certificate.json was issued for other weights (sha256 mismatch)",
                           f"run `analogai-deploy certify {where}` on these weights")
    verdict = certificate.get("verdict")
    if isinstance(verdict, dict) and not verdict.get("passed"):
        raise OperationFailed(
            f"{where} failed its certificate gate ({verdict.get('rule', 'no rule recorded')}); the zoo refuses it",
            "recover the model further (analogai-deploy recover) and certify it again",
        )
    return certificate


def check_files(path: Path) -> None:
    """A package on its way into a zoo holds plain files: a symbolic link would carry a file from outside
    the folder (any file the publisher can read) to everyone who pulls it."""
    for f in sorted(path.iterdir()):
        if f.is_symlink() or not (f.is_file() or f.is_dir()):
            raise PackageError(f"{f} is a symbolic link or special file; a published package holds plain files only",
                               "replace it with a copy of the file it points to, or remove it")


def admit(path: str | Path, *, publishing: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the whole gate on a package folder; returns (config, certificate).

    `publishing`: also refuse links and special files, and rebuild the model, so a package whose weights
    do not fit its architecture never enters a zoo (on the way out, loading does that check).
    """
    path = Path(path)
    if publishing and path.is_dir():
        check_files(path)
    config = pkgio.read_config(path)
    check_source(config, path)
    pkgio.verify(path, config)  # weights vs config.json, and vs the certificate when there is one
    cert_path = path / pkgio.CERTIFICATE
    certificate = pkgio.read_json(cert_path) if cert_path.exists() else None
    check_certificate(config, certificate, path)
    if publishing:
        pkgio.load(path, verify_hash=False)  # hash checked above; this checks the weights fit the architecture
    return config, certificate


def summary(certificate: dict[str, Any]) -> dict[str, Any]:
    """Device, accuracy at 1 d and 1 y, digital accuracy, verdict: what the zoo index records."""
    means = {r["time"]: r.get("mean") for r in certificate.get("results", [])}
    verdict = certificate.get("verdict")
    return {
        "device": (certificate.get("device") or {}).get("name"),
        "metric": certificate.get("metric"),
        "digital": (certificate.get("digital") or {}).get(certificate.get("metric", "accuracy")),
        "accuracy_1d": means.get("1d"),
        "accuracy_1y": means.get("1y"),
        "verdict": verdict.get("passed") if isinstance(verdict, dict) else None,
    }
