"""`recover`: noise-aware retraining of a package; `recipes list` / `recipes show NAME`."""
from __future__ import annotations

from typing import Annotated

import typer

from ._options import DistTimeout, Json, Quiet, output, rank_output

EXAMPLES = """
Examples:

  analogai-deploy recover runs/lenet --recipe msnat --data digits

  analogai-deploy recover runs/lenet --recipe vanilla -o runs/lenet-vanilla training.rounds=10

  analogai-deploy recover runs/resnet18 --data cifar10:/data/cifar10 training.batch_size=256 training.use_FL=False

  analogai-deploy recover runs/lenet recovery.noise_4.act_inject.sigma=0.35 recovery.optimizer.sam=true

  analogai-deploy recover runs/lenet --recipe my_recipe.yaml --resume --json

  analogai-deploy recover runs/lenet --recipe msnat --nproc 5      # one MSNAT client per process

  analogai-deploy recover runs/minilm --recipe msnat               # text: the shipped corpus, distillation

  analogai-deploy recover runs/minilm --outliers digital --outlier-std 2.5   # train and record the mixed-signal mapping

  analogai-deploy recover runs/bert-cls --data text:reviews.jsonl  # labelled text: cross-entropy

  analogai-deploy recover runs/smollm2 --data generated:200 training.rounds=2   # text the LM writes itself

  torchrun --nproc-per-node 4 -m analogai_deploy recover runs/lenet --recipe vanilla   # data parallel

Overrides are dotted keys (the seed's names work verbatim); `analogai-deploy recipes show msnat` lists them.
Text packages: with labels cross-entropy; without, distillation from the package's clean weights
(cosine on the pooled embedding for encoders, KL on the logits for classifiers and causal LMs;
recovery.distill.loss=... picks one). The objective is printed and recorded in config.json. A distilled
package keeps its teacher as reference.safetensors: certify compares with it.
Ctrl-C keeps a checkpoint of the last finished round in OUTPUT.partial/; rerun with --resume to continue
(or --restart to discard it). An existing package at OUTPUT is replaced only with --overwrite.
"""

LIST_HELP = """List the shipped recipes.

Example:

  analogai-deploy recipes list --json
"""

SHOW_HELP = """Print a recipe fully resolved (every field with its value) and its sha256.

Examples:

  analogai-deploy recipes show msnat

  analogai-deploy recipes show msnat training.rounds=5 training.use_FI=false

  analogai-deploy recipes show msnat --text      # what a transformer gets (the recipe's text: section)

  analogai-deploy recipes show ./my_recipe.yaml --json
"""

recipes_app = typer.Typer(
    help="Training recipes for `recover`: list them, show one resolved.\n\nExamples:\n\n"
    "  analogai-deploy recipes list\n\n  analogai-deploy recipes show msnat training.rounds=5",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.command(help="Retrain a package with a noise-aware recipe (MSNAT by default) and write the recovered package."
                + EXAMPLES)(recover)
    recipes_app.command("list", help=LIST_HELP)(list_recipes)
    recipes_app.command("show", help=SHOW_HELP)(show_recipe)
    app.add_typer(recipes_app, name="recipes")


def recover(
    package: Annotated[str, typer.Argument(help="Package folder (made by `convert` or an earlier stage).")],
    overrides: Annotated[list[str] | None, typer.Argument(help="Recipe overrides: dotted.key=value ...")] = None,
    recipe: Annotated[str, typer.Option("--recipe", "-r", help="Shipped recipe name or a .yaml file.")] = "msnat",
    data: Annotated[str | None, typer.Option("--data", "-d", help="Dataset: digits, cifar10:PATH, mnist:PATH, imagefolder:PATH; text: corpus, text:FILE (.txt/.jsonl/.csv), generated:N. [default: digits / corpus]")] = None,
    output_dir: Annotated[str | None, typer.Option("-o", "--output", help="Package to write [default: PACKAGE-RECIPE].")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoint in OUTPUT.partial/ if there is one.")] = False,
    restart: Annotated[bool, typer.Option(help="Discard the checkpoint in OUTPUT.partial/ and start from round 1.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing package at OUTPUT (nothing else is ever replaced).")] = False,
    outliers: Annotated[str | None, typer.Option(help="Mapping: 'digital' trains with each Linear (and GPT-2 Conv1D) tile column's weights beyond --outlier-std std off the tiles, computed digitally beside them, and records it for certify; 'none' trains and records pure analog (the recipe's noise.outliers). [default: the package's record; recipes with the hardware noise model train with it]")] = None,
    outlier_std: Annotated[float | None, typer.Option(help="Mapping: the outlier bound in std of the tile column (noise.outlier_std). [default: 3]")] = None,
    nproc: Annotated[int, typer.Option(help="Train on N local processes (torch.distributed): MSNAT clients spread over them, other recipes data parallel.")] = 1,
    dist_timeout: DistTimeout = None,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    from ..analog.outliers import recorded_split_warning
    from ..launcher import recover as run_recover

    out = rank_output(nproc, dist_timeout, json_, quiet)
    overrides = list(overrides or [])  # the mapping options are the recipe's noise.outliers / noise.outlier_std
    overrides += [f"noise.{k}={v}" for k, v in (("outliers", outliers), ("outlier_std", outlier_std)) if v is not None]
    out.info(f"recovering {package} with recipe {recipe} on {data or 'the default data'} ...")
    before = _stamp(output_dir) if resume else None  # a finished package is returned as it is (nothing to resume)
    pkg = run_recover(package, recipe, data, output_dir, overrides=overrides, resume=resume,
                      restart=restart, overwrite=overwrite,
                      progress=(lambda **kw: out.progress(**kw)) if out.mode == "human" else None,
                      nproc=nproc, dist_timeout=dist_timeout, log=out.info)
    if pkg is None:  # a torchrun rank other than 0: rank 0 reports
        return
    t = pkg.config["training"]
    best = t["best"]
    written = before is None or _stamp(pkg.path) != before
    result = {"package": str(pkg.path), "weights_sha256": pkg.weights_sha256, "recipe": pkg.config["recipe"]["name"],
              "recipe_sha256": pkg.config["recipe"]["sha256"], "training": t, "written": written}

    metric = best.get("metric", "acc")  # "val_acc" holds the objective's metric (a cosine when distilling)

    def human(d):
        done, kept = t["rounds"], t.get("resumed_from_round", 0)
        earlier = "round 1" if kept == 1 else f"rounds 1-{kept}"
        rounds = f"{done} round{'s' if done != 1 else ''} in {t['seconds']:.0f} s" if not kept else (
            f"{done} rounds, {done - kept} of them in this run ({t['seconds']:.0f} s; {earlier} from the checkpoint)"
            if done > kept else f"{done} rounds, all from the checkpoint (none left to run)")
        return (f"{d['recipe']}: {rounds} ({t['mode']} mode, {t['device']}); "
                f"best round {best['round']}: val {metric} {best['val_acc']:.4f} at sigma={best['val_sigma']} "
                f"(clean {best['val_clean_acc']:.4f})\n{'wrote' if written else 'left as it was:'} {d['package']}")

    out.result(result, human)
    if warning := recorded_split_warning(pkg.config):
        out.warn(warning)


def _stamp(folder) -> int | None:
    """When the package at `folder` was last written (its config.json's mtime), None where there is none."""
    from pathlib import Path

    from ..package import CONFIG

    try:
        return (Path(folder) / CONFIG).stat().st_mtime_ns if folder else None
    except OSError:
        return None


def list_recipes(json_: Json = False) -> None:
    from ..recovery import recipe as recipes

    out = output(json_)
    rows = []
    for name in recipes.shipped():
        r = recipes.load(name)
        rows.append({"name": name, "description": r.description, "summary": r.summary(), "sha256": r.sha256()})
    width = max((len(r["name"]) for r in rows), default=4)
    out.result(rows, lambda d: "\n".join(f"{r['name']:<{width}}  {r['description']}" for r in d))


def show_recipe(
    name: Annotated[str, typer.Argument(help="Shipped recipe name or a .yaml file.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="Overrides to apply first: dotted.key=value ...")] = None,
    text: Annotated[bool, typer.Option("--text", help="Show what text packages (transformers) get: the recipe's "
                                       "text: section applied.")] = False,
    json_: Json = False,
) -> None:
    import yaml

    from ..recovery import recipe as recipes

    out = output(json_)
    r = recipes.load(name, list(overrides or []), text=text)
    data = {"name": r.name, "sha256": r.sha256(), "summary": r.summary(), "resolved": r.to_dict()}
    out.result(data, lambda d: f"# {r.summary()}\n# sha256 {d['sha256']}\n"
               + yaml.safe_dump(d["resolved"], sort_keys=False, default_flow_style=None, width=110))
