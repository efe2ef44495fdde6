"""The ablation study's budget accounting, its cache (resume, report from the cache alone) on a tiny run, the
`bench ablation` command, and BENCHMARKS.md's sections."""
from __future__ import annotations

import dataclasses
import json

import pytest

from analogai_deploy.benchmarks import (AblationConfig, ablation, ablation_markdown, ablation_report, ablation_table,
                                        write_report)
from analogai_deploy.benchmarks.ablation_plan import RECIPES, cell_name, passes_per_round, plan
from analogai_deploy.errors import UsageError


def test_passes_per_round_count_clients_and_feedback_passes():
    assert {r: passes_per_round(r) for r in RECIPES} == {
        "vanilla": 1, "single_noise": 1, "msnat_no_fi": 4, "msnat_no_fl": 5, "msnat": 20, "hwa_aihwkit": 1, "afm": 1}


def test_equal_budget_gives_every_recipe_msnat_passes_and_seed_budget_the_same_rounds():
    cells = plan(AblationConfig(models=["resnet18_cifar"], width=16, seeds=[0, 1], rounds=3))
    seed = [c for c in cells if c["budget"] == "seed"]
    equal = [c for c in cells if c["budget"] == "equal"]
    assert {c["rounds"] for c in seed} == {3} and len(seed) == len(equal) == 14
    assert {c["passes"] for c in equal} == {60}  # msnat: 3 rounds x 5 clients x 4 feedback passes
    assert {c["recipe"]: c["rounds"] for c in equal if c["seed"] == 0}["vanilla"] == 60
    # msnat's cell is the same training run under both budgets
    assert len({cell_name(c) for c in cells if c["recipe"] == "msnat"}) == 2
    # seed 0 of every recipe at both budgets before any seed 1 cell
    assert [c["seed"] for c in cells] == [0] * 14 + [1] * 14
    assert cell_name(cells[0]) == "resnet18_cifar-w16-vanilla-s0-r3"


def test_cache_resumes_and_report_only_builds_the_tables_from_it(tmp_path):
    cfg = AblationConfig(models=["mlp"], recipes=["vanilla", "msnat_no_fl"], seeds=[0], rounds=1, repeats=2,
                         n_w=[0.0, 0.2], times=["1s", "1y"], limit=60)
    cache = tmp_path / "cache"
    first = ablation(cfg, tmp_path / "runs", cache)
    assert first["trained"] == 3  # vanilla 1 round, msnat_no_fl 1 round (both budgets), vanilla 5 rounds
    table = ablation_table(first)
    equal = {r["recipe"]: r for r in table if r["budget"] == "equal"}
    assert equal["vanilla"]["passes"] == equal["msnat_no_fl"]["passes"] == 5 and equal["vanilla"]["rounds"] == 5
    again = ablation(cfg, tmp_path / "runs", cache)
    assert again["trained"] == 0 and ablation_table(again) == table
    only = ablation_report(cfg, cache)
    assert ablation_table(only) == table and "Partial" not in ablation_markdown(only)
    # a missing cell: the report says which, from what is there
    (cache / "mlp-vanilla-s0-r5.json").unlink()
    md = tmp_path / "B.md"
    write_report(ablation_report(cfg, cache), md, tmp_path / "a.png", "ablation")
    text = md.read_text()
    assert "Partial: 2 of 3 cells finished** (missing: mlp-vanilla-s0-r5)" in text
    # one seed has no spread to print: its mean alone, and the header says so
    assert "one seed: its 2-repeat Monte Carlo mean" in text
    assert not [line for line in text.splitlines() if line.startswith("| vanilla") and "±" in line]
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    # a cell certified with other settings is refused, not silently mixed in
    with pytest.raises(UsageError, match="other settings"):
        ablation_report(dataclasses.replace(cfg, repeats=3), cache)


def test_narrow_resnet18_cifar_is_recorded_and_rebuilt_at_its_width(tmp_path):
    import analogai_deploy as ad
    from analogai_deploy.sources import builtin

    src = builtin.build("resnet18_cifar", width=16)
    assert src.model.conv1.out_channels == 16 and src.model.fc.in_features == 128
    assert sum(p.numel() for p in src.model.parameters()) == 701_466  # 11.17 M at width 64
    pkg = ad.convert(src, output=tmp_path / "r16")
    assert ad.load(pkg.path).model.layer4[0].conv1.out_channels == 128
    with pytest.raises(UsageError, match="resnet18_cifar"):
        builtin.build("lenet", width=16)


def test_bench_ablation_cli_small(tmp_path, cli):
    # the whole ablation pipeline on two recipes, one seed, one round: train, certify, table + PNG
    args = ("bench", "ablation", "--models", "mlp", "--recipes", "vanilla,msnat_no_fi", "--seeds", "0",
            "--budgets", "seed", "--rounds", "1", "--repeats", "2", "--out", str(tmp_path / "runs"),
            "--cache", str(tmp_path / "cache"), "--markdown", "", "--png", str(tmp_path / "a.png"), "--json")
    code, out, err = cli(*args)
    assert code == 0, err
    table = json.loads(out)["table"]
    assert [r["recipe"] for r in table] == ["vanilla", "msnat_no_fi"]
    row = table[0]
    assert set(row["drift"]) == {"1s", "1d", "1y"} and set(row["n_w"]) == {"0", "0.05", "0.1", "0.14", "0.2"}
    assert row["n_w"]["0.2"][0] < row["n_w"]["0"][0]  # weight noise costs accuracy
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    # cached: --report-only trains nothing and gives the same table
    code, out2, _ = cli(*args, "--report-only")
    assert code == 0 and json.loads(out2)["table"] == table and json.loads(out2)["trained"] == 0


def test_markdown_sections_are_replaced_in_place(tmp_path):
    from analogai_deploy.benchmarks import update_markdown

    md = tmp_path / "B.md"
    md.write_text("# Benchmarks\n\nintro\n")
    update_markdown(md, "speed", "table 1")
    update_markdown(md, "ablation", "table 2")
    update_markdown(md, "speed", "table 3")
    text = md.read_text()
    assert "table 1" not in text and text.index("table 3") < text.index("table 2") and "intro" in text
