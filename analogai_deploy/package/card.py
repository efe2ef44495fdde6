"""The model card (README.md of a package), rendered from config.json and certificate.json."""
from __future__ import annotations

from typing import Any

import yaml

from ..tasks import Record


def certificate_summary(cert: dict[str, Any]) -> dict[str, Any]:
    """The few numbers worth carrying elsewhere (ONNX metadata, the zoo index, card front matter)."""
    metric = cert.get("metric")
    return {
        "device": cert.get("device", {}).get("name"),
        "verdict": cert.get("verdict", {}).get("passed"),
        "digital_accuracy": cert.get("digital", {}).get("accuracy"),  # None unless the metric is accuracy
        "digital": cert.get("digital", {}).get(metric),
        "metric": metric,
        "results": {r["time"]: r.get("mean") for r in cert.get("results", [])},
        "weights_sha256": cert.get("weights_sha256"),
    }


def simulator(cert: dict[str, Any]) -> str:
    """What ran the certificate's Monte Carlo: the fast engine, or aihwkit's tiles of a kind."""
    engine = cert.get("engine") or cert.get("device", {}).get("engine")  # a sweep keeps it in its device block
    return "fast engine" if engine == "fast" else f"{cert.get('tile', '?')} tiles"


def results_markdown(cert: dict[str, Any]) -> str:
    """The certificate's results as a markdown table (model card, CLI, benchmarks)."""
    from ..metrics import metric_info

    metric = cert.get("metric", "accuracy")
    fmt = metric_info(metric).format  # percentages for fractions; a perplexity ratio as a plain number
    better = "" if metric_info(metric).higher_is_better else " (lower is better)"
    digital = cert.get("digital", {}).get(metric)
    head = f"| time | mean {metric}{better} | std | 95% CI | min | normalised |\n|---|---|---|---|---|---|"
    rows = []
    for r in cert.get("results", []):
        ci = r.get("ci95", [None, None])
        rows.append(
            f"| {r['time']} | {fmt(r.get('mean'))} | {fmt(r.get('std'))} | {fmt(ci[0])} - {fmt(ci[1])} | "
            f"{fmt(r.get('min'))} | {_pct(r.get('normalised'))} |"
        )
    device = cert.get("device", {})
    verdict = cert.get("verdict", {})
    data = cert.get("data", {})
    n, repeats = data.get("n"), cert.get("repeats")
    samples = f" on {n} test sample{'s' if n != 1 else ''} ({data.get('spec')})" if n is not None else ""
    tail = f"\nDigital {metric}: {fmt(digital)}{samples}; {repeats} Monte Carlo repeats per time."
    if data.get("labels"):
        from ..labels import shown

        tail += f" Classes (output order): {shown(data['labels'])}."
    if (data.get("reference") or {}).get("file"):
        tail += f" Reference: the weights the package was distilled from ({data['reference']['file']})."
    if cert.get("adaptive"):
        a = cert["adaptive"]
        cap = "" if a["reached"] else f"; stopped at the cap of {a['max_repeats']}"
        tail += f" (--repeats auto: until every 95% CI half-width <= {a['ci_width_pp']:g} pp{cap})"
    tail += f" Device: {device.get('name')} ({simulator(cert)})."
    if verdict:
        tail += f" Gate: {verdict.get('rule')} -> {'PASS' if verdict.get('passed') else 'FAIL'}."
    if cert.get("normalised_note"):
        tail += f"\n{cert['normalised_note'][0].upper()}{cert['normalised_note'][1:]}."
    return head + "\n" + "\n".join(rows) + "\n" + tail


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


#: folder names that say nothing about the model (HF cache snapshots, packaging layouts): keep the parent too
_GENERIC = {"model", "models", "snapshot", "snapshots", "checkpoint", "weights", "hf", "main", "latest"}


def model_name(config: dict[str, Any]) -> str:
    """A short, readable name for the model: the built-in / torchvision name, the Hub id, the local
    factory `file.py:factory`, or a local folder's name (never its absolute path: that names the
    machine it was converted on, not the model; config.json keeps the full path as provenance)."""
    from pathlib import PurePath

    source = config.get("source", {})
    if source.get("name"):
        return str(source["name"])
    if source.get("factory"):
        return f"{PurePath(str(source.get('file', ''))).name}:{source['factory']}"
    src = str(source.get("source") or "model")
    path = PurePath(src)
    if not path.is_absolute():
        return src  # a Hub id: org/name
    parts = [p for p in path.parts if p not in ("/", "")]
    name = parts[-1] if parts else src
    generic = name.lower() in _GENERIC or (len(name) == 40 and all(c in "0123456789abcdef" for c in name))
    return "/".join(parts[-2:]) if generic and len(parts) > 1 else name


def _best_sentence(best: dict[str, Any], rounds: int | None) -> str:
    """config.json's training.best in words."""
    of = f" of {rounds}" if rounds else ""
    clean = f" (without noise {_pct(best['val_clean_acc'])})" if best.get("val_clean_acc") is not None else ""
    loss = f", loss {best['val_loss']:.3f}" if best.get("val_loss") is not None else ""
    return (f"Best validation: round {best.get('round')}{of}, accuracy {_pct(best.get('val_acc'))} under weight "
            f"noise sigma = {best.get('val_sigma')}{clean}{loss}; that round's weights are the package's.")


#: the toolkit's task -> the Hub's pipeline tag (and model-index task type)
_PIPELINE_TAGS = {"image-classification": "image-classification", "feature-extraction": "feature-extraction",
                  "sequence-classification": "text-classification", "token-classification": "token-classification",
                  "causal-lm": "text-generation", "masked-lm": "fill-mask"}


def _hf_native(config: dict[str, Any]) -> bool:
    from .format import hf_native

    return hf_native(config)


def _base_model(config: dict[str, Any]) -> str | None:
    """The Hub id the model came from (a local folder or file has none the Hub could link to)."""
    source = config.get("source", {})
    if source.get("kind") != "huggingface":
        return None
    src = str(source.get("source") or "")
    return src if src and not src.startswith(("/", ".")) and src.count("/") == 1 else None


def split_sentence(config: dict[str, Any], certificate: dict[str, Any] | None = None) -> str | None:
    """The mixed-signal mapping in words (analog/outliers.py), with the certificate's measured shares of
    the tiles' weights and MACs and the sparse part's size; None for a pure-analog mapping."""
    from .format import section

    recorded = section(config, "mapping")
    mapping = (certificate or {}).get("mapping") or (recorded.to_dict() if recorded else {})
    if mapping.get("outliers") != "digital":
        return None
    head = (f"Mixed-signal mapping: each tile column's weights beyond {mapping.get('outlier_std', 3.0):g} std stay off "
            "the tiles and are computed digitally beside them (Linear and GPT-2 Conv1D layers)")
    cost = mapping.get("digital_outliers")
    if not cost:
        return head + "; the certificate states what share of the weights and multiply-accumulates that is."
    return (f"{head}: {cost['weight_share']:.2%} of the {cost['analog_weights']:,} weights on tiles "
            f"({cost['digital_weights']:,}), {cost['mac_share']:.2%} of the multiply-accumulates "
            f"({cost['digital_macs']:,.0f} digital MACs per {cost['per']}), {cost['sparse_bytes'] / 1024:,.1f} KiB "
            f"as a sparse matrix ({cost['sparse_format']}).")


def render(config: dict[str, Any], certificate: dict[str, Any] | None = None, folder: str = ".") -> str:
    """The model card. `folder`: the package folder's name, which the snippets load it by (run from the
    folder that holds it) unless the package is published to the Hub or a zoo."""
    source = config.get("source", {})
    name = model_name(config)
    tags = ["analog-ai", "analog-in-memory-computing", "aihwkit", "analogai-deploy", source.get("kind", "")]
    # a Hugging Face package is a transformers model (config.json is its transformers config)
    library = "transformers" if _hf_native(config) else "analogai-deploy"
    front: dict[str, Any] = {"library_name": library, "tags": [t for t in tags if t]}
    if _base_model(config):
        front["base_model"] = _base_model(config)
    if config.get("recipe"):
        front["tags"].append(f"recipe-{config['recipe'].get('name')}")
    if config.get("task"):
        front["pipeline_tag"] = _PIPELINE_TAGS.get(config["task"], config["task"])
    lines = [f"# {name} (analog-aware)", ""]
    where = " (a local folder)" if source.get("kind") == "huggingface" and str(source.get("source", "")).startswith("/") else ""
    lines.append(f"Converted by analogai-deploy for analog in-memory computing from `{name}` ({source.get('kind')}{where}).")
    conv = config.get("conversion") or {}
    if conv:
        lines.append(
            f"{conv.get('converted_layers', 0)} layers on analog tiles, "
            f"{conv.get('analog_share', 0):.1%} of {conv.get('total_params', 0):,} parameters."
        )
    from ..labels import names, shown

    label_names = names(config)
    if label_names:  # the model's own classes, in output order (labels.py)
        lines.append(f"Classes (output order): {shown(label_names)}.")
    recipe = config.get("recipe")
    if recipe:
        lines += ["", "## Recovery", "", f"Recipe `{recipe.get('name')}` (sha256 `{recipe.get('sha256', '')[:16]}...`)."]
        training = config.get("training", {})
        if training.get("best"):
            lines.append(_best_sentence(training["best"], training.get("rounds")))
        if training.get("curve"):
            lines += ["", f"![training curve: accuracy and loss per round]({training['curve']})"]
    if certificate:
        dev = certificate.get("device", {}).get("name", "?")
        front["tags"].append(dev)
        res = certificate.get("results", [])
        front["model-index"] = [{
            "name": name,
            "results": [{
                "task": {"type": _PIPELINE_TAGS.get(config.get("task"), config.get("task", "image-classification"))},
                "dataset": {"name": certificate.get("data", {}).get("spec", "?"), "type": certificate.get("data", {}).get("spec", "?")},
                "metrics": [
                    {"type": certificate.get("metric", "accuracy"), "name": f"{certificate.get('metric', 'accuracy')} at t={r['time']} on {dev}",
                     "value": r.get("mean")}
                    for r in res
                ],
            }],
        }]
        lines += ["", "## Certificate", "", results_markdown(certificate), "",
                  "![certificate: metric vs time after programming, 95% CI, digital and gate lines](certificate.png)"]
        lines += [f"\n> Warning: {w}." for w in certificate.get("warnings", [])]
    split = split_sentence(config, certificate)
    if split:
        lines += ["", split]
    zoo = config.get("zoo") or {}
    admitted = zoo.get("admitted") or {}
    if admitted.get("gate"):  # what the zoo itself recomputed and re-ran, not what the certificate says of itself
        spot = admitted.get("spot_check")
        lines += ["", f"Admitted to the zoo: gate {admitted['gate']} recomputed from the certificate's values "
                  f"({admitted.get('drop_pp', 0):.2f} pp)"
                  + (f"; a spot check of {spot['repeats']} fresh Monte Carlo repeats agreed with the certificate "
                     f"(two-sample t-test, {100 * spot['alpha']:g}% false-refusal rate)." if spot else ".")]
    lines += ["", "## Use", ""]
    plain = _plain_loader(config, zoo, folder)
    lines += plain + (["With analogai-deploy:", ""] if plain else [])
    spec = f"hf-hub:{zoo['hub']}" if zoo.get("hub") else zoo.get("name")
    if spec:  # a published copy: say how to pull it (pull verifies the sha256 and the certificate)
        lines += [
            "```bash",
            f"analogai-deploy pull {spec} -o {spec.split('/')[-1].split(':')[-1]}",
            "```",
            "",
            "```python",
            "import analogai_deploy",
            f"pkg = analogai_deploy.from_pretrained({spec!r})   # checks sha256 against config.json and the certificate",
            "model = pkg.model",
            "```",
            "",
        ]
    else:
        lines += [
            "```python",
            "import analogai_deploy",
            f"pkg = analogai_deploy.load({folder!r})   # {_THIS_FOLDER}; load checks the weights' sha256",
            "model = pkg.model",
            "```",
            "",
        ]
    record = ("`config.json` is the model's transformers config; its `analogai` key records the source, the "
              "analog settings" if _hf_native(config) else "`config.json` records the source, the analog settings")
    lines += [
        f"Weights are stored as safetensors (no pickle); {record} and the provenance of every stage.",
        "",
    ]
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + "\n".join(lines)


#: what the snippets say of the folder name they load from
_THIS_FOLDER = "this package folder's path"


def _plain_loader(config: dict[str, Any], zoo: dict[str, Any], folder: str) -> list[str]:
    """How to get the clean digital weights without this toolkit: transformers for Hugging Face packages,
    torchvision + safetensors for torchvision ones (the package's state_dict keeps the architecture's names)."""
    source = config.get("source", {})
    where = zoo["hub"] if zoo.get("hub") else folder
    said = [] if zoo.get("hub") else [f"# {where!r}: {_THIS_FOLDER}"]
    note = ("These are the clean digital weights (analog noise off), loaded without any check; analogai-deploy "
            "checks the sha256 and the certificate first and rebuilds the analog-aware model.")
    if _hf_native(config):
        from ..sources.huggingface import TASKS

        auto = TASKS.get(config.get("task"), "AutoModel")
        text = Record.of(config).text
        lines = ["With transformers:", "", "```python", *said, f"from transformers import {auto}"
                 + (", AutoTokenizer, pipeline" if text else ""),
                 f"model = {auto}.from_pretrained({where!r})"]
        if text:
            tag = _PIPELINE_TAGS.get(config.get("task"), "feature-extraction")
            lines += [f"tokenizer = AutoTokenizer.from_pretrained({where!r})",
                      f"pipe = pipeline({tag!r}, model={where!r})"]
        return lines + ["```", "", note, ""]
    if source.get("kind") == "torchvision":
        kwargs = "".join(f", {k}={v!r}" for k, v in (source.get("kwargs") or {}).items())
        fetch = (["from huggingface_hub import hf_hub_download", "",
                  f"weights = hf_hub_download({where!r}, 'model.safetensors')"] if zoo.get("hub")
                 else ["", f"weights = {where + '/model.safetensors'!r}"])
        return ["With torchvision:", "", "```python", *said, "import torchvision",
                "from safetensors.torch import load_file", *fetch,
                f"model = torchvision.models.get_model({source.get('name')!r}, weights=None{kwargs})",
                "model.load_state_dict(load_file(weights))",
                "```", "", note, ""]
    return []
