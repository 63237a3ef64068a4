# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""A small Hugging Face Hub-compatible HTTP server for tests (stdlib only, bound to 127.0.0.1).

It implements the part of the Hub's HTTP API that `huggingface_hub` (2.4) uses to create a repo, upload files with
regular (non-LFS, non-Xet) commits and download them again:

    POST /api/repos/create                                   -> {"url"}; 409 when the repo exists
    POST /api/validate-yaml                                  -> {"errors": [], "warnings": []}
    GET  /api/whoami-v2                                      -> {"name", "type"}
    POST /api/{type}s/{repo}/preupload/{rev}                 -> every file "regular", with the remote git oid
    POST /api/{type}s/{repo}/commit/{rev}                    NDJSON: header, file (base64), deletedFile, deletedFolder
    POST /api/{type}s/{repo}/branch/{branch}                 create a branch (409 when it exists)
    GET  /api/{type}s/{repo}[/revision/{rev}]                repo info with "sha" and "siblings"
    GET  /api/{type}s/{repo}/tree/{rev}[/{path}]             tree listing (?recursive=true)
    GET  /api/{type}s/{repo}/refs                            branches
    HEAD/GET /[{type}s/]{repo}/resolve/{rev}/{path}          file bytes with X-Repo-Commit, ETag, Content-Length

Misses answer like the Hub: 404 (401 for a private repo without a valid token) with `X-Error-Code` set to
RepoNotFound, RevisionNotFound or EntryNotFound. Every write needs `Authorization: Bearer <token>` with the
server's token. Repos live in memory.

For assertions, the server keeps `requests` (method, path, status, whether/what credentials came) and `uploads`
(every committed file's bytes). For failure tests: `fail_commits` answers 500 to that many commit calls (or to all
of them with `True`), and `stop()` / `start()` stop and resume accepting connections on the same port.

    with HubServer(token="hf_test_token_abc") as hub:
        os.environ["HF_ENDPOINT"] = hub.url
        ...
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

_GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_oid(data: bytes) -> str:
    """The git blob sha1 of `data`: what the Hub answers as `oid` and as the ETag of a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    files: dict[str, bytes]
    date: float


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # branch name -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)


@dataclass
class LoggedRequest:
    method: str
    path: str  # path and query, as sent
    status: int
    authorization: str | None  # the raw header value ("Bearer hf_...") or None
    body: bytes = b""

    @property
    def bearer(self) -> str | None:
        if self.authorization and self.authorization.startswith("Bearer "):
            return self.authorization[len("Bearer "):]
        return None


@dataclass
class Upload:
    repo_id: str
    revision: str
    path: str
    content: bytes


class HubError(Exception):
    def __init__(self, status: int, message: str, error_code: str | None = None, headers=None):
        super().__init__(message)
        self.status, self.message, self.error_code, self.headers = status, message, error_code, headers or {}


class HubState:
    """The repos and the logs; every access holds `lock`."""

    def __init__(self, token: str, user: str):
        self.token, self.user = token, user
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[LoggedRequest] = []
        self.uploads: list[Upload] = []
        self.fail_commits = 0  # int: answer 500 to that many commit calls; True: to all of them
        self.fail_status = 500  # the answer to a failed commit (5xx are retried by clients, 4xx are not)
        self._counter = 0

    # -- repos ----------------------------------------------------------------------------------------------------
    def new_commit(self, repo: Repo, parent: str | None, message: str, files: dict[str, bytes]) -> Commit:
        self._counter += 1
        digest = hashlib.sha1()
        digest.update(f"{repo.repo_id}\0{parent}\0{message}\0{self._counter}\0{time.time()}".encode())
        for path in sorted(files):
            digest.update(f"{path}\0{git_blob_oid(files[path])}\0".encode())
        commit = Commit(digest.hexdigest(), parent, message, dict(files), time.time())
        repo.commits[commit.oid] = commit
        return commit

    def create_repo(self, repo_id: str, repo_type: str, private: bool) -> Repo:
        key = (repo_type, repo_id)
        if key in self.repos:
            raise HubError(409, f"You already created this {repo_type} repo: {repo_id}")
        repo = Repo(repo_id, repo_type, private)
        commit = self.new_commit(repo, None, "initial commit", {".gitattributes": _GITATTRIBUTES})
        repo.branches["main"] = commit.oid
        self.repos[key] = repo
        return repo

    def get_repo(self, repo_type: str, repo_id: str, authorized: bool) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not authorized):
            status = 401 if not authorized else 404
            raise HubError(status, "Repository Not Found", "RepoNotFound")
        return repo

    def resolve(self, repo: Repo, revision: str) -> Commit:
        if revision in repo.branches:
            return repo.commits[repo.branches[revision]]
        if revision in repo.commits:
            return repo.commits[revision]
        matches = [oid for oid in repo.commits if len(revision) >= 7 and oid.startswith(revision)]
        if len(matches) == 1:
            return repo.commits[matches[0]]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: stop() then refuses every new call at once
    server_version = "FakeHub/1.0"
    hub: HubServer  # set on the subclass

    # -- plumbing ---------------------------------------------------------------------------------------------------
    def log_message(self, format, *args):  # keep test output clean (and the Authorization header never logged)
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _log(self, status: int) -> None:
        """Log this request once. Called before the answer goes out: a client that has read the answer must find
        its request in `requests` (logged after the write, it would race with tests that count requests)."""
        if not self._logged:
            self._logged = True
            with self.hub.state.lock:
                self.hub.state.requests.append(
                    LoggedRequest(self._method, self.path, status, self.headers.get("Authorization"), self._body)
                )

    def _send(self, status: int, body: bytes = b"", headers=None, content_type="application/json", head=False):
        self._log(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-Id", f"fakehub-{id(self):x}")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if body and not head:
            self.wfile.write(body)
        self._status = status

    def _json(self, status: int, payload, headers=None, head=False):
        self._send(status, json.dumps(payload).encode(), headers, head=head)

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization") or ""
        return header == f"Bearer {self.hub.state.token}"

    def _require_write(self):
        if not self.headers.get("Authorization"):
            raise HubError(401, "You must be authenticated to do this (no Authorization header).")
        if not self._authorized():
            raise HubError(401, "Invalid credentials in Authorization header")

    def _dispatch(self, method: str):
        self._status = 0
        self._method, self._body, self._logged = method, b"", False
        try:
            self._body = body = self._read_body() if method in ("POST", "PUT", "DELETE") else b""
            self._route(method, body)
        except HubError as error:
            headers = dict(error.headers)
            if error.error_code:
                headers["X-Error-Code"] = error.error_code
            headers["X-Error-Message"] = error.message
            self._json(error.status, {"error": error.message}, headers, head=(method == "HEAD"))
        except (BrokenPipeError, ConnectionResetError):
            self._status = self._status or 499
        except Exception as error:  # a bug in the fake: answer 500 so the test sees it
            self._json(500, {"error": f"fake hub internal error: {type(error).__name__}: {error}"})
        finally:
            self._log(self._status)  # a request that got no answer (the client went away) is logged here

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # -- routing ----------------------------------------------------------------------------------------------------
    def _route(self, method: str, body: bytes):
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        raw = [segment for segment in split.path.split("/") if segment != ""]
        parts = [unquote(segment) for segment in raw]  # revisions come quoted ("refs%2Fpr%2F1")

        if parts[:1] == ["api"]:
            return self._route_api(method, parts[1:], query, body)
        # /{repo}/resolve/{rev}/{path} or /{type}s/{repo}/resolve/{rev}/{path}
        repo_type = "model"
        if parts and parts[0] in ("datasets", "spaces"):
            repo_type, parts = parts[0][:-1], parts[1:]
        if "resolve" in parts and method in ("GET", "HEAD"):
            index = parts.index("resolve")
            repo_id, rest = "/".join(parts[:index]), parts[index + 1:]
            if rest:
                return self._resolve(method, repo_type, repo_id, rest[0], "/".join(rest[1:]))
        raise HubError(404, f"Not found: {method} {split.path}")

    def _route_api(self, method: str, parts: list[str], query: dict[str, str], body: bytes):
        state = self.hub.state
        if parts == ["repos", "create"] and method == "POST":
            self._require_write()
            payload = json.loads(body or b"{}")
            repo_type = payload.get("type") or "model"
            namespace = payload.get("organization") or state.user
            repo_id = f"{namespace}/{payload['name']}"
            private = payload.get("private")
            if private is None:
                private = payload.get("visibility") == "private"
            url = f"{self.hub.url}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"
            with state.lock:
                try:
                    state.create_repo(repo_id, repo_type, bool(private))
                except HubError as error:
                    error.headers = {}
                    self._json(409, {"error": error.message, "url": url})
                    return
            return self._json(200, {"url": url, "name": repo_id, "id": repo_id})
        if parts == ["validate-yaml"] and method == "POST":
            return self._validate_yaml(json.loads(body or b"{}"))
        if parts == ["whoami-v2"] and method == "GET":
            if not self._authorized():
                raise HubError(401, "Invalid credentials in Authorization header")
            return self._json(200, {"type": "user", "name": state.user, "fullname": state.user, "orgs": [],
                                    "auth": {"type": "access_token", "accessToken": {"role": "write"}}})
        if len(parts) >= 3 and parts[0] in ("models", "datasets", "spaces"):
            repo_type = parts[0][:-1]
            repo_id, rest = "/".join(parts[1:3]), parts[3:]  # repo ids are "namespace/name"
            return self._route_repo(method, repo_type, repo_id, rest, query, body)
        raise HubError(404, f"Not found: {method} /api/{'/'.join(parts)}")

    def _route_repo(self, method, repo_type, repo_id, rest, query, body):
        state = self.hub.state
        authorized = self._authorized()
        with state.lock:
            repo = state.get_repo(repo_type, repo_id, authorized)
        action = rest[0] if rest else None
        if method == "GET" and action is None:
            return self._repo_info(repo, "main")
        if method == "GET" and action == "revision" and len(rest) >= 2:
            return self._repo_info(repo, "/".join(rest[1:]))
        if method == "GET" and action == "tree" and len(rest) >= 2:
            return self._tree(repo, rest[1], "/".join(rest[2:]), query)
        if method == "GET" and action == "refs":
            with state.lock:
                branches = [
                    {"name": n, "ref": f"refs/heads/{n}", "targetCommit": oid} for n, oid in repo.branches.items()
                ]
            return self._json(200, {"branches": branches, "tags": [], "converts": []})
        if method == "POST" and action == "preupload" and len(rest) >= 2:
            self._require_write()
            return self._preupload(repo, "/".join(rest[1:]), json.loads(body or b"{}"))
        if method == "POST" and action == "commit" and len(rest) >= 2:
            self._require_write()
            return self._commit(repo, "/".join(rest[1:]), body, query)
        if method == "POST" and action == "branch" and len(rest) >= 2:
            self._require_write()
            return self._create_branch(repo, "/".join(rest[1:]), json.loads(body or b"{}"))
        raise HubError(404, f"Not found: {method} {self.path}")

    # -- endpoints --------------------------------------------------------------------------------------------------
    def _validate_yaml(self, payload):
        content = payload.get("content") or ""
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.DOTALL)
        if match:
            try:
                import yaml

                metadata = yaml.safe_load(match.group(1))
                if metadata is not None and not isinstance(metadata, dict):
                    raise ValueError("metadata must be a mapping")
            except Exception as error:
                return self._json(400, {"error": f"Invalid metadata in README.md: {error}"})
        return self._json(200, {"errors": [], "warnings": []})

    def _repo_info(self, repo: Repo, revision: str):
        state = self.hub.state
        with state.lock:
            commit = state.resolve(repo, revision)
            files = sorted(commit.files)
            card = _card_metadata(commit.files.get("README.md"))
        info = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.oid,
            "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(commit.date)),
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": list(card.get("tags") or []) if isinstance(card.get("tags"), list) else [],
            "siblings": [{"rfilename": path} for path in files],
        }
        if card:
            info["cardData"] = card
            for key in ("library_name", "pipeline_tag"):
                if key in card:
                    info[key] = card[key]
        return self._json(200, info)

    def _tree(self, repo: Repo, revision: str, path: str, query):
        state = self.hub.state
        recursive = query.get("recursive", "false").lower() in ("1", "true")
        with state.lock:
            commit = state.resolve(repo, revision)
            files = dict(commit.files)
        prefix = path.strip("/")
        if prefix and prefix in files:
            raise HubError(400, f"{prefix} is a file, not a folder")
        if prefix and not any(p.startswith(prefix + "/") for p in files):
            raise HubError(404, f"{prefix} does not exist on {revision}", "EntryNotFound")
        entries, folders = [], set()
        for file_path in sorted(files):
            if prefix and not file_path.startswith(prefix + "/"):
                continue
            relative = file_path[len(prefix) + 1:] if prefix else file_path
            pieces = relative.split("/")
            for depth in range(1, len(pieces)):
                folder = "/".join(([prefix] if prefix else []) + pieces[:depth])
                if folder not in folders and (recursive or depth == 1):
                    folders.add(folder)
                    entries.append({"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(),
                                    "size": 0, "path": folder})
            if recursive or len(pieces) == 1:
                data = files[file_path]
                entries.append({"type": "file", "oid": git_blob_oid(data), "size": len(data), "path": file_path})
        return self._json(200, entries)

    def _preupload(self, repo: Repo, revision: str, payload):
        state = self.hub.state
        with state.lock:
            if revision not in repo.branches:
                state.resolve(repo, revision)  # raises RevisionNotFound for an unknown revision
                raise HubError(400, f"Cannot upload to {revision}: not a branch", "RevisionNotFound")
            current = repo.commits[repo.branches[revision]].files
            answer = []
            for entry in payload.get("files", []):
                existing = current.get(entry["path"])
                answer.append({"path": entry["path"], "uploadMode": "regular", "shouldIgnore": False,
                               "oid": git_blob_oid(existing) if existing is not None else None})
        return self._json(200, {"files": answer, "commitOid": repo.branches[revision]})

    def _commit(self, repo: Repo, revision: str, body: bytes, query):
        state = self.hub.state
        with state.lock:
            if state.fail_commits is True or (state.fail_commits and state.fail_commits > 0):
                if state.fail_commits is not True:
                    state.fail_commits -= 1
                if state.fail_status >= 500:
                    raise HubError(state.fail_status, "Internal Error - We're working hard to fix this as soon as"
                                   " possible!")
                raise HubError(state.fail_status, "Forbidden: this repository is read-only")
        if query.get("create_pr"):
            raise HubError(400, "This fake Hub does not open pull requests")
        header, additions, deletions, folder_deletions = {}, {}, [], []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value") or {}
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, f"Unsupported encoding {value.get('encoding')!r}")
                additions[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                deletions.append(value["path"])
            elif key == "deletedFolder":
                folder_deletions.append(value["path"].rstrip("/"))
            elif key in ("lfsFile", "xetFile"):
                raise HubError(400, f"This fake Hub only accepts regular files, got {key} for {value.get('path')}")
            else:
                raise HubError(400, f"Unknown commit operation {key!r}")
        if not header.get("summary"):
            raise HubError(400, "A commit needs a summary")
        with state.lock:
            if revision not in repo.branches:
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            head = repo.commits[repo.branches[revision]]
            parent = header.get("parentCommit")
            if parent and not head.oid.startswith(parent):
                raise HubError(412, f"A commit has happened since. Please refresh and try again ({parent}).")
            files = dict(head.files)
            for path in deletions:
                if path not in files:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del files[path]
            for folder in folder_deletions:
                for path in [p for p in files if p.startswith(folder + "/")]:
                    del files[path]
            files.update(additions)
            message = header["summary"] + ("\n\n" + header["description"] if header.get("description") else "")
            commit = state.new_commit(repo, head.oid, message, files)
            repo.branches[revision] = commit.oid
            for path, content in additions.items():
                state.uploads.append(Upload(repo.repo_id, revision, path, content))
        prefix = "" if repo.repo_type == "model" else repo.repo_type + "s/"
        return self._json(200, {"success": True, "commitOid": commit.oid,
                                "commitUrl": f"{self.hub.url}/{prefix}{repo.repo_id}/commit/{commit.oid}",
                                "pullRequestUrl": None})

    def _create_branch(self, repo: Repo, branch: str, payload):
        state = self.hub.state
        with state.lock:
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            start = payload.get("startingPoint") or "main"
            repo.branches[branch] = state.resolve(repo, start).oid
        return self._json(200, {})

    def _resolve(self, method: str, repo_type: str, repo_id: str, revision: str, path: str):
        state = self.hub.state
        with state.lock:
            repo = state.get_repo(repo_type, repo_id, self._authorized())
            commit = state.resolve(repo, revision)
            data = commit.files.get(path)
        if data is None:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{git_blob_oid(data)}"',
            "Accept-Ranges": "bytes",
            "Last-Modified": email.utils.formatdate(commit.date, usegmt=True),
        }
        return self._send(200, data, headers, content_type="application/octet-stream", head=(method == "HEAD"))


def _card_metadata(readme: bytes | None) -> dict:
    if not readme:
        return {}
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", readme.decode("utf-8", "replace"), re.DOTALL)
    if not match:
        return {}
    try:
        import yaml

        data = yaml.safe_load(match.group(1))
        return data if isinstance(data, dict) else {}
    except Exception:
        return {}


class HubServer:
    """A threaded fake Hub on 127.0.0.1 (a free port unless one is given); a context manager.

    Args:
        token: the only token the server accepts (as `Authorization: Bearer <token>`).
        user: the namespace of the token's owner (used for repo ids without a namespace, and by whoami).
    """

    def __init__(self, token: str = "hf_test_token_0123456789abcdef", user: str = "user", port: int = 0):
        self.state = HubState(token, user)
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> HubServer:
        """Listen (again) on 127.0.0.1; after `stop()`, on the same port."""
        if self._server is not None:
            return self
        handler = type("Handler", (_Handler,), {"hub": self})
        server = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        server.daemon_threads = True
        self._server, self._port = server, server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-hub-{self._port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting connections: afterwards every call to `url` is refused (the repos are kept)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self._thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- failure switches -------------------------------------------------------------------------------------------
    @property
    def fail_commits(self):
        return self.state.fail_commits

    @fail_commits.setter
    def fail_commits(self, value) -> None:
        """An int: answer 500 to that many commit calls; True: to every commit call; 0/False: accept commits."""
        with self.state.lock:
            self.state.fail_commits = value

    # -- inspection -------------------------------------------------------------------------------------------------
    @property
    def requests(self) -> list[LoggedRequest]:
        with self.state.lock:
            return list(self.state.requests)

    @property
    def uploads(self) -> list[Upload]:
        with self.state.lock:
            return list(self.state.uploads)

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """The files of `repo_id` at `revision` (path -> bytes)."""
        with self.state.lock:
            repo = self.state.repos[(repo_type, repo_id)]
            return dict(self.state.resolve(repo, revision).files)

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo | None:
        with self.state.lock:
            return self.state.repos.get((repo_type, repo_id))

    def commits(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> list[Commit]:
        """The history of `revision`, newest first."""
        with self.state.lock:
            repo = self.state.repos[(repo_type, repo_id)]
            commit, history = self.state.resolve(repo, revision), []
            while commit is not None:
                history.append(commit)
                commit = repo.commits.get(commit.parent) if commit.parent else None
            return history


def port_is_closed(port: int) -> bool:
    """True when nothing accepts connections on 127.0.0.1:`port`."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) != 0
