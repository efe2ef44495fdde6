"""Hostile packages: every one is refused with a one-line error naming the problem, and nothing loads.

Through the CLI (`inspect`, `export`, `certify`, `publish`, `pull`): exit code 1 or 2, one `error:` line
with a hint, no traceback. Through the API: a PackageError/UsageError before any weights are used.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))

from zoo_helpers import certified_copy, edit_certificate  # noqa: E402

from analogai_deploy import package as pkgio  # noqa: E402
from analogai_deploy.errors import AnalogAIError  # noqa: E402

ROOT = Path(__file__).parents[2]


def _weights(p: Path) -> Path:
    return p / pkgio.WEIGHTS


def truncated(p: Path) -> None:
    data = _weights(p).read_bytes()
    _weights(p).write_bytes(data[: len(data) // 2])


def truncated_to_header(p: Path) -> None:
    _weights(p).write_bytes(_weights(p).read_bytes()[:5])


def bit_flipped(p: Path) -> None:
    data = bytearray(_weights(p).read_bytes())
    data[len(data) - 100] ^= 0x10
    _weights(p).write_bytes(bytes(data))


def header_flipped(p: Path) -> None:
    data = bytearray(_weights(p).read_bytes())
    data[20] ^= 0x01  # inside the JSON header: names, dtypes or offsets change
    _weights(p).write_bytes(bytes(data))


def oversized_header(p: Path) -> None:
    data = _weights(p).read_bytes()
    _weights(p).write_bytes(struct.pack("<Q", 2**40) + data[8:])


def header_past_the_end(p: Path) -> None:
    data = _weights(p).read_bytes()
    _weights(p).write_bytes(struct.pack("<Q", len(data)) + data[8:])


def _edit_config(p: Path, fn) -> None:
    config = json.loads((p / pkgio.CONFIG).read_text())
    fn(config)
    (p / pkgio.CONFIG).write_text(json.dumps(config))


def config_not_json(p: Path) -> None:
    (p / pkgio.CONFIG).write_text('{"format": "analogai-deploy/package", ')


def config_not_an_object(p: Path) -> None:
    (p / pkgio.CONFIG).write_text("[1, 2, 3]")


def config_binary(p: Path) -> None:
    (p / pkgio.CONFIG).write_bytes(b"\xff\xfe\x00garbage")


def config_huge(p: Path) -> None:
    with open(p / pkgio.CONFIG, "r+b") as f:
        f.truncate(1 << 30)  # 1 GiB (sparse): refused before it is read


def certificate_huge(p: Path) -> None:
    with open(p / pkgio.CERTIFICATE, "r+b") as f:
        f.truncate(1 << 30)


def config_missing(p: Path) -> None:
    (p / pkgio.CONFIG).unlink()


def config_weights_outside(p: Path) -> None:
    _edit_config(p, lambda c: c["weights"].update(file="../../outside.safetensors"))


def config_weights_hash_changed(p: Path) -> None:
    _edit_config(p, lambda c: c["weights"].update(sha256="0" * 64))


def config_other_architecture(p: Path) -> None:
    """config.json edited to another architecture, its weights hash recomputed: the weights do not fit."""
    _edit_config(p, lambda c: c["source"].update(name="mlp"))


def config_future_format(p: Path) -> None:
    _edit_config(p, lambda c: c.update(format_version=99))


def config_section_wrong_type(p: Path) -> None:
    _edit_config(p, lambda c: c.update(analog="sigma=0.1"))


def config_local_code_source(p: Path) -> None:
    _edit_config(p, lambda c: c.update(source={"kind": "local", "file": "../../evil.py", "name": "Net"}))


def config_runs_bundled_code(p: Path) -> None:
    """The package ships evil.py and its config.json names it (with the right sha256) as the model's code."""
    import hashlib

    code = f"open({str(p.parent / 'pwned')!r}, 'w').write('ran')\ndef net():\n    return None\n"
    (p / "evil.py").write_text(code)
    _edit_config(p, lambda c: c.update(source={"kind": "local", "file": str((p / "evil.py").resolve()),
                                               "factory": "net", "sha256": hashlib.sha256(code.encode()).hexdigest(),
                                               "kwargs": {}}))


def weights_symlink_outside(p: Path) -> None:
    outside = p.parent / "outside.safetensors"
    shutil.copy(_weights(p), outside)
    _weights(p).unlink()
    os.symlink(outside, _weights(p))


def extra_symlink_outside(p: Path) -> None:
    """A file that links outside the package: copying the package would carry that file's bytes along."""
    secret = p.parent / "secret.txt"
    secret.write_text("not part of any package")
    os.symlink(secret, p / "notes.txt")


def certificate_not_json(p: Path) -> None:
    (p / pkgio.CERTIFICATE).write_text("{not json")


def certificate_other_weights(p: Path) -> None:
    cert = json.loads((p / pkgio.CERTIFICATE).read_text())
    cert["weights_sha256"] = "f" * 64
    (p / pkgio.CERTIFICATE).write_text(json.dumps(cert))


def certificate_not_an_object(p: Path) -> None:
    (p / pkgio.CERTIFICATE).write_text('"passed"')


def config_num_classes_edited(p: Path) -> None:
    """config.json claims 7 classes; the weights still output 10."""
    _edit_config(p, lambda c: c.update(num_classes=7))


def config_input_edited(p: Path) -> None:
    _edit_config(p, lambda c: c["input"].update(shape=[1, 16, 16]))


# ---- forged certificates: they load (a certificate is a claim, not code), but never enter or leave a zoo ----

def _consistent(c: dict, shift: float) -> None:
    """Move every per-repeat value by `shift` and recompute mean, std, CI and min: a forgery that agrees
    with itself."""
    from analogai_deploy.metrics import stats

    for r in c["results"]:
        r["values"] = [min(1.0, max(0.0, v + shift)) for v in r["values"]]
        st = stats(r["values"], (0.0, 1.0))
        r.update(mean=st["mean"], std=st["std"], ci95=st["ci95"], min=st["min"])


def certificate_means_edited(p: Path) -> None:
    def forge(c):
        c.setdefault("verdict", {})["passed"] = True
        for r in c["results"]:
            r["mean"], r["ci95"] = 0.999, [0.998, 1.0]
    edit_certificate(p, forge)


def certificate_consistently_forged(p: Path) -> None:
    edit_certificate(p, lambda c: _consistent(c, 0.05))


def certificate_digital_lowered(p: Path) -> None:
    """A lower digital accuracy makes any drop look small."""
    edit_certificate(p, lambda c: c["digital"].update(accuracy=c["digital"]["accuracy"] - 0.2))


def certificate_gate_removed(p: Path) -> None:
    def forge(c):
        c["settings"]["max_drop"] = None
        c.pop("verdict", None)
    edit_certificate(p, forge)


def certificate_gate_loosened(p: Path) -> None:
    def forge(c):
        c["settings"]["max_drop"] = 100.0
        c["verdict"].update(max_drop_pp=100.0, passed=True)
    edit_certificate(p, forge)


def certificate_repeats_inflated(p: Path) -> None:
    edit_certificate(p, lambda c: c.update(repeats=100))


def certificate_other_data(p: Path) -> None:
    edit_certificate(p, lambda c: c["data"].update(fingerprint="0" * 64))


def certificate_other_device(p: Path) -> None:
    edit_certificate(p, lambda c: c["device"].update(out_noise=0.0))


def certificate_unbound(p: Path) -> None:
    edit_certificate(p, lambda c: (c.pop("model_sha256", None), c.pop("model_sections", None)))


def certificate_from_other_weights(p: Path) -> None:
    """The certificate of other (really certified) weights, copied in whole."""
    other = certified_copy(p.parent / "other-weights", variant=1)
    shutil.copy(other / pkgio.CERTIFICATE, p / pkgio.CERTIFICATE)


FORGED = [certificate_means_edited, certificate_consistently_forged, certificate_digital_lowered,
          certificate_gate_removed, certificate_gate_loosened, certificate_repeats_inflated, certificate_other_data,
          certificate_other_device, certificate_unbound, certificate_from_other_weights, config_num_classes_edited,
          config_input_edited]


LOAD_CASES = [
    truncated, truncated_to_header, bit_flipped, header_flipped, oversized_header, header_past_the_end,
    config_not_json, config_not_an_object, config_binary, config_huge, config_missing, config_weights_outside,
    config_weights_hash_changed, config_other_architecture, config_future_format, config_section_wrong_type,
    config_runs_bundled_code, certificate_not_json, certificate_huge, certificate_other_weights,
    certificate_not_an_object, config_num_classes_edited, config_input_edited, certificate_from_other_weights,
]


@pytest.fixture
def certified(tmp_path):
    return certified_copy(tmp_path / "pkg" / "digits-cnn")


def _one_line_error(code: int, out: str, err: str) -> str:
    assert code in (1, 2), (code, out, err)
    assert "Traceback" not in err and "this is a bug" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.mark.parametrize("spoil", LOAD_CASES, ids=lambda f: f.__name__)
def test_hostile_package_never_loads(spoil, certified, cli):
    spoil(certified)
    with pytest.raises(AnalogAIError) as info:
        pkgio.load(certified)
    assert "\n" not in str(info.value)
    assert not (certified.parent / "pwned").exists()
    line = _one_line_error(*cli("inspect", certified))
    assert "digits-cnn" in line or "config.json" in line or "certificate" in line, line


@pytest.mark.parametrize("spoil", LOAD_CASES + [config_local_code_source, weights_symlink_outside,
                                                extra_symlink_outside] + FORGED, ids=lambda f: f.__name__)
def test_hostile_package_never_enters_the_zoo(spoil, certified, cli, tmp_path):
    spoil(certified)
    zoo = tmp_path / "zoo"
    _one_line_error(*cli("publish", certified, "--zoo", zoo))
    assert not (zoo / "digits-cnn").exists()


@pytest.fixture(scope="module")
def published_zoo(tmp_path_factory):
    """A zoo holding one honestly published entry (published once; each test forges a copy)."""
    from analogai_deploy import zoo

    tmp = tmp_path_factory.mktemp("published")
    zoo.publish(certified_copy(tmp / "digits-cnn"), zoo=tmp / "zoo", name="digits-cnn")
    return tmp / "zoo"


@pytest.mark.parametrize("spoil", FORGED, ids=lambda f: f.__name__)
def test_forgery_inside_a_zoo_is_refused_by_pull_verify(spoil, published_zoo, cli, tmp_path):
    """The same forgeries made to an entry after it was published: `pull --verify` refuses every one."""
    zoo = tmp_path / "zoo"
    shutil.copytree(published_zoo, zoo)
    spoil(zoo / "digits-cnn")
    _one_line_error(*cli("pull", "digits-cnn", "--zoo", zoo, "--verify", "-o", tmp_path / "pulled"))
    assert not (tmp_path / "pulled").exists()


def test_zoo_index_pointing_outside_is_refused(certified, cli, tmp_path):
    zoo = tmp_path / "zoo"
    assert cli("publish", certified, "--zoo", zoo)[0] == 0
    outside = tmp_path / "outside"
    shutil.copytree(zoo / "digits-cnn", outside)
    for bad in ("../outside", "/etc", "..", "digits-cnn/../../outside"):
        index = json.loads((zoo / "index.json").read_text())
        index["entries"][0]["path"] = bad
        (zoo / "index.json").write_text(json.dumps(index))
        line = _one_line_error(*cli("pull", "digits-cnn", "--zoo", zoo, "-o", tmp_path / "pulled"))
        assert "refusing file name" in line or "outside the zoo" in line, line
        assert not (tmp_path / "pulled").exists()


def test_zoo_entry_swapped_behind_the_index_is_refused(certified, cli, tmp_path):
    """Another certified package put in an entry's folder: the index's sha256 no longer matches."""
    zoo = tmp_path / "zoo"
    assert cli("publish", certified, "--zoo", zoo)[0] == 0
    other = certified_copy(tmp_path / "other", variant=2)
    shutil.rmtree(zoo / "digits-cnn")
    shutil.copytree(other, zoo / "digits-cnn")
    line = _one_line_error(*cli("pull", "digits-cnn", "--zoo", zoo))
    assert "tampered" in line or "sha256" in line, line


def test_hub_file_names_that_escape_the_snapshot_are_refused(cli, certified, tmp_path, monkeypatch):
    from hub_server import HubStandIn
    from huggingface_hub import constants

    server = HubStandIn().start()
    try:
        cache = tmp_path / "hf-cache"
        for k, v in {"HF_ENDPOINT": server.endpoint, "HF_TOKEN": "hf_stand_in_token", "HF_HUB_DISABLE_XET": "1",
                     "HF_HUB_OFFLINE": "0", "HF_HUB_CACHE": str(cache)}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        repo = "analog-lab/digits-cnn"
        assert cli("publish", certified, "--hub", repo)[0] == 0
        for name in ("../../../escaped.txt", "../escaped.txt"):
            server.tamper(repo, name, b"written outside the snapshot")
            line = _one_line_error(*cli("pull", f"hf-hub:{repo}"))
            assert not list(tmp_path.rglob("escaped.txt")), line
    finally:
        server.stop()


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_no_pickle_is_ever_read():
    """In the toolkit's code (not its help texts): torch.load only with weights_only=True; no pickle,
    np.load(allow_pickle=True), yaml.load, eval/exec of text, or trust_remote_code=True."""
    offenders = []
    for f in sorted((ROOT / "analogai_deploy").rglob("*.py")):
        tree = ast.parse(f.read_text(), str(f))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in ("pickle", "dill", "cloudpickle", "marshal", "shelve") for n in names):
                    offenders.append(f"{f.name}:{node.lineno}: imports {names}")
        for call, func in _calls(tree):
            kw = {k.arg: ast.unparse(k.value) for k in call.keywords}
            where = f"{f.name}:{call.lineno}: {ast.unparse(call)[:100]}"
            if func == "torch.load" and kw.get("weights_only") != "True":
                offenders.append(where)
            if func in ("eval", "exec", "yaml.load", "yaml.unsafe_load", "pickle.load", "pickle.loads"):
                offenders.append(where)
            if kw.get("allow_pickle") == "True" or kw.get("trust_remote_code") == "True":
                offenders.append(where)
    assert not offenders, offenders
