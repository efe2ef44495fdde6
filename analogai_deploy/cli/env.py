"""`env`: versions and what works here, for bug reports."""
from __future__ import annotations

import typer

from ._options import Json, output


def register(app: typer.Typer) -> None:
    app.command(help="Print versions and which aihwkit tiles work here (paste this into bug reports).\n\n"
                     "Examples:\n  analogai-deploy env\n  analogai-deploy env --json")(env)


def env(json_: Json = False) -> None:
    import platform

    from ..provenance import version_of, versions

    out = output(json_)
    info = dict(versions())
    for dist in ("onnx", "onnxruntime", "safetensors", "transformers", "huggingface-hub", "typer"):
        info[dist] = version_of(dist)
    info["platform"] = platform.platform()
    try:
        import torch

        info["cuda"] = torch.cuda.is_available()
        info["threads"] = torch.get_num_threads()
    except Exception as exc:  # a broken torch is exactly what env must still report
        info["torch_error"] = str(exc)
    from ..hardware.probe import tile_support

    info["aihwkit_tiles"] = tile_support()
    out.result(info, lambda d: "\n".join(f"{k:16} {v}" for k, v in d.items()))
