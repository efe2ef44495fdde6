"""Everything a recover run needs, loaded and checked before any training: the package, the recipe with the
user's overrides, the data, the objective, and the recipe's training noise on the model."""
from __future__ import annotations

import copy
from typing import Any, Callable

from .. import labels
from ..errors import UsageError
from ..tasks import Record
from .recipe import Recipe, load as load_recipe


def merge_overrides(overrides: list[str] | dict[str, Any] | None, kwargs: dict[str, Any]
                    ) -> list[str] | dict[str, Any]:
    """The overrides with Python keywords added (training__batch_size=256 for training.batch_size=256); one
    'key=value' string is a list of one, as the CLI takes it."""
    if isinstance(overrides, str):
        overrides = [overrides]
    elif isinstance(overrides, tuple):
        overrides = list(overrides)
    elif overrides is not None and not isinstance(overrides, (list, dict)):
        raise UsageError(f"`overrides` is a list of 'key=value' strings or a {{key: value}} dict, got "
                         f"{type(overrides).__name__}", "e.g. `overrides=[\"training.rounds=5\"]`")
    if kwargs:  # Python keywords: training__batch_size=256 or **{"training.batch_size": 256}
        merged = dict(overrides) if isinstance(overrides, dict) else {}
        merged.update({k.replace("__", "."): v for k, v in kwargs.items()})
        if isinstance(overrides, list):
            return overrides + [f"{k}={v}" for k, v in merged.items()]
        return merged
    return overrides or []


def default_data(config: dict[str, Any]) -> str:
    """digits for image packages, the shipped English corpus for text ones."""
    return "corpus" if Record.of(config).text else "digits"


def _text_checks(pkg, rec: Recipe, ds, objective) -> None:
    r = rec.recovery
    if r.adversarial.FGSM.use or r.adversarial.PGD.use:
        raise UsageError("FGSM / PGD perturb image pixels; a text package's inputs are token ids",
                         "set recovery.adversarial.FGSM.use=false recovery.adversarial.PGD.use=false")
    want = pkg.config.get("num_classes")
    if objective.name == "cross_entropy" and want is not None and ds.num_classes > want:
        raise UsageError(f"{ds.spec} has {ds.num_classes} classes but the model has {want} outputs",
                         f"convert the model with `num_classes={ds.num_classes}`")


def prepare(package, recipe, data, overrides=None):
    """Load and check everything a run needs; raises UsageError before any training. (package, recipe, data)"""
    return prepare_run(package, recipe, data, overrides)[:3]


def prepare_run(package, recipe, data, overrides=None):
    """`prepare`, plus the objective (objectives.py); for distillation the data carries the teacher's targets."""
    from .. import data as data_mod
    from .. import package as pkg_mod
    from ..data import text as text_data
    from ..data.base import is_text_spec
    from . import objectives

    pkg = package if isinstance(package, pkg_mod.Package) and package.model is not None else pkg_mod.load(
        package.path if isinstance(package, pkg_mod.Package) else package)
    inp = pkg.config.get("input", {})
    text = pkg.record.text  # a recipe's text: section applies (recipe.py)
    rec = recipe if isinstance(recipe, Recipe) and not overrides else load_recipe(recipe, overrides, text=text)
    rec = with_recorded_split(pkg.config, rec, overrides)
    data = data or default_data(pkg.config)
    from .batches import pick_device
    from .memory import check_fits

    device = pick_device(rec.training.device)
    if text:
        from ..analog.convert import to_digital

        # the model distillation matches: the one a distilled package was distilled from, else its own weights
        reference = pkg_mod.load_reference(pkg, verify_hash=pkg is package)  # a package loaded here is verified
        if isinstance(data, str):
            teacher = (reference or to_digital(copy.deepcopy(pkg.model))) if data.startswith("generated:") else None
            ds = text_data.load(data, pkg.path, pkg.config, model=teacher)
        else:
            ds = data
        objective = objectives.choose(pkg.config, ds, rec)
        _text_checks(pkg, rec, ds, objective)
        check_fits(pkg.model, rec, ds, device, teacher=objective.name != "cross_entropy")
        ds = objectives.attach_teacher(objective, reference or pkg.model, ds, device)
        return pkg, rec, ds, objective
    if pkg.record.input_kind != "image":
        raise UsageError(f"recover trains image and text packages, but {pkg.path} takes {pkg.record.input_kind} input")
    if isinstance(data, str) and is_text_spec(data):
        raise UsageError(f"`data={data}` is text; {pkg.path} takes images", "use e.g. `data=digits`")
    ds = data if not isinstance(data, str) else data_mod.load(data, input_shape=inp.get("shape"))
    ds = labels.align(ds, pkg.config)  # numbered as the package numbers its classes
    want = pkg.config.get("num_classes")
    if want is not None and ds.num_classes != want:
        raise UsageError(f"{ds.spec} has {ds.num_classes} classes but the model has {want} outputs",
                         f"convert the model with `num_classes={ds.num_classes}`")
    objective = objectives.choose(pkg.config, ds, rec)
    check_fits(pkg.model, rec, ds, device)  # a batch too large fails here, not by OOM
    return pkg, rec, ds, objective


def sets_key(overrides, key: str) -> bool:
    """Whether the dotted overrides (a list of 'k=v' or a dict) set `key`."""
    return any(str(o).split("=", 1)[0].strip() == key for o in (overrides or []))


def with_recorded_split(config: dict[str, Any], rec: Recipe, overrides=None) -> Recipe:
    """`rec`, training with the package's recorded digital-outlier split (convert --outliers digital) where it
    trains with the hardware noise model (the noise / io sections) and neither it nor the overrides set
    noise.outliers. Other recipes train as they are; the record stays, and certify applies it."""
    from ..analog.mapping import package_mapping

    m = package_mapping(config).complete()
    if m.outliers != "digital" or not rec.hardware_noise or rec.noise.outliers == "digital" or sets_key(
            overrides, "noise.outliers"):
        return rec
    return load_recipe(rec, {"noise.outliers": "digital", "noise.outlier_std": m.outlier_std})


def install_training_noise(pkg, model, rec: Recipe, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Put the recipe's noise / io model on `model`'s analog layers (hardware_noise.py; the seed's model needs
    nothing). Returns what the input-scaling calibration ran on ({} without it), for config.json."""
    if not rec.hardware_noise:
        return {}
    from . import hardware_noise

    scales, info = {}, {}
    if rec.noise.input_scaling == "package":
        scales, info = hardware_noise.input_scales(pkg, model)
        if log is not None:
            total = len(pkg.placement.analog) if pkg.placement is not None else len(scales)
            others = (" (attention and GPT-2 Conv1D projections and grouped convolutions take none)"
                      if total > len(scales) else "")
            log(f"training through the package's input scaling: {len(scales)} of {total} analog layers{others}, "
                f"calibrated on {info.get('spec', 'nothing (the mapping scales no inputs)')}")
    hardware_noise.apply(model, rec.noise, rec.io, scales)
    return info
