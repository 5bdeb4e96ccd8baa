"""A local HTTP server speaking the subset of the Hugging Face Hub API that `HfApi.create_repo` and
`HfApi.upload_folder` use: POST /api/repos/create, /api/validate-yaml (README.md front matter), /api/models/{repo}/preupload/{rev} (every file
"regular": no LFS) and /api/models/{repo}/commit/{rev} (NDJSON, base64 contents). Files land in
`root/<repo>/`; requests are recorded for the test to check (token, visibility)."""

from __future__ import annotations

import base64
import gzip
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml


class FakeHub:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, authorization)
        self.repos: dict[str, dict] = {}
        self.cards: list[str] = []  # model cards sent to /api/validate-yaml
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet test output
                pass

            def _json(self, code: int, obj) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    data = gzip.decompress(data)
                return data

            def do_POST(self):
                hub.requests.append(("POST", self.path, self.headers.get("Authorization")))
                if hub.requests[-1][2] != "Bearer hf_test_token":
                    return self._json(401, {"error": "Invalid credentials in Authorization header"})
                if self.path == "/api/validate-yaml":  # the model card's front matter must be a YAML mapping
                    content = json.loads(self._body())["content"]
                    m = re.match(r"^---\n(.*?)\n---\n", content, re.S)
                    try:
                        ok = m is not None and isinstance(yaml.safe_load(m.group(1)), dict)
                    except yaml.YAMLError:
                        ok = False
                    hub.cards.append(content)
                    if not ok:
                        return self._json(400, {"errors": [{"message": "README.md metadata is not a YAML mapping"}]})
                    return self._json(200, {"errors": [], "warnings": []})
                if self.path == "/api/repos/create":
                    body = json.loads(self._body())
                    repo = f"{body.get('organization')}/{body['name']}"
                    hub.repos.setdefault(repo, {"create": body, "commits": []})
                    return self._json(200, {"url": f"{hub.url}/{repo}", "name": repo})
                m = re.match(r"^/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/?]+)", self.path)
                if not m or m.group(1) not in hub.repos:
                    return self._json(404, {"error": f"no route {self.path}"})
                repo, kind = m.group(1), m.group(2)
                if kind == "preupload":
                    files = json.loads(self._body())["files"]
                    return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                      for f in files]})
                ops = [json.loads(line) for line in self._body().decode().splitlines() if line.strip()]
                written = []
                for op in ops:
                    if op["key"] == "file":
                        dest = hub.root / repo / op["value"]["path"]
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        dest.write_bytes(base64.b64decode(op["value"]["content"]))
                        written.append(op["value"]["path"])
                    elif op["key"] != "header":
                        return self._json(400, {"error": f"unsupported operation {op['key']}"})
                hub.repos[repo]["commits"].append({"header": ops[0]["value"], "files": written})
                oid = f"{len(hub.repos[repo]['commits']):040x}"
                return self._json(200, {"commitUrl": f"{hub.url}/{repo}/commit/{oid}", "commitOid": oid,
                                        "pullRequestUrl": None})

            def do_GET(self):
                hub.requests.append(("GET", self.path, self.headers.get("Authorization")))
                self._json(404, {"error": f"no route {self.path}"})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
