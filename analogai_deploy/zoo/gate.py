"""The gate every zoo package passes, on the way in (publish) and on the way out (pull).

A package is admitted only when
- it rebuilds from a trusted source (never from a stranger's Python file);
- its weights match the sha256 in config.json, and its certificate names exactly these weights (sha256)
  and this model (`package.model_sha256` of config.json's model-defining part);
- the certificate carries a gate (a maximum drop at a time, on the certificate's own metric), and the
  verdict *recomputed here* from the recorded per-repeat values and the zoo's `Policy` passes. A stored
  `passed`, mean or CI is never read: the means and CIs are recomputed and must equal what is recorded;
- on publish (and `pull --verify`), a spot check agrees: a few fresh Monte Carlo repeats with the recorded
  device, settings and data (same fingerprint) give means that a two-sample t-test cannot tell from the
  certificate's, at a stated false-refusal rate (`spot_check`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._config import StrictConfig
from .. import package as pkgio
from ..errors import OperationFailed, PackageError, UsageError
from ..tasks import Record

#: certificate keys a zoo entry relies on (the rest of the schema is certify's business)
_REQUIRED = ("metric", "device", "weights_sha256", "results", "digital", "settings", "repeats")
#: recomputed means and CIs must equal the recorded ones to this (relative) precision
_TOL = 1e-9


@dataclass(frozen=True)
class Policy(StrictConfig):
    """What a zoo admits (frozen: change it with dataclasses.replace).

    max_drop: the loosest gate a certificate may carry, in percentage points of its own metric (a
        certificate certified with --max-drop above this is refused however well it did).
    min_repeats: Monte Carlo repeats the certificate needs at least.
    spot_repeats: fresh repeats of the spot check at publish (and `pull --verify`); 0 = no spot check.
    alpha: the spot check's false-refusal rate for an honest certificate (all time points together).
    """

    max_drop: float = 5.0
    min_repeats: int = 5
    spot_repeats: int = 3
    alpha: float = 0.01

    def __post_init__(self):
        if self.max_drop < 0:
            raise UsageError(f"policy max_drop must be >= 0 percentage points, got {self.max_drop}")
        if self.min_repeats < 2:
            raise UsageError(f"policy min_repeats must be >= 2 (a CI needs two repeats), got {self.min_repeats}")
        if self.spot_repeats < 0 or self.spot_repeats == 1:
            raise UsageError(f"policy spot_repeats must be 0 (off) or >= 2, got {self.spot_repeats}")
        if not 0 < self.alpha < 0.5:
            raise UsageError(f"policy alpha must be in (0, 0.5), got {self.alpha}")


def check_source(config: dict[str, Any], where: Path | str) -> None:
    """Refuse packages that rebuild by running local Python code: code from strangers must not run."""
    kind = config.get("source", {}).get("kind")
    if kind == "local":
        raise OperationFailed(
            f"{where} was built from a local Python file ({config['source'].get('file')}); the zoo refuses it "
            "because loading it would run that code on every user's machine",
            "convert from a built-in, torchvision or Hugging Face model (or register the architecture) "
            "and publish that",
        )


def metric_of(name: Any) -> tuple[bool, tuple[float, float]]:
    """(higher is better, value bounds) of a certificate's metric, from certify's own metric table."""
    from ..metrics import METRICS

    m = METRICS.get(name) if isinstance(name, str) else None
    if m is None:
        raise PackageError(f"certificate.json names an unknown metric {name!r}", "certify the package again")
    return bool(m.higher_is_better), tuple(m.bounds)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= _TOL * max(1.0, abs(a), abs(b))


def check_values(certificate: dict[str, Any], where: Path | str) -> None:
    """Every recorded mean, CI and min follows from the recorded per-repeat values (an edit shows here)."""
    from ..metrics import stats

    _, bounds = metric_of(certificate.get("metric"))
    repeats = certificate.get("repeats")
    for r in certificate["results"]:
        values = r.get("values")
        if not isinstance(values, list) or len(values) != repeats or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise PackageError(f"{where}/certificate.json: the {r.get('time')} result does not carry its "
                               f"{repeats} per-repeat values", f"certify {where} again")
        s = stats([float(v) for v in values], bounds)
        ci = r.get("ci95") or [None, None]
        recorded = (r.get("mean"), ci[0], ci[1], r.get("min"))
        if any(not isinstance(x, (int, float)) or not _close(float(x), y)
               for x, y in zip(recorded, (s["mean"], s["ci95"][0], s["ci95"][1], s["min"]))):
            raise PackageError(f"{where}/certificate.json was edited: its {r.get('time')} mean or CI does not "
                               "follow from its per-repeat values", f"certify {where} again")


def recertify_args(certificate: dict[str, Any], policy: Policy) -> str:
    """The certify parameters (backticked, as library hints name them) that reproduce a certificate's data,
    metric, times, device and mapping overrides, with a gate and repeats this zoo admits."""
    settings = certificate.get("settings") or {}
    device = settings.get("device") or {}
    max_drop, at = settings.get("max_drop"), settings.get("at") or "1d"
    if max_drop is None or max_drop > policy.max_drop:
        max_drop = policy.max_drop
    repeats = certificate.get("repeats")
    if not isinstance(repeats, int) or repeats < policy.min_repeats:
        repeats = max(10, policy.min_repeats)
    times = list(settings.get("times") or [])
    if times and at not in times:
        times.append(at)
    args: dict[str, Any] = {"data": settings.get("data"), "metric": settings.get("metric"),
                            "times": ",".join(times) or None, "device": device.get("name"),
                            "device_file": "YOUR_DEVICE.yaml" if device.get("custom") else None,
                            "preset": device.get("preset"), "tile": device.get("tile"),
                            **(device.get("io") or {}), "limit": settings.get("limit"),
                            "seed": settings.get("seed"), "match_qat": settings.get("match_qat"),
                            "engine": settings.get("engine"),
                            **((certificate.get("mapping") or {}).get("overridden") or {}),
                            "max_drop": max_drop, "at": at, "repeats": repeats}
    defaults = {"metric": "auto", "device": "PCM", "tile": "auto", "seed": 0, "match_qat": False, "engine": "auto"}
    words = []
    for key, value in args.items():
        if value is None or defaults.get(key, object()) == value or value is False and key != "drift_compensation":
            continue
        if key == "drift_compensation" and value is False:
            words.append("`no_drift_compensation`")
        else:
            words.append(f"`{key}`" if value is True else f"`{key}={value:g}`" if isinstance(value, float)
                         else f"`{key}={value}`")
    return " ".join(words)


def verdict(certificate: dict[str, Any], policy: Policy, where: Path | str) -> dict[str, Any]:
    """The gate's verdict, recomputed from the recorded values, the certificate's own gate and the policy.
    Raises OperationFailed when the package may not enter (no gate, a gate looser than the policy, a fail)."""
    from ..metrics import parse_time

    settings = certificate.get("settings") or {}
    max_drop, at = settings.get("max_drop"), settings.get("at")
    metric = certificate.get("metric")
    if max_drop is not None and (not isinstance(max_drop, (int, float)) or max_drop < 0):
        raise PackageError(f"{where}/certificate.json has a malformed gate (max_drop {max_drop!r})")
    missed = []  # every requirement at once, so one new certificate meets them all
    if max_drop is None or at is None:
        missed.append("has no gate (the zoo admits only gated certificates)")
    elif max_drop > policy.max_drop + 1e-12:
        missed.append(f"has a gate that allows a drop of {max_drop:g} pp of {metric} (this zoo admits at most "
                      f"{policy.max_drop:g} pp)")
    repeats = certificate.get("repeats")
    if not isinstance(repeats, int) or repeats < policy.min_repeats:
        missed.append(f"has {repeats} Monte Carlo repeats (this zoo needs at least {policy.min_repeats})")
    if missed:
        raise OperationFailed(f"{where}/certificate.json {'; and '.join(missed)}",
                              f"certify it again, on the same data and settings: analogai-deploy certify {where} "
                              + recertify_args(certificate, policy))
    label, seconds = parse_time(at)
    from ..certification.certificate import judge, row_at

    row = row_at(certificate["results"], seconds)
    if row is None:
        raise PackageError(f"{where}/certificate.json has a gate at {label} but no result there",
                           f"certify {where} again")
    higher, bounds = metric_of(metric)
    digital = (certificate.get("digital") or {}).get(metric)
    if not isinstance(digital, (int, float)) or not math.isfinite(digital):
        raise PackageError(f"{where}/certificate.json records no digital {metric}", f"certify {where} again")
    from ..metrics import stats

    ci = stats([float(v) for v in row["values"]], bounds)["ci95"]
    gate = judge(metric, digital, ci, float(max_drop), label, name_metric=True)  # certify's own judgement
    out = {"metric": metric, "rule": gate["rule"], "max_drop_pp": float(max_drop), "at": label,
           "drop_pp": gate["drop_pp"], "passed": gate["passed"], "policy": policy.to_dict()}
    if not gate["passed"]:
        side = "lower" if higher else "upper"
        raise OperationFailed(f"{where} fails its gate: {gate['drop_pp']:.2f} pp of {metric} below digital at "
                              f"{label} ({side} 95% CI), allowed {max_drop:g} pp; the zoo refuses it",
                              "recover the model further (analogai-deploy recover) and certify it again")
    return out


def check_certificate(config: dict[str, Any], certificate: dict[str, Any] | None, where: Path | str,
                      policy: Policy | None = None) -> dict[str, Any]:
    """Present, complete, bound to these weights and this model, values consistent, gate recomputed: the
    recomputed verdict."""
    if certificate is None:
        raise OperationFailed(f"{where} has no certificate.json; only certified packages enter the zoo",
                              f"certify it first, with a gate: `max_drop=1` `at=1d`")
    missing = [k for k in _REQUIRED if k not in certificate]
    results = certificate.get("results")
    if missing or not isinstance(results, list) or not results or not all(
        isinstance(r, dict) and "time" in r and "mean" in r for r in results
    ):
        raise PackageError(
            f"{where}/certificate.json is incomplete ({'missing ' + ', '.join(missing) if missing else 'no results'})",
            f"run `analogai-deploy certify {where}` again",
        )
    pkgio.check_certificate_binding(Path(where), config, certificate, required=True)
    check_values(certificate, where)
    return verdict(certificate, policy or Policy(), where)


def check_files(path: Path) -> None:
    """A package on its way into a zoo holds plain files: a symbolic link would carry a file from outside
    the folder (any file the publisher can read) to everyone who pulls it."""
    for f in sorted(path.iterdir()):
        if f.is_symlink() or not (f.is_file() or f.is_dir()):
            raise PackageError(f"{f} is a symbolic link or special file; a published package holds plain files only",
                               "replace it with a copy of the file it points to, or remove it")


# ---- the spot check ----------------------------------------------------------------------------------------

def spot_seed(certificate: dict[str, Any]) -> int:
    """The spot check's first seed: from the weights' sha256, so it is reproducible, far from the seeds a
    certificate uses (seed .. seed + repeats - 1), and not chosen by whoever wrote the certificate."""
    digest = hashlib.sha256(f"spot-check:{certificate.get('weights_sha256')}".encode()).hexdigest()
    return 1_000_000 + int(digest[:8], 16)


def t_test(cert_values: list[float], spot_values: list[float], alpha: float, resolution: float = 0.0
           ) -> dict[str, Any]:
    """Two-sample Student t-test of the spot check's mean against the certificate's (pooled variance: the
    same device and settings give the same spread). For an honest certificate the difference of the two
    means has standard error sp * sqrt(1/R + 1/r), so the check refuses it with probability `alpha`
    (normal repeats). Requiring the spot mean to lie inside the certificate's own CI would ignore the spot
    mean's own noise and refuse honest packages far more often (docs/zoo.md gives both rates).
    `resolution`: the metric's step (1/n for a count over n samples): differences below it always pass."""
    from ..metrics.statistics import t_quantile

    n1, n2 = len(cert_values), len(spot_values)
    m1, m2 = sum(cert_values) / n1, sum(spot_values) / n2
    ss = sum((v - m1) ** 2 for v in cert_values) + sum((v - m2) ** 2 for v in spot_values)
    dof = n1 + n2 - 2
    sp = math.sqrt(ss / dof) if dof > 0 else 0.0
    half = t_quantile(1 - alpha / 2, dof) * sp * math.sqrt(1 / n1 + 1 / n2) if dof > 0 else 0.0
    half = max(half, resolution)
    return {"certificate_mean": m1, "spot_mean": m2, "difference": m2 - m1, "allowed": half,
            "passed": abs(m2 - m1) <= half + 1e-12}


def spot_check(path: Path, certificate: dict[str, Any], policy: Policy) -> dict[str, Any]:
    """Re-run `policy.spot_repeats` Monte Carlo repeats with the certificate's recorded device, settings and
    data, and refuse the package unless every time's new mean agrees with the recorded one (`t_test`, at
    false-refusal rate `policy.alpha` over all times together, Bonferroni). Also refuses other data (the
    fingerprint), another digital value, or a device that is not the recorded one."""
    from .. import certification
    from ..certification.certificate import row_at

    if policy.spot_repeats == 0:
        return {"skipped": True}
    try:
        cfg = certification.CertifyConfig.from_dict(certificate["settings"])
        cfg = dataclasses.replace(cfg, repeats=policy.spot_repeats, ci_width=None, seed=spot_seed(certificate),
                                  max_drop=None, times=[r["time"] for r in certificate["results"]])
    except (UsageError, TypeError) as exc:
        raise PackageError(f"{path}/certificate.json has settings this toolkit cannot rerun ({exc})",
                           f"certify {path} again") from None
    try:
        spot = certification.certify(path, config=cfg, write=False)
    except UsageError as exc:  # e.g. the recorded dataset is not on this machine
        raise UsageError(f"cannot spot-check {path}: {exc.message}", exc.hint) from None
    metric = certificate["metric"]
    data, spot_data = certificate.get("data") or {}, spot.get("data") or {}
    if data.get("fingerprint") != spot_data.get("fingerprint"):
        if Record.of(pkgio.read_config(path)).text:  # text is tokenised here
            raise OperationFailed(f"{path}: the certificate was made on other inputs than {data.get('spec')!r} gives "
                                  "here (fingerprint mismatch): the text differs, or the tokenizer is not the one "
                                  "certified", "restore the package's tokenizer as certified, or certify on text the "
                                  "zoo can reproduce: `data=sentences` (built in) or `data=corpus`")
        raise OperationFailed(f"{path}: the certificate was made on other data than {data.get('spec')!r} gives here "
                              "(fingerprint mismatch)", "certify on the data the zoo can reproduce, e.g. `data=digits`")
    n = int(spot_data.get("n") or 0)
    resolution = 1.0 / n if metric in ("accuracy", "agreement") and n else 1e-6
    digital, spot_digital = certificate["digital"].get(metric), spot["digital"].get(metric)
    if not isinstance(digital, (int, float)) or abs(float(digital) - float(spot_digital)) > resolution / 2:
        raise OperationFailed(f"{path}: the certificate records digital {metric} {digital}, this model gives "
                              f"{spot_digital:.6g} (edited certificate)", f"certify {path} again")
    if certificate.get("device") != spot.get("device"):
        diff = sorted(k for k in set(certificate.get("device") or {}) | set(spot.get("device") or {})
                      if (certificate.get("device") or {}).get(k) != (spot.get("device") or {}).get(k))
        raise OperationFailed(f"{path}: the certificate's device differs from the one its settings give here "
                              f"({', '.join(diff[:4])})", "certify the package again with this toolkit")
    alpha = policy.alpha / len(certificate["results"])
    rows = []
    for r in certificate["results"]:
        new = row_at(spot["results"], float(r["seconds"]))
        test = t_test([float(v) for v in r["values"]], [float(v) for v in new["values"]], alpha, resolution)
        rows.append({"time": r["time"], **test})
        if not test["passed"]:
            raise OperationFailed(
                f"{path}: the spot check disagrees with the certificate at {r['time']}: {policy.spot_repeats} fresh "
                f"repeats give {metric} {test['spot_mean']:.4f}, the certificate {test['certificate_mean']:.4f} "
                f"(allowed +/- {test['allowed']:.4f} at a {100 * policy.alpha:g}% false-refusal rate)",
                f"certify {path} again; an honest certificate is refused this way {100 * policy.alpha:g}% of the time")
    return {"repeats": policy.spot_repeats, "seed": cfg.seed, "alpha": policy.alpha, "times": rows}


@dataclass
class Admission:
    config: dict[str, Any]
    certificate: dict[str, Any]
    verdict: dict[str, Any]
    spot: dict[str, Any] | None = None


def admit(path: str | Path, *, publishing: bool = False, verify: bool = False,
          policy: Policy | None = None) -> Admission:
    """Run the whole gate on a package folder.

    `publishing`: also refuse links and special files, rebuild the model (weights that do not fit their
    architecture never enter a zoo), and run the spot check. `verify`: run the spot check (pull --verify).
    """
    path = Path(path)
    policy = policy or Policy()
    if publishing and path.is_dir():
        check_files(path)
    config = pkgio.read_config(path)
    check_source(config, path)
    pkgio.verify(path, config)  # weights vs config.json, and vs the certificate when there is one
    cert_path = path / pkgio.CERTIFICATE
    certificate = pkgio.read_json(cert_path) if cert_path.exists() else None
    result = check_certificate(config, certificate, path, policy)
    if publishing:
        pkgio.load(path, verify_hash=False)  # hash checked above; this checks the weights fit the architecture
    spot = spot_check(path, certificate, policy) if publishing or verify else None
    return Admission(config, certificate, result, spot)


def summary(certificate: dict[str, Any], verdict: dict[str, Any] | None = None) -> dict[str, Any]:
    """Device, metric, its value at 1 d and 1 y, digital, the gate: what the zoo index records.
    `verdict` is the one recomputed by `admit`; a certificate's own stored verdict is not used."""
    means = {r["time"]: r.get("mean") for r in certificate.get("results", [])}
    metric = certificate.get("metric")
    return {
        "device": (certificate.get("device") or {}).get("name"),
        "metric": metric,
        "digital": (certificate.get("digital") or {}).get(metric),
        "value_1d": means.get("1d"),
        "value_1y": means.get("1y"),
        "gate": verdict.get("rule") if verdict else None,
        "verdict": verdict.get("passed") if verdict else None,
    }
