"""config.json's typed sections: written in the {"_type", "_version", "_data"} envelope, read in one place
(package.section) that also reads the bare sections older packages hold, and refuses what it cannot read."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from analogai_deploy import package
from analogai_deploy.analog.config import AnalogConfig
from analogai_deploy.analog.mapping import MappingConfig
from analogai_deploy.analog.placement import Placement
from analogai_deploy.errors import PackageError

ZOO_MODEL = Path(__file__).resolve().parents[1] / "model_zoo" / "digits-cnn-msnat-pcm"


def test_a_new_package_writes_its_typed_sections_in_the_envelope(lenet_pkg):
    stored = json.loads((lenet_pkg / "config.json").read_text())
    for key, cls in (("analog", AnalogConfig), ("mapping", MappingConfig), ("placement", Placement)):
        assert set(stored[key]) == {"_type", "_version", "_data"}
        assert (stored[key]["_type"], stored[key]["_version"]) == (cls.__name__, cls._version)
        typed = package.section(stored, key)
        assert isinstance(typed, cls) and typed.to_dict() == stored[key]["_data"]
    # what is copied elsewhere stays the plain dict (safetensors header, ONNX metadata, certificates, cards)
    flat = package.flat_metadata(stored)
    assert json.loads(flat["analogai.analog"]) == stored["analog"]["_data"]
    assert json.loads(flat["analogai.mapping"]) == stored["mapping"]["_data"]
    assert flat["analogai.placement_sha256"] == stored["placement"]["_data"]["sha256"]


def test_a_bare_legacy_section_reads_as_version_1_and_is_not_rewritten(lenet_pkg, tmp_path):
    pkg_dir = tmp_path / "old"
    shutil.copytree(lenet_pkg, pkg_dir)
    config = package.read_config(pkg_dir)
    config = {**config, **{key: config[key]["_data"] for key in ("analog", "mapping", "placement")}}
    package.write(pkg_dir, config, base=pkg_dir)
    loaded = package.load(pkg_dir)
    assert loaded.config["analog"] == config["analog"]  # read as stored: its hashes stay the package's
    assert package.section(loaded.config, "analog") == AnalogConfig.from_dict(config["analog"])
    assert package.section(loaded.config, "mapping") == MappingConfig.from_dict(config["mapping"])
    assert loaded.placement.to_dict() == config["placement"]
    assert package.model_sha256(loaded.config) == package.model_sha256(config)


@pytest.mark.parametrize("change, message", [
    ({"_type": "Recipe"}, "section 'analog' is of type 'Recipe', not AnalogConfig"),
    ({"_type": "os.system"}, "section 'analog' is of type 'os.system', not AnalogConfig"),
    ({"_version": 2}, "section 'analog' is AnalogConfig version 2; this toolkit reads up to version 1 "
                      r"\(upgrade analogai-deploy"),
])
def test_an_unknown_type_or_a_newer_version_is_refused_in_one_line(lenet_pkg, tmp_path, change, message):
    pkg_dir = tmp_path / "pkg"
    shutil.copytree(lenet_pkg, pkg_dir)
    config = package.read_config(pkg_dir)
    package.write(pkg_dir, {**config, "analog": {**config["analog"], **change}}, base=pkg_dir)
    with pytest.raises(PackageError, match=message) as err:
        package.load(pkg_dir)
    assert "\n" not in str(err.value)


def test_the_shipped_zoo_model_still_verifies_with_its_bare_sections():
    config = package.verify(ZOO_MODEL)  # every file, and the certificate's binding to this config.json
    certificate = json.loads((ZOO_MODEL / "certificate.json").read_text())
    assert "_type" not in config["analog"] and package.model_sha256(config) == certificate["model_sha256"]
    assert package.section(config, "analog") == AnalogConfig.from_dict(config["analog"])
    assert package.load(ZOO_MODEL).model is not None
