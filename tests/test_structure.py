"""The package's structure (docs/architecture.md): the layers contract of pyproject.toml (import-linter, as
`make lint-imports` runs it in CI), no import circle, modules of a bounded size, every module in a layer, and a
README layout that names every module."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "analogai_deploy"
MAX_LINES = 400


def import_circles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every strongly connected set of two or more modules (Tarjan), function-level imports included."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(module: str) -> None:  # recursive: the package's import depth is far below the recursion limit
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            members = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                members.append(top)
                if top == module:
                    break
            if len(members) > 1:
                circles.append(sorted(members))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return circles


def test_the_layers_contract_holds():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()",
                          "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-1000:]


def test_no_import_circle():
    graph = grimp.build_graph("analogai_deploy", cache_dir=None)
    circles = import_circles(graph)
    assert not circles, f"modules that import each other round in a circle: {circles}"


def test_the_circle_finder_finds_a_circle():
    graph = grimp.ImportGraph()
    for module in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(module)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.a")
    graph.add_import(importer="p.c", imported="p.a")
    assert import_circles(graph) == [["p.a", "p.b"]]


def test_no_module_over_the_line_limit():
    long = {}
    for path in sorted(PKG.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            long[module] = lines
    assert not long, f"modules over {MAX_LINES} lines (split them by concern): {long}"


def test_the_readme_layout_names_every_top_level_module():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Layout\n.*?```\n(.*?)```", readme, re.S).group(1)
    names = {p.stem for p in PKG.glob("*.py") if p.stem not in ("__init__", "__main__")}
    names |= {p.name for p in PKG.iterdir() if (p / "__init__.py").is_file()}
    missing = sorted(n for n in names if not re.search(rf"(?<![\w/]){re.escape(n)}(\.py|/)", block))
    assert not missing, f"README layout omits {missing}"
    assert "docs/architecture.md" in readme.split("## Layout", 1)[1].split("## ", 1)[0]


def _layered() -> list[str]:
    """Every module named by pyproject.toml's layers contract, top layer first."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    layers = next(c["layers"] for c in contracts["contracts"] if c["type"] == "layers")
    return [name.strip() for layer in layers for name in re.split(r"[|:]", layer)]


def test_every_top_level_module_sits_in_a_layer_and_the_architecture_page_names_it():
    """A module the layers contract does not name is held to nothing: each one has its layer, and
    docs/architecture.md's diagram shows the layers as the contract has them."""
    names = {p.stem for p in PKG.glob("*.py") if p.stem != "__init__"}
    names |= {p.name for p in PKG.iterdir() if (p / "__init__.py").is_file()}
    layered = _layered()
    assert sorted(names - set(layered)) == [], "modules in no layer of pyproject.toml"
    diagram = re.search(r"```\n(.*?)```", (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"), re.S)
    shown = re.findall(r"(?<![\w.])(_?[a-z_]+?)(?:/|\.py)?(?=[\s,|]|$)", diagram.group(1), re.M)
    assert [n for n in layered if n not in shown] == [], "layers missing from docs/architecture.md"



# file names the docs and comments use as examples of a user's own file, not files of this repository
EXAMPLE_FILES = {"file.py", "mymodels.py", "evil.py"}


def _named_sources() -> list[tuple[str, Path, str]]:
    """(path:line, a `.py` path the line names, its text): every page and every module comment or docstring."""
    texts = [*ROOT.glob("*.md"), *(ROOT / "docs").glob("*.md"), *PKG.rglob("*.py"), *PKG.rglob("*.c"),
             *(ROOT / "bench").glob("*.py"), *(ROOT / "scripts").glob("*"), ROOT / "Makefile"]
    named = []
    for path in texts:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for name in re.findall(r"(?<![\w./-])((?:[\w.-]+/)*[\w-]+\.py)\b", line):
                named.append((f"{path.relative_to(ROOT)}:{number}", Path(name), line.strip()))
    return named


def test_every_module_path_the_docs_and_comments_name_exists():
    """A moved or renamed module leaves no stale path behind: `hardware/pcm.py` or `analogai_deploy/api.py`
    names a file of the repository (from its root or the package's), and a bare `fast.py` the name of one."""
    names = {p.name for top in (PKG, ROOT / "tests", ROOT / "bench", ROOT / "scripts") for p in top.rglob("*.py")}
    names |= {p.name for p in ROOT.glob("*.py")}
    stale = []
    for where, name, line in _named_sources():
        if len(name.parts) > 1:
            if not (ROOT / name.parts[0]).exists() and not (PKG / name.parts[0]).exists():
                continue  # another project's path (aihwkit's) or a placeholder (path/to/file.py)
            found = (ROOT / name).is_file() or (PKG / name).is_file()
        else:
            found = name.name in names or name.name in EXAMPLE_FILES
        if not found:
            stale.append(f"{where}: {name}")
    assert stale == [], "paths naming no file:\n" + "\n".join(stale)
