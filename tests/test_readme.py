"""The README's pipeline snippets: cheap checks in the default suite, the snippets run verbatim (slow).

Default suite: every CLI line parses with the real command-line parser (commands, options, values)
without running, every package a line reads was written by an earlier line (or ships in the zoo),
and the same for the Python snippet, whose names must exist in `analogai_deploy`. Slow: both
snippets run exactly as written, in a fresh folder, and must exit 0.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PACKAGE_ARG = ("recover", "export", "certify", "publish")  # commands whose first argument is a package folder


def _blocks(lang: str) -> list[str]:
    return [body for kind, body in re.findall(r"```(\w+)\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
            if kind == lang]


def _pipeline() -> str:
    """The bash block that runs the pipeline on the bundled digits (the seed's CIFAR-10 example beside it
    needs CIFAR-10 on disk, so it is not run here)."""
    (block,) = [b for b in _blocks("bash") if "analogai-deploy convert lenet" in b]
    return block


def _shipped() -> set[str]:
    index = json.loads((ROOT / "model_zoo" / "index.json").read_text(encoding="utf-8"))
    return {e["name"] for e in index["entries"]}


def _cli_lines() -> list[list[str]]:
    return [shlex.split(line, comments=True)[1:] for line in _pipeline().splitlines()
            if line.startswith("analogai-deploy ")]


def test_readme_cli_lines_parse_and_read_only_what_earlier_lines_wrote():
    import typer

    from analogai_deploy.cli.app import app

    group = typer.main.get_command(app)
    written: set[str] = set()
    lines = _cli_lines()
    assert [args[0] for args in lines] == ["convert", "recover", "export", "certify", "publish", "pull"]
    for args in lines:
        with group.make_context("analogai-deploy", list(args), resilient_parsing=False) as ctx:
            name, cmd, rest = group.resolve_command(ctx, list(args))
            sub = cmd.make_context(name, rest, parent=ctx)  # raises on an unknown option or a bad value
        params = sub.params
        if name in PACKAGE_ARG:
            assert params["package"] in written, f"`{' '.join(args)}` reads {params['package']}, never written before"
        if name == "pull":
            assert params["name"] in _shipped()
        out = params.get("output_dir") or params.get("output")
        if out:
            written.add(out)
        if name in ("export", "certify"):
            written.add(params["package"])  # they update the package in place


def test_readme_python_snippet_reads_only_what_it_wrote():
    import analogai_deploy as ad

    (code,) = _blocks("python")
    tree = ast.parse(code)
    written: set[str] = set()
    calls = sorted((n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                    and isinstance(n.func.value, ast.Name) and n.func.value.id == "ad"), key=lambda n: n.lineno)
    assert calls
    for call in calls:
        verb = call.func.attr
        assert hasattr(ad, verb), f"ad.{verb} does not exist"
        args = [a.value for a in call.args if isinstance(a, ast.Constant)]
        kwargs = {k.arg: k.value.value for k in call.keywords if isinstance(k.value, ast.Constant)}
        if verb in ("recover", "certify", "export", "load"):
            assert args[0] in written, f"line {call.lineno}: ad.{verb}({args[0]!r}) reads a folder never written before"
        if verb == "from_pretrained":
            assert args[0] in _shipped()
        out = kwargs.get("output") or (args[2] if verb == "convert" and len(args) > 2 else None)
        if out:
            written.add(out)


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "MPLBACKEND": "Agg"}
    env.pop("ANALOGAI_ZOO", None)  # the README's defaults: the shipped zoo (read only: publish goes to --zoo)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=3600)


@pytest.mark.slow
def test_readme_pipeline_runs_as_written(tmp_path):
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))  # `source .venv/bin/activate`, as from the checkout
    (tmp_path / "pipeline.sh").write_text(_pipeline(), encoding="utf-8")
    proc = _run(["bash", "-e", "pipeline.sh"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "runs" / "lenet-msnat" / "model.onnx").exists()
    assert (tmp_path / "runs" / "zoo" / "my-digits-cnn" / "certificate.json").exists()
    assert (tmp_path / "runs" / "from-zoo" / "model.safetensors").exists()


@pytest.mark.slow
def test_readme_python_snippet_runs_as_written(tmp_path):
    (code,) = _blocks("python")
    (tmp_path / "snippet.py").write_text(code, encoding="utf-8")
    proc = _run([sys.executable, "snippet.py"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "runs" / "api" / "lenet-msnat" / "certificate.json").exists()
