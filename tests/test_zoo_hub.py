"""publish --hub / pull hf-hub: through the real huggingface_hub client against a local Hub stand-in.

There is no network here: `hub_server.HubStandIn` stands in for https://huggingface.co (the
create-repo, validate-yaml, preupload, commit, repo-info, tree and resolve routes that
huggingface_hub 2.4 uses, Xet/LFS off) on 127.0.0.1 at a random port; HF_ENDPOINT points at it.
"""
from __future__ import annotations

import json
import shutil

import pytest
import yaml
from hub_server import serve
from zoo_helpers import certified_copy, tampered_weights

import analogai_deploy as ad
from analogai_deploy import package as pkgio
from analogai_deploy.errors import PackageError
from analogai_deploy import zoo

REPO = "analog-lab/digits-cnn-msnat-pcm"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The Hub stand-in, started and stopped per test, with huggingface_hub pointed at it (online, no Xet)."""
    server = serve(monkeypatch, tmp_path / "hf-cache")
    yield server
    server.stop()


@pytest.fixture
def certified(tmp_path):
    return certified_copy(tmp_path / "lenet-msnat")


def test_publish_to_hub_with_model_card(cli, hub, certified):
    code, out, err = cli("publish", certified, "--hub", REPO, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["where"] == "hub" and data["repo_id"] == REPO
    repo = hub.repos[REPO]
    files = repo.commits[repo.refs["main"]]
    assert data["commit"] == repo.refs["main"]
    assert {"config.json", "model.safetensors", "certificate.json", "README.md"} <= set(files)
    assert files["model.safetensors"] == (certified / "model.safetensors").read_bytes()

    card = files["README.md"].decode()
    meta = yaml.safe_load(card.split("---", 2)[1])
    assert meta["library_name"] == "analogai-deploy"
    assert {"analog-ai", "aihwkit", "PCM"} <= set(meta["tags"])
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    cert = json.loads((certified / "certificate.json").read_text())
    assert [(m["name"], m["value"]) for m in metrics][-1] == ("accuracy at t=1d on PCM", cert["results"][-1]["mean"])
    assert "Recipe `msnat`" in card and "Admitted to the zoo: gate max drop 3 pp of accuracy at 1d" in card
    assert data["gate"] == "max drop 3 pp of accuracy at 1d (lower 95% CI)" and data["spot_check"]["repeats"] == 3
    assert f"from_pretrained('hf-hub:{REPO}')" in card and f"analogai-deploy pull hf-hub:{REPO}" in card
    assert json.loads(files["config.json"])["zoo"]["hub"] == REPO
    # the routes the real client used: nothing was sent as LFS
    assert ("POST", "/api/repos/create") in hub.requests and ("POST", f"/api/models/{REPO}/commit/main") in hub.requests


def test_republish_mirrors_the_package(hub, certified, tmp_path):
    stale = tmp_path / "with-extra"
    shutil.copytree(certified, stale)
    pkgio.write(stale, pkgio.read_config(stale), files={"notes.json": b"{}"}, base=stale)
    zoo.publish(stale, hub_repo=REPO)
    other = certified_copy(tmp_path / "other-cert", variant=1)
    zoo.publish(other, hub_repo=REPO)
    repo = hub.repos[REPO]
    files = repo.commits[repo.refs["main"]]
    assert "notes.json" not in files and ".gitattributes" in files
    assert ad.from_pretrained(f"hf-hub:{REPO}").weights_sha256 == pkgio.read_config(other)["weights"]["sha256"]


def test_pull_from_hub_verifies_and_loads(cli, hub, certified, tmp_path):
    zoo.publish(certified, hub_repo=REPO)
    code, out, err = cli("pull", f"hf-hub:{REPO}", "-o", tmp_path / "pulled", "--json")
    assert code == 0, err
    got = json.loads(out)
    cert = json.loads((certified / "certificate.json").read_text())
    assert got["verified"] and got["device"] == "PCM" and got["value_1d"] == cert["results"][0]["mean"]
    assert got["weights_sha256"] == pkgio.read_config(certified)["weights"]["sha256"]
    assert (tmp_path / "pulled" / "certificate.json").exists() and not (tmp_path / "pulled" / ".gitattributes").exists()

    pkg = ad.from_pretrained(f"hf-hub:{REPO}")
    assert str(pkg.path).startswith(str(tmp_path / "hf-cache")) and pkg.model is not None


def test_pull_refuses_tampered_download(cli, hub, certified):
    good = zoo.publish(certified, hub_repo=REPO)["commit"]
    hub.tamper(REPO, "model.safetensors", tampered_weights(certified))
    code, _, err = cli("pull", f"hf-hub:{REPO}")
    assert code == 1 and "tampered" in err
    with pytest.raises(PackageError):
        ad.from_pretrained(f"hf-hub:{REPO}")
    # pinning the published commit still gets the certified weights
    pinned = ad.from_pretrained(f"hf-hub:{REPO}@{good}")
    assert pinned.weights_sha256 == pkgio.read_config(certified)["weights"]["sha256"]


def test_pull_refuses_uncertified_repo(cli, hub, lenet_pkg):
    """Someone uploaded a package without a certificate straight to the Hub: pull will not load it."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.endpoint)
    api.create_repo("someone/uncertified")
    api.upload_folder(repo_id="someone/uncertified", folder_path=str(lenet_pkg))
    code, _, err = cli("pull", "hf-hub:someone/uncertified")
    assert code == 1 and "no certificate.json" in err


def test_publish_refuses_before_touching_the_hub(cli, hub, lenet_pkg, tmp_path):
    code, _, err = cli("publish", lenet_pkg, "--hub", REPO)
    assert code == 1 and "no certificate.json" in err
    failing = certified_copy(tmp_path / "failing", passed=False)
    code, _, err = cli("publish", failing, "--hub", REPO)
    assert code == 1 and "fails its gate" in err
    ungated = certified_copy(tmp_path / "ungated", max_drop=None)
    code, _, err = cli("publish", ungated, "--hub", REPO)
    assert code == 1 and "has no gate" in err
    assert hub.requests == [] and REPO not in hub.repos


def test_hub_pull_refuses_a_forged_certificate(cli, hub, certified):
    """A certificate edited on the Hub (means of 99.9%): its sha256 in config.json refuses it; edited with that
    sha256 too, the consumer's pull recomputes the means and refuses it."""
    import hashlib

    zoo.publish(certified, hub_repo=REPO)
    cert = json.loads((certified / "certificate.json").read_text())
    for r in cert["results"]:
        r["mean"] = 0.999
    forged = json.dumps(cert).encode()
    hub.tamper(REPO, "certificate.json", forged)
    code, _, err = cli("pull", f"hf-hub:{REPO}")
    assert code == 1 and "certificate.json changed after the package was written" in err
    repo = hub.repos[REPO]
    config = json.loads(repo.commits[repo.refs["main"]]["config.json"])
    config["files"]["certificate.json"] = hashlib.sha256(forged).hexdigest()
    hub.tamper(REPO, "config.json", json.dumps(config).encode())
    code, _, err = cli("pull", f"hf-hub:{REPO}")
    assert code == 1 and "was edited" in err


def test_offline_pull_uses_the_cache(cli, hub, certified, monkeypatch):
    from huggingface_hub import constants

    zoo.publish(certified, hub_repo=REPO)
    assert cli("pull", f"hf-hub:{REPO}")[0] == 0
    seen = len(hub.requests)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    code, out, err = cli("pull", f"hf-hub:{REPO}", "--json")
    assert code == 0, err
    assert json.loads(out)["verified"] and len(hub.requests) == seen  # served from the cache, no request
    code, _, err = cli("pull", "hf-hub:analog-lab/never-downloaded")
    assert code == 1 and "HF_HUB_OFFLINE" in err


def test_hub_errors_are_one_line(cli, hub, certified, monkeypatch):
    from huggingface_hub import constants

    code, _, err = cli("pull", "hf-hub:analog-lab/missing")
    assert code == 2 and "no such repository" in err
    code, _, err = cli("pull", "hf-hub:not a repo")
    assert code == 2 and "bad Hub repo id" in err
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(certified.parent / "no-token"))
    code, _, err = cli("publish", certified, "--hub", REPO)
    assert code == 1 and "HTTP 401" in err and "HF_TOKEN" in err
