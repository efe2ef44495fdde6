"""The public API: typed verbs (a config plus keyword overrides, no pass-through), every exported name
resolves, type checkers see the same names the lazy loader gives."""
from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import analogai_deploy as ad
from analogai_deploy.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
INIT = ROOT / "analogai_deploy" / "__init__.py"
VERBS = ["convert", "recover", "certify", "export", "to_aihwkit", "publish", "pull", "from_pretrained", "load"]
CONFIGS = ["AnalogConfig", "Recipe", "CertifyConfig", "DeviceConfig", "IOSettings", "MappingConfig", "ExportConfig",
           "Policy"]


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_a_real_signature(verb):
    params = inspect.signature(getattr(ad, verb)).parameters.values()
    passed_through = [p.name for p in params if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    assert not passed_through, f"ad.{verb} passes *{passed_through} through"
    assert verb in ad.__all__


@pytest.mark.parametrize("verb", ["certify", "recover"])
def test_the_launcher_passes_nothing_through(verb):
    """The verbs' `nproc` layer names every argument it hands to the stage (sweep adds certify's settings)."""
    from analogai_deploy import launcher

    params = inspect.signature(getattr(launcher, verb)).parameters.values()
    assert not [p.name for p in params if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def test_the_verbs_take_their_config_second():
    for verb, config in [("convert", "config"), ("certify", "config"), ("export", "config"),
                         ("to_aihwkit", "config"), ("recover", "recipe")]:
        assert list(inspect.signature(getattr(ad, verb)).parameters)[1] == config, verb


def test_every_exported_name_resolves():
    for name in ad.__all__:
        assert getattr(ad, name) is not None, name
    for name in CONFIGS:
        cls = getattr(ad, name)
        assert inspect.isclass(cls) and name in ad.__all__
        cls()  # every config has defaults


def test_type_checkers_see_what_the_lazy_loader_gives():
    """The TYPE_CHECKING block imports every exported name from the module _LAZY loads it from."""
    tree = ast.parse(INIT.read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    typed = {a.name: "analogai_deploy." + imp.module for imp in block.body for a in imp.names}
    from analogai_deploy import _LAZY

    assert typed == _LAZY
    assert set(typed) == set(ad.__all__)


def test_keywords_replace_the_fields_of_a_given_config():
    from analogai_deploy.api import certify_config

    base = ad.CertifyConfig(repeats=20, seed=3, device=ad.DeviceConfig(name="PCM", io=ad.IOSettings(adc_bits=8)))
    cfg = certify_config(base, {"times": "1s,1d", "mapping": ad.MappingConfig(weight_scaling="tile")},
                          {}, {"dac_bits": 6})
    assert (cfg.repeats, cfg.seed, cfg.times, cfg.mapping.weight_scaling) == (20, 3, ["1s", "1d"], "tile")
    assert (cfg.device.name, cfg.device.io.adc_bits, cfg.device.io.dac_bits) == ("PCM", 8, 6)
    assert certify_config(base, {}, {"device": "ReRAM"}, {}).device.name == "ReRAM"
    assert certify_config(base, {}, {}, {}) == base  # nothing given: the config as it was
    assert certify_config(None, {"repeats": 2}, {}, {}) is None  # no config: certify's own defaults


def test_certify_with_a_config_and_an_override(lenet_pkg):
    cert = ad.certify(lenet_pkg, ad.CertifyConfig(repeats=2, limit=16, times=["1s", "1h"]), times="1d",
                      device="ideal", write=False)
    assert [r["time"] for r in cert["results"]] == ["1d"] and cert["settings"]["repeats"] == 2
    assert cert["settings"]["device"]["name"] == "ideal"


def test_library_errors_name_parameters_and_the_cli_names_flags(lenet_pkg, cli):
    with pytest.raises(UsageError) as err:
        ad.CertifyConfig(repeats=5, ci_width=1.0)
    assert "--" not in str(err.value) and "`repeats=auto` `ci_width=1`" in str(err.value)
    code, _, stderr = cli("certify", lenet_pkg, "--repeats", "5", "--ci-width", "1")
    assert code == 2 and "--ci-width is the target of --repeats auto" in stderr
    assert "pass --repeats auto --ci-width 1" in stderr and "`" not in stderr


def test_the_cli_spells_each_parameter_as_its_flag():
    from analogai_deploy.cli.error_messages import flags

    assert flags("keep it digital (`exclude_types=Foo`)") == "keep it digital (--exclude-type Foo)"
    assert flags("pass `hub_repo`, `match_qat=True` or `device=custom`") == "pass --hub, --match-qat or --device custom"
    assert flags("see `analogai-deploy convert`") == "see `analogai-deploy convert`"  # a command, not a parameter
    assert flags(None) is None


def _raises_outside_command_lines(tree: ast.AST):
    """Every raise of a module, but those of a `*_main` (bench/*.py's own argparse command lines name flags)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef) and node.name.endswith("_main"):
            continue
        if isinstance(node, ast.Raise) and node.exc is not None:
            yield node
        yield from _raises_outside_command_lines(node)


def test_library_errors_carry_no_cli_flags():
    """A raised error's text names the parameter (`ci_width`), never the flag (--ci-width): everywhere but the
    CLI, which turns the one into the other (cli/error_messages.py)."""
    flag = re.compile(r"(?<![\w-])--[a-z]")
    found = []
    for path in sorted((ROOT / "analogai_deploy").rglob("*.py")):
        if "cli" in path.relative_to(ROOT).parts:
            continue
        for node in _raises_outside_command_lines(ast.parse(path.read_text())):
            texts = [n.value for n in ast.walk(node.exc) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
            found += [f"{path.relative_to(ROOT)}:{node.lineno}" for t in texts if flag.search(t)]
    assert not found, f"CLI flags in library errors: {found}"


def test_convert_names_exclude_types_and_the_cli_its_flag(tmp_path, cli):
    with pytest.raises(UsageError, match="`exclude_types=Conv3x` names no analog-capable layer type"):
        ad.convert("lenet", ad.AnalogConfig(exclude_types=["Conv3x"]), tmp_path / "p", num_classes=10)
    code, _, err = cli("convert", "lenet", "--exclude-type", "Conv3x", "-o", tmp_path / "p")
    assert code == 2 and "--exclude-type Conv3x names no analog-capable layer type" in err


def test_certify_and_to_aihwkit_read_one_typed_keyword_list():
    """The chip keywords are one TypedDict that certify's extends: help() and inspect show each of them, and a
    misspelt one fails as Python's own would, naming the close ones."""
    from analogai_deploy.api import CertifyKeywords, ChipKeywords

    chip = inspect.signature(ad.to_aihwkit).parameters
    cert = inspect.signature(ad.certify).parameters
    assert set(ChipKeywords.__annotations__) <= set(CertifyKeywords.__annotations__)
    for verb, keywords in (("to_aihwkit", chip), ("certify", cert)):
        assert {"device", "dac_bits", "mapping"} <= set(keywords), verb
        assert keywords["n_w"].kind is inspect.Parameter.KEYWORD_ONLY and keywords["n_w"].default is None
    assert "times" in cert and "times" not in chip
    with pytest.raises(TypeError, match="certify.. got an unexpected keyword argument 'repeat'; did you mean: repeats"):
        ad.certify("runs/none", repeat=3)
    with pytest.raises(TypeError, match="to_aihwkit.. got an unexpected keyword argument 'times'"):
        ad.to_aihwkit("runs/none", times="1d")


def test_a_type_checker_sees_each_keyword_of_the_verbs(tmp_path):
    """mypy (installed with aihwkit) reads the keywords through `Unpack`: a misspelt name and a wrong type are
    errors, the right ones are not. (MYPYPATH: an editable install's import hook is invisible to mypy.)"""
    import os
    import subprocess
    import sys

    use = tmp_path / "use.py"
    use.write_text('import analogai_deploy as ad\n'
                   'ad.certify("p", times="1d", repeats=3, dac_bits=6)\n'
                   'ad.to_aihwkit("p", device="PCM", n_w=0.1)\n'
                   'ad.certify("p", repeat=3)\n'
                   'ad.certify("p", seed="zero")\n'
                   'ad.to_aihwkit("p", times="1d")\n')
    run = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), "--follow-imports=silent",
                          "--ignore-missing-imports", "--no-error-summary", str(use)],
                         capture_output=True, text=True, env={**os.environ, "MYPYPATH": str(ROOT)})
    errors = [line for line in run.stdout.splitlines() if ": error:" in line]
    assert [int(line.split(":")[1]) for line in errors] == [4, 5, 6], run.stdout + run.stderr
    assert 'did you mean "repeats"' in errors[0] and '"seed"' in errors[1] and '"times"' in errors[2]

def test_every_config_is_frozen():
    """A config changes through dataclasses.replace, which validates it again, never in place after validation."""
    import dataclasses
    import importlib
    import pkgutil

    from analogai_deploy._config import StrictConfig

    for module in pkgutil.walk_packages(ad.__path__, "analogai_deploy."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    configs, todo = [], [StrictConfig]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if dataclasses.is_dataclass(cls) and cls.__module__.startswith("analogai_deploy."):
            configs.append(cls)
    assert len(configs) >= 20 and {"ExportConfig", "Policy", "CertifyConfig"} <= {c.__name__ for c in configs}
    assert [c.__qualname__ for c in configs if not c.__dataclass_params__.frozen] == []


def test_a_verb_given_the_wrong_kind_of_argument_says_so(lenet_pkg, tmp_path):
    """A config of another kind, a dict, a shape as a string, a constructor given strings: what a user passes
    by mistake is one UsageError naming the parameter, or taken as the CLI would take it."""
    for call, message in [
        (lambda: ad.certify(lenet_pkg, ad.ExportConfig(), repeats=2), "`config` must be a CertifyConfig, got ExportConfig"),
        (lambda: ad.certify(lenet_pkg, {"repeats": 2}), "got dict .CertifyConfig.from_dict"),
        (lambda: ad.to_aihwkit(lenet_pkg, ad.ExportConfig()), "`config` must be a CertifyConfig"),
        (lambda: ad.export(lenet_pkg, ad.CertifyConfig()), "`config` must be an ExportConfig, got CertifyConfig"),
        (lambda: ad.convert("mlp", ad.CertifyConfig(), tmp_path / "c", num_classes=10), "must be an AnalogConfig"),
        (lambda: ad.convert("mlp", output=tmp_path / "c", num_classes=10, input_shape="1,8"), "got 2 numbers"),
        (lambda: ad.ExportConfig(opset="seventeen"), "opset must be an integer"),
        (lambda: ad.certify(lenet_pkg, repeats=2, write=False, output=tmp_path / "copy"), "`write=False` writes nothing"),
    ]:
        with pytest.raises(UsageError, match=message):
            call()
    assert not (tmp_path / "c").exists() and not (tmp_path / "copy").exists()
    assert ad.ExportConfig(opset="17").opset == 17
    pkg = ad.convert("mlp", output=tmp_path / "mlp", num_classes=10, input_shape="1,8,8")
    assert pkg.config["input"]["shape"] == [1, 8, 8]
