"""The model zoo: only certified packages go in, and nothing comes out unverified.

    publish(pkg)                                   -> the local zoo (model_zoo/, $ANALOGAI_ZOO or zoo=DIR)
    publish(pkg, hub="owner/name")                 -> the Hugging Face Hub, with the model card
    from_pretrained("digits-cnn-msnat-pcm")        a local zoo name
    from_pretrained("hf-hub:owner/name@revision")  a Hub repo (snapshot download, HF cache, HF_HUB_OFFLINE)

Both directions run the same gate (`zoo.gate`): a trusted model source, weights and config.json that
match what the certificate names (sha256, model_sha256), and a gate verdict recomputed from the
certificate's recorded values under the zoo's policy. Publishing (and `pull --verify`) also re-runs a
spot check of a few Monte Carlo repeats against the certificate.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import package as pkgio
from ..errors import PackageError, UsageError
from . import gate, hub, local

__all__ = ["from_pretrained", "pull", "publish", "list_models", "Policy"]
Policy = gate.Policy


def publish(
    path: str | Path,
    *,
    zoo: str | Path | None = None,
    hub_repo: str | None = None,
    name: str | None = None,
    overwrite: bool = False,
    private: bool | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """Publish a certified package to the local zoo (default) or, with `hub_repo`, to the Hub."""
    if hub_repo and (zoo or name):
        raise UsageError("publish goes to one place: a local zoo or the Hub", "pass either `zoo` / `name` or `hub_repo`")
    if hub_repo:
        return {"where": "hub", **hub.push(path, hub_repo, private=private, token=token)}
    zoo_dir = local.resolve_dir(zoo)
    entry = local.publish(path, zoo_dir, name=name, overwrite=overwrite)
    return {"where": "zoo", "zoo": str(zoo_dir), "folder": str(zoo_dir / entry["path"]), **entry}


def locate(spec: str, *, zoo: str | Path | None = None, revision: str | None = None,
           cache_dir: str | Path | None = None, token: str | None = None, verify: bool = False) -> Path:
    """The verified package folder for a zoo name or an hf-hub: spec (gate passed, nothing loaded yet).
    `verify`: also re-run the spot check here (a few Monte Carlo repeats against the certificate)."""
    spec = spec.strip()
    if spec.startswith(hub.PREFIX):
        return hub.download(spec, revision=revision, cache_dir=cache_dir, token=token, verify=verify)
    if revision:
        raise UsageError("`revision` only applies to hf-hub: models", "drop `revision` for local zoo names")
    entry, folder = local.find(spec, zoo)
    config = gate.admit(folder, verify=verify, policy=local.policy(zoo)).config
    if entry.get("sha256") != config["weights"]["sha256"]:
        raise PackageError(f"zoo entry {spec!r} holds other weights than its index records (tampered)",
                                 "publish the package again; never load weights you cannot verify")
    recorded, now = entry.get("files"), config.get("files")
    if isinstance(recorded, dict) and recorded != now:
        now = now if isinstance(now, dict) else {}
        changed = sorted(n for n in set(recorded) | set(now) if recorded.get(n) != now.get(n))
        raise PackageError(f"zoo entry {spec!r}: {', '.join(changed)} differ from what its index records "
                                 "(the file and its sha256 in config.json were edited after publishing)",
                                 "publish the package again; never use files you cannot verify")
    return folder


def pull(spec: str, output: str | Path | None = None, *, zoo: str | Path | None = None,
         revision: str | None = None, cache_dir: str | Path | None = None, token: str | None = None,
         overwrite: bool = False, verify: bool = False,
         log: Callable[[str], None] | None = None) -> pkgio.Package:
    """Fetch, verify and load a zoo model; with `output`, also copy the verified package there (an existing
    package there is replaced only with `overwrite`; anything else there is refused before the download).
    `verify`: re-run the spot check on this machine before anything is loaded. `log` hears which files the
    copy leaves out (files the entry does not list)."""
    if output is not None:
        pkgio.check_output(output, overwrite=overwrite)
    folder = locate(spec, zoo=zoo, revision=revision, cache_dir=cache_dir, token=token, verify=verify)
    if output is not None:
        folder, dropped = _copy(folder, Path(output), overwrite)
        if dropped and log is not None:
            log(f"left out {', '.join(dropped)}: the zoo entry's config.json does not list "
                f"{'them' if len(dropped) > 1 else 'it'} (added after it was published; nothing reads it)")
    return pkgio.load(folder)


def from_pretrained(name_or_hf_hub_spec: str, *, zoo: str | Path | None = None, revision: str | None = None,
                    cache_dir: str | Path | None = None, token: str | None = None,
                    verify: bool = False) -> pkgio.Package:
    """A certified, verified zoo model: a local zoo name or 'hf-hub:owner/name[@revision]'."""
    return pull(name_or_hf_hub_spec, zoo=zoo, revision=revision, cache_dir=cache_dir, token=token, verify=verify)


def list_models(zoo: str | Path | None = None) -> list[dict[str, Any]]:
    """The local zoo's index entries (name, device, accuracy at 1 d and 1 y, size, sha256, path, ...)."""
    return local.entries(zoo)


def _copy(folder: Path, dest: Path, overwrite: bool = False) -> tuple[Path, list[str]]:
    """Copy a verified package to `dest`: the files its config.json lists, nothing else (no cache links, no
    hidden files, no file added after publishing). Returns dest and the names left out."""
    config = pkgio.read_config(folder)
    dropped = pkgio.unlisted_files(folder, config)
    files = {f.name: f.read_bytes() for f in folder.iterdir()
             if f.is_file() and not f.name.startswith(".") and f.name not in dropped}
    files.pop(pkgio.CONFIG, None)
    files.pop(pkgio.CARD, None)
    pkgio.write(dest, config, files=files, overwrite=overwrite)
    pkgio.verify(dest)  # re-check the copy (every file, certificate binding) before anyone loads it
    return dest, dropped
