"""A local stand-in for the Hugging Face Hub, for tests on machines without network.

It stands in for https://huggingface.co as seen by huggingface_hub 2.4 with Xet and LFS off
(HF_HUB_DISABLE_XET=1, every file committed inline as a "regular" upload): it serves the routes
that `HfApi.create_repo`, `HfApi.upload_folder`, `HfApi.repo_info` / `list_repo_tree` and
`snapshot_download` / `hf_hub_download` call, with the headers the client checks (X-Repo-Commit,
ETag, Content-Length, X-Error-Code). Model repos only, in memory, on 127.0.0.1 at a random port.

    POST /api/repos/create                                   create a repo (409 if it exists)
    POST /api/validate-yaml                                  README.md front matter check
    POST /api/models/{repo}/preupload/{rev}                  upload mode per file (always "regular")
    POST /api/models/{repo}/commit/{rev}                     ndjson commit with inline base64 files
    GET  /api/models/{repo}[/revision/{rev}]                 repo info: sha + siblings
    GET  /api/models/{repo}/tree/{rev}[/{path}]              file listing
    HEAD/GET /{repo}/resolve/{rev}/{path}                    file metadata / bytes

Write routes need an `Authorization: Bearer ...` header, as on the real Hub. Tests can rewrite a
stored file behind the client's back (`tamper`) to play a compromised mirror.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml

_REPO = r"(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)"
_API = re.compile(rf"^/api/models/{_REPO}(?:/(?P<op>preupload|commit|revision|tree)/(?P<rest>.*))?$")
_RESOLVE = re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file, which the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit sha -> {path: bytes}
    refs: dict[str, str] = field(default_factory=dict)  # branch -> commit sha

    def snapshot(self, rev: str) -> tuple[str, dict[str, bytes]] | None:
        sha = self.refs.get(rev, rev)
        return (sha, self.commits[sha]) if sha in self.commits else None

    def commit(self, files: dict[str, bytes], message: str, branch: str = "main") -> str:
        seed = json.dumps([self.refs.get(branch), message, time.time_ns(), sorted(files)]).encode()
        sha = hashlib.sha1(seed).hexdigest()
        self.commits[sha] = files
        self.refs[branch] = sha
        return sha


class HubStandIn:
    """Start with `start()`, stop with `stop()`; `endpoint` is the value for HF_ENDPOINT."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, for assertions
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubStandIn:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="hub-stand-in", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)

    def tamper(self, repo_id: str, path: str, data: bytes) -> str:
        """Replace one file in a new commit on main without any client involved (a compromised mirror)."""
        with self.lock:
            repo = self.repos[repo_id]
            files = dict(repo.commits[repo.refs["main"]])
            files[path] = data
            return repo.commit(files, f"tamper {path}")


class _Handler(BaseHTTPRequestHandler):
    hub: HubStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    # ---- plumbing -------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, data, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, code: str | None, message: str, head: bool = False, extra: dict | None = None,
               body: dict | None = None) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message, **(body or {})}).encode(), headers, head=head)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _authorised(self) -> bool:
        if (self.headers.get("Authorization") or "").startswith("Bearer "):
            return True
        self._error(401, None, "Invalid credentials in Authorization header")
        return False

    def _repo(self, repo_id: str, head: bool = False) -> Repo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", f"Repository not found: {repo_id}", head=head)
        return repo

    def _path(self) -> str:
        return urlsplit(self.path).path

    # ---- routes ---------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self.hub.requests.append(("HEAD", self._path()))
        self._resolve(head=True)

    def do_GET(self) -> None:
        path = self._path()
        self.hub.requests.append(("GET", path))
        m = _API.match(path)
        if m and m["op"] in (None, "revision"):
            return self._info(m["repo"], unquote(m["rest"]) if m["rest"] else "main")
        if m and m["op"] == "tree":
            rev, _, sub = m["rest"].partition("/")
            return self._tree(m["repo"], unquote(rev), unquote(sub))
        if _RESOLVE.match(path):
            return self._resolve(head=False)
        self._error(404, None, f"route not served by the stand-in: GET {path}")

    def do_POST(self) -> None:
        path = self._path()
        self.hub.requests.append(("POST", path))
        body = self._body()
        if path == "/api/validate-yaml":
            return self._validate_yaml(body)
        if not self._authorised():
            return
        if path == "/api/repos/create":
            return self._create(json.loads(body))
        m = _API.match(path)
        if m and m["op"] == "preupload":
            return self._preupload(m["repo"], unquote(m["rest"]), json.loads(body))
        if m and m["op"] == "commit":
            return self._commit(m["repo"], unquote(m["rest"]), body)
        self._error(404, None, f"route not served by the stand-in: POST {path}")

    def _validate_yaml(self, body: bytes) -> None:
        content = json.loads(body).get("content", "")
        if content.startswith("---"):
            try:
                yaml.safe_load(content.split("---", 2)[1])
            except yaml.YAMLError as exc:
                return self._json(400, {"errors": [{"message": str(exc)}], "warnings": []})
        self._json(200, {"errors": [], "warnings": []})

    def _create(self, payload: dict) -> None:
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        if payload.get("type", "model") != "model":
            return self._error(400, None, "the stand-in serves model repos only")
        url = f"{self.hub.endpoint}/{repo_id}"
        with self.hub.lock:
            if repo_id in self.hub.repos:
                return self._error(409, None, "You already created this model repo", body={"url": url})
            repo = Repo()
            repo.commit({".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}, "initial commit")
            self.hub.repos[repo_id] = repo
        self._json(200, {"url": url, "name": repo_id})

    def _preupload(self, repo_id: str, rev: str, payload: dict) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        snap = repo.snapshot(rev)
        existing = snap[1] if snap else {}
        files = [
            {
                "path": f["path"],
                "uploadMode": "regular",  # keeps LFS / Xet out: contents travel inline in the commit
                "shouldIgnore": False,
                "oid": git_blob_sha1(existing[f["path"]]) if f["path"] in existing else None,
            }
            for f in payload.get("files", [])
        ]
        self._json(200, {"files": files, "commitOid": snap[0] if snap else None})

    def _commit(self, repo_id: str, rev: str, body: bytes) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        with self.hub.lock:
            snap = repo.snapshot(rev)
            if snap is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            files = dict(snap[1])
            message = "commit"
            for line in body.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                key, value = item["key"], item["value"]
                if key == "header":
                    message = value.get("summary") or message
                elif key == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: d for p, d in files.items() if not p.startswith(prefix)}
                else:
                    return self._error(400, None, f"the stand-in does not take {key!r} operations (LFS is off)")
            sha = repo.commit(files, message, branch=rev)
        self._json(200, {"success": True, "commitOid": sha, "commitUrl": f"{self.hub.endpoint}/{repo_id}/commit/{sha}"})

    def _info(self, repo_id: str, rev: str) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        snap = repo.snapshot(rev)
        if snap is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        sha, files = snap
        self._json(200, {"id": repo_id, "modelId": repo_id, "sha": sha, "private": False, "tags": [],
                         "siblings": [{"rfilename": p} for p in sorted(files)]})

    def _tree(self, repo_id: str, rev: str, sub: str) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        snap = repo.snapshot(rev)
        if snap is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        prefix = sub.rstrip("/") + "/" if sub else ""
        entries = [{"type": "file", "oid": git_blob_sha1(d), "size": len(d), "path": p}
                   for p, d in sorted(snap[1].items()) if p.startswith(prefix)]
        self._json(200, entries)

    def _resolve(self, head: bool) -> None:
        m = _RESOLVE.match(self._path())
        if not m:
            return self._error(404, None, f"route not served by the stand-in: {self._path()}", head=head)
        repo = self._repo(m["repo"], head=head)
        if repo is None:
            return
        snap = repo.snapshot(unquote(m["rev"]))
        if snap is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {m['rev']}", head=head)
        sha, files = snap
        path = unquote(m["path"])
        if path not in files:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {m['rev']}", head=head,
                               extra={"X-Repo-Commit": sha})
        data = files[path]
        headers = {"ETag": f'"{git_blob_sha1(data)}"', "X-Repo-Commit": sha, "Content-Type": "application/octet-stream"}
        self._send(200, data, headers, head=head)


def serve(monkeypatch, cache) -> HubStandIn:
    """A started stand-in with huggingface_hub (and so transformers' from_pretrained by repo id) pointed at it:
    online, no Xet, its own cache. The caller stops it."""
    from huggingface_hub import constants

    server = HubStandIn().start()
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setenv("HF_TOKEN", "hf_stand_in_token")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    # huggingface_hub reads these once at import (conftest sets HF_HUB_OFFLINE=1 for the whole suite);
    # the zoo itself reads HF_ENDPOINT per call, transformers goes through constants' URL template
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    # HfApi instances take their endpoint when made: huggingface_hub's module-level one, and the one transformers
    # makes on first use and keeps (transformers.utils.hub._hf_api), which lists a repo's files when a tokenizer
    # loads by repo id. In a full suite run an earlier test had made it for the real Hub, so a pipeline by repo id
    # spent ~3 minutes retrying a host it cannot reach; here both point at the stand-in (transformers' is remade)
    from huggingface_hub import hf_api
    from transformers.utils import hub as transformers_hub

    monkeypatch.setattr(hf_api.api, "endpoint", server.endpoint)
    monkeypatch.setattr(transformers_hub, "_hf_api", None)
    return server
