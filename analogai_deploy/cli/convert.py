"""`convert`: any torchvision / Hugging Face / local model -> an analog-aware package. Also `models`."""
from __future__ import annotations

from typing import Annotated

import typer

from ._options import Json, Quiet, output

EXAMPLES = """

Examples:
  analogai-deploy convert resnet18 --num-classes 10 -o runs/resnet18
  analogai-deploy convert hf:/path/to/minilm-folder
  analogai-deploy convert mymodels.py:small_cnn --weights cnn.safetensors --keep-first-last
  analogai-deploy convert mobilenet_v3_small --num-classes 10 --exclude 'features.0.*' --json
  analogai-deploy convert hf:/path/to/minilm-folder --outliers digital --outlier-std 2.5   # mixed-signal mapping
"""


def register(app: typer.Typer) -> None:
    app.command(help="Turn a model into an analog-aware package and print the conversion report." + EXAMPLES)(convert)
    app.command(help="List the model names `convert` accepts by name.\n\nExample:\n  analogai-deploy models --filter resnet")(models)


def convert(
    model: Annotated[str, typer.Argument(help="torchvision name, hf:ID_OR_DIR, or path/to/file.py:factory.")],
    output_dir: Annotated[str | None, typer.Option("-o", "--output", help="Package folder to write [default: runs/NAME].")] = None,
    num_classes: Annotated[int | None, typer.Option(help="Number of output classes.")] = None,
    weights: Annotated[str | None, typer.Option(help="Local checkpoint (.safetensors, or a .pt/.pth state_dict).")] = None,
    task: Annotated[str | None, typer.Option(help="Hugging Face task [default: from the folder's config.architectures]: "
                                              "feature-extraction, sequence-classification, causal-lm, ...")] = None,
    tokenizer: Annotated[str | None, typer.Option(help="Tokenizer folder for a Hugging Face text model without one.")] = None,
    input_shape: Annotated[str | None, typer.Option(help="Input C,H,W for image models, e.g. 3,32,32.")] = None,
    include: Annotated[list[str] | None, typer.Option(help="Only convert modules matching this name pattern (repeatable).")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Keep modules matching this name pattern digital (repeatable).")] = None,
    exclude_type: Annotated[list[str] | None, typer.Option(help="Keep modules of this class digital, e.g. Conv2d (repeatable).")] = None,
    keep_first_last: Annotated[bool, typer.Option(help="Keep the first and last analog-capable layer digital.")] = False,
    weight_bits: Annotated[int, typer.Option(help="Bits per weight (sets the noise scale with --device-bits).")] = 8,
    device_bits: Annotated[int, typer.Option(help="Bits per device slice.")] = 2,
    outliers: Annotated[str, typer.Option(help="Mapping recorded for recover and certify: 'digital' keeps each Linear (and GPT-2 Conv1D) tile column's weights beyond --outlier-std std off the tiles, computed digitally beside them (a sparse matmul; docs/certify.md says what it costs), or 'none' (pure analog).")] = "none",
    outlier_std: Annotated[float, typer.Option(help="Mapping: the outlier bound in std of the tile column (with --outliers digital).")] = 3.0,
    seed: Annotated[int, typer.Option(help="Seed for randomly initialised weights.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing package at -o (nothing else is ever replaced).")] = False,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    from .. import api
    from ..analog.config import AnalogConfig
    from ..analog.mapping import MappingConfig
    from ..analog.outliers import recorded_split_warning
    from ..package import section

    out = output(json_, quiet)
    config = AnalogConfig(
        weight_bits=weight_bits, device_bits=device_bits, include=include or [], exclude=exclude or [],
        exclude_types=exclude_type or [], keep_first_last=keep_first_last,
    )
    mapping = MappingConfig(outliers=outliers, outlier_std=outlier_std)  # refused here, before the model is built
    out.info(f"converting {model} ...")
    pkg = api.convert(
        model, config, output_dir, num_classes=num_classes, weights=weights, task=task,
        input_shape=input_shape, tokenizer=tokenizer, seed=seed, overwrite=overwrite, mapping=mapping,
    )
    data = {"package": str(pkg.path), "weights_sha256": pkg.weights_sha256, "report": pkg.report.to_dict(),
            "mapping": section(pkg.config, "mapping").to_dict()}
    split = f"\nmapping: {mapping.label()}" if mapping.outliers == "digital" else ""
    out.result(data, lambda d: f"{pkg.report.summary()}{split}\nwrote {d['package']}")
    if warning := recorded_split_warning(pkg.config):
        out.warn(warning)


def models(
    filter_: Annotated[str | None, typer.Option("--filter", help="Only names containing this text.")] = None,
    json_: Json = False,
) -> None:
    from ..sources import builtin, torchvision_models

    out = output(json_)
    names = [n for n in builtin.names() + torchvision_models.names() if not filter_ or filter_ in n]
    out.result(names, lambda d: "\n".join(d))
