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
The zoo recomputes the verdict itself: the certificate must carry a gate (certify --max-drop X --at T)
no looser than the zoo's policy (`zoo policy`), its means and CIs must follow from its per-repeat
values, and the gate must pass on them; then a spot check re-runs a few Monte Carlo repeats with the
recorded device, settings and data and must agree with the certificate (two-sample t-test, 1%
false-refusal rate). Refused (exit 1, with the reason): no certificate, no gate, a failing or edited
certificate, a certificate for other weights or another config.json (model_sha256), weights that do
not match config.json, a spot check that disagrees, or a model built from a local Python file.

Examples:

  analogai-deploy publish runs/lenet-msnat

  analogai-deploy publish runs/lenet-msnat --zoo ~/my-zoo --name digits-cnn-v2

  analogai-deploy publish runs/lenet-msnat --hub my-org/digits-cnn-msnat-pcm --json
"""

PULL_HELP = """Fetch a zoo model, verify it (sha256 vs config.json and the certificate, the gate recomputed) and load it.

--verify also re-runs the publish spot check here (a few Monte Carlo repeats against the certificate).

NAME is a local zoo name or hf-hub:OWNER/NAME[@REVISION]. Hub downloads use the Hugging Face
cache and honour HF_HUB_OFFLINE and HF_ENDPOINT.

Examples:

  analogai-deploy pull digits-cnn-msnat-pcm

  analogai-deploy pull digits-cnn-msnat-pcm -o runs/digits-cnn

  analogai-deploy pull hf-hub:my-org/digits-cnn-msnat-pcm@main -o runs/from-hub --json

  analogai-deploy pull digits-cnn-msnat-pcm --verify
"""

LIST_HELP = """List the local zoo: name, device, the certified metric at 1 day and 1 year of drift, the gate, size.

Examples:

  analogai-deploy zoo list

  ANALOGAI_ZOO=~/my-zoo analogai-deploy zoo list --json
"""

POLICY_HELP = """Show or change what the local zoo admits (index.json "policy").

--max-drop: the loosest certificate gate admitted (percentage points of the certificate's metric);
--min-repeats: Monte Carlo repeats a certificate needs; --spot-repeats: fresh repeats of the publish
spot check (0 = off); --alpha: the spot check's false-refusal rate.

Examples:

  analogai-deploy zoo policy

  analogai-deploy zoo policy --zoo ~/my-zoo --max-drop 2 --spot-repeats 5
"""


def register(app: typer.Typer) -> None:
    app.command(help=PUBLISH_HELP)(publish)
    app.command(help=PULL_HELP)(pull)
    group = typer.Typer(help="The local model zoo.\n\nExample:\n\n  analogai-deploy zoo list", no_args_is_help=True)
    group.command("list", help=LIST_HELP)(list_)
    group.command("policy", help=POLICY_HELP)(policy)
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
    verify: Annotated[bool, typer.Option("--verify", help="Re-run the spot check here: a few Monte Carlo repeats must agree with the certificate.")] = False,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    from .. import zoo as zoo_api
    from ..zoo import gate

    out = output(json_, quiet)
    out.info(f"pulling {name} ...")
    if verify:
        out.info("spot check: re-running a few Monte Carlo repeats against the certificate ...")
    pkg = zoo_api.pull(name, output_dir, zoo=zoo, revision=revision, overwrite=overwrite, verify=verify,
                       log=out.warn)
    cert = pkg.certificate() or {}
    rules = zoo_api.local.policy(zoo) if not name.startswith(zoo_api.hub.PREFIX) else gate.Policy()
    data = {
        "name": name,
        "package": str(pkg.path),
        "weights_sha256": pkg.weights_sha256,
        "verified": True,
        "source": pkg.config["source"].get("name") or pkg.config["source"].get("kind"),
        "analog_layers": pkg.report.to_dict().get("converted_layers") if pkg.report is not None else None,
        **gate.summary(cert, gate.verdict(cert, rules, pkg.path)),
        "spot_check": "passed" if verify else "not run (pass --verify)",
    }
    out.result(data, _pulled)


def policy(
    zoo: ZooDir = None,
    max_drop: Annotated[float | None, typer.Option(help="Loosest certificate gate admitted, in percentage points.")] = None,
    min_repeats: Annotated[int | None, typer.Option(help="Monte Carlo repeats a certificate needs.")] = None,
    spot_repeats: Annotated[int | None, typer.Option(help="Repeats of the publish spot check (0 = off).")] = None,
    alpha: Annotated[float | None, typer.Option(help="False-refusal rate of the spot check.")] = None,
    json_: Json = False,
) -> None:
    from ..zoo import local

    out = output(json_)
    changes = {k: v for k, v in {"max_drop": max_drop, "min_repeats": min_repeats, "spot_repeats": spot_repeats,
                                 "alpha": alpha}.items() if v is not None}
    rules = local.set_policy(zoo, **changes) if changes else local.policy(zoo)
    out.result(rules.to_dict(), lambda d: f"zoo at {local.resolve_dir(zoo)}: a certificate's gate may allow at most "
               f"{d['max_drop']:g} pp, with >= {d['min_repeats']} repeats; publish spot check: "
               + (f"{d['spot_repeats']} repeats at a {100 * d['alpha']:g}% false-refusal rate"
                  if d['spot_repeats'] else "off"))


def list_(zoo: ZooDir = None, json_: Json = False) -> None:
    from ..zoo import list_models, local

    out = output(json_)
    rows = list_models(zoo)
    if not rows:
        out.info(f"the zoo at {local.resolve_dir(zoo)} is empty")
    out.result(rows, _table)


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _size(n: Any) -> str:
    if not isinstance(n, int):
        return "-"
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def _value(metric: Any, x: Any) -> str:
    """A certificate number in its metric's form (a percentage, or a plain number for a ratio)."""
    from ..metrics import metric_info

    if x is None:
        return "-"
    return _pct(x) if metric_info(metric).percent else f"{x:.3f}"


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    head = ("NAME", "DEVICE", "METRIC", "@1d", "@1y", "DIGITAL", "GATE", "SIZE")
    body = [(r["name"], str(r.get("device") or "-"), str(r.get("metric") or "-"),
             _value(r.get("metric"), _v(r, "1d")), _value(r.get("metric"), _v(r, "1y")),
             _value(r.get("metric"), r.get("digital")), _gate(r), _size(r.get("size"))) for r in rows]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *body])


def _v(r: dict[str, Any], t: str) -> Any:
    """An entry's value at `t` (older indexes call it accuracy_T whatever the metric)."""
    return r.get(f"value_{t}", r.get(f"accuracy_{t}"))


def _results(metric: Any, r: dict[str, Any]) -> str:
    """"98.0% at 1 d, 97.8% at 1 y", leaving out a time the certificate did not measure."""
    parts = [f"{_value(metric, _v(r, t))} at {t[:-1]} {t[-1]}" for t in ("1d", "1y") if _v(r, t) is not None]
    return ", ".join(parts) or "(no result at 1 d or 1 y)"


def _gate(r: dict[str, Any]) -> str:
    rule = r.get("gate")
    if not rule:
        return "-"
    return rule.split(" (")[0].replace("max drop ", "<=").replace(f" of {r.get('metric')}", "")


def _published(d: dict[str, Any]) -> str:
    m = d.get("metric")
    gate = f"gate {d.get('gate')}: passed, {d['drop_pp']:.2f} pp" if d.get("gate") and "drop_pp" in d else \
        f"gate {d.get('gate')}: passed"
    spot = d.get("spot_check") or {}
    spot_text = (f"spot check: {spot['repeats']} fresh repeats agree with the certificate "
                 f"({100 * spot['alpha']:g}% false-refusal rate)" if spot.get("repeats") else "spot check: off")
    if d["where"] == "hub":
        return (f"pushed {len(d['files'])} files to {d['url']} (commit {d['commit'][:12]})\n{gate}; {spot_text}\n"
                f"pull with: analogai-deploy pull hf-hub:{d['repo_id']}")
    from pathlib import Path

    from ..zoo.local import default_dir

    where = "" if Path(d["zoo"]).resolve() == default_dir().resolve() else f" --zoo {d['zoo']}"  # a pull must find it
    return (f"published {d['name']} to {d['zoo']}: {d.get('device')} {m} {_results(m, d)} "
            f"(digital {_value(m, d.get('digital'))}), {_size(d.get('size'))}\n"
            f"{gate}; {spot_text}\npull with: analogai-deploy pull {d['name']}{where}")


def _pulled(d: dict[str, Any]) -> str:
    m = d.get("metric")
    return (f"{d['name']}: verified (sha256 {d['weights_sha256'][:16]}... matches config.json and the certificate; "
            f"gate {d.get('gate')} recomputed: passed; spot check {d['spot_check']})\n"
            f"certified on {d.get('device')}: {m} {_results(m, d)} "
            f"(digital {_value(m, d.get('digital'))})\npackage: {d['package']}")
