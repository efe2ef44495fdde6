"""The recovered package: where it goes, what may be replaced there, and what it holds (config.json's
recover sections and the files it inherits or gains)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import labels
from .. import package as pkg_mod
from ..errors import OperationFailed
from ..package.card import model_name
from ..provenance import now, versions
from . import checkpoint
from .plots import CURVE_PNG, training_curve_png
from .prepare import sets_key
from .recipe import Recipe

#: what a recovered package does not inherit, because it describes the old weights: the weights and their
#: exports (model.*), certificates and sweeps, the card and log (rewritten), and these config.json sections
_STALE_FILES = ("model.", "certificate.", "sweep.", "README.md", "config.json", "train_log.jsonl",
                "training_curve.png")
_STALE_SECTIONS = ("certificate", "export", "quantization", "weights")


def _inherited(path: Path) -> bool:
    return path.is_file() and not path.name.startswith((".",) + _STALE_FILES)


def output_for(pkg, rec: Recipe, output: str | Path | None) -> Path:
    """`output`, else a folder beside the package (beside a zoo entry: under runs/, never into the zoo)."""
    if output is not None:
        return Path(output)
    name = f"{pkg.path.name}-{rec.name}"
    return Path("runs") / name if pkg_mod.in_zoo(pkg.path) else pkg.path.parent / name


def run_identity(pkg, rec: Recipe, ds) -> dict[str, str]:
    """What a checkpoint (and a resumed run's package) must match: recipe, input weights, data."""
    return {"recipe_sha256": rec.sha256(), "weights_sha256": pkg.weights_sha256, "data_fingerprint": ds.fingerprint}


def check_outputs(out_path: Path, identity: dict[str, str], *, resume: bool, restart: bool, overwrite: bool) -> bool:
    """Refuse, before any training, an output or checkpoint the run would destroy unasked; returns whether
    the package at `out_path` may be replaced (`overwrite`, or a resumed run whose package landed just
    before a kill: the same run again, nothing lost)."""
    replace = overwrite or (resume and made_by(out_path, identity))
    pkg_mod.check_output(out_path, overwrite=replace)
    checkpoint.check_folder(checkpoint.state_dir_for(out_path), resume, restart)
    return replace


def made_by(out: Path, identity: dict[str, str]) -> bool:
    """Is the package at `out` the product of this very run (same recipe, input weights and data)?"""
    if not pkg_mod.is_package(out):
        return False
    try:
        history = pkg_mod.read_json(out / pkg_mod.CONFIG).get("provenance", {}).get("history") or []
        last = history[-1] if history and history[-1].get("stage") == "recover" else {}
    except (OperationFailed, OSError, AttributeError):
        return False
    return bool(last) and (last.get("recipe_sha256"), last.get("input_weights_sha256"), last.get("data_fingerprint")) \
        == (identity["recipe_sha256"], identity["weights_sha256"], identity["data_fingerprint"])


def recovered_package(pkg, rec: Recipe, ds, objective, trainer, result, final, *, identity: dict[str, str],
                      overrides, in_scaling: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(config.json, the other files) of the package recovered from `pkg`: `final` holds the selected weights
    (trainer.output_model), `result` the run (trainer.run)."""
    config = {k: v for k, v in pkg.config.items() if k not in _STALE_SECTIONS}
    if objective.name == "cross_entropy":  # trained on the data's labels: a head without names takes theirs
        config = labels.record(config, ds.labels)
    if rec.hardware_noise:
        from . import hardware_noise
        from ..analog.mapping import MappingConfig

        ranges = hardware_noise.learned_input_ranges(final)
        hardware_noise.apply(final, None, None)  # also takes the learned ranges off the layers: they go to the mapping
        # what it was trained for is what certify uses by default (the rest of the mapping stays the package's)
        config["mapping"] = MappingConfig.from_dict(hardware_noise.trained_mapping(rec.noise, rec.io, ranges)).over(
            pkg_mod.section(config, "mapping")).serialise()
    elif sets_key(overrides, "noise.outliers"):  # `--outliers none` with the seed's noise: the record drops the split
        from ..analog.mapping import MappingConfig

        config["mapping"] = MappingConfig(outliers=rec.noise.outliers, outlier_std=rec.noise.outlier_std).over(
            pkg_mod.section(config, "mapping")).serialise()
    if rec.recovery.qat and rec.training.engine == "msnat":
        from ..analog import qat

        config["quantization"] = qat.describe(final, trainer.quant).serialise()
    for key in pkg_mod.SECTIONS:  # an older package's bare sections go out in the envelope too
        if config.get(key) is not None:
            config[key] = pkg_mod.section(config, key).serialise()
    config["recipe"] = {"name": rec.name, "sha256": identity["recipe_sha256"], "type": "Recipe",
                        "version": rec._version, "resolved": rec.to_dict()}
    config["training"] = {
        "best": result.best,
        "rounds": result.rounds,
        "rounds_planned": rec.training.rounds,
        "stopped_early": result.stopped_early,
        "engine": rec.training.engine,
        "mode": result.mode,
        "device": result.device,
        "clients": len(rec.recovery.sigmas) if rec.training.use_FI else 1,
        "noise_levels": rec.recovery.sigmas,
        "seed": rec.training.seed,
        "seconds": round(result.seconds, 2),  # this run's (a resumed run did rounds resumed_from_round+1 ...)
        "resumed_from_round": result.resumed_from,
        "objective": objective.describe(),
        **({"input_scaling": in_scaling} if in_scaling else {}),
        "log": checkpoint.LOG,
        "curve": CURVE_PNG,
    }
    config["data"] = {"spec": ds.spec, "fingerprint": ds.fingerprint, "split": "train/val (selection on val; test untouched)"}
    if ds.provenance:  # text: tokenizer, max length, padding, sizes, generation settings
        config["data"]["text"] = ds.provenance
    prov = dict(config.get("provenance", {}))
    prov["history"] = list(prov.get("history", [])) + [{
        "stage": "recover", "time": now(), "recipe": rec.name, "recipe_sha256": identity["recipe_sha256"],
        "data": ds.spec, "data_fingerprint": ds.fingerprint, "seed": rec.training.seed,
        "objective": objective.name,
        "input_weights_sha256": pkg.weights_sha256, "versions": versions(),
    }]
    config["provenance"] = prov
    foreign = set(pkg_mod.foreign_entries(pkg.path))  # a user's files stay where they are
    files = {f.name: f.read_bytes() for f in pkg.path.iterdir() if _inherited(f) and f.name not in foreign}
    if objective.name != "cross_entropy" and config.get("reference") is None:
        # distilled: certify's label-free metrics must compare with the teacher, not with the student itself
        # (a student that drifts from its teacher would otherwise agree perfectly with its own digital model)
        files[pkg_mod.REFERENCE] = (pkg.path / pkg_mod.WEIGHTS).read_bytes()
        config["reference"] = {"file": pkg_mod.REFERENCE, "sha256": pkg.weights_sha256,
                               "what": "the weights this package was distilled from (the package before recovery)",
                               **({"quantization": pkg.config["quantization"]} if pkg.config.get("quantization")
                                  else {})}
    files[checkpoint.LOG] = "".join(json.dumps(e) + "\n" for e in result.log).encode()
    files[CURVE_PNG] = training_curve_png(result.log, f"{model_name(config)}: recipe {rec.name} on {ds.spec}")
    return config, files
