"""Storage: a package folder replaced atomically. The new folder is built beside the old one, synced and swapped
in by two renames, so a crash leaves either the old package or the complete new one (reading restores an
interrupted swap); files get the modes the user's umask gives, and weights a byte-identical header.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

from ..errors import UsageError


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


def canonicalise_safetensors(path: Path) -> None:
    """Rewrite the header with sorted keys: safetensors orders it arbitrarily, and a reproducible run
    should give a byte-identical file (so the same sha256). Tensor offsets are relative to the data
    section, so only the header and its 8-byte-aligned padding change."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


def umask() -> int:
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


def follow_umask(folder: Path) -> None:
    """mkdtemp makes the folder 0700 and safetensors writes 0600; a package is an ordinary output, so
    it gets the modes every other tool gives under the user's umask (0755 / 0644 for umask 022)."""
    mask = umask()
    folder.chmod(0o777 & ~mask)
    for f in folder.iterdir():
        if f.is_file():
            f.chmod(0o666 & ~mask)


def fsync_tree(folder: Path) -> None:
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def swap(tmp: Path, dest: Path) -> None:
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


def restore_interrupted_swap(path: Path) -> None:
    olds = sorted(path.parent.glob(f".{path.name}.old-*")) if path.parent.is_dir() else []
    if olds:
        os.rename(olds[-1], path)
