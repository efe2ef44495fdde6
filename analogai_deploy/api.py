"""One verb per stage. Each takes typed configs, reads a package and writes a package."""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from . import package as pkg
from .analog.config import AnalogConfig
from .analog.convert import convert as convert_model
from .analog.placement import check_selection, plan
from .certification.mapping import MappingConfig
from .provenance import now, versions
from .sources import Source, check_runs, resolve


def default_output(spec: str) -> Path:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(spec.split(":", 1)[-1].split(".py")[0]).name or spec).strip("-.")
    return Path("runs") / (base or "model")


def convert(
    source: str | Source,
    config: AnalogConfig | None = None,
    output: str | Path | None = None,
    *,
    num_classes: int | None = None,
    weights: str | None = None,
    task: str | None = None,
    input_shape: list[int] | None = None,
    tokenizer: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
    mapping: MappingConfig | None = None,
) -> pkg.Package:
    """Build the model named by `source`, make it analog-aware, and write a package.

    `source` is a spec string (`resnet18`, `hf:/path/to/folder`, `file.py:factory`) or a `Source`.
    Returns the written package with the converted model and its `ConversionReport` in `.report`.
    `mapping`: the tile mapping recorded in config.json["mapping"] (default: mapping.DEFAULTS).
    An existing package at `output` is replaced only with `overwrite`; anything else there is refused.
    """
    config = config or AnalogConfig()
    if isinstance(source, str):  # refused before the model is built (a Hub model can take minutes)
        pkg.check_output(output or default_output(source), overwrite=overwrite)
    torch.manual_seed(seed)  # random-init architectures are reproducible from the recorded seed
    src = source if isinstance(source, Source) else resolve(
        source, num_classes=num_classes, weights=weights, task=task, input_shape=input_shape, tokenizer=tokenizer
    )
    model: nn.Module = src.model.eval()
    spec_name = source if isinstance(source, str) else src.spec.get("name", "model")
    check_runs(src, spec_name, num_classes)  # before anything is decided or written; sets src.num_classes
    check_selection(model, config)
    placement = plan(model, config)
    report = convert_model(model, config, placement)
    meta = {
        "source": src.spec,
        "task": src.task,
        "num_classes": src.num_classes,
        "input": src.input,
        **({"tokenizer": src.tokenizer} if src.tokenizer else {}),
        "analog": config.to_dict(),
        "placement": placement.to_dict(),
        # how the weights and signals go onto tiles; certify uses it unless told otherwise (mapping.py)
        "mapping": (mapping or MappingConfig()).complete().to_dict(),
        "conversion": placement.conversion_summary(),  # the counts, for readers of older packages' summary
        "provenance": {
            "created": now(),
            "seed": seed,
            "versions": versions(),
            "history": [{"stage": "convert", "time": now(), "source": spec_name, "weights_file": weights}],
        },
    }
    out = pkg.write(output or default_output(spec_name), meta, model, src.extra_files, overwrite=overwrite)
    out.model, out.report, out.placement = model, report, placement
    return out


def load(path: str | Path, *, verify: bool = True) -> pkg.Package:
    """Read a package: the analog-aware model, rebuilt and loaded bit for bit (sha256 checked)."""
    return pkg.load(path, verify_hash=verify)
