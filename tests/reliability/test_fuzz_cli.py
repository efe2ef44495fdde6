"""Fuzzed command lines (hypothesis): recipe YAML files, dotted overrides, model specs, data specs (recover
and certify), certify's device and time lists and its device settings, and -o targets (beside a user's
files and packages, none of which may change), each through the real CLI in-process.

Every input either works (exit 0) or is refused with exit 2 (bad input) or 1 (a clear operation failure,
e.g. a Hub model while offline): one `error:` line and a hint, or click's usage message, and never a
Python traceback or the "this is a bug" fallback. Default suite: 50 cases per entry point; `-m slow`: 500.
"""
from __future__ import annotations

import collections
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parents[1]))  # zoo_helpers

DEFAULT, SLOW = 50, 500

#: every dotted key of the msnat recipe, and a few more the seed uses
RECIPE_KEYS = [
    "training.rounds", "training.epochs_per_round", "training.batch_size", "training.optimizer", "training.lr",
    "training.momentum", "training.weight_decay", "training.schedule", "training.seed", "training.device",
    "training.amp", "training.patience", "training.use_FI", "training.use_FL", "training.mode",
    "training.eval_sigma", "training.eval_draws", "training.cpu_threads", "training.engine",
    "recovery.noise_0.act_inject.sigma", "recovery.noise_4.act_inject.sigma", "recovery.noise_7.act_inject.sigma",
    "recovery.fusion.weights", "recovery.fusion.momentum_broadcast", "recovery.fusion.keep",
    "recovery.feedback.beta", "recovery.feedback.deltas", "recovery.feedback.gammas", "recovery.feedback.temperature",
    "recovery.optimizer.sam", "recovery.optimizer.adaptive", "recovery.optimizer.rho",
    "recovery.adversarial.FGSM.use", "recovery.adversarial.FGSM.eps", "recovery.adversarial.PGD.steps",
    "recovery.qat", "recovery.quant.w_bits", "recovery.quant.a_bits", "recovery.quant.act_range",
    "recovery.hwa.modifier", "recovery.hwa.w_noise", "name", "description", "training", "recovery",
    "inference.platform.aihwkit.device", "recovery.noise_0", "recovery.noise",
]

scalars = st.one_of(
    st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
    st.text(max_size=12),
    st.sampled_from(["true", "False", "null", "nan", "-inf", "1e400", "0x10", "adam", "sgd", "cosine", "cuda:99",
                     "cuda", "auto", "[", "]", "{", "'", '"', "~", "&a", "*a"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8) | st.sampled_from(["act_inject", "sigma", "use", "rounds"]), inner, max_size=3), max_leaves=8)


def _key():
    mutated = st.builds(lambda k, cut, junk: (k[:cut] + junk) if junk else k,
                        st.sampled_from(RECIPE_KEYS), st.integers(0, 40),
                        st.sampled_from(["", ".", "..", "_", "x", " "]))
    return st.one_of(st.sampled_from(RECIPE_KEYS), mutated, st.text(min_size=0, max_size=20))


def _override():
    yaml_value = values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("..."))
    pair = st.builds(lambda k, v: f"{k}={v}", _key(), yaml_value | st.text(max_size=20))
    return st.one_of(pair, st.text(max_size=30))


class Tally:
    """Outcomes of one entry point: inputs tried, accepted, refused (by exit code)."""

    def __init__(self, what: str):
        self.what = what
        self.codes: collections.Counter[int] = collections.Counter()

    def check(self, code: int, out: str, err: str, ok: tuple[int, ...] = (0, 1, 2)) -> None:
        self.codes[code] += 1
        assert code in ok, (code, out[-500:], err[-2000:])
        assert "Traceback" not in err and "this is a bug" not in err, err[-2000:]
        if code:
            lines = [x for x in err.splitlines() if x.strip()]
            usage = code == 2 and any(x.startswith(("Usage:", "Error:")) for x in lines)
            assert usage or sum(x.startswith("error:") for x in lines) == 1, err[-2000:]

    def line(self) -> str:
        n = sum(self.codes.values())
        return (f"reliability fuzz what={self.what!r} inputs={n} accepted={self.codes[0]} "
                f"refused_usage={self.codes[2]} refused_failed={self.codes[1]}")


def _fuzz(capsys, tally: Tally, strategy, body, n: int) -> None:
    @settings(max_examples=n, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(case):
        body(case)

    run()
    with capsys.disabled():
        print("\n" + tally.line())


# ---- recipe overrides --------------------------------------------------------------------------------

VALID = ["training.rounds=5", "training.lr=0.01", "training.use_FI=false", "training.use_FL=False",
         "training.batch_size=256", "recovery.noise_4=null", "recovery.noise_4.act_inject.sigma=0.35",
         "recovery.optimizer.sam=true", "recovery.adversarial.FGSM.use=true", "recovery.qat=True",
         "training.optimizer=sgd", "recovery.feedback.deltas=[0.05,0.1]", "recovery.feedback.gammas=[1,0.1]",
         "training.schedule=step", "recovery.fusion.weights=accuracy", "training.seed=7"]


def _overrides(cli, capsys, n):
    tally = Tally("recipe overrides")
    cases = st.one_of(st.lists(st.sampled_from(VALID), min_size=1, max_size=3),
                      st.lists(st.sampled_from(VALID) | _override(), min_size=1, max_size=4))
    _fuzz(capsys, tally, cases,
          lambda items: tally.check(*cli("recipes", "show", "msnat", "--", *items)), n)


def test_fuzz_overrides(cli, capsys):
    _overrides(cli, capsys, DEFAULT)


@pytest.mark.slow
def test_fuzz_overrides_500(cli, capsys):
    _overrides(cli, capsys, SLOW)


# ---- recipe YAML files -------------------------------------------------------------------------------

def _recipe_docs():
    def nest(pairs):
        doc: dict = {}
        for key, value in pairs:
            parts = [p for p in key.split(".") if p] or ["x"]
            node = doc
            for p in parts[:-1]:
                nxt = node.setdefault(p, {})
                node = nxt if isinstance(nxt, dict) else node
            node[parts[-1]] = value
        return yaml.safe_dump(doc, sort_keys=False)

    structured = st.lists(st.tuples(_key(), values), max_size=6).map(nest)
    mangled = st.builds(lambda text, cut, junk: text[:cut] + junk, structured, st.integers(0, 200),
                        st.sampled_from(["", ":", "\t", "- ", "{", "&a [1, *a]", "\x00", "\ufeff",
                                         "!!python/object:os.system"]))
    raw = st.text(max_size=200) | st.binary(max_size=64).map(lambda b: b.decode("latin-1"))
    return st.one_of(structured, mangled, raw, st.just("!!python/object/apply:os.system ['echo pwned']\n"))


def _recipe_files(cli, capsys, tmp_path, n):
    tally = Tally("recipe YAML")
    f = tmp_path / "fuzzed.yaml"

    def body(text):
        f.write_text(text, encoding="utf-8", errors="surrogateescape")
        tally.check(*cli("recipes", "show", f))

    _fuzz(capsys, tally, _recipe_docs(), body, n)
    assert not (Path.cwd() / "pwned").exists()


def test_fuzz_recipe_files(cli, capsys, tmp_path):
    _recipe_files(cli, capsys, tmp_path, DEFAULT)


@pytest.mark.slow
def test_fuzz_recipe_files_500(cli, capsys, tmp_path):
    _recipe_files(cli, capsys, tmp_path, SLOW)


# ---- model specs (convert) ---------------------------------------------------------------------------

def _model_specs():
    prefixes = st.sampled_from(["", "hf:", "hf-hub:", "torchvision:", "local:", "./", "/", "../", "~/", "file://",
                                "lenet", "mlp", "resnet", "hf:sentence-transformers/", "x.py:", "/etc/passwd:"])
    return st.one_of(st.sampled_from(["lenet", "mlp", "LeNet", "lenet ", "", " ", ":", "::"]),
                     st.builds(lambda p, t: p + t, prefixes, st.text(max_size=16)), st.text(max_size=24))


def _convert(cli, capsys, tmp_path, n):
    tally = Tally("model specs")

    def body(spec):
        out = tmp_path / "out"
        shutil.rmtree(out, ignore_errors=True)
        tally.check(*cli("convert", "-o", out, "--num-classes", "10", "--", spec))

    _fuzz(capsys, tally, _model_specs(), body, n)


def test_fuzz_model_specs(cli, capsys, tmp_path):
    _convert(cli, capsys, tmp_path, DEFAULT)


@pytest.mark.slow
def test_fuzz_model_specs_500(cli, capsys, tmp_path):
    _convert(cli, capsys, tmp_path, SLOW)


# ---- data specs (recover --data) ---------------------------------------------------------------------

ONE_ROUND = ["training.rounds=1", "training.use_FL=false", "training.eval_draws=1", "recovery.noise_1=null",
             "recovery.noise_2=null", "recovery.noise_3=null", "recovery.noise_4=null"]


def _data_specs(folder: Path):
    prefixes = st.sampled_from(["", "digits", "digits:", "cifar10:", "mnist:", "imagefolder:", "cifar100:",
                                f"imagefolder:{folder}", f"cifar10:{folder}", f"mnist:{folder}", "hf:", "/",
                                "sentences"])
    return st.one_of(st.sampled_from(["digits", "digits ", "DIGITS", "cifar10", f"imagefolder:{folder}"]),
                     st.builds(lambda p, t: p + t, prefixes, st.text(max_size=12)), st.text(max_size=24))


def _data(cli, capsys, tmp_path, lenet_pkg, n):
    tally = Tally("data specs")
    folder = tmp_path / "images"
    (folder / "cat").mkdir(parents=True)
    (folder / "cat" / "not-an-image.png").write_bytes(b"\x89PNG broken")

    def body(spec):
        tally.check(*cli("recover", lenet_pkg, "-o", tmp_path / "out", "-q", "--overwrite", f"--data={spec}",
                         *ONE_ROUND))

    _fuzz(capsys, tally, _data_specs(folder), body, n)


def _certify_data(cli, capsys, tmp_path, lenet_pkg, n):
    tally = Tally("certify data specs")
    folder = tmp_path / "images"
    (folder / "cat").mkdir(parents=True)
    (folder / "cat" / "not-an-image.png").write_bytes(b"\x89PNG broken")
    pkg = tmp_path / "pkg"
    shutil.copytree(lenet_pkg, pkg)

    def body(spec):
        tally.check(*cli("certify", pkg, f"--data={spec}", "--repeats", "2", "--limit", "16", "--times", "1s",
                         "--engine", "fast", "-q"))

    _fuzz(capsys, tally, _data_specs(folder), body, n)


def test_fuzz_certify_data_specs(cli, capsys, tmp_path, lenet_pkg):
    _certify_data(cli, capsys, tmp_path, lenet_pkg, 20)


@pytest.mark.slow
def test_fuzz_certify_data_specs_500(cli, capsys, tmp_path, lenet_pkg):
    _certify_data(cli, capsys, tmp_path, lenet_pkg, SLOW)


def test_fuzz_data_specs(cli, capsys, tmp_path, lenet_pkg):
    _data(cli, capsys, tmp_path, lenet_pkg, DEFAULT)


@pytest.mark.slow
def test_fuzz_data_specs_500(cli, capsys, tmp_path, lenet_pkg):
    _data(cli, capsys, tmp_path, lenet_pkg, SLOW)


# ---- certify device and time lists -------------------------------------------------------------------

DEVICES = ["PCM", "ReRAM", "ReRAM-CMO", "Hermes-PCM", "ideal", "custom", "pcm", "PCM ", "", "RRAM", "ReRAM-Wan2022"]
TIMES = ["1s", "1h", "1d", "1y", "60", "3600", "0", "-1", "1e9", "1e400", "nan", "inf", "1.5h", "2d", "10y", "1w",
         "abc", "", " ", "1 s", "s", "1m", "1min", "-0", "1e-9"]


def _certify_args():
    times = st.one_of(
        st.lists(st.sampled_from(["1s", "1h", "1d", "1y", "60", "2d"]), min_size=1, max_size=3).map(",".join),
        st.lists(st.sampled_from(TIMES), min_size=0, max_size=5).map(",".join),
        st.text(max_size=16),
        st.lists(st.sampled_from(TIMES) | st.text(max_size=4), max_size=4).map(lambda xs: ";".join(xs)),
    )
    device = st.one_of(st.sampled_from(DEVICES[:5]), st.sampled_from(DEVICES), st.text(max_size=10))
    return st.tuples(device, times, st.sampled_from(["1d", "1s", "5y", "x", ""]))


def _certify(cli, capsys, tmp_path, lenet_pkg, n):
    tally = Tally("certify devices and times")
    pkg = tmp_path / "pkg"
    shutil.copytree(lenet_pkg, pkg)

    def body(case):
        device, times, at = case
        tally.check(*cli("certify", pkg, f"--device={device}", f"--times={times}", f"--at={at}", "--repeats", "2",
                         "--limit", "16", "--engine", "fast", "--max-drop", "100", "-q"))

    _fuzz(capsys, tally, _certify_args(), body, n)


def test_fuzz_certify_lists(cli, capsys, tmp_path, lenet_pkg):
    _certify(cli, capsys, tmp_path, lenet_pkg, DEFAULT)


@pytest.mark.slow
def test_fuzz_certify_lists_500(cli, capsys, tmp_path, lenet_pkg):
    _certify(cli, capsys, tmp_path, lenet_pkg, SLOW)


# ---- -o targets: whatever the target, nothing the toolkit did not write is deleted ------------------------

def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _site(tmp_path: Path, lenet_pkg: Path) -> Path:
    """A user's folder: their files, a folder of theirs, two packages, a package with their note inside, a
    link, and a home directory (HOME points here) with a file in it."""
    site = tmp_path / "site"
    (site / "mine").mkdir(parents=True)
    (site / "important.txt").write_text("the user's notes")
    (site / "mine" / "data.csv").write_text("1,2\n")
    for name in ("pkg-a", "pkg-b", "noted"):
        shutil.copytree(lenet_pkg, site / name)
    (site / "noted" / "notes.txt").write_text("kept inside a package")
    (site / "home").mkdir()
    (site / "home" / ".bashrc").write_text("export X=1\n")
    (site / "link").symlink_to(site / "mine")
    (site / "work").mkdir()
    return site


TARGET_NAMES = ["mine", "important.txt", "pkg-a", "pkg-b", "noted", "home", "link", "work", ".", "..", "~",
                "new", "new/deeper", "pkg-a/inside", "noted/x", "mine/x", "link/x", "", " ", "/", "~/x", "../..",
                "work/.", "pkg-a/..", "./pkg-b", "important.txt/x"]


def _o_targets():
    segment = st.sampled_from(TARGET_NAMES) | st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8)
    return st.tuples(st.sampled_from(["convert", "pull", "certify", "export"]),
                     st.lists(segment, min_size=1, max_size=3).map(lambda xs: "/".join(xs)), st.booleans())


def _o(cli, capsys, tmp_path, lenet_pkg, monkeypatch, n):
    from zoo_helpers import certified_copy

    from analogai_deploy import zoo

    tally = Tally("-o targets")
    site = _site(tmp_path, lenet_pkg)
    monkeypatch.setenv("HOME", str(site / "home"))
    monkeypatch.setenv("ANALOGAI_ZOO", str(tmp_path / "zoo"))
    zoo.publish(certified_copy(tmp_path / "entry"), name="digits")
    monkeypatch.chdir(site / "work")
    protected = {k: v for k, v in _snapshot(site).items() if not k.startswith(("pkg-a/", "pkg-b/"))}
    deleted = []

    def body(case):
        command, target, overwrite = case
        argv = {"convert": ["convert", "lenet", "--num-classes", "10"], "pull": ["pull", "digits"],
                "certify": ["certify", site / "pkg-b", "--repeats", "2", "--limit", "16", "--times", "1s",
                            "--engine", "fast"],
                "export": ["export", site / "pkg-b"]}[command]
        code, out, err = cli(*argv, "-o", target, *(["--overwrite"] if overwrite else []), "-q")
        tally.check(code, out, err)
        now = _snapshot(site)
        gone = [k for k, v in protected.items() if now.get(k) != v]
        deleted.extend(gone)
        assert not gone, (command, target, overwrite, gone, err)

    _fuzz(capsys, tally, _o_targets(), body, n)
    with capsys.disabled():
        print(f"reliability fuzz what='-o targets' user_files_changed={len(deleted)}")


def test_fuzz_output_targets(cli, capsys, tmp_path, lenet_pkg, monkeypatch):
    _o(cli, capsys, tmp_path, lenet_pkg, monkeypatch, 20)


@pytest.mark.slow
def test_fuzz_output_targets_500(cli, capsys, tmp_path, lenet_pkg, monkeypatch):
    _o(cli, capsys, tmp_path, lenet_pkg, monkeypatch, SLOW)


# ---- certify's device settings (mapping, IO, noise) as KEY=VALUE and options ------------------------------

MAPPING_OPTIONS = ["--weight-scaling", "--clip", "--clip-value", "--input-range", "--input-range-k",
                   "--input-scaling", "--input-scaling-alpha", "--output-scaling"]


def _setting_keys():
    from analogai_deploy import certification
    from analogai_deploy.certification import ALIASES, IOSettings

    mapping = {f"mapping.{k}" for k in getattr(certification, "MAPPING_FIELDS", ())}
    return sorted(set(IOSettings.__dataclass_fields__) | set(ALIASES) | mapping | {
        "device", "preset", "tile", "repeats", "seed", "times", "data", "metric"})


def _settings_cases():
    keys = _setting_keys()
    value = st.sampled_from(["0", "1", "7", "8", "9", "-1", "0.04", "0.2", "2.5", "1e9", "nan", "inf", "true", "off",
                             "PCM", "torch", "cpp", "standard-hwa", "tile", "column", "none", "fixed", "layer_std",
                             "channel_std", "dynamic", "calibrated", "channel", "pcm_read", "relative",
                             "", "[1]", "{}"]) | st.text(max_size=6)
    key = st.sampled_from(keys) | st.text(max_size=10)
    overrides = st.lists(st.builds(lambda k, v: f"{k}={v}", key, value), min_size=0, max_size=3)
    options = st.lists(st.tuples(st.sampled_from(MAPPING_OPTIONS), value), max_size=2)
    return st.tuples(overrides, options).filter(lambda c: c[0] or c[1])


def _settings(cli, capsys, tmp_path, lenet_pkg, n):
    tally = Tally("certify settings (IO, mapping, noise)")
    pkg = tmp_path / "pkg"
    shutil.copytree(lenet_pkg, pkg)

    def body(case):
        items, options = case
        flags = [f"{o}={v}" for o, v in options]
        tally.check(*cli("certify", pkg, "--repeats", "2", "--limit", "16", "--times", "1s", "-q", *flags, "--",
                         *items))

    _fuzz(capsys, tally, _settings_cases(), body, n)


def test_fuzz_certify_settings(cli, capsys, tmp_path, lenet_pkg):
    _settings(cli, capsys, tmp_path, lenet_pkg, 20)


@pytest.mark.slow
def test_fuzz_certify_settings_500(cli, capsys, tmp_path, lenet_pkg):
    _settings(cli, capsys, tmp_path, lenet_pkg, SLOW)


# ---- what the fuzzing found, kept as fixed cases -----------------------------------------------------

BOMB = "description: [" + ", ".join(
    ['&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"&{n} [" + ",".join([f"*{p}"] * 9) + "]" for p, n in zip("abcdefg", "bcdefgh")]) + "]\n"


@pytest.mark.parametrize("argv", [
    ["recipes", "show", "msnat", "recovery.noise_0=1"],  # was TypeError: a level that is not a mapping
    ["recipes", "show", "msnat", "recovery.noise_0.act_inject=[1]"],
    ["recipes", "show", "msnat", "training.rounds=" + BOMB.removeprefix("description: ").strip()],  # alias bomb
], ids=["level-not-a-mapping", "section-a-list", "override-alias-bomb"])
def test_found_by_fuzzing(argv, cli):
    Tally("found").check(*cli(*argv), ok=(2,))


def test_found_by_fuzzing_files(cli, tmp_path, lenet_pkg):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)  # 9**8 strings once expanded: was 1.7 GB and a 40 MB error line
    code, out, err = cli("recipes", "show", bomb)
    Tally("found").check(code, out, err, ok=(2,))
    assert len(err) < 1000
    pkg = tmp_path / "pkg"
    shutil.copytree(lenet_pkg, pkg)
    Tally("found").check(*cli("certify", pkg, "--times=1e400", "--repeats", "2"), ok=(2,))  # was OverflowError
