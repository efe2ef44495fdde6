"""Model building: the analog-aware model a package's record describes, with its weights (verified first), and
the reference model a distilled package was distilled from."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..analog.qat import QuantRecord
from ..errors import PackageError
from .format import CONFIG, REFERENCE, WEIGHTS, Package, read_config, section
from .integrity import check_safetensors, verify, verify_reference


def load(path: str | Path, *, verify_hash: bool = True) -> Package:
    """Rebuild the analog-aware model of a package: same weights bit for bit, checked against their sha256."""
    path = Path(path)
    config = read_config(path)
    if verify_hash:
        verify(path, config)
    else:
        check_safetensors(path / WEIGHTS)
    return Package(path, config, *_build(path, config, path / WEIGHTS, section(config, "quantization")))


def load_reference(pkg: Package, *, verify_hash: bool = True) -> nn.Module | None:
    """The model a distilled package was distilled from (config.json `reference`), digital, eval mode; None
    for packages without one (their own digital model is their reference). `verify_hash=False` for a package
    `load` has just verified (its `verify` hashed the reference already)."""
    if pkg.config.get("reference") is None:
        return None
    from ..analog.convert import to_digital

    file = verify_reference(pkg.path, pkg.config) if verify_hash else pkg.path / REFERENCE
    model, _, _ = _build(pkg.path, pkg.config, file, section(pkg.config["reference"], "quantization"))
    return to_digital(model).eval()


def _build(path: Path, config: dict[str, Any], weights: Path, quantization: QuantRecord | None):
    """(model, conversion report, placement): the architecture config.json names, analog as its placement
    says, with the tensors of `weights`."""
    from ..analog.convert import convert
    from ..analog.placement import plan
    from ..sources import rebuild

    _refuse_bundled_code(path, config["source"])
    model = rebuild(config["source"])
    analog = section(config, "analog")
    placement = section(config, "placement")  # the record convert wrote: exactly those modules go analog
    if placement is None:  # a package made before the record: derive it once, the way convert did then
        placement = plan(model, analog)
        placement.derived = True
    report = convert(model, analog, placement)
    try:
        missing, unexpected = _load_weights(model, weights)
    except Exception as exc:  # safetensors raises its own types for corrupt files
        raise PackageError(f"cannot read {weights}: {_one_line(exc)}",
                           "the weights do not fit config.json; fetch the package again") from None
    if missing or unexpected:
        raise PackageError(f"{weights} does not fit the architecture in config.json "
                           f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
    if quantization:  # QAT: fake-quantizers with their frozen activation ranges
        from ..analog import qat

        qat.restore(model, quantization)
    model.eval()
    return model, report, placement


def _load_weights(model: nn.Module, file: Path):
    """safetensors' load_model, with the module versions torch keeps in state_dict metadata (_state.py)."""
    from safetensors.torch import load_model

    from .._state import with_versions

    original = model.load_state_dict

    def with_metadata(state, *args, **kwargs):
        return original(with_versions(model, state), *args, **kwargs)

    model.load_state_dict = with_metadata  # instance attribute: load_model's one call goes through it
    try:
        return load_model(model, str(file), strict=False)
    finally:
        del model.load_state_dict


def _refuse_bundled_code(path: Path, source: dict[str, Any]) -> None:
    """A local-code source names the user's own model file by absolute path. A package that ships the code
    it asks to run (or names it relatively) came from someone else: loading it would run their code."""
    if source.get("kind") != "local":
        return
    file = Path(str(source.get("file", "")))
    if not file.is_absolute() or path.resolve() in file.resolve().parents:
        raise PackageError(f"{path / CONFIG} asks to run Python code from {file}, which comes with the package",
                           "never load a package that brings its own code; convert the model from code you trust")


def _one_line(exc: Exception) -> str:
    """torch's load_state_dict errors list every mismatch on its own line: count them instead."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    shapes = [line for line in lines if line.startswith("size mismatch")]
    if shapes:
        return f"{len(shapes)} tensors have another shape than the architecture in config.json ({shapes[0]})"
    return lines[0] if lines else type(exc).__name__
