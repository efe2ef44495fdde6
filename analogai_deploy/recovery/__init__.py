"""`recover`: noise-aware retraining of a package (MSNAT, its ablations, baselines, aihwkit HWA).

    import analogai_deploy as ad
    pkg = ad.recover("runs/lenet", "msnat", "digits", output="runs/lenet-msnat", overrides={"training.rounds": 10})

Everything a run needs is validated before training starts (recipe, overrides, data, package: prepare.py).
The output package holds clean weights (the noise level lives in config.json), the resolved recipe
and its sha256, the training summary, the data fingerprint, a provenance entry and train_log.jsonl
(output.py). While it runs, OUTPUT.partial/ holds a checkpoint of the last finished round (`resume=True`
continues; checkpoint.py). The trainers (trainers.py) share one run loop (trainer.py).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable

from .. import lock
from .._marks import mark
from ..errors import OperationFailed, UsageError
from .checkpoint import Interrupted, discard_checkpoint, has_checkpoint, interrupted, state_dir_for
from .objectives import objective_line
from .output import check_outputs, made_by, output_for, recovered_package, run_identity
from .prepare import install_training_noise, merge_overrides, prepare, prepare_run
from .recipe import Recipe, load as load_recipe

__all__ = ["recover", "Recipe", "load_recipe", "Interrupted", "prepare", "prepare_run", "install_training_noise",
           "merge_overrides", "output_for", "run_identity", "check_outputs", "state_dir_for"]

#: the seed's Gaussian per tensor at this sigma leaves a transformer's embedding unrelated to the teacher's
#: (MiniLM: cosine 0.004 at 0.04, BENCHMARKS.md section 6)
SEED_NOISE_ON_TEXT = 0.02


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
    from .trainers import make_trainer

    merged = merge_overrides(overrides, kw_overrides)
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
        if resume and not has_checkpoint(state_dir):
            if made_by(out_path, identity):  # finished already: training it again would only cost the time
                if log is not None:
                    log(f"{out_path} is this run's finished package (the same recipe, input weights and data): "
                        "nothing to resume")
                if distributed.is_main():
                    discard_checkpoint(state_dir)  # what a kill left of its checkpoint after the package landed
                return pkg_mod.load(out_path)
            if log is not None:
                log(f"warning: no checkpoint in {state_dir}; starting from round 1")
        if distributed.world() > 1:
            if objective.text:
                raise UsageError("text packages recover on one process", "drop `nproc` / torchrun")
            from .parallel import check_recover

            check_recover(rec, data, recipe)
        if restart and distributed.is_main():
            if has_checkpoint(state_dir) and log is not None:
                log(f"restart: discarding the checkpoint in {state_dir}")
            discard_checkpoint(state_dir)  # a fresh run never mixes with an old checkpoint
        default_sigma = pkg_mod.section(pkg.config, "analog").sigma
        model = pkg.model
        in_scaling = install_training_noise(pkg, model, rec, log)
        trainer = make_trainer(model, rec, ds, state_dir, identity=identity, placement=pkg.placement,
                               progress=progress, on_round=on_round, objective=objective)
        mark("work")  # start-up ends here (benchmarks/startup.py): training is the work
        try:
            result = trainer.run(resume=resume)
        except KeyboardInterrupt:
            raise interrupted(state_dir, rec.training.rounds) from None
        mark("work_done")
        if not result.best_state:
            raise OperationFailed("training finished without a validated round", "raise training.rounds")
        if not distributed.is_main():
            return None  # every rank holds the same result; rank 0 writes it

        final = trainer.output_model(result)
        set_noise(final, default_sigma)
        final.eval()
        config, files = recovered_package(pkg, rec, ds, objective, trainer, result, final, identity=identity,
                                          overrides=merged, in_scaling=in_scaling)
        written = pkg_mod.write(out_path, config, final.cpu(), files, overwrite=replace)
        discard_checkpoint(state_dir)
        written.model = final
        return written
