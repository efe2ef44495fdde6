"""Recipe files and dotted overrides as plain dicts: YAML read safely (size and alias limits), and
`training.batch_size=256` patched into the nested sections."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UsageError


MAX_BYTES = 1 << 20  # a recipe is a few kB
MAX_NODES = 10_000  # values after YAML aliases are expanded; an alias bomb reaches billions


def check_size(data: Any, where: str) -> Any:
    """Refuse YAML whose aliases expand to a huge (or self-referencing) structure before anything walks it."""
    stack, seen = [data], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise UsageError(f"{where} expands to more than {MAX_NODES} values (YAML aliases?)",
                             "write the recipe out without anchors and aliases (&name / *name)")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return data


def read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        if path.stat().st_size > MAX_BYTES:
            raise UsageError(f"{path} is {path.stat().st_size} bytes; a recipe is a few kB",
                             "pass a recipe YAML file (see `analogai-deploy recipes show msnat`)")
        data = check_size(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))
    except FileNotFoundError:
        raise UsageError(f"recipe file not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a folder, not a recipe file") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not a text file", "pass a recipe YAML file") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}", "fix the file's syntax") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a mapping of recipe sections", "see `analogai-deploy recipes show msnat`")
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    """'training.batch_size=256' -> (['training', 'batch_size'], 256); values are YAML scalars/lists."""
    import yaml

    key, sep, value = item.partition("=")
    key = key.strip().lstrip("-")
    if not sep or not key or any(not part for part in key.split(".")):
        raise UsageError(f"bad override {item!r}", "write dotted.key=value, e.g. training.batch_size=256")
    value = value.strip()
    try:
        parsed = yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        parsed = value
    check_size(parsed, f"override {key}")
    if isinstance(parsed, str) and len(parsed) >= 2 and parsed[0] == parsed[-1] and parsed[0] in "'\"":
        parsed = parsed[1:-1]
    return key.split("."), parsed


def apply_overrides(data: dict[str, Any], overrides: list[str] | dict[str, Any]) -> dict[str, Any]:
    """Patch nested dict `data` with dotted overrides (a list of 'k=v' strings or a {dotted: value} dict)."""
    items = [parse_override(o) for o in overrides] if isinstance(overrides, list) else [
        (k.split("."), v) for k, v in overrides.items()]
    for keys, value in items:
        node = data
        for i, k in enumerate(keys[:-1]):
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise UsageError(f"cannot set {'.'.join(keys)}: {'.'.join(keys[:i + 1])} is a value, not a section")
            node = nxt
        node[keys[-1]] = value
    return data
