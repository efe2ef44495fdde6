"""bench/speed.py's loop and table: a group's workloads are freed before the next group is built (a 135M LM's
text rows each hold several GB), and the text rows (f) read as one model's rows, with or without the torch path."""
from __future__ import annotations

import gc
import importlib
import weakref

from analogai_deploy.benchmarks.common import machine
from analogai_deploy.benchmarks.speed_config import SpeedConfig
from analogai_deploy.benchmarks.speed_tables import speed_markdown

speed_mod = importlib.import_module("analogai_deploy.benchmarks.speed")  # the package exports its function `speed`


class _Model:  # stands for a row's trainer and models: what must be gone when the next row is built
    def step(self) -> None:
        pass


def test_a_group_is_freed_before_the_next_is_built(monkeypatch):
    alive: list[weakref.ref] = []
    seen_alive: list[bool] = []

    def group():
        seen_alive.append(any(r() is not None for r in alive))
        model = _Model()
        alive.append(weakref.ref(model))
        return {"step": model.step, "_tokens": 4}

    monkeypatch.setattr(speed_mod, "workload_groups", lambda cfg, device: {"text_step:a/hw_noise": group,
                                                                           "text_step:a/msnat_client": group})
    gc.collect()
    cfg = SpeedConfig(step_models=[], msnat_models=[], certify_models=[], hwa_models=[], text_models=[], n=1,
                      peak_memory=False, startup=False)
    speed_mod.speed(cfg)
    assert seen_alive == [False, False]


def _timing(s: float) -> dict[str, float]:
    return {"median_s": s, "sys_s": 0.0}


def test_text_rows_join_the_two_groups_and_skip_the_torch_path_when_not_timed():
    cfg = SpeedConfig(step_models=[], msnat_models=[], certify_models=[], text_models=["smollm2"], text_batch=4,
                      text_torch_path=False)
    result = {"config": cfg.to_dict(), "machine": machine(), "groups": {
        "text_step:smollm2/hw_noise": {"hw_noise": _timing(1.2), "digital": _timing(1.0), "_tokens": 44},
        "text_step:smollm2/msnat_client": {"msnat_client": _timing(3.0), "msnat_need": _timing(2.0), "_tokens": 44}}}
    md = speed_markdown(result)
    assert "SmolLM2-135M (GGUF), batch 4 (44 tokens): hardware-matched noise step" in md
    assert "| 1.20x | <= 1.3x: met |" in md
    assert "| 1.50x | <= 1.1x: **missed by 36%** |" in md
    assert "torch path" not in md
    assert "system time per step | digital 0 ms, hw_noise 0 ms, msnat_client 0 ms, msnat_need 0 ms |" in md


def test_the_workloads_scratch_folders_are_removed_when_the_benchmark_ends(tmp_path):
    # a ResNet's packages take about 0.5 GB per workload: left behind, repeated runs filled the disk
    import os
    import subprocess
    import sys

    code = ("from analogai_deploy.benchmarks.speed import speed; from analogai_deploy.benchmarks.speed_config import "
            "SpeedConfig; speed(SpeedConfig(step_models=['lenet'], msnat_models=[], certify_models=[], hwa_models=[], "
            "text_models=[], n=1, peak_memory=False, startup=False)); import glob, tempfile; "
            "print('during', len(glob.glob(tempfile.gettempdir() + '/analogai-speed-*')))")
    env = {**os.environ, "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert "during 1" in out  # the workload's folder exists while the process runs ...
    assert not list(tmp_path.glob("analogai-speed-*"))  # ... and is gone once it ends
