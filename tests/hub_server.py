"""A local stand-in for the Hugging Face Hub's HTTP API: just what create_repo and create_commit call.

Endpoints (as huggingface_hub calls them with HF_HUB_DISABLE_XET, i.e. the LFS path): POST /api/repos/create, POST /api/validate-yaml,
POST /api/models/{repo}/preupload/{rev}, POST /{repo}.git/info/lfs/objects/batch, PUT /lfs/{oid} (the
upload action it hands out), POST /api/models/{repo}/commit/{rev} (NDJSON). Every request must carry the
token; repositories, LFS objects and commits live in memory for the test to inspect.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class HubState:
    """What the stand-in holds: repositories (files by path), LFS objects by oid, requests, injected failures."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.repos: dict[str, dict[str, Any]] = {}  # repo_id -> {"private": bool, "files": {path: bytes}}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.lfs_puts: list[str] = []
        self.validated: list[dict[str, Any]] = []  # README metadata checked by /api/validate-yaml
        self.fail_commits = 0  # answer the next N commits with a 500


def _handler(state: HubState, base: list[str]):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _authorised(self) -> bool:
            if self.headers.get("Authorization") != f"Bearer {state.token}":
                self._send(401, {"error": "Invalid credentials in Authorization header"})
                return False
            return True

        def do_PUT(self) -> None:  # noqa: N802
            state.requests.append(("PUT", self.path))
            data = self._body()
            oid = self.path.rsplit("/", 1)[-1]
            if hashlib.sha256(data).hexdigest() != oid:
                return self._send(400, {"error": "sha256 mismatch"})
            state.lfs[oid] = data
            state.lfs_puts.append(oid)
            self._send(200, {})

        def do_POST(self) -> None:  # noqa: N802
            state.requests.append(("POST", self.path))
            body = self._body()
            if not self._authorised():
                return None
            path = self.path.split("?")[0]
            if path == "/api/repos/create":
                req = json.loads(body)
                repo = f"{req.get('organization') or 'me'}/{req['name']}"
                if repo in state.repos:
                    return self._send(409, {"error": "You already created this model repo", "url": f"{base[0]}/{repo}"})
                # huggingface_hub 1.x sends private: bool, 2.x visibility: public | private
                private = req.get("visibility") == "private" or req.get("private") is True
                state.repos[repo] = {"private": private, "files": {}}
                return self._send(200, {"url": f"{base[0]}/{repo}", "name": repo})
            if path == "/api/validate-yaml":  # the Hub checks a README's metadata before a commit that adds one
                import yaml

                content = json.loads(body)["content"]
                try:
                    meta = yaml.safe_load(content.split("---")[1]) if content.startswith("---\n") else {}
                except yaml.YAMLError as err:
                    return self._send(400, {"error": f"Invalid metadata in README.md: {err}"})
                state.validated.append(meta)
                return self._send(200, {})
            if path.endswith(".git/info/lfs/objects/batch"):
                req = json.loads(body)
                objects = []
                for o in req["objects"]:
                    entry = {"oid": o["oid"], "size": o["size"]}
                    if o["oid"] not in state.lfs:  # content the hub holds gets no upload action
                        entry["actions"] = {"upload": {"href": f"{base[0]}/lfs/{o['oid']}"}}
                    objects.append(entry)
                return self._send(200, {"transfer": "basic", "objects": objects})
            parts = path.strip("/").split("/")  # api models OWNER NAME preupload|commit REV
            if len(parts) >= 6 and parts[:2] == ["api", "models"]:
                repo = f"{parts[2]}/{parts[3]}"
                if repo not in state.repos:
                    return self._send(404, {"error": f"Repository not found: {repo}"})
                if parts[4] == "preupload":
                    files = json.loads(body)["files"]
                    modes = [{"path": f["path"], "uploadMode": "lfs" if f["path"].endswith(".safetensors")
                              or f["size"] > 1_000_000 else "regular", "shouldIgnore": False} for f in files]
                    return self._send(200, {"files": modes})
                if parts[4] == "commit":
                    if state.fail_commits > 0:
                        state.fail_commits -= 1
                        return self._send(500, {"error": "Internal Error - the commit could not be stored"})
                    files = state.repos[repo]["files"]
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        value = item["value"]
                        if item["key"] == "file":
                            files[value["path"]] = base64.b64decode(value["content"])
                        elif item["key"] == "lfsFile":
                            if value["oid"] not in state.lfs:
                                return self._send(422, {"error": f"LFS object {value['oid']} was never uploaded"})
                            files[value["path"]] = state.lfs[value["oid"]]
                    oid = hashlib.sha1(body).hexdigest()
                    return self._send(200, {"commitUrl": f"{base[0]}/{repo}/commit/{oid}", "commitOid": oid})
            self._send(404, {"error": f"not implemented by the stand-in: POST {path}"})

        def do_GET(self) -> None:  # noqa: N802
            state.requests.append(("GET", self.path))
            self._send(404, {"error": f"not implemented by the stand-in: GET {self.path}"})

    return Handler


class LocalHub:
    """Start with `with LocalHub(token) as hub:`; `hub.url` is the endpoint, `hub.state` what it holds."""

    def __init__(self, token: str) -> None:
        self.state = HubState(token)
        self._base: list[str] = [""]
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state, self._base))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._base[0] = self.url
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LocalHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
