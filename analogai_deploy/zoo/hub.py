"""The Hugging Face Hub side of the zoo: push a certified package, pull one back.

Push: create the repo (exist_ok) and upload the package folder, whose README.md is the model card
(library name, tags with the device, the certificate as model-index eval results, the recipe, and
how to pull it). Pull: `snapshot_download` (so HF_HUB_OFFLINE and the Hub cache work as usual),
then the zoo gate (sha256 vs config.json and the certificate) before anything is loaded.
The endpoint comes from HF_ENDPOINT, the token from HF_TOKEN or `hf auth login`.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from .. import package as pkgio
from ..errors import OperationFailed, PackageError, UsageError
from . import gate
from .local import admitted, stamp

PREFIX = "hf-hub:"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def parse(spec: str) -> tuple[str, str | None]:
    """'hf-hub:owner/name[@revision]' (or plain 'owner/name') -> (repo_id, revision)."""
    text = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
    repo_id, _, revision = text.partition("@")
    if not _REPO_ID.match(repo_id) or ".." in repo_id:
        raise UsageError(f"bad Hub repo id {repo_id!r}", "write hf-hub:OWNER/NAME or hf-hub:OWNER/NAME@REVISION")
    if "@" in text and not revision:
        raise UsageError(f"{spec!r} names no revision after '@'", "write hf-hub:OWNER/NAME@main or drop the '@'")
    return repo_id, revision or None


def push(path: str | Path, repo_id: str, *, private: bool | None = None, token: str | None = None,
         revision: str | None = None) -> dict[str, Any]:
    """Upload a certified package to the Hub; returns {repo_id, url, commit, files}."""
    from huggingface_hub import HfApi

    path = Path(path)
    repo_id, spec_rev = parse(repo_id)
    revision = revision or spec_rev
    admission = gate.admit(path, publishing=True)  # the Hub has no zoo policy of its own: the defaults
    config, certificate = admission.config, admission.certificate
    api = HfApi(endpoint=endpoint(), token=token)
    with tempfile.TemporaryDirectory(prefix="analogai-publish-") as tmp:
        staged = Path(tmp) / "package"
        pkgio.write(staged, stamp(config, {"hub": repo_id, "admitted": admitted(admission)}), base=path)
        gate.admit(staged)  # the card now says how to pull it; the binding still holds
        with _hub_errors(f"push to {repo_id}", api.endpoint):
            api.create_repo(repo_id, private=private, exist_ok=True)
            device = (certificate.get("device") or {}).get("name", "?")
            info = api.upload_folder(
                repo_id=repo_id, folder_path=str(staged), revision=revision,
                # a republish mirrors the package: files of an older version (an ONNX of other weights) go
                delete_patterns=["[!.]*"],
                commit_message=f"analogai-deploy publish: {config['source'].get('name', 'model')} "
                               f"certified on {device}",
            )
        files = sorted(f.name for f in staged.iterdir() if f.is_file())
    return {"repo_id": repo_id, "url": f"{api.endpoint}/{repo_id}", "commit": info.oid, "files": files,
            "sha256": config["weights"]["sha256"], **gate.summary(certificate, admission.verdict),
            "spot_check": admission.spot}


def download(spec: str, *, revision: str | None = None, cache_dir: str | Path | None = None,
             token: str | None = None, verify: bool = False) -> Path:
    """snapshot_download the repo named by `spec`, then run the zoo gate (`verify`: with the spot check);
    returns the snapshot folder."""
    from huggingface_hub import snapshot_download

    repo_id, spec_rev = parse(spec)
    revision = revision or spec_rev
    url = endpoint()
    with _hub_errors(f"download {repo_id}", url, repo_id=repo_id):
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token, endpoint=url))
    gate.admit(folder, verify=verify)
    return folder


def endpoint() -> str:
    """HF_ENDPOINT as set now (huggingface_hub itself reads it once, at import)."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


class _hub_errors:
    """Map huggingface_hub / network exceptions to one-line errors that say the fix."""

    def __init__(self, what: str, endpoint: str, repo_id: str | None = None):
        self.what, self.endpoint, self.repo_id = what, endpoint, repo_id

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            return False
        from huggingface_hub import errors as hf

        if isinstance(exc, hf.LocalEntryNotFoundError):
            raise OperationFailed(
                f"cannot {self.what}: the Hub is unreachable or offline (HF_HUB_OFFLINE) "
                "and the files are not in the cache",
                "pull once with network access (unset HF_HUB_OFFLINE), or pull a local zoo name",
            ) from None
        if isinstance(exc, hf.RevisionNotFoundError):
            raise UsageError(f"cannot {self.what}: no such revision",
                             "check the text after '@' (a branch, tag or commit)") from None
        if isinstance(exc, hf.RepositoryNotFoundError):
            raise UsageError(f"cannot {self.what}: no such repository on {self.endpoint} (or it is private)",
                             "check the repo id; for private repos log in (hf auth login) or set HF_TOKEN") from None
        if isinstance(exc, hf.HfHubHTTPError):
            status = exc.response.status_code if exc.response is not None else "?"
            hint = ("log in with `hf auth login` or set HF_TOKEN to a token with write access"
                    if status in (401, 403) else "retry later; ANALOGAI_DEBUG=1 shows the server's answer")
            raise OperationFailed(f"cannot {self.what}: the Hub answered HTTP {status}", hint) from None
        if isinstance(exc, hf.OfflineModeIsEnabled):
            raise OperationFailed(f"cannot {self.what}: HF_HUB_OFFLINE is set",
                                  "unset HF_HUB_OFFLINE to reach the Hub") from None
        if isinstance(exc, ValueError) and "filename" in str(exc).lower():  # e.g. a '..' path segment
            raise PackageError(f"cannot {self.what}: the repository holds a file name that would land outside "
                               f"its folder ({str(exc).splitlines()[0]})",
                               "do not use this repository; ask its owner to rename the file") from None
        if _is_network_error(exc):
            raise OperationFailed(f"cannot {self.what}: {self.endpoint} is unreachable ({type(exc).__name__})",
                                  "check the network, or HF_ENDPOINT if you use a mirror") from None
        return False


def _is_network_error(exc: BaseException) -> bool:
    try:
        import httpx2

        return isinstance(exc, (httpx2.TransportError, ConnectionError))
    except ImportError:  # older huggingface_hub releases use httpx / requests
        return isinstance(exc, (ConnectionError, TimeoutError))
