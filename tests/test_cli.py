"""The command line: help everywhere, json on stdout, exit codes 0/1/2, end-to-end convert."""
from __future__ import annotations

import json

from typer.main import get_command

from analogai_deploy.cli.app import app


def _all_commands(group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name)
        if hasattr(cmd, "commands"):
            yield from _all_commands(cmd, (*prefix, name))


def test_help_of_every_command(cli):
    names = list(_all_commands(get_command(app)))
    assert {("convert",), ("env",), ("models",)} <= set(names)
    for name in names:
        code, out, _ = cli(*name, "--help")
        assert code == 0 and "Usage" in out, name
        cmd = get_command(app)
        for part in name:
            cmd = cmd.commands[part]
        if not hasattr(cmd, "commands"):
            assert "Example" in out, f"{' '.join(name)} --help has no examples"


def test_convert_end_to_end_json(cli, tmp_path):
    code, out, err = cli("convert", "resnet18", "--num-classes", "10", "-o", tmp_path / "r18", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["report"]["converted_layers"] == 21 and data["report"]["analog_share"] > 0.99
    assert (tmp_path / "r18" / "model.safetensors").exists()


def test_convert_human_report(cli, tmp_path):
    code, out, _ = cli("convert", "mobilenet_v3_small", "--num-classes", "10", "-o", tmp_path / "m", "--keep-first-last")
    assert code == 0
    assert "converted" in out and "BatchNorm2d" in out and "keep_first_last" in out


def test_usage_errors_exit_2_with_one_line_hint(cli, tmp_path):
    code, out, err = cli("convert", "resnt18", "-o", tmp_path / "x")
    assert code == 2 and out == ""
    assert "unknown model 'resnt18'" in err and "did you mean: resnet18" in err
    code, _, err = cli("convert", "resnet18", "--input-shape", "3,x", "-o", tmp_path / "x")
    assert code == 2 and "C,H,W" in err
    code, _, _ = cli("convert", "--no-such-option")
    assert code == 2
    assert "Traceback" not in err


def test_env_reports_aihwkit_tiles(cli):
    code, out, _ = cli("env", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["torch"] and "cpp" in info["aihwkit_tiles"]


def test_version(cli):
    from importlib.metadata import version

    code, out, _ = cli("--version")
    assert code == 0 and out.startswith(f"analogai-deploy {version('analogai-deploy')} (torch ")


def test_a_bare_ctrl_c_says_interrupted(cli, monkeypatch):
    """Ctrl-C before a command catches it: typer returns 130 silently; the CLI says what happened."""
    from analogai_deploy.hardware import probe as aihwkit_probe

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(aihwkit_probe, "tile_support", interrupt)
    code, _, err = cli("env")
    assert code == 130 and "error: interrupted" in err


def test_publish_help_says_where_the_default_zoo_is(cli):
    code, out, _ = cli("publish", "--help")
    assert code == 0 and "the repository's own model_zoo/" in " ".join(out.split())


def test_publish_to_another_zoo_says_how_to_pull_from_it(cli, lenet_pkg, tmp_path, monkeypatch):
    import shutil

    monkeypatch.delenv("ANALOGAI_ZOO", raising=False)
    pkg = tmp_path / "lenet"
    shutil.copytree(lenet_pkg, pkg)
    code, _, err = cli("certify", pkg, "--device", "ideal", "--times", "1d", "--repeats", "5", "--max-drop", "1",
                       "--limit", "20")
    assert code == 0, err
    code, out, err = cli("publish", pkg, "--zoo", tmp_path / "zoo", "--name", "tiny-lenet")
    assert code == 0, err
    assert f"pull with: analogai-deploy pull tiny-lenet --zoo {tmp_path / 'zoo'}" in out
    code, out, err = cli("pull", "tiny-lenet", "--zoo", tmp_path / "zoo")
    assert code == 0, err
