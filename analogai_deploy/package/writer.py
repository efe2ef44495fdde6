"""Writing a package: what may be replaced (`check_output`), and the atomic write of config.json, the weights,
the card and the files a stage adds (storage.py does the swap).

Nothing is replaced that the toolkit did not write: `check_output` (run by every command before its slow
part, and by `write` itself) refuses a folder that is not a package, a package that holds anything besides
the files its config.json lists (`files`), an existing package without `overwrite`, and the working
directory, its parents and the home directory.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from .. import lock
from ..errors import PackageError, UsageError, no_room
from ..provenance import sha256_file
from . import storage
from .format import (CARD, CERTIFICATE, CONFIG, FORMAT, FORMAT_VERSION, SECTIONS, WEIGHTS, Package, config_json,
                     foreign_entries, is_package, read_json, read_record, safe_name, section, short_list)
from .integrity import verify


def _given(flag: str, value: str) -> str:
    """`flag` given `value`: `output=runs/NAME` for a parameter (the CLI shows -o runs/NAME), else FLAG VALUE."""
    return f"`{flag.strip('`')}={value}`" if flag.startswith("`") else f"{flag} {value}"


def check_output(dest: str | Path, *, overwrite: bool = False, in_place: bool = False,
                 flag: str = "`output`") -> Path:
    """Refuse a package output that would delete what the toolkit did not write (exit 2, naming it).

    Refused: the working directory, a parent of it, the home directory; a file; a folder that is not a
    package (unless empty); a package that holds anything else (`foreign_entries`); an existing package
    without `overwrite` (`in_place`: the command updates that package, so it may be replaced); a folder
    inside another package; a place that cannot be written (probed now, before any slow work).
    `flag`: what the messages call the output (a parameter in backquotes, which the CLI shows as its flag).
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
                         "everything in it", f"name a new folder, e.g. {_given(flag, 'runs/NAME')}")
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise UsageError(f"{dest} exists and is not a package folder (a file or a link)",
                         f"choose a new folder for {flag}")
    if dest.is_dir() and any(dest.iterdir()):
        if not is_package(dest):
            raise UsageError(f"{dest} exists and is not an analogai-deploy package (it holds "
                             f"{short_list(sorted(f.name for f in dest.iterdir()))}); refusing to replace it",
                             f"choose a new folder for {flag}")
        foreign = foreign_entries(dest)
        if foreign:
            them = "them" if len(foreign) > 1 else "it"
            raise UsageError(f"{dest} holds {short_list(foreign)} besides the package; refusing to replace it "
                             f"(that would delete {them})",
                             f"move {them} out of the folder, or write elsewhere ({_given(flag, 'NEW_FOLDER')})")
        if not overwrite and not in_place:
            raise UsageError(f"{dest} already holds a package", f"pass `overwrite` to replace it, or choose another {flag}")
    for parent in where.parents:
        if parent.is_dir() and is_package(parent):
            raise UsageError(f"{dest} is inside the package {parent}", f"choose a folder outside it for {flag}")
    storage.check_writable(dest, hint=("pass `output=NEW_FOLDER` to write a copy of the package elsewhere" if in_place
                               else f"choose a folder you can write to for {flag}"))
    return dest


def flat_metadata(config: dict[str, Any], certificate: dict[str, Any] | None = None) -> dict[str, str]:
    """The package metadata as flat string -> string under `analogai.` (safetensors header, ONNX metadata_props)."""
    keys = ("source", "task", "num_classes", "labels", "input", "analog", "mapping", "recipe", "quantization")
    # the typed sections' plain dicts, as before the envelope (so a model's weights file stays byte-identical)
    plain = {k: (v.to_dict() if k in SECTIONS else v) for k in keys
             if (v := section(config, k) if k in SECTIONS else config.get(k)) is not None}
    out = {f"analogai.{k}": json.dumps(v, sort_keys=True) for k, v in plain.items()}
    prov = config.get("provenance") or {}
    # No timestamps: the same model, seed and settings give a byte-identical weights file (and sha256).
    out["analogai.provenance"] = json.dumps(
        {"seed": prov.get("seed"), "versions": prov.get("versions"),
         "stages": [h.get("stage") for h in prov.get("history", [])]}, sort_keys=True)
    out["analogai.format"] = f"{FORMAT}/{FORMAT_VERSION}"
    if (placement := section(config, "placement")) is not None:
        out["analogai.placement_sha256"] = placement.sha256
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
            # "format": "pt" as transformers' save_pretrained writes it (transformers 4 refuses a header without it)
            save_model(model, str(tmp / WEIGHTS), metadata={**flat_metadata(config, certificate), "format": "pt"})
            storage.canonicalise_safetensors(tmp / WEIGHTS)
            config["weights"] = {"file": WEIGHTS, "sha256": sha256_file(tmp / WEIGHTS)}
        elif not (tmp / WEIGHTS).exists():
            raise ValueError("write() needs a model or a base package holding model.safetensors")
        (tmp / CARD).write_text(render(config, certificate, dest.name), encoding="utf-8")
        # what this package holds and each file's sha256 (CONFIG itself is implied): `verify` checks every
        # one, and a later write knows what it may replace
        config["files"] = {f.name: sha256_file(f) for f in sorted(tmp.iterdir()) if f.name != CONFIG}
        (tmp / CONFIG).write_text(json.dumps(config_json(config), indent=2, sort_keys=False) + "\n",
                                  encoding="utf-8")
        storage.follow_umask(tmp)
        storage.fsync_tree(tmp)  # through the module: tests fill the disk here
        storage.swap(tmp, dest)
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
    if read_json(path / CONFIG) == config_json(config):
        return False
    write(path, config, base=path)
    if read_record(path) != {**config, "files": read_record(path)["files"]}:  # the record survived exactly
        raise PackageError(f"migrating {path} changed its record", "restore the package from a copy")
    verify(path)
    return True
