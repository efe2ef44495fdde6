"""`export` (model.onnx checked with onnxruntime, or an aihwkit checkpoint), `inspect` (analog metadata) and
`migrate` (a package of an earlier layout rewritten in today's)."""
from __future__ import annotations

from typing import Annotated

import typer

from ._options import Json, Quiet, output

EXPORT_HELP = """Export a package to ONNX (validated against PyTorch with onnxruntime) or to an aihwkit checkpoint.

The ONNX graph is the model with noise off (analog layers back to digital; QAT quantizers as
QuantizeLinear/DequantizeLinear), with a dynamic batch axis and the package metadata under
analogai.* in its metadata_props. onnxruntime runs sample inputs and every output must match
PyTorch within tolerance, else nothing is written and the exit code is 1.

--to aihwkit writes model.aihwkit.pt: the tile state of analogai_deploy.to_aihwkit(PKG, device=...),
the chip certify's aihwkit engine simulates (the package's placement and mapping on --device, PCM by
default). Tensors only: torch.load(..., weights_only=True) reads it (see docs/export.md).

Examples:

  analogai-deploy export runs/lenet

  analogai-deploy export runs/minilm --opset 17 --json

  analogai-deploy export runs/lenet --atol 1e-5 --samples 32

  analogai-deploy export runs/lenet --to aihwkit --device PCM

  analogai-deploy export /read-only/lenet -o runs/lenet-onnx     # a copy with model.onnx, input untouched
"""

INSPECT_HELP = """Verify a model.safetensors, a model.onnx or a package folder, then print its analog metadata (analogai.*).

Checked first (exit 1 naming what differs): the safetensors header's structure (every tensor's dtype,
shape and data_offsets, the data tiled exactly), the file's sha256 against config.json when it lies
in a package (a changed byte anywhere), and for a package folder the certificate's binding to these
weights and this config.json. The header is read without loading any tensor.

Examples:

  analogai-deploy inspect runs/lenet/model.onnx

  analogai-deploy inspect runs/lenet/model.safetensors --json

  analogai-deploy inspect runs/lenet            # the whole package

  analogai-deploy inspect runs/lenet/model.onnx --all
"""

MIGRATE_HELP = """Rewrite a package made by an earlier analogai-deploy in today's layout, in place.

A Hugging Face package made before the transformers layout keeps the toolkit's record as its whole
config.json, so transformers cannot load it. migrate verifies the package (weights sha256, the
certificate's binding), then writes config.json as the model's own transformers config with the
record under its "analogai" key, and regenerates the card. The weights, the certificate and the
record itself do not change, so the certificate stays valid. A package already in today's layout
(and every image or local package) is left as it is.

Examples:

  analogai-deploy migrate runs/minilm-msnat
"""


def register(app: typer.Typer) -> None:
    app.command(name="export", help=EXPORT_HELP)(export)
    app.command(name="inspect", help=INSPECT_HELP)(inspect)
    app.command(name="migrate", help=MIGRATE_HELP)(migrate)


def migrate(
    package: Annotated[str, typer.Argument(help="Package folder to rewrite in place.")],
    json_: Json = False,
) -> None:
    from .. import package as package_io

    out = output(json_)
    package_io.check_output(package, in_place=True, flag="PACKAGE")  # a package, nothing foreign in it, writable
    changed = package_io.migrate(package)
    out.result({"package": package, "migrated": changed},
               lambda d: f"{d['package']}: " + ("rewritten in the transformers layout (weights and certificate "
                                              "unchanged)" if d["migrated"] else "already in today's layout"))


def export(
    package: Annotated[str, typer.Argument(help="Package folder (made by convert / recover).")],
    to: Annotated[str, typer.Option(help="onnx (model.onnx) or aihwkit (model.aihwkit.pt, certify's chip).")] = "onnx",
    opset: Annotated[int, typer.Option(help="ONNX opset, 13..20.")] = 17,
    atol: Annotated[float | None, typer.Option(help="Absolute tolerance of the check [default: per model].")] = None,
    rtol: Annotated[float | None, typer.Option(help="Relative tolerance of the check [default: per model].")] = None,
    samples: Annotated[int, typer.Option(help="Sample inputs onnxruntime and PyTorch are compared on.")] = 8,
    device: Annotated[str, typer.Option(
        help="Target device: recorded when the package names none; the aihwkit device (PCM, ReRAM, ReRAM-CMO, "
             "Hermes-PCM, ideal).",
    )] = "PCM",
    output_dir: Annotated[str | None, typer.Option("-o", "--output", help="Write a copy of the package with the export here (e.g. for a read-only package) [default: update PACKAGE in place].")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing package at -o.")] = False,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    from ..exporter import ExportConfig
    from ..exporter import export as run_export

    out = output(json_, quiet)
    config = ExportConfig(to=to, opset=opset, atol=atol, rtol=rtol, samples=samples, device=device)
    out.info(f"exporting {package} to {to} ...")
    try:
        result = run_export(package, config, output=output_dir, overwrite=overwrite)
    except Exception as exc:
        # the per-output lines are the point of the check: show them before the error
        lines = getattr(exc, "validation_lines", None)
        for line in lines or []:
            out.info(line)
        raise
    for warning in result.warnings:
        out.warn(warning)

    def human(d) -> str:
        if result.validation is None:
            rec = d["record"]
            return (f"wrote {d['file']} ({rec.get('analog_layers')} aihwkit layers, {rec.get('device')}, "
                    f"{rec.get('tile')} tiles)")
        v = result.validation
        head = f"checked on {v.inputs} (batch {v.batch}) with onnxruntime vs PyTorch:"
        q = f", QDQ on {len(result.quantized_layers)} layers" if result.quantized_layers else ""
        return "\n".join([head, *("  " + line for line in v.lines()),
                          f"wrote {d['file']} (opset {result.opset}, {result.exporter} exporter{q})"])

    out.result(result.to_dict(), human)


def inspect(
    file: Annotated[str, typer.Argument(help="model.onnx, model.safetensors or a package folder.")],
    all_: Annotated[bool, typer.Option("--all", help="Also print metadata outside the analogai.* namespace.")] = False,
    json_: Json = False,
) -> None:
    from ..exporter import metadata as meta_io

    out = output(json_)
    shown_file, checks, warnings = meta_io.verify_file(file)
    for warning in warnings:
        out.warn(warning)
    meta = meta_io.read_metadata(shown_file)
    shown = dict(sorted(meta.items())) if all_ else meta_io.analog_only(meta)
    if not shown:
        out.warn(f"{shown_file} carries no analogai.* metadata (not exported by analogai-deploy?)")
    data = meta_io.decoded(shown)
    if json_:
        data = {**data, "verified": checks}
    out.result(data, lambda d: _human(str(shown_file), d, checks))


def _human(file: str, d: dict, checks: list[str] | None = None) -> str:
    import json

    lines = [f"{file}:"] + [f"  ok: {c}" for c in checks or []]
    source = d.get("analogai.source")
    if isinstance(source, dict):
        name = source.get("name") or source.get("source") or source.get("factory")
        lines.append(f"  from: {source.get('kind')} {name}")
    recipe = d.get("analogai.recipe")
    if isinstance(recipe, dict):
        lines.append(f"  recipe: {recipe.get('name')} (sha256 {str(d.get('analogai.recipe_sha256', ''))[:16]}...)")
    cert = d.get("analogai.certificate")
    if isinstance(cert, dict):
        verdict = {True: "PASS", False: "FAIL"}.get(cert.get("verdict"), "-")
        lines.append(f"  certified on {cert.get('device')}: {verdict}, results {json.dumps(cert.get('results'))}")
    for key, value in d.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        if len(text) > 160:
            text = text[:157] + "..."
        lines.append(f"  {key} = {text}")
    return "\n".join(lines)
