"""`publish`, `pull` and `zoo list`: the certificate-gated model zoo (local folder or Hugging Face Hub)."""
from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from ._options import Json, Quiet, output

ZooDir = Annotated[str | None, typer.Option("--zoo", help="Local zoo folder [default: $ANALOGAI_ZOO, else the repo's model_zoo/].")]

PUBLISH_HELP = """Publish a certified package to the local zoo or the Hugging Face Hub.

Without --zoo (and without $ANALOGAI_ZOO) the local zoo is the model_zoo/ folder that ships with
analogai-deploy: in a source checkout, the repository's own model_zoo/. Pass --zoo DIR to keep yours apart.

Refused (exit 1, with the reason): no certificate.json, a failing verdict, a certificate issued for
other weights, weights that do not match config.json, or a model built from a local Python file.

Examples:

  analogai-deploy publish runs/lenet-msnat

  analogai-deploy publish runs/lenet-msnat --zoo ~/my-zoo --name digits-cnn-v2

  analogai-deploy publish runs/lenet-msnat --hub my-org/digits-cnn-msnat-pcm --json
"""

PULL_HELP = """Fetch a zoo model, verify it (sha256 vs config.json and the certificate) and load it.

NAME is a local zoo name or hf-hub:OWNER/NAME[@REVISION]. Hub downloads use the Hugging Face
cache and honour HF_HUB_OFFLINE and HF_ENDPOINT.

Examples:

  analogai-deploy pull digits-cnn-msnat-pcm

  analogai-deploy pull digits-cnn-msnat-pcm -o runs/digits-cnn

  analogai-deploy pull hf-hub:my-org/digits-cnn-msnat-pcm@main -o runs/from-hub --json
"""

LIST_HELP = """List the local zoo: name, device, accuracy at 1 day and 1 year of drift, size.

Examples:

  analogai-deploy zoo list

  ANALOGAI_ZOO=~/my-zoo analogai-deploy zoo list --json
"""


def register(app: typer.Typer) -> None:
    app.command(help=PUBLISH_HELP)(publish)
    app.command(help=PULL_HELP)(pull)
    group = typer.Typer(help="The local model zoo.\n\nExample:\n\n  analogai-deploy zoo list", no_args_is_help=True)
    group.command("list", help=LIST_HELP)(list_)
    app.add_typer(group, name="zoo")


def publish(
    package: Annotated[str, typer.Argument(help="A certified package folder.")],
    zoo: ZooDir = None,
    hub_repo: Annotated[str | None, typer.Option("--hub", help="Push to this Hugging Face Hub repo (OWNER/NAME).")] = None,
    name: Annotated[str | None, typer.Option(help="Name in the local zoo [default: the package folder's name].")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a local zoo entry that holds other weights (nothing else is ever replaced).")] = False,
    private: Annotated[bool | None, typer.Option("--private/--public", help="Hub repo visibility when it is created.")] = None,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    from .. import zoo as zoo_api

    out = output(json_, quiet)
    out.info(f"checking {package} (certificate, sha256, source) ...")
    data = zoo_api.publish(package, zoo=zoo, hub_repo=hub_repo, name=name, overwrite=overwrite, private=private)
    out.result(data, _published)
    if data.get("where") == "zoo" and zoo is None and not os.environ.get(zoo_api.local.ENV):
        out.info(f"note: {data['zoo']} is the default zoo, the model_zoo/ that ships with analogai-deploy; "
                 "--zoo DIR or $ANALOGAI_ZOO publish elsewhere")


def pull(
    name: Annotated[str, typer.Argument(help="A local zoo name or hf-hub:OWNER/NAME[@REVISION].")],
    output_dir: Annotated[str | None, typer.Option("-o", "--output", help="Also copy the verified package here.")] = None,
    zoo: ZooDir = None,
    revision: Annotated[str | None, typer.Option(help="Hub revision (branch, tag or commit); same as NAME@REVISION.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing package at -o (nothing else is ever replaced).")] = False,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    from .. import zoo as zoo_api
    from ..zoo import gate

    out = output(json_, quiet)
    out.info(f"pulling {name} ...")
    pkg = zoo_api.pull(name, output_dir, zoo=zoo, revision=revision, overwrite=overwrite)
    cert = pkg.certificate() or {}
    data = {
        "name": name,
        "package": str(pkg.path),
        "weights_sha256": pkg.weights_sha256,
        "verified": True,
        "source": pkg.config["source"].get("name") or pkg.config["source"].get("kind"),
        "analog_layers": pkg.report.to_dict().get("converted_layers") if pkg.report is not None else None,
        **gate.summary(cert),
    }
    out.result(data, _pulled)


def list_(zoo: ZooDir = None, json_: Json = False) -> None:
    from ..zoo import list_models, local

    out = output(json_)
    rows = list_models(zoo)
    if not rows:
        out.info(f"the zoo at {local.resolve_dir(zoo)} is empty")
    out.result(rows, _table)


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _val(d: dict[str, Any], x: Any) -> str:
    """A certificate number in its metric's form (index keys say accuracy_*; the value is the entry's metric)."""
    from ..certification.evaluation import metric_info

    if x is None:
        return "-"
    return _pct(x) if metric_info(d.get("metric")).percent else f"{x:.3f}"


def _metric(d: dict[str, Any]) -> str:
    return d.get("metric") or "accuracy"


def _size(n: Any) -> str:
    if not isinstance(n, int):
        return "-"
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    head = ("NAME", "DEVICE", "METRIC", "@1d", "@1y", "SIZE")
    body = [(r["name"], str(r.get("device") or "-"), _metric(r), _val(r, r.get("accuracy_1d")),
             _val(r, r.get("accuracy_1y")), _size(r.get("size"))) for r in rows]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *body])


def _published(d: dict[str, Any]) -> str:
    if d["where"] == "hub":
        return (f"pushed {len(d['files'])} files to {d['url']} (commit {d['commit'][:12]})\n"
                f"pull with: analogai-deploy pull hf-hub:{d['repo_id']}")
    from pathlib import Path

    from ..zoo.local import default_dir

    where = "" if Path(d["zoo"]).resolve() == default_dir().resolve() else f" --zoo {d['zoo']}"  # a pull must find it
    return (f"published {d['name']} to {d['zoo']}: {d.get('device')} {_metric(d)} {_val(d, d.get('accuracy_1d'))} at 1 d, "
            f"{_val(d, d.get('accuracy_1y'))} at 1 y, {_size(d.get('size'))}\npull with: analogai-deploy pull {d['name']}{where}")


def _pulled(d: dict[str, Any]) -> str:
    return (f"{d['name']}: verified (sha256 {d['weights_sha256'][:16]}... matches config.json and the certificate)\n"
            f"certified on {d.get('device')}: {_metric(d)} {_val(d, d.get('accuracy_1d'))} at 1 d, "
            f"{_val(d, d.get('accuracy_1y'))} at 1 y (digital {_val(d, d.get('digital'))})\npackage: {d['package']}")
