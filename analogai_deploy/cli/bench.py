"""`bench ablation` / `bench speed`: the benchmarks behind BENCHMARKS.md (logic in analogai_deploy/benchmarks/)."""
from __future__ import annotations

from typing import Annotated

import typer

from ._options import Json, Quiet, output

ABLATION_HELP = ("Train every recipe on every model and seed at two budgets (the same rounds; the same passes), "
                 "certify each on aihwkit PCM (accuracy vs per-MAC weight noise n_w, and drift at 1s, 1d, 1y); "
                 "writes tables and a PNG into BENCHMARKS.md. Finished cells are cached under --cache, so a "
                 "stopped run resumes." + """

Examples:

  analogai-deploy bench ablation             # 6 recipes x lenet, mlp x 3 seeds x 2 budgets

  analogai-deploy bench ablation --models lenet --seeds 0 --rounds 2 --markdown '' --cache runs/quick

  analogai-deploy bench ablation --report-only        # the tables from the cached cells, trains nothing
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
    width: Annotated[int | None, typer.Option(help="resnet18_cifar's base width (64 = standard).")] = None,
    recipes: Annotated[str, typer.Option(help="Comma-separated recipes (names or YAML paths).")] = (
        "vanilla,single_noise,msnat_no_fi,msnat_no_fl,msnat,hwa_aihwkit"),
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0,1,2",
    budgets: Annotated[str, typer.Option(help="seed (same rounds), equal (same passes), or both.")] = "seed,equal",
    rounds: Annotated[int, typer.Option(help="The seed budget's rounds for every recipe.")] = 20,
    repeats: Annotated[int, typer.Option(help="Monte Carlo repeats per point.")] = 10,
    data: Annotated[str, typer.Option(help="Dataset spec.")] = "digits",
    out: Annotated[str, typer.Option(help="Folder for the trained packages.")] = "runs/bench/ablation",
    cache: Annotated[str, typer.Option(help="Folder for the finished cells (JSON).")] = (
        "bench/results/ablation/digits-small"),
    markdown: Annotated[str, typer.Option(help="Markdown file to update ('' = none).")] = "BENCHMARKS.md",
    png: Annotated[str, typer.Option(help="Where the plot goes.")] = "bench/ablation.png",
    report_only: Annotated[bool, typer.Option(help="Train nothing: tables and PNG from the cache.")] = False,
    gpu: Annotated[bool, typer.Option(help="Train on cuda, batch 256.")] = False,
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
    cfg = benchmarks.AblationConfig(models=_csv(models), width=width, recipes=_csv(recipes),
                                    seeds=[int(s) for s in _csv(seeds)], budgets=_csv(budgets), rounds=rounds,
                                    repeats=repeats, data=data, **kw)
    if report_only:
        result = benchmarks.ablation_report(cfg, cache)
        benchmarks.write_report(result, markdown or None, png, "ablation")
    else:
        result = benchmarks.run_ablation(cfg, out, cache, markdown or None, png, log=o.info)
    o.result({"config": result["config"], "trained": result["trained"], "table": benchmarks.ablation_table(result)},
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
