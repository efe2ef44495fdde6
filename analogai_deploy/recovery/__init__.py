"""`recover`: noise-aware retraining of a package (MSNAT, its ablations, baselines, aihwkit HWA).

    import analogai_deploy as ad
    pkg = ad.recover("runs/lenet", "msnat", "digits", output="runs/lenet-msnat", overrides={"training.rounds": 10})

Everything a run needs is validated before training starts (recipe, overrides, data, package).
The output package holds clean weights (the noise level lives in config.json), the resolved recipe
and its sha256, the training summary, the data fingerprint, a provenance entry and train_log.jsonl.
While it runs, OUTPUT.partial/ holds a checkpoint of the last finished round (`resume=True` continues).
"""
from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path
from typing import Any, Callable

from .. import labels, lock
from .._marks import mark
from ..package.card import model_name
from ..errors import OperationFailed, UsageError
from .plots import CURVE_PNG, training_curve_png
from .recipe import Recipe, load as load_recipe

__all__ = ["recover", "Recipe", "load_recipe", "Interrupted"]

#: what a recovered package does not inherit, because it describes the old weights: the weights and their
#: exports (model.*), certificates and sweeps, the card and log (rewritten), and these config.json sections
_STALE_FILES = ("model.", "certificate.", "sweep.", "README.md", "config.json", "train_log.jsonl",
                "training_curve.png")
_STALE_SECTIONS = ("certificate", "export", "quantization", "weights")


def _inherited(path: Path) -> bool:
    return path.is_file() and not path.name.startswith((".",) + _STALE_FILES)


class Interrupted(OperationFailed):
    """Ctrl-C during training; the checkpoint of the last finished round is kept."""

    exit_code = 130


def _interrupted(state_dir: Path, rounds: int) -> Interrupted:
    """What Ctrl-C leaves: the checkpoint on disk (read back, so the message names only what exists)."""
    from .engine import CHECKPOINT_META, has_checkpoint

    if not has_checkpoint(state_dir):  # stopped inside round 1: nothing was written
        return Interrupted(f"interrupted in round 1 of {rounds}; no round finished, so nothing is checkpointed",
                           "rerun the same command to start again")
    done = json.loads((state_dir / CHECKPOINT_META).read_text(encoding="utf-8"))["round"]
    return Interrupted(f"interrupted; {done} of {rounds} rounds are checkpointed in {state_dir}",
                       "rerun the same command with `resume=True` to continue")


def state_dir_for(output: Path) -> Path:
    return output.parent / f"{output.name}.partial"


def _overrides(overrides: list[str] | dict[str, Any] | None, kwargs: dict[str, Any]) -> list[str] | dict[str, Any]:
    if kwargs:  # Python keywords: training__batch_size=256 or **{"training.batch_size": 256}
        merged = dict(overrides) if isinstance(overrides, dict) else {}
        merged.update({k.replace("__", "."): v for k, v in kwargs.items()})
        if isinstance(overrides, list):
            return overrides + [f"{k}={v}" for k, v in merged.items()]
        return merged
    return overrides or []


def output_for(pkg, rec: Recipe, output: str | Path | None) -> Path:
    return Path(output) if output is not None else pkg.path.parent / f"{pkg.path.name}-{rec.name}"


def default_data(config: dict[str, Any]) -> str:
    """digits for image packages, the shipped English corpus for text ones."""
    return "corpus" if config.get("input", {}).get("kind") == "text" else "digits"


def _text_checks(pkg, rec: Recipe, ds, objective) -> None:
    r = rec.recovery
    if r.adversarial.FGSM.use or r.adversarial.PGD.use:
        raise UsageError("FGSM / PGD perturb image pixels; a text package's inputs are token ids",
                         "set recovery.adversarial.FGSM.use=false recovery.adversarial.PGD.use=false")
    want = pkg.config.get("num_classes")
    if objective.name == "cross_entropy" and want is not None and ds.num_classes > want:
        raise UsageError(f"{ds.spec} has {ds.num_classes} classes but the model has {want} outputs",
                         f"convert the model with `num_classes={ds.num_classes}`")
def run_identity(pkg, rec: Recipe, ds) -> dict[str, str]:
    """What a checkpoint (and a resumed run's package) must match: recipe, input weights, data."""
    return {"recipe_sha256": rec.sha256(), "weights_sha256": pkg.weights_sha256, "data_fingerprint": ds.fingerprint}


def check_outputs(out_path: Path, identity: dict[str, str], *, resume: bool, restart: bool, overwrite: bool) -> bool:
    """Refuse, before any training, an output or checkpoint the run would destroy unasked; returns whether
    the package at `out_path` may be replaced (`overwrite`, or a resumed run whose package landed just
    before a kill: the same run again, nothing lost)."""
    from .. import package as pkg_mod

    replace = overwrite or (resume and _made_by(out_path, identity))
    pkg_mod.check_output(out_path, overwrite=replace)
    _check_checkpoint(state_dir_for(out_path), resume, restart)
    return replace


def _made_by(out: Path, identity: dict[str, str]) -> bool:
    """Is the package at `out` the product of this very run (same recipe, input weights and data)?"""
    from .. import package as pkg_mod

    if not pkg_mod.is_package(out):
        return False
    try:
        history = pkg_mod.read_json(out / pkg_mod.CONFIG).get("provenance", {}).get("history") or []
        last = history[-1] if history and history[-1].get("stage") == "recover" else {}
    except (OperationFailed, OSError, AttributeError):
        return False
    return bool(last) and (last.get("recipe_sha256"), last.get("input_weights_sha256"), last.get("data_fingerprint")) \
        == (identity["recipe_sha256"], identity["weights_sha256"], identity["data_fingerprint"])


def _check_checkpoint(state_dir: Path, resume: bool, restart: bool) -> None:
    """A checkpoint is hours of training: continue it or discard it, on request only."""
    from .engine import CHECKPOINT_META, foreign_checkpoint_entries

    if resume and restart:
        raise UsageError("`resume=True` and `restart=True` contradict each other", "pass one of them")
    if state_dir.is_symlink() or (state_dir.exists() and not state_dir.is_dir()):
        raise UsageError(f"{state_dir} exists and is not a checkpoint folder", "move it away, or write elsewhere (-o)")
    if not state_dir.is_dir():
        return
    foreign = foreign_checkpoint_entries(state_dir)
    if foreign:
        raise UsageError(f"{state_dir} holds {', '.join(foreign[:3])}, which training did not write",
                         "move it out of the folder, or write elsewhere (-o)")
    if not resume and not restart and any(state_dir.iterdir()):
        try:
            done = json.loads((state_dir / CHECKPOINT_META).read_text(encoding="utf-8")).get("round")
        except (OSError, ValueError, AttributeError):
            done = None
        what = f"a checkpoint of {done} finished round{'s' if done != 1 else ''}" if isinstance(done, int) else \
            "an unfinished checkpoint"
        raise UsageError(f"{state_dir} holds {what} from an earlier run",
                         "pass `resume=True` to continue it, or `restart=True` to discard it and start over")


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
    text = inp.get("kind") == "text"  # a recipe's text: section applies (recipe.py)
    rec = recipe if isinstance(recipe, Recipe) and not overrides else load_recipe(recipe, overrides, text=text)
    rec = with_recorded_split(pkg.config, rec, overrides)
    data = data or default_data(pkg.config)
    from .engine import pick_device
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
    if inp.get("kind") != "image":
        raise UsageError(f"recover trains image and text packages, but {pkg.path} takes {inp.get('kind')} input")
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


def _names(overrides, key: str) -> bool:
    """Whether the dotted overrides (a list of 'k=v' or a dict) set `key`."""
    return any(str(o).split("=", 1)[0].strip() == key for o in (overrides or []))


def with_recorded_split(config: dict[str, Any], rec: Recipe, overrides=None) -> Recipe:
    """`rec`, training with the package's recorded digital-outlier split (convert --outliers digital) where it
    trains with the hardware noise model (the noise / io sections) and neither it nor the overrides set
    noise.outliers. Other recipes train as they are; the record stays, and certify applies it."""
    from ..analog.mapping import package_mapping

    m = package_mapping(config).complete()
    if m.outliers != "digital" or not rec.hardware_noise or rec.noise.outliers == "digital" or _names(
            overrides, "noise.outliers"):
        return rec
    return load_recipe(rec, {"noise.outliers": "digital", "noise.outlier_std": m.outlier_std})


#: the seed's Gaussian per tensor at this sigma leaves a transformer's embedding unrelated to the teacher's
#: (MiniLM: cosine 0.004 at 0.04, BENCHMARKS.md section 6)
SEED_NOISE_ON_TEXT = 0.02


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
            log(f"training through the package's input scaling: {len(scales)} layers, calibrated on "
                f"{info.get('spec', 'nothing (the mapping scales no inputs)')}")
    hardware_noise.apply(model, rec.noise, rec.io, scales)
    return info


def _kl_on(d: dict[str, Any]) -> str:
    if d.get("output") != "tokens":
        return ""
    return "next-token " if d.get("metric") == "next_token_agreement" else "per-token "


def objective_line(objective, ds) -> str:
    """One line saying what the run minimises (printed by the CLI, recorded in config.json)."""
    d = objective.describe()
    if d["loss"] == "cross_entropy":
        return f"objective: cross-entropy on the labels of {ds.spec} (validation metric: {d['metric']})"
    what = {"cosine": "cosine on the pooled sentence embedding", "mse": "MSE on the pooled sentence embedding",
            "kl": f"KL on the {_kl_on(d)}logits at T={d.get('temperature')}"}
    return (f"objective: distillation from the package's clean weights before recovery (noise off), {what[d['loss']]}, "
            f"on {ds.spec} without labels (validation metric: {d['metric']})")


def recover(
    package,
    recipe: str | Path | Recipe = "msnat",
    data=None,
    output: str | Path | None = None,
    *,
    overrides: list[str] | dict[str, Any] | None = None,
    resume: bool = False,
    restart: bool = False,
    overwrite: bool = False,
    progress: Callable[..., Any] | None = None,
    on_round: Callable[[dict], None] | None = None,
    log: Callable[[str], None] | None = None,
    **kw_overrides: Any,
):
    """Retrain `package` with `recipe` on `data` and write the recovered package to `output`.

    `package`: a folder or a loaded Package. `recipe`: a shipped name, a YAML path or a Recipe.
    `data`: a dataset spec ("digits", "cifar10:PATH", ...; text: "corpus", "text:FILE", "generated:N") or a
    loaded Data; None = digits for images, the shipped corpus for text. `log(line)` hears the objective chosen.
    Overrides: dotted keys,
    e.g. overrides=["training.rounds=5"] or **{"training.use_FL": False}. Returns the new Package.
    This process only: under torchrun every rank calls recover (MSNAT clients spread over the ranks,
    see parallel.py); rank 0 writes the package and returns it, the others return None.
    `analogai_deploy.recover(..., nproc=N)` (launcher.py) starts N local processes.
    An existing checkpoint in OUTPUT.partial/ is continued (`resume`) or discarded (`restart`), never
    silently; an existing package at `output` is replaced only with `overwrite`. Both are checked, and the
    output's folder probed for writing, before training starts.
    """
    from .. import distributed
    from .. import package as pkg_mod
    from ..analog.convert import set_noise
    from ..provenance import now, versions
    from .engine import discard_checkpoint

    merged = _overrides(overrides, kw_overrides)
    live = lock.busy(output) if output is not None and distributed.is_main() else None
    if live is not None:  # before data and teacher targets are prepared: a second run refuses at once
        raise live
    pkg, rec, ds, objective = prepare_run(package, recipe, data, merged)
    if log is not None:
        if rec.variant:
            log(f"recipe {rec.name} for {rec.variant} packages (its {rec.variant}: section): {rec.summary()}")
        elif objective.text and not rec.hardware_noise and max(rec.recovery.sigmas, default=0) >= SEED_NOISE_ON_TEXT:
            log(f"warning: recipe {rec.name} has no text: section, so this transformer trains with the seed's "
                f"noise per tensor at sigma up to {max(rec.recovery.sigmas):g}, which leaves its outputs no relation "
                "to the teacher's (docs/recover.md); start from a shipped recipe's text: section")
        log(objective_line(objective, ds))
    data = data if data is not None else ds.spec
    out_path = output_for(pkg, rec, output)
    state_dir = state_dir_for(out_path)
    identity = run_identity(pkg, rec, ds)
    # one writer per output: a second run on OUTPUT (or its .partial/) refuses now, not after training (lock.py)
    with lock.held(out_path, log=log) if distributed.is_main() else contextlib.nullcontext():
        replace = check_outputs(out_path, identity, resume=resume, restart=restart, overwrite=overwrite)
        if distributed.world() > 1:
            if objective.text:
                raise UsageError("text packages recover on one process", "drop `nproc` / torchrun")
            from .parallel import check_recover

            check_recover(rec, data, recipe)
        if restart and distributed.is_main():
            discard_checkpoint(state_dir)  # a fresh run never mixes with an old checkpoint
        default_sigma = pkg.config["analog"].get("sigma", 0.0)
        model = pkg.model
        in_scaling = install_training_noise(pkg, model, rec, log)
        if rec.training.engine == "aihwkit_hwa":  # aihwkit's tiles, laid out as config.json's placement says
            from functools import partial

            from .hwa import HwaTrainer

            TrainerClass = partial(HwaTrainer, placement=pkg.placement)
        else:
            from .engine import make_trainer as TrainerClass
        trainer = TrainerClass(model, rec, ds, state_dir, identity=identity, progress=progress, on_round=on_round,
                               objective=objective)
        mark("work")  # start-up ends here (benchmarks/startup.py): training is the work
        try:
            result = trainer.run(resume=resume)
        except KeyboardInterrupt:
            raise _interrupted(state_dir, rec.training.rounds) from None
        mark("work_done")
        if not result.best_state:
            raise OperationFailed("training finished without a validated round", "raise training.rounds")
        if not distributed.is_main():
            return None  # every rank holds the same result; rank 0 writes it

        final = trainer.output_model(result)
        set_noise(final, default_sigma)
        final.eval()
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
                config.get("mapping")).to_dict()
        elif _names(merged, "noise.outliers"):  # `--outliers none` with the seed's noise: the record drops the split
            from ..analog.mapping import MappingConfig

            config["mapping"] = MappingConfig(outliers=rec.noise.outliers, outlier_std=rec.noise.outlier_std).over(
                config.get("mapping")).to_dict()
        if rec.recovery.qat and rec.training.engine == "msnat":
            from ..analog import qat

            config["quantization"] = qat.describe(final, trainer.quant)
        config["recipe"] = {"name": rec.name, "sha256": identity["recipe_sha256"], "type": "Recipe",
                            "version": rec._version, "resolved": rec.resolved()}
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
            "log": "train_log.jsonl",
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
        log = "".join(json.dumps(e) + "\n" for e in result.log).encode()
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
        files["train_log.jsonl"] = log
        files[CURVE_PNG] = training_curve_png(result.log, f"{model_name(config)}: recipe {rec.name} on {ds.spec}")
        written = pkg_mod.write(out_path, config, final.cpu(), files, overwrite=replace)
        discard_checkpoint(state_dir)
        written.model = final
        return written
