"""The local zoo: a folder with index.json and one package folder per entry.

    model_zoo/
      index.json                   {"format": "analogai-deploy/zoo", "version": 1, "entries": [...]}
      digits-cnn-msnat-pcm/        a certified package (config.json, model.safetensors, certificate.json, ...)

Where: --zoo DIR, else $ANALOGAI_ZOO, else `model_zoo/` of this repository. Entries are written with
`package.write` (temp folder + swap) and the index with temp file + rename, under a lock file, so a
crash or a second publisher never leaves a half-written entry or index.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import package as pkgio
from ..errors import OperationFailed, PackageError, UsageError, unknown
from ..provenance import now
from . import gate

INDEX = pkgio.ZOO_INDEX
FORMAT = pkgio.ZOO_FORMAT
VERSION = 1
ENV = "ANALOGAI_ZOO"
PENDING = ".pending-"  # journal of a publish in progress: .pending-NAME.json
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,95}$")


def default_dir() -> Path:
    """$ANALOGAI_ZOO, else the shipped `model_zoo/` (in the wheel, or the source tree's model_zoo/)."""
    from .._shipped import shipped

    env = os.environ.get(ENV)
    if env:
        return Path(os.path.expanduser(env))
    return shipped("model_zoo")


def resolve_dir(zoo: str | Path | None) -> Path:
    return Path(os.path.expanduser(zoo)) if zoo else default_dir()


def check_name(name: str) -> str:
    if not _NAME.match(name or "") or ".." in name:
        raise UsageError(f"bad zoo name {name!r}",
                         "use lowercase letters, digits, '.', '_' and '-' (e.g. digits-cnn-msnat-pcm), no folders")
    return name


def read_index(zoo: Path) -> dict[str, Any]:
    path = zoo / INDEX
    if not path.exists():
        index = {"format": FORMAT, "version": VERSION, "entries": []}
        _roll_forward(zoo, index)
        return index
    index = pkgio.read_json(path)
    if index.get("format") != FORMAT or not isinstance(index.get("entries"), list):
        raise PackageError(f"{path} is not an analogai-deploy zoo index", f"point `zoo` (or ${ENV}) at a zoo folder")
    if index.get("version") != VERSION:
        raise PackageError(f"zoo index version {index.get('version')} is not supported (this toolkit reads {VERSION})")
    _roll_forward(zoo, index)
    return index


def policy(zoo: str | Path | None = None) -> gate.Policy:
    """The zoo's admission policy: index.json's `policy` section, else the defaults (`gate.Policy`)."""
    zoo_dir = resolve_dir(zoo)
    if not (zoo_dir / INDEX).exists():
        return gate.Policy()
    return gate.Policy.from_dict(read_index(zoo_dir).get("policy"), where="policy.")


def set_policy(zoo: str | Path | None = None, **changes: Any) -> gate.Policy:
    """Change the zoo's policy (index.json `policy`); entries already in are not re-judged until pulled."""
    zoo_dir = resolve_dir(zoo)
    with _locked(zoo_dir):
        index = read_index(zoo_dir)
        new = gate.Policy.from_dict({**gate.Policy.from_dict(index.get("policy")).to_dict(), **changes})
        index["policy"] = new.to_dict()
        _write_index(zoo_dir, index)
    return new


def existing_dir(zoo: str | Path | None) -> Path:
    """The zoo folder to read from; one that does not exist is a mistyped path, not an empty zoo."""
    zoo_dir = resolve_dir(zoo)
    if not zoo_dir.is_dir():
        raise UsageError(f"no zoo at {zoo_dir}: {'not a folder' if zoo_dir.exists() else 'no such folder'}",
                         f"point `zoo` (or ${ENV}) at a zoo folder; publishing there makes one")
    return zoo_dir


def entries(zoo: str | Path | None = None) -> list[dict[str, Any]]:
    """The index entries, sorted by name."""
    return sorted(read_index(existing_dir(zoo))["entries"], key=lambda e: e.get("name", ""))


def find(name: str, zoo: str | Path | None = None) -> tuple[dict[str, Any], Path]:
    """The entry named `name` and its folder (refusing entries that point outside the zoo)."""
    zoo_dir = existing_dir(zoo)
    found = {e.get("name"): e for e in read_index(zoo_dir)["entries"]}
    if name not in found:
        if pkgio.is_package(Path(name)):  # a folder: zoo entries go by name, packages on disk load directly
            raise UsageError(f"{name!r} is a package folder, not a zoo name",
                             "a package folder is used as it is (analogai_deploy.load(PATH) in Python); pull "
                             "and from_pretrained take a zoo entry's name")
        if not found:
            raise UsageError(f"no zoo model {name!r}: the zoo at {zoo_dir} is empty",
                             f"publish a package there, or point `zoo` / ${ENV} at another zoo")
        raise unknown(f"zoo model (zoo {zoo_dir})", name, found)
    entry = found[name]
    folder = (zoo_dir / pkgio.safe_name(str(entry.get("path", "")))).resolve()
    if folder.parent != zoo_dir.resolve():
        raise PackageError(f"zoo index entry {name!r} points outside the zoo ({entry.get('path')!r})")
    return entry, folder


def publish(path: str | Path, zoo: str | Path | None = None, *, name: str | None = None,
            overwrite: bool = False) -> dict[str, Any]:
    """Admit a certified package into the local zoo; returns its index entry."""
    path = Path(path)
    name = check_name(name or path.resolve().name.lower())
    zoo_dir = resolve_dir(zoo)
    rules = policy(zoo_dir)
    admission = gate.admit(path, publishing=True, policy=rules)  # the spot check runs here, before the lock
    config = admission.config
    with _locked(zoo_dir):
        index = read_index(zoo_dir)
        old = next((e for e in index["entries"] if e.get("name") == name), None)
        if old and old.get("sha256") != config["weights"]["sha256"] and not overwrite:
            raise UsageError(f"{name!r} is already in the zoo at {zoo_dir} with other weights",
                             "pass `overwrite=True` to replace it, or `name` to publish under another name")
        dest = zoo_dir / name
        # the entry's own folder may be replaced (same weights, or --overwrite); anything else there never
        replace = overwrite or (old is not None and old.get("sha256") == config["weights"]["sha256"])
        pkgio.check_output(dest, overwrite=replace, in_place=dest.resolve() == path.resolve(), flag="--name")
        new_config = stamp(config, {"name": name, "admitted": admitted(admission)})
        # Journal first: a kill between the folder swap and the index write leaves a pending record that
        # read_index rolls forward, so the zoo serves the old entry or the new one, never a mismatch.
        pending = zoo_dir / f"{PENDING}{name}.json"
        published = now()
        _write_json(pending, {"name": name, "sha256": config["weights"]["sha256"], "published": published})
        pkgio.write(dest, new_config, base=path, overwrite=replace)  # copies first, so path == dest works too
        _readable(dest)
        entry = _entry(name, dest, published, rules)  # what landed is what was checked
        index["entries"] = sorted([e for e in index["entries"] if e.get("name") != name] + [entry],
                                  key=lambda e: e["name"])
        _write_index(zoo_dir, index)
        pending.unlink()
    return {**entry, "drop_pp": admission.verdict["drop_pp"], "spot_check": admission.spot}


def admitted(admission: gate.Admission) -> dict[str, Any]:
    """What the zoo checked, for the card and the index: the recomputed gate and the spot check."""
    spot = admission.spot or {}
    return {"gate": admission.verdict["rule"], "drop_pp": round(admission.verdict["drop_pp"], 4),
            "spot_check": None if not spot or spot.get("skipped") else
            {"repeats": spot["repeats"], "alpha": spot["alpha"], "seed": spot["seed"]}}


def _entry(name: str, folder: Path, published: str | None = None, rules: gate.Policy | None = None) -> dict[str, Any]:
    """The index entry of a zoo folder, after the gate (sha256, certificate, recomputed verdict) passed on it."""
    admission = gate.admit(folder, policy=rules)
    config, certificate = admission.config, admission.certificate
    return {
        "name": name,
        "path": name,
        **gate.summary(certificate, admission.verdict),
        "size": folder_size(folder),
        "sha256": config["weights"]["sha256"],
        # every file's sha256 (older packages: none): an entry edited together with its config.json is refused
        "files": config["files"] if isinstance(config.get("files"), dict) else None,
        "source": config["source"].get("name") or config["source"].get("kind"),
        "task": config.get("task"),
        "recipe": (config.get("recipe") or {}).get("name"),
        "published": published or now(),
    }


def _roll_forward(zoo: Path, index: dict[str, Any]) -> None:
    """Finish publishes that were killed after their folder swap: the folder holds the journalled weights."""
    for record_path in sorted(zoo.glob(f"{PENDING}*.json")):
        try:
            record = pkgio.read_json(record_path)
            name = check_name(str(record.get("name", "")))
            folder = zoo / name
            if pkgio.read_config(folder)["weights"]["sha256"] != record.get("sha256"):
                continue  # killed before the swap: the old entry is still whole
            entry = _entry(name, folder, record.get("published"), gate.Policy.from_dict(index.get("policy")))
        except (PackageError, UsageError, OSError):
            continue  # a broken record or folder: the index entry stands, and locate's checks still apply
        index["entries"] = [e for e in index["entries"] if e.get("name") != name] + [entry]


def stamp(config: dict[str, Any], zoo_info: dict[str, Any]) -> dict[str, Any]:
    """config.json for a published copy: where it was published (the card shows how to pull it) + history."""
    out = dict(config)
    out["zoo"] = zoo_info
    prov = dict(out.get("provenance") or {})
    prov["history"] = list(prov.get("history") or []) + [{"stage": "publish", "time": now(), **zoo_info}]
    out["provenance"] = prov
    return out


def folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def _readable(folder: Path) -> None:
    """A zoo is for sharing: entries readable by all (temp folders and files start private)."""
    folder.chmod(0o755)
    for f in folder.iterdir():
        if f.is_file():
            f.chmod(0o644)


def _write_index(zoo_dir: Path, index: dict[str, Any]) -> None:
    _write_json(zoo_dir / INDEX, index)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Temp file + fsync + rename: the file is the old one or the complete new one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(data, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(zoo_dir: Path) -> Iterator[None]:
    """One publisher at a time per zoo (advisory lock on zoo/.lock)."""
    import fcntl

    try:
        zoo_dir.mkdir(parents=True, exist_ok=True)
        fh = open(zoo_dir / ".lock", "a+")
    except OSError as exc:
        raise OperationFailed(f"cannot write to the zoo at {zoo_dir}: {exc.strerror}",
                              f"choose a writable zoo with `zoo` or ${ENV}") from None
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
