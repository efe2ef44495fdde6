"""Start-up stays light: what `import analogai_deploy`, --help, certify and recover import (fresh processes),
and the pieces that keep heavy modules out: the eager optimizers (no torch._dynamo), the Student-t quantile (no
scipy.stats), aihwkit's deferred scipy.optimize. No timings are asserted (BENCHMARKS.md measures them)."""
from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("sklearn", "matplotlib", "transformers", "huggingface_hub", "aihwkit", "scipy", "onnx", "onnxruntime",
         "torch")


def _modules_after(code: str, tmp_path: Path) -> set[str]:
    """The modules a fresh interpreter holds after running `code` (which may print to stdout)."""
    out = tmp_path / "modules.json"
    script = f"{code}\nimport json, sys\nopen({str(out)!r}, 'w').write(json.dumps(sorted(sys.modules)))\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(json.loads(out.read_text()))


def _present(modules: set[str], names) -> list[str]:
    return [n for n in names if n in modules]


def test_import_and_help_import_none_of_the_heavy_packages(tmp_path):
    mods = _modules_after("import analogai_deploy\nfrom analogai_deploy.cli.app import main\n"
                          "assert main(['--help']) == 0\nassert main(['certify', '--help']) == 0\n"
                          "assert main(['recover', '--help']) == 0", tmp_path)
    assert not _present(mods, HEAVY)


def test_certify_and_recover_import_only_what_they_use(lenet_pkg, tmp_path):
    pkg = tmp_path / "lenet"
    import shutil

    shutil.copytree(lenet_pkg, pkg)
    common = ("sklearn", "transformers", "huggingface_hub", "onnx", "onnxruntime", "scipy.optimize", "scipy.stats",
              "torch._dynamo", "sympy")
    mods = _modules_after(
        "from analogai_deploy.cli.app import main\n"
        f"assert main(['certify', {str(pkg)!r}, '--repeats', '3', '--times', '1s,1d', '--limit', '64', '--json']) == 0\n",
        tmp_path)
    assert not _present(mods, common)
    assert "aihwkit.nn" in mods  # the aihwkit engine does use aihwkit (the check above is not vacuous)
    mods = _modules_after(
        "from analogai_deploy.cli.app import main\n"
        f"assert main(['recover', {str(pkg)!r}, '--recipe', 'vanilla', '-o', {str(tmp_path / 'rec')!r}, '--json', "
        "'training.rounds=1']) == 0\n", tmp_path)
    assert not _present(mods, common + ("aihwkit",))  # a plain recipe trains without aihwkit
    assert "matplotlib" in mods  # its training curve is drawn (after the work)


def _train(make, steps=6, seed=0, load=None):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    opt = make(model.parameters())
    if load is not None:
        model.load_state_dict(load[0])
        opt.load_state_dict(load[1])
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        model(torch.randn(5, 6)).pow(2).sum().backward()
        opt.step()
    return model, opt


def _same_state(a: dict, b: dict) -> bool:
    if a["param_groups"] != b["param_groups"] or a["state"].keys() != b["state"].keys():
        return False
    return all(a["state"][k].keys() == b["state"][k].keys() and all(torch.equal(a["state"][k][n], b["state"][k][n])
               for n in a["state"][k]) for k in a["state"])


@pytest.mark.parametrize("name,kwargs", [("Adam", {"lr": 1e-2, "weight_decay": 1e-3}),
                                         ("SGD", {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4})])
def test_eager_optimizers_step_bit_for_bit_as_torch(name, kwargs):
    from analogai_deploy.recovery import optim

    ours_cls, torch_cls = getattr(optim, name), getattr(torch.optim, name)
    assert issubclass(ours_cls, torch.optim.Optimizer) and ours_cls.__name__ == name
    ours_model, ours = _train(lambda p: ours_cls(p, **kwargs))
    ref_model, ref = _train(lambda p: torch_cls(p, **kwargs))
    assert all(torch.equal(a, b) for a, b in zip(ours_model.parameters(), ref_model.parameters()))
    assert _same_state(ours.state_dict(), ref.state_dict())
    # a checkpoint of either resumes in the other, bit for bit
    snapshot = ({k: v.clone() for k, v in ref_model.state_dict().items()}, ref.state_dict())
    # (load_state_dict keeps the state's tensors, and steps change them in place: each run gets its own copy)
    a_model, _ = _train(lambda p: ours_cls(p, **kwargs), seed=1, load=copy.deepcopy(snapshot))
    b_model, _ = _train(lambda p: torch_cls(p, **kwargs), seed=1, load=copy.deepcopy(snapshot))
    assert all(torch.equal(a, b) for a, b in zip(a_model.parameters(), b_model.parameters()))
    # the grad mode around step is torch's: enabled again after it
    assert torch.is_grad_enabled()


def test_eager_optimizers_never_import_torch_dynamo(tmp_path):
    mods = _modules_after(
        "import torch\nfrom analogai_deploy.recovery import optim\n"
        "m = torch.nn.Linear(3, 2)\n"
        "for cls in (optim.Adam, optim.SGD):\n"
        "    o = cls(m.parameters(), lr=0.1)\n"
        "    m(torch.randn(4, 3)).sum().backward(); o.step(); o.zero_grad()\n"
        "    o.load_state_dict(o.state_dict()); o.add_param_group({'params': [torch.nn.Parameter(torch.ones(1))]})\n",
        tmp_path)
    assert "torch" in mods and "torch._dynamo" not in mods


def test_t_quantile_is_the_student_t_quantile():
    import mpmath
    from scipy.stats import t

    from analogai_deploy.metrics.statistics import t_quantile

    mpmath.mp.dps = 40
    worst = 0.0
    for df in [*range(1, 41), 57, 99, 150, 299, 2.5, 3.7, 0.5, 1000, 10_000]:
        d = mpmath.mpf(df)
        norm = mpmath.gamma((d + 1) / 2) / (mpmath.sqrt(d * mpmath.pi) * mpmath.gamma(d / 2))
        for p in (0.5000001, 0.5001, 0.6, 0.9, 0.975, 0.995, 0.9995, 1 - 1e-6):
            q = mpmath.mpf(t_quantile(p, df))
            cdf = 1 - mpmath.betainc(d / 2, mpmath.mpf(1) / 2, 0, d / (d + q * q), regularized=True) / 2
            density = norm * (1 + q * q / d) ** (-(d + 1) / 2)
            worst = max(worst, float(abs((cdf - p) / (density * q))))  # relative error of the quantile
            assert t_quantile(1 - p, df) == -t_quantile(p, df)
        # scipy's ppf where it is accurate (away from the centre)
        assert math.isclose(t_quantile(0.975, df), float(t.ppf(0.975, df)), rel_tol=1e-9)
    assert worst < 1e-10
    assert t_quantile(0.5, 7) == 0.0
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)


def test_aihwkit_gets_a_forwarder_for_scipy_optimize_until_it_is_imported(tmp_path):
    mods = _modules_after(
        "import analogai_deploy, sys\nimport aihwkit.nn\n"
        "from aihwkit.simulator.digital_low_precision import range_estimators as r\n"
        "assert 'scipy.optimize' not in sys.modules\n"
        "x = r.minimize_scalar(lambda v: (v - 2.0) ** 2, bracket=(0.0, 1.0)).x\n"
        "assert abs(x - 2.0) < 1e-6, x\n"
        "import scipy.optimize\n"
        "assert scipy.optimize.minimize_scalar.__module__.startswith('scipy.optimize'), scipy.optimize\n"
        "assert scipy.optimize.__spec__ is not None\n", tmp_path)
    assert "scipy.optimize" in mods


def test_bench_splits_a_run_at_its_marks():
    from analogai_deploy.benchmarks.startup import imports_of, timed_run, tree_env

    code = ["-c", "from analogai_deploy._marks import mark\nimport json\nmark('work')\nimport csv\nmark('work_done')\n"
                  "import tomllib\n"]
    row, _ = timed_run(code, tree_env(ROOT))
    assert {"before_work_s", "before_work_cpu_s", "work_s", "after_s", "after_cpu_s", "wall_s", "cpu_s"} <= set(row)
    assert 0 <= row["before_work_s"] <= row["wall_s"] and row["work_s"] >= 0 and row["after_s"] >= 0
    parts = imports_of(code, tree_env(ROOT))
    assert "csv" in parts["work"] and "tomllib" in parts["after"] and "tomllib" not in parts["before"]
