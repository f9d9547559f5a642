"""A loopback fake of the Hugging Face Hub for offline push / pull tests.

`FakeHub` is a stdlib `ThreadingHTTPServer` on 127.0.0.1 (random free port) holding repositories in memory. It speaks
the subset of the Hub HTTP API that huggingface_hub 2.4, transformers 5.x, diffusers 0.42 and datasets 5.x use to
create repos, commit files, list them and download them. Uploads are always given the "regular" upload mode, so file
contents come inline (base64) in the ndjson commit body: no LFS or Xet. Writes need the fake token; every request is
recorded (minus its `Authorization` header) so tests can check that the token never ended up in an uploaded file.

Tests use the `fake_hub` fixture, registered with `pytest_plugins = ["fakehub"]` (in conftest.py, or in the test module
after its imports):

```python
def test_push(fake_hub, tiny_model):
    tiny_model.push_to_hub("tester/tiny")
    assert "model.safetensors" in fake_hub.files("tester/tiny")
    assert fake_hub.token_leaks() == []
```

For the duration of the test it points huggingface_hub (and the copies of its settings that transformers, diffusers,
datasets keep) at the server, turns offline mode off there, sets `HF_TOKEN` to the fake token and gives the process a
private download cache; afterwards everything is restored, so later tests are offline again. Child processes get the
same view from `fake_hub.env(os.environ)`. Libraries first imported *during* the test read the (still offline)
environment instead: import what you push with at the top of the test module. `serve_fake_hub(folder)` is the same as
a context manager.

Not supported: pull requests (`create_pr`), branches other than `main`, LFS uploads, and therefore
`datasets.Dataset.push_to_hub` (it pre-uploads parquet shards as LFS files and deletes them before the commit).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import json
import logging
import os
import re
import socket
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

logger = logging.getLogger("fakehub")

FAKE_TOKEN = "hf_fakehubTOKENdoNOTleakXyZ0123456789"
FAKE_USER = "tester"
REPO_TYPES = ("model", "dataset", "space")
# The Hub seeds every new repository with a .gitattributes that routes binary files through LFS.
INITIAL_GITATTRIBUTES = (
    b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
    b"*.ckpt filter=lfs diff=lfs merge=lfs -text\n"
    b"*.pt filter=lfs diff=lfs merge=lfs -text\n"
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
)
_COMMIT_OID_RE = re.compile(r"^[0-9a-f]{40}$")


def git_blob_oid(content: bytes) -> str:
    """The git object id of a blob, which is what the Hub reports as the `oid` / ETag of a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake Hub saw it. `headers` never contains `Authorization`; `authorized` says whether it
    carried the fake token."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    authorized: bool


@dataclass
class _Commit:
    oid: str
    title: str
    description: str
    date: str
    files: dict[str, bytes]


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: list[_Commit] = field(default_factory=list)  # oldest first; the last one is `main`

    @property
    def head(self) -> _Commit:
        return self.commits[-1]

    def commit(self, revision: str) -> _Commit | None:
        if revision == "main":
            return self.head
        return next((c for c in self.commits if _COMMIT_OID_RE.match(revision) and c.oid == revision), None)

    def add_commit(self, title: str, description: str, files: dict[str, bytes]) -> _Commit:
        parent = self.commits[-1].oid if self.commits else ""
        digest = hashlib.sha1(f"{self.repo_type}/{self.repo_id}\n{parent}\n{title}\n".encode())
        for path in sorted(files):
            digest.update(f"{path}\0{git_blob_oid(files[path])}\n".encode())
        commit = _Commit(digest.hexdigest(), title, description, _now_iso(), files)
        self.commits.append(commit)
        return commit


class HubError(Exception):
    """An error answered the way the Hub answers it: a status code, `X-Error-Code` / `X-Error-Message` headers (which
    huggingface_hub turns into `RepositoryNotFoundError`, `RemoteEntryNotFoundError`, ...) and a JSON body."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None, **body):
        super().__init__(message)
        self.status, self.message, self.code, self.headers, self.body = status, message, code, headers or {}, body


@dataclass
class _Request:
    method: str
    raw_path: str  # still percent-encoded, so an encoded "/" inside a revision or folder does not split the route
    query: dict[str, list[str]]
    headers: Message
    body: bytes
    authorized: bool  # carries `Authorization: Bearer <the fake token>`

    def require_token(self) -> None:
        if self.headers.get("Authorization") is None:
            raise HubError(401, "You must be authenticated to access this resource (no Authorization header)")
        if not self.authorized:
            raise HubError(401, "Invalid credentials in Authorization header")

    def json(self):
        return json.loads(self.body or b"{}")

    def form(self) -> dict[str, list]:
        """A form-encoded body (`paths=a&paths=b`, what `get_paths_info` sends) or a JSON one, as lists."""
        if "json" in self.headers.get("Content-Type", ""):
            return {k: v if isinstance(v, list) else [v] for k, v in self.json().items()}
        return parse_qs(self.body.decode(), keep_blank_values=True)


_REPO_API = r"/api/(?P<kind>models|datasets|spaces)/(?P<repo_id>[^/]+/[^/]+)"
_ROUTES = [
    (("POST",), r"/api/validate-yaml", "_route_validate_yaml"),
    (("GET",), r"/api/agent-harnesses", "_route_agent_harnesses"),
    (("GET",), r"/api/whoami-v2", "_route_whoami"),
    (("POST",), r"/api/repos/create", "_route_create_repo"),
    (("DELETE",), r"/api/repos/delete", "_route_delete_repo"),
    (("GET",), _REPO_API + r"(?:/revision/(?P<revision>[^/]+))?", "_route_repo_info"),
    (("GET",), _REPO_API + r"/tree/(?P<revision>[^/]+)(?:/(?P<path>.+))?", "_route_tree"),
    (("POST",), _REPO_API + r"/paths-info/(?P<revision>[^/]+)", "_route_paths_info"),
    (("GET",), _REPO_API + r"/refs", "_route_refs"),
    (("POST",), _REPO_API + r"/preupload/(?P<revision>[^/]+)", "_route_preupload"),
    (("POST",), _REPO_API + r"/commit/(?P<revision>[^/]+)", "_route_commit"),
    (("GET", "HEAD"), r"/(?:(?P<kind>datasets|spaces)/)?(?P<repo_id>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<path>.+)",
     "_route_resolve"),
]  # fmt: skip
_ROUTES = [(methods, re.compile(pattern), route) for methods, pattern, route in _ROUTES]


class FakeHub:
    """An in-memory Hugging Face Hub served on a loopback port.

    Args:
        token (`str`, *optional*, defaults to `FAKE_TOKEN`):
            The only token accepted for writes and for reading private repositories.
        user (`str`, *optional*, defaults to `"tester"`):
            The user that token belongs to (`whoami`, and the namespace of repo ids created without one).

    Use it as a context manager (`with FakeHub() as hub: ...`), or through `serve_fake_hub` / the `fake_hub` fixture,
    which also point the in-process libraries at it. Only the `main` branch exists; commit oids work as revisions.
    """

    def __init__(self, token: str = FAKE_TOKEN, user: str = FAKE_USER):
        self.token = token
        self.user = user
        self.requests: list[RecordedRequest] = []
        self.unhandled: list[str] = []  # "METHOD /path" of requests no route matched (answered 404)
        self.errors: list[str] = []  # tracebacks of requests the fake Hub itself failed on (answered 500)
        self.patched: list[str] = []  # module attributes `serve_fake_hub` redirected to this server
        self.work_dir: Path | None = None  # where `env()` makes child HF_HOMEs (system temp when None)
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()  # open keep-alive connections, cut on close()

    # ------------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> FakeHub:
        if self._server is not None:
            raise RuntimeError("this FakeHub is already running")
        handler = type("FakeHubHandler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-hub", daemon=True
        )  # a short poll interval makes close() quick
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            with self._lock:
                for connection in self._connections:
                    with contextlib.suppress(OSError):
                        connection.shutdown(socket.SHUT_RDWR)
            self._server = self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def endpoint(self) -> str:
        """`http://127.0.0.1:<port>`, the value for `HF_ENDPOINT`."""
        if self._server is None:
            raise RuntimeError("the FakeHub is not running; call start() or use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ------------------------------------------------------------------------------------------- test-side API
    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        """The files of `repo_id` at `revision` (`"main"` or a commit oid) as `{path: content}`, including the
        `.gitattributes` the Hub creates with every repo."""
        with self._lock:
            repo = self._repos.get((_check_repo_type(repo_type), repo_id))
            if repo is None:
                raise KeyError(f"no {repo_type} repo {repo_id!r} on the fake Hub; it has {self.repo_ids(repo_type)}")
            commit = repo.commit(revision)
            if commit is None:
                raise KeyError(f"no revision {revision!r} in {repo_id!r}; commits: {[c.oid for c in repo.commits]}")
            return dict(commit.files)

    def commits(self, repo_id: str, repo_type: str = "model") -> list[str]:
        """Titles of the commits of `repo_id`, oldest first (the first one is the Hub's "initial commit")."""
        with self._lock:
            repo = self._repos.get((_check_repo_type(repo_type), repo_id))
            if repo is None:
                raise KeyError(f"no {repo_type} repo {repo_id!r} on the fake Hub; it has {self.repo_ids(repo_type)}")
            return [c.title for c in repo.commits]

    def repo_ids(self, repo_type: str = "model") -> list[str]:
        with self._lock:
            return sorted(repo_id for (kind, repo_id) in self._repos if kind == repo_type)

    def create_repo(self, repo_id: str, repo_type: str = "model", private: bool = False) -> None:
        """Create a repository directly (no HTTP), seeded like the Hub does with a `.gitattributes` commit."""
        with self._lock:
            key = (_check_repo_type(repo_type), repo_id)
            if key in self._repos:
                raise ValueError(f"{repo_type} repo {repo_id!r} already exists on the fake Hub")
            repo = self._repos[key] = _Repo(repo_type, repo_id, private)
            repo.add_commit("initial commit", "", {".gitattributes": INITIAL_GITATTRIBUTES})

    def upload(
        self, repo_id: str, files: Mapping[str, bytes | str], repo_type: str = "model", message="upload"
    ) -> str:
        """Commit `files` (`{path: content}`) directly (no HTTP), creating the repo if needed; returns the commit oid.
        Handy for seeding a repo that the code under test then downloads."""
        with self._lock:
            if (repo_type, repo_id) not in self._repos:
                self.create_repo(repo_id, repo_type)
            repo = self._repos[(repo_type, repo_id)]
            new = {p: c.encode() if isinstance(c, str) else bytes(c) for p, c in files.items()}
            return repo.add_commit(message, "", {**repo.head.files, **new}).oid

    def requested_paths(self, method: str | None = None) -> list[str]:
        """URL paths (decoded, without query) of the recorded requests, optionally only those with `method`."""
        with self._lock:
            return [r.path for r in self.requests if method is None or r.method == method]

    def downloaded_files(self, repo_id: str) -> set[str]:
        """Paths of the files of model repo `repo_id` that were fetched with `GET .../resolve/...`."""
        prefix = f"/{repo_id}/resolve/"
        return {p[len(prefix) :].split("/", 1)[1] for p in self.requested_paths("GET") if p.startswith(prefix)}

    def token_leaks(self, secret: str | None = None) -> list[str]:
        """Where `secret` (defaults to the fake token) appears other than in an `Authorization` header: in any file of
        any commit of any repo, any request body or any other request header. An empty list means no leak."""
        needle = secret or self.token
        found = set()
        with self._lock:
            for (repo_type, repo_id), repo in self._repos.items():
                for commit in repo.commits:
                    found |= {
                        f"{repo_type} {repo_id}@{commit.oid[:8]}: {path}"
                        for path, content in commit.files.items()
                        if needle.encode() in content
                    }
            for i, r in enumerate(self.requests):
                if needle.encode() in r.body:
                    found.add(f"request {i} ({r.method} {r.path}): body")
                found |= {
                    f"request {i} ({r.method} {r.path}): header {k}" for k, v in r.headers.items() if needle in v
                }
        return sorted(found)

    def env(self, base_env: Mapping[str, str], hf_home: str | os.PathLike | None = None) -> dict[str, str]:
        """An environment for a child process that talks to this fake Hub: `base_env` plus `HF_ENDPOINT`, `HF_TOKEN`,
        offline mode off and a private, empty `HF_HOME` (a new folder under `work_dir` unless `hf_home` is given)."""
        env = dict(base_env)
        for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_MODULES_CACHE", "TRANSFORMERS_OFFLINE",
                     "HF_OIDC_RESOURCE", "HUGGING_FACE_HUB_TOKEN"):  # fmt: skip
            env.pop(name, None)
        if hf_home is None:
            hf_home = tempfile.mkdtemp(prefix="child-hf-home-", dir=self.work_dir)
        env.update(HF_ENDPOINT=self.endpoint, HF_TOKEN=self.token, HF_HUB_OFFLINE="0", HF_DATASETS_OFFLINE="0",
                   HF_HOME=str(hf_home))  # fmt: skip
        return env

    # ------------------------------------------------------------------------------------------------- routing
    def handle(self, request: _Request) -> tuple[int, dict[str, str], bytes]:
        """Answer one request: `(status, headers, body)`, or raise `HubError`."""
        for methods, pattern, route in _ROUTES:
            if request.method in methods and (match := pattern.fullmatch(request.raw_path)):
                params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                return getattr(self, route)(request, **params)
        self.unhandled.append(f"{request.method} {request.raw_path}")
        logger.warning("fake Hub: no route for %s %s (answered 404)", request.method, request.raw_path)
        raise HubError(404, f"The fake Hub has no route for {request.method} {request.raw_path}")

    def _get_repo(self, kind: str, repo_id: str, authorized: bool = True) -> _Repo:
        repo = self._repos.get((kind.removesuffix("s"), repo_id))
        if repo is None or (repo.private and not authorized):  # like the Hub, hide private repos from strangers
            raise HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return repo

    def _get_commit(self, repo: _Repo, revision: str) -> _Commit:
        commit = repo.commit(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision} (the fake Hub has only 'main' and commit oids)",
                           "RevisionNotFound")  # fmt: skip
        return commit

    def _branch_head(self, request: _Request, repo: _Repo, revision: str) -> _Commit:
        if request.query.get("create_pr", ["0"])[0] not in ("0", "false", ""):
            raise HubError(400, "The fake Hub does not support pull requests (create_pr)")
        if revision != "main":
            raise HubError(
                404, f"Invalid rev id: {revision} (the fake Hub commits only to 'main')", "RevisionNotFound"
            )
        return repo.head

    def _url(self, repo: _Repo) -> str:
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return f"{self.endpoint}/{prefix}{repo.repo_id}"

    def _route_validate_yaml(self, request):
        return _json({"errors": [], "warnings": []})

    def _route_agent_harnesses(self, request):
        return _json({"standardEnvVars": [], "harnesses": {}})  # the empty registry: "no agent detected"

    def _route_whoami(self, request):
        request.require_token()
        auth = {"type": "access_token", "accessToken": {"displayName": "fake", "role": "write"}}
        return _json({"type": "user", "name": self.user, "fullname": self.user, "orgs": [], "auth": auth})

    def _route_create_repo(self, request):
        request.require_token()
        payload = request.json()
        repo_type, repo_id = (
            payload.get("type") or "model",
            f"{payload.get('organization') or self.user}/{payload['name']}",
        )
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"Invalid repo type {repo_type!r}")
        if (repo_type, repo_id) in self._repos:  # `create_repo(exist_ok=True)` reads the url from the 409 body
            raise HubError(
                409, f"You already created this {repo_type} repo", url=self._url(self._repos[(repo_type, repo_id)])
            )
        self.create_repo(
            repo_id, repo_type, private=payload.get("visibility") == "private" or bool(payload.get("private"))
        )
        return _json({"url": self._url(self._repos[(repo_type, repo_id)]), "name": repo_id, "id": repo_id})

    def _route_delete_repo(self, request):
        request.require_token()
        payload = request.json()
        repo_type, repo_id = (
            payload.get("type") or "model",
            f"{payload.get('organization') or self.user}/{payload['name']}",
        )
        self._get_repo(repo_type, repo_id)
        del self._repos[(repo_type, repo_id)]
        return _json({})

    def _route_repo_info(self, request, kind, repo_id, revision="main"):
        repo = self._get_repo(kind, repo_id, request.authorized)
        commit = self._get_commit(repo, revision)
        siblings = [
            {"rfilename": p, "size": len(c), "blobId": git_blob_oid(c)} for p, c in sorted(commit.files.items())
        ]
        return _json({
            "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24], "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0], "sha": commit.oid, "lastModified": commit.date,
            "createdAt": repo.commits[0].date, "private": repo.private, "gated": False, "disabled": False, "tags": [],
            "siblings": siblings,
        })  # fmt: skip

    def _route_tree(self, request, kind, repo_id, revision, path=""):
        commit = self._get_commit(self._get_repo(kind, repo_id, request.authorized), revision)
        folder, folders = path.strip("/"), _folders(commit.files)
        if folder and folder not in folders:
            raise HubError(404, f"Folder not found: {folder}", "EntryNotFound")
        prefix = f"{folder}/" if folder else ""
        paths = [p for p in sorted(set(commit.files) | folders) if p.startswith(prefix)]
        if request.query.get("recursive", ["false"])[0].lower() not in ("1", "true"):
            paths = [p for p in paths if "/" not in p[len(prefix) :]]
        return _json([_tree_entry(commit, p) for p in paths])

    def _route_paths_info(self, request, kind, repo_id, revision):
        commit = self._get_commit(self._get_repo(kind, repo_id, request.authorized), revision)
        known = set(commit.files) | _folders(commit.files)
        paths = [p.strip("/") for p in request.form().get("paths", [])]
        return _json([_tree_entry(commit, p) for p in paths if p in known])

    def _route_refs(self, request, kind, repo_id):
        repo = self._get_repo(kind, repo_id, request.authorized)
        branch = {"name": "main", "ref": "refs/heads/main", "targetCommit": repo.head.oid}
        return _json({"branches": [branch], "converts": [], "tags": []})

    def _route_preupload(self, request, kind, repo_id, revision):
        request.require_token()
        head = self._branch_head(request, self._get_repo(kind, repo_id), revision)
        # "regular" for every file: the client then sends the contents inline in the commit (no LFS / Xet upload).
        # The `oid` of a file already there lets the client skip unchanged files, as it does against the Hub.
        return _json({"files": [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
             "oid": git_blob_oid(head.files[f["path"]]) if f["path"] in head.files else None}
            for f in request.json()["files"]
        ]})  # fmt: skip

    def _route_commit(self, request, kind, repo_id, revision):
        request.require_token()
        repo = self._get_repo(kind, repo_id)
        self._branch_head(request, repo, revision)
        commit = _apply_commit(repo, request.body)
        url = f"{self._url(repo)}/commit/{commit.oid}"
        return _json({"commitUrl": url, "commitOid": commit.oid, "pullRequestUrl": None, "success": True})

    def _route_resolve(self, request, repo_id, revision, path, kind="models"):
        commit = self._get_commit(self._get_repo(kind, repo_id, request.authorized), revision)
        if path not in commit.files:  # the Hub names the commit even here; the client caches the miss under it
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        content = commit.files[path]
        headers = {"Content-Type": "application/octet-stream", "ETag": f'"{git_blob_oid(content)}"',
                   "X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}  # fmt: skip
        byte_range = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("Range", "").strip())
        if byte_range is None:
            return 200, headers, content
        start, end = int(byte_range[1]), min(int(byte_range[2] or len(content) - 1), len(content) - 1)
        if start >= len(content):
            return 416, {**headers, "Content-Range": f"bytes */{len(content)}"}, b""
        return 206, {**headers, "Content-Range": f"bytes {start}-{end}/{len(content)}"}, content[start : end + 1]


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub  # set on the per-server subclass
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries a Content-Length
    timeout = 60  # an idle keep-alive connection ends after a minute (or when the server closes)

    def setup(self):
        super().setup()
        with self.hub._lock:
            self.hub._connections.add(self.connection)

    def finish(self):
        with self.hub._lock:
            self.hub._connections.discard(self.connection)
        super().finish()

    def do_GET(self):
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, format, *args):
        logger.debug("fake Hub: " + format, *args)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
            body = b"".join(chunks)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        return body

    def _dispatch(self):
        hub, url = self.hub, urlsplit(self.path)
        authorized = self.headers.get("Authorization") == f"Bearer {hub.token}"
        request = _Request(self.command, url.path, parse_qs(url.query), self.headers, self._read_body(), authorized)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "authorization"}
        with hub._lock:
            hub.requests.append(
                RecordedRequest(self.command, unquote(url.path), request.query, headers, request.body, authorized)
            )
            try:
                status, out_headers, payload = hub.handle(request)
            except HubError as e:
                status, out_headers = e.status, {**e.headers, "Content-Type": "application/json"}
                out_headers["X-Error-Message"] = e.message
                if e.code:
                    out_headers["X-Error-Code"] = e.code
                payload = json.dumps({"error": e.message, **e.body}).encode()
            except Exception:
                # A bug in the fake itself. (huggingface_hub retries 5xx a few times before it gives up.)
                hub.errors.append(traceback.format_exc())
                logger.error("fake Hub failed on %s %s:\n%s", self.command, self.path, hub.errors[-1])
                status, out_headers, payload = 500, {"X-Error-Message": "fake Hub internal error"}, b""
        self.send_response(status)
        for key, value in out_headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))  # for HEAD too: the size GET would send
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


def _json(obj) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(obj).encode()


def _apply_commit(repo: _Repo, ndjson: bytes) -> _Commit:
    """Apply an ndjson commit payload (a `header` line, then `file` / `deletedFile` / `deletedFolder` lines)."""
    lines = [json.loads(line) for line in ndjson.splitlines() if line.strip()]
    if not lines or lines[0].get("key") != "header":
        raise HubError(400, "A commit payload must start with a 'header' line")
    header = lines[0]["value"]
    if header.get("parentCommit") not in (None, repo.head.oid):
        raise HubError(412, f"Parent commit {header['parentCommit']} is not the head of main ({repo.head.oid})")
    files = dict(repo.head.files)
    for line in lines[1:]:
        key, value = line.get("key"), line.get("value", {})
        path = value.get("path", "")
        if key == "file" and value.get("encoding") == "base64":
            files[path] = base64.b64decode(value["content"])
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        elif key == "deletedFolder":
            doomed = [p for p in files if p.startswith(path.rstrip("/") + "/")]
            if not doomed:
                raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
            for p in doomed:
                del files[p]
        else:  # "lfsFile" cannot come: preupload answers "regular" for every file
            raise HubError(
                400, f"The fake Hub does not support the commit operation {key!r} ({value.get('encoding')})"
            )
    return repo.add_commit(header.get("summary") or "", header.get("description") or "", files)


def _folders(paths) -> set[str]:
    return {parent.as_posix() for p in paths for parent in PurePosixPath(p).parents if parent.as_posix() != "."}


def _tree_entry(commit: _Commit, path: str) -> dict:
    if path in commit.files:
        content = commit.files[path]
        return {"type": "file", "path": path, "size": len(content), "oid": git_blob_oid(content)}
    listing = "".join(f"{p}\0{git_blob_oid(c)}\n" for p, c in sorted(commit.files.items()) if p.startswith(path + "/"))
    return {"type": "directory", "path": path, "size": 0, "oid": hashlib.sha1(listing.encode()).hexdigest()}


def _check_repo_type(repo_type: str) -> str:
    if repo_type not in REPO_TYPES:
        raise ValueError(f"repo_type must be one of {REPO_TYPES}, got {repo_type!r}")
    return repo_type


# -------------------------------------------------------------------------------- pointing the libraries at it
# Names under which huggingface_hub, and the libraries built on it, keep module-level copies of the Hub settings they
# read at import (`from huggingface_hub.constants import HF_HUB_OFFLINE` in diffusers.utils.hub_utils,
# `HUGGINGFACE_CO_RESOLVE_ENDPOINT = os.environ.get("HF_ENDPOINT", ...)` in diffusers.utils.constants,
# `HF_ENDPOINT` / `HUB_DATASETS_URL` / `HF_HUB_OFFLINE` in datasets.config, ...).
_OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_ENDPOINT_NAMES = ("ENDPOINT", "HF_ENDPOINT", "HUGGINGFACE_CO_RESOLVE_ENDPOINT", "HUGGINGFACE_CO_URL_TEMPLATE",
                   "HUB_DATASETS_URL")  # fmt: skip
_LIBRARIES = (
    "huggingface_hub",
    "transformers",
    "diffusers",
    "datasets",
    "accelerate",
    "evaluate",
    "peft",
    "glotok_hf",
)


def _point_libraries_at(hub: FakeHub, mp: pytest.MonkeyPatch, cache_dir: Path) -> list[str]:
    """Redirect every already-imported copy of the Hub endpoint / offline flag / long-lived `HfApi` client to `hub`;
    return the patched `module.NAME`s. `mp` undoes it all."""
    from huggingface_hub import HfApi, constants

    real_endpoint = constants.ENDPOINT
    transformers_hub = sys.modules.get("transformers.utils.hub")
    if transformers_hub is not None and hasattr(transformers_hub, "_hf_api"):
        # transformers builds its shared HfApi lazily; one built now (against the fake) is dropped afterwards.
        mp.setattr(transformers_hub, "_hf_api", None)
    patched = []
    for name, module in list(sys.modules.items()):
        if module is None or name.partition(".")[0] not in _LIBRARIES:
            continue
        namespace = vars(module)  # not getattr: that would make lazy modules import things
        for attr in _OFFLINE_FLAGS:
            if namespace.get(attr) is True:
                mp.setattr(module, attr, False)
                patched.append(f"{name}.{attr}")
        for attr in _ENDPOINT_NAMES:
            value = namespace.get(attr)
            if isinstance(value, str) and value.startswith(real_endpoint):
                mp.setattr(module, attr, hub.endpoint + value[len(real_endpoint) :])
                patched.append(f"{name}.{attr}")
        # Clients that captured the endpoint when they were built, e.g. huggingface_hub.hf_api.api, whose bound
        # methods are `huggingface_hub.create_repo`, `upload_folder`, ... (which diffusers imports by name).
        for attr, value in list(namespace.items()):
            if isinstance(value, HfApi) and value.endpoint == real_endpoint:
                mp.setattr(value, "endpoint", hub.endpoint)
                patched.append(f"{name}.{attr}.endpoint")
    mp.setattr(constants, "HF_URL_HOSTS", constants.HF_URL_HOSTS | {"127.0.0.1"})
    mp.setattr(constants, "HF_HUB_CACHE", str(cache_dir / "hub"))
    if (datasets_config := sys.modules.get("datasets.config")) is not None:
        mp.setattr(datasets_config, "HF_DATASETS_CACHE", cache_dir / "datasets")  # prepared Arrow tables
    mp.setenv("HF_TOKEN", hub.token)
    for name in ("HF_OIDC_RESOURCE", "HUGGING_FACE_HUB_TOKEN"):
        mp.delenv(name, raising=False)
    return patched


@contextlib.contextmanager
def serve_fake_hub(work_dir: str | os.PathLike, token: str = FAKE_TOKEN, user: str = FAKE_USER) -> Iterator[FakeHub]:
    """Run a `FakeHub` and point the in-process Hugging Face libraries at it until the block ends.

    Inside the block huggingface_hub (and the copies of its settings kept by transformers, diffusers, datasets, ...)
    use the fake endpoint with offline mode off, `HF_TOKEN` is the fake token, and downloads go to `work_dir/hub`
    (datasets' Arrow cache to `work_dir/datasets`). Afterwards all of it is restored.

    Args:
        work_dir (`str` or `os.PathLike`):
            An empty folder for this run's download cache and the child `HF_HOME`s made by `FakeHub.env`.
        token (`str`, *optional*, defaults to `FAKE_TOKEN`):
            The fake token.
        user (`str`, *optional*, defaults to `"tester"`):
            The fake token's user name.

    Yields the running `FakeHub`; its `patched` lists the module attributes that were redirected.
    """
    from huggingface_hub.utils import _hf_uris

    with FakeHub(token=token, user=user) as hub, pytest.MonkeyPatch.context() as mp:
        hub.work_dir = Path(work_dir)
        hub.patched = _point_libraries_at(hub, mp, hub.work_dir)
        _hf_uris.parse_hf_uri.cache_clear()  # memoises URL parsing against the endpoint of the moment
        try:
            yield hub
        finally:
            _hf_uris.parse_hf_uri.cache_clear()


@pytest.fixture
def fake_hub(tmp_path_factory) -> Iterator[FakeHub]:
    """A running `FakeHub` that the in-process libraries talk to for the duration of the test (see
    `serve_fake_hub`); use `fake_hub.env(os.environ)` for child processes."""
    with serve_fake_hub(tmp_path_factory.mktemp("fake_hub")) as hub:
        yield hub
