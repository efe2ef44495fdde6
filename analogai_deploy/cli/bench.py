"""`bench ablation` / `bench speed`: the benchmarks behind BENCHMARKS.md (logic in analogai_deploy/benchmarks/)."""
from __future__ import annotations

from typing import Annotated

import typer

from ._options import Json, Quiet, output

ABLATION_HELP = ("Train every recipe on every model and seed, certify each on aihwkit PCM (1s..1y, plain and with "
                 "per-MAC weight noise n_w) and an n_w sweep; writes a table and a PNG into BENCHMARKS.md. "
                 "Finished runs are cached under --out, so a stopped run resumes." + """

Examples:

  analogai-deploy bench ablation             # 6 recipes x lenet, mlp x 3 seeds (~20 min, 1 thread)

  analogai-deploy bench ablation --models lenet --seeds 0 --rounds 2 --markdown ''

  analogai-deploy bench ablation --gpu --data cifar10:/data/cifar10 --models resnet18
""")
SPEED_HELP = ("Speed ratios measured side by side: MSNAT round vs the compute it needs, noise-injected vs digital "
              "vs aihwkit HWA training step, certify repeat (fast engine, aihwkit tiles) vs a digital pass, peak "
              "memory; then the fast-vs-aihwkit agreement table." + """

Examples:

  OMP_NUM_THREADS=1 analogai-deploy bench speed

  analogai-deploy bench speed --n 5 --agreement-repeats 0 --markdown ''

  analogai-deploy bench speed --gpu --threads 8
""")


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Benchmarks (BENCHMARKS.md).\n\nExample:\n\n  analogai-deploy bench speed",
                        no_args_is_help=True)
    group.command("ablation", help=ABLATION_HELP)(ablation)
    group.command("speed", help=SPEED_HELP)(speed)
    app.add_typer(group, name="bench")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def ablation(
    models: Annotated[str, typer.Option(help="Comma-separated model sources.")] = "lenet,mlp",
    recipes: Annotated[str, typer.Option(help="Comma-separated recipes.")] = (
        "vanilla,single_noise,msnat_no_fi,msnat_no_fl,msnat,hwa_aihwkit"),
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0,1,2",
    rounds: Annotated[int, typer.Option(
        help="Training rounds for every recipe (passes over the data per client).")] = 20,
    repeats: Annotated[int, typer.Option(help="Monte Carlo repeats per time point.")] = 10,
    data: Annotated[str, typer.Option(help="Dataset spec.")] = "digits",
    out: Annotated[str, typer.Option(help="Folder for the packages and cached results.")] = "runs/bench/ablation",
    markdown: Annotated[str, typer.Option(help="Markdown file to update ('' = none).")] = "BENCHMARKS.md",
    png: Annotated[str, typer.Option(help="Where the plot goes.")] = "bench/ablation.png",
    gpu: Annotated[bool, typer.Option(help="Train on cuda, batch 256, 3x32x32 inputs.")] = False,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    import torch

    from .. import benchmarks
    from ..errors import UsageError

    o = output(json_, quiet)
    kw = {}
    if gpu:
        if not torch.cuda.is_available():
            raise UsageError("--gpu: no CUDA device here", "drop --gpu to run on the CPU")
        kw = dict(benchmarks.GPU_ABLATION)
    kw.setdefault("repeats", repeats)
    cfg = benchmarks.AblationConfig(models=_csv(models), recipes=_csv(recipes), seeds=[int(s) for s in _csv(seeds)],
                                    rounds=rounds, data=data, **kw)
    result = benchmarks.run_ablation(cfg, out, markdown or None, png, log=o.info)
    o.result({"config": result["config"], "table": benchmarks.ablation_table(result)},
             lambda _: benchmarks.ablation_markdown(result, png))


def speed(
    n: Annotated[int, typer.Option(help="Timed runs per figure (medians).")] = 15,
    threads: Annotated[int, typer.Option(help="torch threads.")] = 1,
    agreement_repeats: Annotated[int, typer.Option(help="Repeats per engine for the agreement table (0 = skip).")] = 20,
    markdown: Annotated[str, typer.Option(help="Markdown file to update ('' = none).")] = "BENCHMARKS.md",
    json_path: Annotated[str, typer.Option("--save", help="Where the raw results go.")] = "runs/bench/speed.json",
    gpu: Annotated[bool, typer.Option(help="cuda, resnet18 on 3x32x32, batch 512.")] = False,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    from .. import benchmarks

    o = output(json_, quiet)
    cfg = benchmarks.SpeedConfig(n=n, threads=threads, gpu=gpu)
    result = benchmarks.run_speed(cfg, markdown or None, json_path or None, agreement_repeats, log=o.info)

    def human(_):
        text = benchmarks.speed_markdown(result)
        if "agreement" in result:
            text += "\n" + benchmarks.agreement_markdown(result["agreement"])
        return text

    o.result(result, human)
