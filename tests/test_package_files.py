"""Every file of a package is bound: config.json records each file's sha256 (`files`), a certificate binds the
tokenizer it measured with, and every reading stage (load, inspect PKG, certify, publish, pull) refuses a
package whose file changed, naming the file. Older packages (a `files` list without hashes) still load,
certify and publish; their next write records the hashes.
"""
from __future__ import annotations

import json
import pickle
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from zoo_helpers import certified_copy, shipped_copy  # noqa: E402

from analogai_deploy import package as pkgio  # noqa: E402
from analogai_deploy.errors import PackageError  # noqa: E402


def _error(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code in (1, 2) and len(lines) == 1 and "this is a bug" not in err, (code, err)
    return lines[0]


# ---- a text package's tokenizer ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def text_certified(tmp_path_factory, minilm_dir):
    """A BERT classifier with the MiniLM's WordPiece tokenizer (30522 tokens), converted and certified."""
    import analogai_deploy as ad
    from hf_models import bert_classifier

    root = tmp_path_factory.mktemp("tok")
    ad.convert(f"hf:{bert_classifier(root / 'bert', minilm_dir)}", output=root / "pkg")
    ad.certify(root / "pkg", data="sentences", times="1d", repeats=2, limit=8)
    return root / "pkg"


def swap_two_ids(p: Path) -> None:
    """Two words of the vocabulary trade ids: every sentence with them reaches the model as other tokens."""
    tok = json.loads((p / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    vocab["the"], vocab["a"] = vocab["a"], vocab["the"]
    (p / "tokenizer.json").write_text(json.dumps(tok))


def delete_the_vocabulary(p: Path) -> None:
    """tokenizer_config.json stays: transformers then builds a 5-token tokenizer that maps everything to [UNK]."""
    for name in ("tokenizer.json", "vocab.txt"):
        (p / name).unlink(missing_ok=True)


def lowercase_off(p: Path) -> None:
    cfg = json.loads((p / "tokenizer_config.json").read_text())
    cfg["do_lower_case"] = False
    (p / "tokenizer_config.json").write_text(json.dumps(cfg))


TOKENIZER_EDITS = {swap_two_ids: "tokenizer.json", delete_the_vocabulary: "tokenizer.json",
                   lowercase_off: "tokenizer_config.json"}


@pytest.mark.parametrize("edit", list(TOKENIZER_EDITS), ids=lambda f: f.__name__)
def test_an_edited_tokenizer_is_refused_by_every_reading_stage(edit, text_certified, cli, tmp_path):
    import analogai_deploy as ad

    pkg = tmp_path / "pkg"
    shutil.copytree(text_certified, pkg)
    edit(pkg)
    name = TOKENIZER_EDITS[edit]
    with pytest.raises(PackageError, match=name):
        ad.load(pkg)
    assert name in _error(*cli("inspect", pkg)[::2])
    assert name in _error(*cli("certify", pkg, "-o", tmp_path / "out", "--data", "sentences", "--repeats", "2",
                               "--times", "1d", "--limit", "8")[::2])
    assert not (tmp_path / "out").exists()
    code, _, err = cli("publish", pkg, "--zoo", tmp_path / "zoo")
    assert name in _error(code, err) and "digits" not in err  # what changed, with a fix for a text package


def test_a_text_certificate_on_other_inputs_gets_a_fix_for_text(text_certified, tmp_path):
    """The spot check finds other inputs than the certificate's: for a text package the refusal speaks of its
    text and tokenizer, and its fix names text data (it used to say "e.g. `data=digits`")."""
    from zoo_helpers import edit_certificate

    from analogai_deploy.errors import OperationFailed
    from analogai_deploy.zoo import gate

    pkg = tmp_path / "pkg"
    shutil.copytree(text_certified, pkg)
    cert = edit_certificate(pkg, lambda c: c["data"].update(fingerprint="0" * 64))
    with pytest.raises(OperationFailed, match="tokenizer") as info:
        gate.spot_check(pkg, cert, gate.Policy(spot_repeats=2))
    assert "`data=sentences`" in info.value.hint and "digits" not in info.value.hint


def _edit_record(p: Path, change) -> None:
    """Hand-edit the toolkit's record in config.json, in either layout (a Hugging Face package's config.json
    is the transformers config with the record under package.RECORD_KEY)."""
    data = json.loads((p / pkgio.CONFIG).read_text())
    change(data.get(pkgio.RECORD_KEY, data))
    (p / pkgio.CONFIG).write_text(json.dumps(data))


def _as_older(p: Path, *, certificate_binds_tokenizer: bool) -> None:
    """What a package written before config.json recorded each file's sha256 looks like (`files` a list)."""
    _edit_record(p, lambda r: r.update(files=sorted(r["files"])))
    if not certificate_binds_tokenizer:
        cert = json.loads((p / pkgio.CERTIFICATE).read_text())
        cert.pop("files_sha256")
        (p / pkgio.CERTIFICATE).write_text(json.dumps(cert))


def test_an_older_text_package_whose_tokenizer_lost_its_vocabulary_is_refused(text_certified, cli, tmp_path):
    """No sha256 binds the files and the certificate binds no tokenizer: the vocabulary size config.json
    records (30522) still refuses the 5-token tokenizer transformers builds without tokenizer.json."""
    pkg = tmp_path / "pkg"
    shutil.copytree(text_certified, pkg)
    _as_older(pkg, certificate_binds_tokenizer=False)
    delete_the_vocabulary(pkg)
    line = _error(*cli("certify", pkg, "-o", tmp_path / "out", "--data", "sentences", "--repeats", "2",
                       "--times", "1d", "--limit", "8")[::2])
    assert "30522" in line and "tokens" in line, line


def test_a_certificate_binds_the_tokenizer_it_measured_with(text_certified, cli, tmp_path):
    """An older package (no per-file sha256) certified now: the certificate itself refuses a swapped id."""
    pkg = tmp_path / "pkg"
    shutil.copytree(text_certified, pkg)
    assert set(pkgio.read_json(pkg / pkgio.CERTIFICATE)["files_sha256"]) >= {"tokenizer.json", "tokenizer_config.json"}
    _as_older(pkg, certificate_binds_tokenizer=True)
    pkgio.load(pkg)
    swap_two_ids(pkg)
    with pytest.raises(PackageError, match="tokenizer.json \\(changed\\)"):
        pkgio.load(pkg)


def test_an_unlisted_tokenizer_file_is_refused(text_certified, tmp_path):
    """transformers reads any tokenizer file it finds: one the package does not list must not be there."""
    pkg = tmp_path / "pkg"
    shutil.copytree(text_certified, pkg)
    (pkg / "added_tokens.json").write_text('{"hello world": 30522}')
    with pytest.raises(PackageError, match="added_tokens.json \\(added\\)"):  # the certificate's binding
        pkgio.load(pkg)
    (pkg / pkgio.CERTIFICATE).unlink()
    _edit_record(pkg, lambda r: r["files"].pop(pkgio.CERTIFICATE))
    with pytest.raises(PackageError, match="added_tokens.json is not one of the files config.json lists"):
        pkgio.load(pkg)


# ---- zoo entries: model.onnx, model.aihwkit.pt, files nobody published -------------------------------------

@pytest.fixture(scope="module")
def exported_zoo(tmp_path_factory):
    """A zoo with one entry that carries model.onnx and model.aihwkit.pt (exported, certified, published)."""
    import analogai_deploy as ad
    from analogai_deploy import zoo

    tmp = tmp_path_factory.mktemp("exported")
    pkg = certified_copy(tmp / "digits-cnn")
    ad.export(pkg)
    ad.export(pkg, to="aihwkit")
    zoo.publish(pkg, zoo=tmp / "zoo", name="digits-cnn")
    return tmp / "zoo"


class _Payload:
    """Unpickling this runs code: it creates the file named in its argument."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def onnx_byte_changed(p: Path) -> None:
    data = bytearray((p / "model.onnx").read_bytes())
    data[-20] ^= 0x01
    (p / "model.onnx").write_bytes(bytes(data))


def aihwkit_pickle_swapped(p: Path) -> None:
    (p / "model.aihwkit.pt").write_bytes(pickle.dumps(_Payload(str(p.parent / "pwned"))))


def card_edited(p: Path) -> None:
    (p / pkgio.CARD).write_text((p / pkgio.CARD).read_text().replace("PCM", "PCM (99.9% at 1 y)"))


ZOO_EDITS = {onnx_byte_changed: "model.onnx", aihwkit_pickle_swapped: "model.aihwkit.pt", card_edited: "README.md"}


@pytest.mark.parametrize("edit", list(ZOO_EDITS), ids=lambda f: f.__name__)
def test_a_changed_file_in_a_zoo_entry_is_refused(edit, exported_zoo, cli, tmp_path):
    zoo = tmp_path / "zoo"
    shutil.copytree(exported_zoo, zoo)
    edit(zoo / "digits-cnn")
    name = ZOO_EDITS[edit]
    for argv in (["pull", "digits-cnn", "--zoo", zoo, "--verify", "-o", tmp_path / "pulled"],
                 ["pull", "digits-cnn", "--zoo", zoo], ["inspect", zoo / "digits-cnn"]):
        line = _error(*cli(*argv)[::2])
        assert name in line and "changed" in line, line
    assert not (tmp_path / "pulled").exists() and not (zoo / "pwned").exists()


def test_a_zoo_entry_edited_with_its_config_is_refused_by_the_index(exported_zoo, cli, tmp_path):
    """A forger who changes model.onnx and both its sha256 values in config.json (`files`, the export record):
    the zoo index still names every file's sha256."""
    from analogai_deploy.provenance import sha256_file
    from zoo_helpers import rehash

    zoo = tmp_path / "zoo"
    shutil.copytree(exported_zoo, zoo)
    entry = zoo / "digits-cnn"
    onnx_byte_changed(entry)
    rehash(entry, "model.onnx")
    _edit_record(entry, lambda r: r["export"]["onnx"].update(sha256=sha256_file(entry / "model.onnx")))
    pkgio.load(entry)  # the folder alone is consistent now
    line = _error(*cli("pull", "digits-cnn", "--zoo", zoo, "-o", tmp_path / "pulled")[::2])
    assert "model.onnx differ from what its index records" in line, line
    assert not (tmp_path / "pulled").exists()


def test_pull_leaves_out_files_the_entry_does_not_list(exported_zoo, cli, tmp_path):
    zoo = tmp_path / "zoo"
    shutil.copytree(exported_zoo, zoo)
    (zoo / "digits-cnn" / "notes.txt").write_text("added after publishing")
    code, _, err = cli("pull", "digits-cnn", "--zoo", zoo, "-o", tmp_path / "pulled")
    assert code == 0, err
    assert "left out notes.txt" in err
    assert not (tmp_path / "pulled" / "notes.txt").exists()
    assert "notes.txt" not in pkgio.read_config(tmp_path / "pulled")["files"]


# ---- older packages: still load, certify and publish; their next write records every file's sha256 ---------

def test_an_older_package_loads_certifies_and_publishes(cli, tmp_path):
    old = shipped_copy(tmp_path / "old")
    assert isinstance(pkgio.read_config(old)["files"], list)  # the shipped entry predates per-file hashes
    pkgio.load(old)
    code, out, err = cli("inspect", old)
    assert code == 0 and "an older package: config.json records no sha256 for" in err, err
    code, _, err = cli("certify", old, "-o", tmp_path / "new", "--data", "digits", "--repeats", "5", "--times", "1d",
                       "--limit", "128", "--max-drop", "3", "--at", "1d", "-q")
    assert code == 0, err
    files = pkgio.read_config(tmp_path / "new")["files"]
    assert isinstance(files, dict) and set(files) >= {"model.onnx", "README.md", "certificate.json"}
    assert cli("publish", old, "--zoo", tmp_path / "zoo")[0] == 0
    assert isinstance(pkgio.read_config(tmp_path / "zoo" / "old")["files"], dict)  # recorded on its first write
    assert cli("pull", "old", "--zoo", tmp_path / "zoo")[0] == 0
