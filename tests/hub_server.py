#!/usr/bin/env python
"""Loopback Hugging Face Hub server for tests: speaks enough of the Hub HTTP API for huggingface_hub 2.4 and the
Trainer's push_to_hub, and stores every repo as a real bare git repository whose large files are git-lfs objects.

Standard library only (plus the `git` CLI). Run it by hand with `python tests/hub_server.py --root DIR --port N`.

Clients must import huggingface_hub with HF_ENDPOINT=<server.url> and HF_HUB_DISABLE_XET=1 in the environment:
both are read at import time, and with hf-xet installed the client otherwise asks for a Xet write token first (this
server answers that with a 501 that says so).

Storage (under `root`): `<type>s/<namespace>/<name>.git` is a bare git repository (`refs/heads/main` always exists: a
new repo gets the Hub's "initial commit" holding a `.gitattributes`); LFS objects live in its `lfs/objects/aa/bb/<oid>`,
the layout git-lfs itself uses for a bare repository, so `git clone file://<repo>` followed by `git lfs pull` (git-lfs'
standalone file transfer) fetches them without this server. `hub.json` next to them holds the Hub-only metadata.

Upload mode (preupload), mirroring the Hub: "regular" for empty files; "lfs" for files over `lfs_threshold` (10 MiB),
for paths the repo's root `.gitattributes` tracks with `filter=lfs` (the Hub's default list plus common image/video/
audio types) and for binary samples (a NUL byte or invalid UTF-8 in the first 512 bytes); "regular" otherwise.
A commit keeps the repo consistent whatever the client sends: inline content that must be LFS is stored as an LFS
object, and an LFS path that `.gitattributes` does not track yet is appended to it.

Auth: any bearer token is accepted (and logged); writes need one, and so do reads of private repos (401). LFS object
URLs are signed instead, like the Hub's presigned storage URLs. Not implemented: pull requests (create_pr), multipart
LFS uploads, Xet, gated repos, nested .gitattributes files, discussions, likes, Spaces runtime and search endpoints.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

LFS_THRESHOLD = 10 * 1024 * 1024
LFS_SPEC = "https://git-lfs.github.com/spec/v1"
ZERO_OID = "0" * 40
GIT_TIMEOUT = 120
MAX_JSON_BODY = 1 << 30
USER_EMAIL = "hub-server@localhost"
SERVER_IDENTITY = "hf_vtrain test hub"

_LFS_EXTENSIONS = (
    "7z arrow bin bz2 ckpt ftz gz h5 joblib mlmodel model msgpack npy npz onnx ot parquet pb pickle pkl pt pth rar "
    "safetensors tflite tgz wasm xz zip zst tar "
    "png jpg jpeg gif webp bmp tif tiff mp4 avi mkv mov webm flv mpg mpeg wav mp3 flac ogg"
).split()
DEFAULT_GITATTRIBUTES = (
    "".join(f"*.{ext} filter=lfs diff=lfs merge=lfs -text\n" for ext in _LFS_EXTENSIONS)
    + "*.lfs.* filter=lfs diff=lfs merge=lfs -text\n"
    + "*.tar.* filter=lfs diff=lfs merge=lfs -text\n"
    + "saved_model/**/* filter=lfs diff=lfs merge=lfs -text\n"
    + "*tfevents* filter=lfs diff=lfs merge=lfs -text\n"
)

API_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
ENDPOINTS = (
    "whoami", "agent_harnesses", "create", "delete", "validate_yaml", "repo_info", "preupload", "commit", "tree",
    "paths_info", "refs", "commits", "branch", "tag", "xet", "lfs_batch", "lfs_upload", "lfs_verify", "lfs_download",
    "resolve", "unknown",
)  # fmt: skip  ("control": POST /_hub/inject and /_hub/clear, never failed by an injection)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_OID_RE = re.compile(r"^[0-9a-f]{64}$")
_SHA1_RE = re.compile(r"^[0-9a-f]{40}$")
_LINGER_RESET = struct.pack("ii", 1, 0)  # close with a TCP reset: the client sees the connection die at once


class HubError(Exception):
    """An error answered to the client as JSON `{"error": message}` with `X-Error-Code` when given."""

    def __init__(self, status: int, message: str, code: str | None = None, extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}


class GitError(RuntimeError):
    pass


def _now() -> str:
    return _iso(datetime.datetime.now(datetime.timezone.utc).timestamp())


def _iso(timestamp: float | str) -> str:
    """The Hub's date format (huggingface_hub parses exactly `%Y-%m-%dT%H:%M:%S.%fZ`)."""
    when = datetime.datetime.fromtimestamp(float(timestamp), datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _git_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_TERMINAL_PROMPT="0",
        LC_ALL="C",
        GIT_AUTHOR_NAME=SERVER_IDENTITY,
        GIT_AUTHOR_EMAIL=USER_EMAIL,
        GIT_COMMITTER_NAME=SERVER_IDENTITY,
        GIT_COMMITTER_EMAIL=USER_EMAIL,
    )
    env.update(extra or {})
    return env


def git(git_dir: Path, *args: str, input: bytes | None = None, env: dict | None = None, check: bool = True) -> bytes:
    """Runs `git --git-dir=<git_dir> args...` and returns stdout; raises GitError on failure."""
    proc = subprocess.run(
        ["git", f"--git-dir={git_dir}", *args],
        input=input,
        capture_output=True,
        env=_git_env(env),
        timeout=GIT_TIMEOUT,
    )
    if check and proc.returncode != 0:
        raise GitError(f"git {' '.join(args)} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def lfs_pointer(oid: str, size: int) -> bytes:
    return f"version {LFS_SPEC}\noid sha256:{oid}\nsize {size}\n".encode()


def parse_lfs_pointer(data: bytes) -> tuple[str, int] | None:
    """(oid, size) when `data` is a git-lfs pointer file, else None."""
    if len(data) > 1024 or not data.startswith(b"version "):
        return None
    try:
        fields = dict(line.split(" ", 1) for line in data.decode().splitlines() if line)
    except (UnicodeDecodeError, ValueError):
        return None
    oid = fields.get("oid", "")
    if not fields.get("version", "").startswith("https://git-lfs.github.com/spec/") or not oid.startswith("sha256:"):
        return None
    try:
        return oid[len("sha256:") :], int(fields["size"])
    except (KeyError, ValueError):
        return None


# --- gitattributes / gitignore matching (the subset of git's wildmatch that Hub repos use) ---


def _glob_to_regex(pattern: str) -> str:
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i) and (i == 0 or pattern[i - 1] == "/"):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == n:
            out.append("/.*")
            i += 3
        elif c == "*":
            while i < n and pattern[i] == "*":
                i += 1
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif c == "[":
            j = pattern.find("]", i + 2 if pattern.startswith("[!", i) or pattern.startswith("[^", i) else i + 1)
            if pattern.startswith("[[:space:]]", i):
                out.append(r"\s")
                i += len("[[:space:]]")
            elif j == -1:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1 : j]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def _pattern_matches(pattern: str, path: str) -> bool:
    anchored = "/" in pattern.rstrip("/")
    regex = _glob_to_regex(pattern.lstrip("/"))
    target = path if anchored else path.rsplit("/", 1)[-1]
    return re.fullmatch(regex, target, flags=re.DOTALL) is not None


def lfs_tracked(gitattributes: str, path: str) -> bool:
    """Whether the root .gitattributes text gives `path` the `filter=lfs` attribute (last matching line wins)."""
    state = False
    for line in gitattributes.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#") or parts[0].startswith('"'):
            continue
        filters = [a for a in parts[1:] if a in ("-filter", "!filter", "filter") or a.startswith("filter=")]
        if filters and _pattern_matches(parts[0], path):
            state = filters[-1] == "filter=lfs"
    return state


def gitattributes_line(path: str) -> str:
    """A .gitattributes line tracking exactly `path` with LFS (root files anchored with a leading slash)."""
    escaped = re.sub(r"([*?\[\]\\])", r"\\\1", path).replace(" ", "[[:space:]]")
    if "/" not in path:
        escaped = "/" + escaped
    return f"{escaped} filter=lfs diff=lfs merge=lfs -text\n"


def gitignored(gitignore: str, path: str) -> bool:
    ignored = False
    parts = path.split("/")
    for line in gitignore.splitlines():
        line = line.rstrip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        dir_only = pattern.endswith("/")
        pattern = pattern.rstrip("/")
        candidates = ["/".join(parts[:k]) for k in range(1, len(parts))] + ([] if dir_only else [path])
        if any(_pattern_matches(pattern, c) for c in candidates):
            ignored = not negate
    return ignored


def looks_binary(sample: bytes) -> bool:
    if b"\x00" in sample:
        return True
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as err:
        return err.start < len(sample) - 3  # a multi-byte character cut by the 512-byte sample is still text
    return False


# --- HTTP plumbing ---


class _Body:
    """The request body, read at most once, from Content-Length or chunked transfer encoding."""

    def __init__(self, rfile, headers):
        self.rfile = rfile
        self.chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        self.remaining = 0 if self.chunked else int(headers.get("Content-Length") or 0)
        self.chunk_left = 0
        self.done = not self.chunked and self.remaining == 0

    def read(self, n: int = 1 << 20) -> bytes:
        if self.done:
            return b""
        if not self.chunked:
            data = self.rfile.read(min(n, self.remaining))
            if not data:
                raise HubError(400, "request body ended early")
            self.remaining -= len(data)
            self.done = self.remaining == 0
            return data
        if self.chunk_left == 0:
            size_line = self.rfile.readline(1024)
            try:
                self.chunk_left = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                raise HubError(400, "bad chunked encoding") from None
            if self.chunk_left == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                self.done = True
                return b""
        data = self.rfile.read(min(n, self.chunk_left))
        if not data:
            raise HubError(400, "request body ended early")
        self.chunk_left -= len(data)
        if self.chunk_left == 0:
            self.rfile.readline(1024)
        return data

    def read_all(self, limit: int = MAX_JSON_BODY) -> bytes:
        parts, total = [], 0
        while chunk := self.read():
            total += len(chunk)
            if total > limit:
                raise HubError(413, f"request body over {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def json(self):
        try:
            return json.loads(self.read_all() or b"{}")
        except json.JSONDecodeError as err:
            raise HubError(400, f"invalid JSON body: {err}") from None

    def drain(self, limit: int = 64 << 20) -> bool:
        """Reads and drops the rest of the body; False when the connection cannot be reused."""
        total = 0
        try:
            while chunk := self.read():
                total += len(chunk)
                if total > limit:
                    return False
        except (HubError, OSError):
            return False
        return True


class _Request:
    def __init__(self, handler: "_Handler", method: str, path: str, query: dict, token: str | None, body: _Body):
        self.handler, self.method, self.path, self.query, self.token, self.body = (
            handler, method, path, query, token, body
        )  # fmt: skip

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def flag(self, name: str) -> bool:
        return (self.arg(name, "") or "").lower() in ("1", "true", "yes")


class _Response:
    def __init__(self, status: int = 200, body=b"", headers: dict | None = None, content_type: str | None = None):
        self.status, self.headers = status, dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            content_type = content_type or "application/json"
        self.body = body  # bytes, or ("file", path, start, length)
        if content_type:
            self.headers.setdefault("Content-Type", content_type)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hf-vtrain-test-hub/1.0"
    timeout = 30.0  # replaced per server: every socket read times out

    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr access log
        pass

    def do_GET(self):
        self._handle("GET")

    def do_HEAD(self):
        self._handle("HEAD")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_DELETE(self):
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        hub: HubServer = self.server.hub  # type: ignore[attr-defined]
        if not hub.reachable:
            self._drop()
            return
        url = urlsplit(self.path)
        auth = self.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        try:
            body = _Body(self.rfile, self.headers)
        except ValueError:
            self._send(method, _Response(400, {"error": "bad Content-Length"}, {"Connection": "close"}))
            self.close_connection = True
            return
        endpoint, func, params = hub._route(method, url.path)
        request = _Request(self, method, url.path, parse_qs(url.query, keep_blank_values=True), token, body)
        injected = hub._take_injection(endpoint) if endpoint != "control" else None
        if injected is not None and injected["delay"]:
            time.sleep(injected["delay"])
        if injected is not None and injected["status"] is not None:
            if not body.drain():
                self.close_connection = True
            if injected["status"] == "drop":
                hub._log(method, url.path, 0, token, endpoint, url.query, injected=True)
                self._drop()
                return
            headers = {"X-Error-Message": "injected failure"}
            if injected["retry_after"] is not None:
                headers["Retry-After"] = str(injected["retry_after"])
            message = injected["message"] or f"injected failure ({endpoint}) from the test hub server"
            response = _Response(injected["status"], {"error": message}, headers)
            hub._log(method, url.path, response.status, token, endpoint, url.query, injected=True)
            self._send(method, response)
            return
        try:
            if hub.valid_tokens is not None and token is not None and token not in hub.valid_tokens:
                raise HubError(401, "Invalid credentials in Authorization header")
            if func is None:
                raise HubError(404, f"test hub server: no route for {method} {url.path}")
            response = func(request, **params)
        except HubError as err:
            headers = {"X-Error-Message": " ".join(err.message.split()).encode("ascii", "replace").decode()[:200]}
            if err.code:
                headers["X-Error-Code"] = err.code
            response = _Response(err.status, {"error": err.message, **err.extra}, headers)
            error = err.message
        except Exception as err:  # a server bug: answer 500 with the traceback so the test shows it
            error = f"test hub server error: {err!r}\n{traceback.format_exc()}"
            response = _Response(500, {"error": error})
            self.close_connection = True
        else:
            error = None
        if not body.done and not body.drain():
            self.close_connection = True
        hub._log(method, url.path, response.status, token, endpoint, url.query, injected is not None, error)
        self._send(method, response)

    def _drop(self) -> None:
        """Closes the connection without answering."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, method: str, response: _Response) -> None:
        body = response.body
        length = body[3] if isinstance(body, tuple) else len(body)
        try:
            self.send_response(response.status)
            for key, value in response.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(length))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if method == "HEAD":
                return
            if isinstance(body, tuple):
                _, path, start, remaining = body
                with open(path, "rb") as f:
                    f.seek(start)
                    while remaining > 0 and (chunk := f.read(min(1 << 20, remaining))):
                        self.wfile.write(chunk)
                        remaining -= len(chunk)
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def verify_request(self, request, client_address) -> bool:
        if not self.hub.reachable:  # type: ignore[attr-defined]
            try:
                request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            except OSError:
                pass
            return False
        with self.hub._lock:  # type: ignore[attr-defined]
            self.hub._connections.add(request)  # type: ignore[attr-defined]
        return True

    def shutdown_request(self, request):
        with self.hub._lock:  # type: ignore[attr-defined]
            self.hub._connections.discard(request)  # type: ignore[attr-defined]
        super().shutdown_request(request)


# --- the server ---


class HubServer:
    """A Hub HTTP API on 127.0.0.1 backed by bare git repositories under `root`.

    Test hooks: `inject(...)` makes the next matching requests fail or wait, `reachable = False` closes every
    connection unanswered, `requests` lists (method, path, status) of every request (status 0: dropped),
    `request_log` the same as dicts with the bearer token, endpoint name, query, whether a failure was injected and
    the error message answered. A client in another process (or `curl` against `python tests/hub_server.py`) can
    POST `inject`'s keyword arguments as JSON to `/_hub/inject`, and POST `/_hub/clear` to drop pending injections.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        user: str = "tester",
        lfs_threshold: int = LFS_THRESHOLD,
        page_size: int = 1000,
        request_timeout: float = 30.0,
        max_upload: int = 16 << 30,
        valid_tokens: set[str] | None = None,
    ):
        self.root = Path(root).absolute()
        self.host, self.port, self.user = host, port, user
        self.lfs_threshold, self.page_size, self.request_timeout = lfs_threshold, page_size, request_timeout
        self._defaults = {"lfs_threshold": lfs_threshold, "page_size": page_size}
        self.max_upload = max_upload
        self.valid_tokens = set(valid_tokens) if valid_tokens is not None else None
        self.reachable = True
        self.requests: list[tuple[str, str, int]] = []
        self.request_log: list[dict] = []
        self._injections: list[dict] = []
        self._lock = threading.Lock()
        self._repo_locks: dict[Path, threading.Lock] = {}
        self._entries_cache: dict[tuple[Path, str], dict] = {}
        self._connections: set = set()
        self._secret = secrets.token_bytes(16)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._routes = self._build_routes()

    # lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    endpoint = url

    def start(self) -> "HubServer":
        if self._httpd is not None:
            return self
        self.root.mkdir(parents=True, exist_ok=True)
        handler = type("Handler", (_Handler,), {"timeout": self.request_timeout})
        self._httpd = _HTTPServer((self.host, self.port), handler)
        self._httpd.hub = self  # type: ignore[attr-defined]
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="hub-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # keep-alive connections would otherwise idle until their timeout
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._httpd = self._thread = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # test hooks

    def inject(
        self,
        fail: str = "any",
        status: int | str = 500,
        count: int | None = None,
        *,
        times: int | None = None,
        retry_after: float | None = None,
        message: str | None = None,
        delay: float = 0.0,
    ) -> None:
        """Makes the next `count` (or `times`, default 1) requests to endpoint `fail` answer `status`, or "drop"
        (close the connection unanswered), or None (answer normally: only the `delay`). `fail` is an endpoint name
        (see ENDPOINTS; "lfs_upload" is the object PUT) or "any". `delay` seconds are waited before answering (at
        most `request_timeout`); `retry_after` adds a Retry-After header (huggingface_hub then waits that long + 1 s
        instead of its exponential backoff). Injections are used up in the order they were made."""
        if fail != "any" and fail not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {fail!r}; one of {ENDPOINTS} or 'any'")
        if status not in ("drop", None) and not (isinstance(status, int) and 400 <= status <= 599):
            raise ValueError("status must be an HTTP error code, 'drop' or None")
        n = count if count is not None else (times if times is not None else 1)
        with self._lock:
            self._injections.append(
                {"fail": fail, "status": status, "left": int(n), "retry_after": retry_after, "message": message,
                 "delay": max(0.0, min(float(delay), self.request_timeout))}
            )  # fmt: skip

    def clear_injections(self) -> None:
        with self._lock:
            self._injections.clear()

    def reset(self) -> None:
        """Clears injections and logs, makes the server reachable again and restores `lfs_threshold` and `page_size`
        (repos are kept)."""
        with self._lock:
            self._injections.clear()
            self.requests.clear()
            self.request_log.clear()
        self.reachable = True
        self.lfs_threshold, self.page_size = self._defaults["lfs_threshold"], self._defaults["page_size"]

    @property
    def pending_injections(self) -> int:
        with self._lock:
            return sum(i["left"] for i in self._injections)

    @property
    def tokens(self) -> list[str | None]:
        return [r["token"] for r in self.request_log]

    @property
    def unhandled(self) -> list[tuple[str, str]]:
        return [(r["method"], r["path"]) for r in self.request_log if r["endpoint"] == "unknown"]

    def repo_dir(self, repo_id: str, repo_type: str = "model") -> Path:
        namespace, name = repo_id.split("/")
        return self.root / f"{repo_type}s" / namespace / f"{name}.git"

    def lfs_object_path(self, repo_id: str, oid: str, repo_type: str = "model") -> Path:
        return self._lfs_path(self.repo_dir(repo_id, repo_type), oid)

    def _take_injection(self, endpoint: str) -> dict | None:
        with self._lock:
            for inj in self._injections:
                if inj["left"] > 0 and inj["fail"] in ("any", endpoint):
                    inj["left"] -= 1
                    if inj["left"] == 0:
                        self._injections.remove(inj)
                    return inj
        return None

    def _log(self, method, path, status, token, endpoint, query, injected=False, error=None) -> None:
        with self._lock:
            self.requests.append((method, path, status))
            self.request_log.append(
                {"method": method, "path": path, "status": status, "token": token, "endpoint": endpoint,
                 "query": query, "injected": injected, "error": error, "time": time.monotonic()}
            )  # fmt: skip

    # routing

    def _build_routes(self):
        t = r"(?P<api_type>models|datasets|spaces)"
        r = r"(?P<ns>[^/]+)/(?P<name>[^/]+)"
        p = r"(?:(?P<prefix>datasets|spaces)/)?"
        g = r"(?P<ns>[^/]+)/(?P<name>[^/]+?)\.git/info/lfs/objects"
        table = [
            ("POST", r"/_hub/inject", "control", self._control_inject),
            ("POST", r"/_hub/clear", "control", self._control_clear),
            ("GET", r"/api/whoami-v2", "whoami", self._whoami),
            ("GET", r"/api/agent-harnesses", "agent_harnesses", self._agent_harnesses),
            ("POST", r"/api/repos/create", "create", self._create_repo),
            ("DELETE", r"/api/repos/delete", "delete", self._delete_repo),
            ("POST", r"/api/repos/delete", "delete", self._delete_repo),
            ("POST", r"/api/validate-yaml", "validate_yaml", self._validate_yaml),
            ("GET", rf"/api/{t}/{r}", "repo_info", self._repo_info),
            ("GET", rf"/api/{t}/{r}/revision/(?P<rev>.+)", "repo_info", self._repo_info),
            ("POST", rf"/api/{t}/{r}/preupload/(?P<rev>[^/]+)", "preupload", self._preupload),
            ("POST", rf"/api/{t}/{r}/commit/(?P<rev>[^/]+)", "commit", self._commit),
            ("GET", rf"/api/{t}/{r}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree", self._tree),
            ("POST", rf"/api/{t}/{r}/paths-info/(?P<rev>[^/]+)", "paths_info", self._paths_info),
            ("GET", rf"/api/{t}/{r}/refs", "refs", self._refs),
            ("GET", rf"/api/{t}/{r}/commits/(?P<rev>[^/]+)", "commits", self._commits),
            ("POST", rf"/api/{t}/{r}/branch/(?P<branch>[^/]+)", "branch", self._create_branch),
            ("DELETE", rf"/api/{t}/{r}/branch/(?P<branch>[^/]+)", "branch", self._delete_branch),
            ("POST", rf"/api/{t}/{r}/tag/(?P<rev>[^/]+)", "tag", self._create_tag),
            ("DELETE", rf"/api/{t}/{r}/tag/(?P<tag>[^/]+)", "tag", self._delete_tag),
            ("GET", rf"/api/{t}/{r}/xet-(?P<kind>read|write)-token(?:/.*)?", "xet", self._xet),
            ("POST", rf"/api/{t}/{r}/xet-(?P<kind>read|write)-token(?:/.*)?", "xet", self._xet),
            ("POST", rf"/{p}{g}/batch", "lfs_batch", self._lfs_batch),
            ("PUT", rf"/{p}{g}/(?P<oid>[0-9a-f]{{64}})", "lfs_upload", self._lfs_upload),
            ("POST", rf"/{p}{g}/(?P<oid>[0-9a-f]{{64}})/verify", "lfs_verify", self._lfs_verify),
            ("GET", rf"/{p}{g}/(?P<oid>[0-9a-f]{{64}})", "lfs_download", self._lfs_download),
            ("GET", rf"/{p}{r}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve", self._resolve),
            ("HEAD", rf"/{p}{r}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve", self._resolve),
        ]
        return [(method, re.compile(pattern), name, func) for method, pattern, name, func in table]

    def _route(self, method: str, path: str):
        for route_method, regex, name, func in self._routes:
            if route_method == method and (m := regex.fullmatch(path)):
                params = dict(m.groupdict())
                api_type, prefix = params.pop("api_type", None), params.pop("prefix", None)
                repo_type = API_TYPES[api_type] if api_type else API_TYPES[prefix] if prefix else "model"
                params = {k: unquote(v) if v is not None else None for k, v in params.items()}
                if "ns" in params:
                    params["repo_type"] = repo_type
                return name, func, params
        return "unknown", None, {}

    # repo helpers

    def _repo_lock(self, gd: Path) -> threading.Lock:
        with self._lock:
            return self._repo_locks.setdefault(gd, threading.Lock())

    def _meta(self, gd: Path) -> dict:
        return json.loads((gd / "hub.json").read_text())

    def _open_repo(self, request: _Request, repo_type: str, ns: str, name: str, write: bool = False):
        repo_id = f"{ns}/{name}"
        if not (_NAME_RE.match(ns) and _NAME_RE.match(name)):
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        gd = self.repo_dir(repo_id, repo_type)
        if not (gd / "hub.json").is_file():
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        meta = self._meta(gd)
        if request.token is None and (write or meta.get("private")):
            raise HubError(401, "Invalid username or password: this repo needs an access token", "RepoNotFound")
        return repo_id, gd, meta

    def _base_url(self, request: _Request) -> str:
        host = request.handler.headers.get("Host") or f"{self.host}:{self.port}"
        return f"http://{host}"

    def _resolve_rev(self, gd: Path, rev: str) -> str:
        if not rev or rev.startswith("-") or ".." in rev:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        candidates = [rev] if rev.startswith("refs/") else [f"refs/heads/{rev}", f"refs/tags/{rev}"]
        if _SHA1_RE.match(rev):
            candidates.append(rev)
        for candidate in candidates:
            out = git(gd, "rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}", check=False).strip()
            if out:
                return out.decode()
        raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    def _entries(self, gd: Path, commit: str) -> dict:
        """{path: entry} for every file and directory of `commit`, LFS pointers resolved (cached per commit)."""
        key = (gd, commit)
        with self._lock:
            if key in self._entries_cache:
                return self._entries_cache[key]
        entries: dict[str, dict] = {}
        small = []
        for record in git(gd, "ls-tree", "-r", "-t", "-l", "-z", "--full-tree", commit).split(b"\0"):
            if not record:
                continue
            info, path = record.split(b"\t", 1)
            mode, kind, oid, size = info.decode().split()
            path = path.decode()
            if kind == "tree":
                entries[path] = {"type": "directory", "path": path, "oid": oid, "size": 0}
            elif kind == "blob":
                entries[path] = {"type": "file", "path": path, "oid": oid, "size": int(size), "mode": mode}
                if int(size) <= 1024:
                    small.append(path)
        if small:
            out = git(gd, "cat-file", "--batch", input="".join(entries[p]["oid"] + "\n" for p in small).encode())
            pos = 0
            for path in small:
                header_end = out.index(b"\n", pos)
                size = int(out[pos:header_end].split()[2])
                content = out[header_end + 1 : header_end + 1 + size]
                pos = header_end + 1 + size + 1
                if (pointer := parse_lfs_pointer(content)) is not None:
                    entry = entries[path]
                    entry["lfs"] = {"oid": pointer[0], "size": pointer[1], "pointerSize": entry["size"]}
                    entry["size"] = pointer[1]
        with self._lock:
            if len(self._entries_cache) > 256:
                self._entries_cache.clear()
            self._entries_cache[key] = entries
        return entries

    def _read_blob(self, gd: Path, oid: str) -> bytes:
        return git(gd, "cat-file", "blob", oid)

    def _gitattributes(self, gd: Path, commit: str) -> str:
        entry = self._entries(gd, commit).get(".gitattributes")
        return self._read_blob(gd, entry["oid"]).decode(errors="replace") if entry else ""

    @staticmethod
    def _lfs_path(gd: Path, oid: str) -> Path:
        return gd / "lfs" / "objects" / oid[:2] / oid[2:4] / oid

    def _store_lfs_bytes(self, gd: Path, data: bytes) -> str:
        oid = hashlib.sha256(data).hexdigest()
        target = self._lfs_path(gd, oid)
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp_dir = gd / "lfs" / "tmp"
            tmp_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=tmp_dir, delete=False) as f:
                f.write(data)
            os.replace(f.name, target)
        return oid

    def _sign(self, action: str, gd: Path, oid: str, size: int) -> str:
        return hmac.new(self._secret, f"{action}:{gd}:{oid}:{size}".encode(), "sha256").hexdigest()[:32]

    def _lfs_href(self, request, action, repo_type, repo_id, gd, oid, size, suffix=""):
        query = urlencode({"size": size, "sig": self._sign(action, gd, oid, size)})
        base = f"{self._base_url(request)}/{URL_PREFIX[repo_type]}{repo_id}.git/info/lfs/objects/{oid}"
        return f"{base}{suffix}?{query}"

    def _file_info(self, entry: dict, gd: Path, commit: str, expand: bool) -> dict:
        info = {k: entry[k] for k in ("type", "oid", "size", "path")}
        if "lfs" in entry:
            info["lfs"] = dict(entry["lfs"])
        if expand:
            out = git(gd, "log", "-1", "--format=%H%x00%s%x00%ct", commit, "--", entry["path"]).decode().strip()
            if out:
                sha, title, date = out.split("\0")
                info["lastCommit"] = {"id": sha, "title": title, "date": _iso(date)}
        return info

    def _paginated(self, request: _Request, items: list, page_size: int) -> _Response:
        try:
            start = max(0, int(request.arg("cursor", "0") or 0))
        except ValueError:
            raise HubError(400, "bad cursor") from None
        page = items[start : start + page_size]
        headers = {}
        if start + page_size < len(items):
            query = {k: v[-1] for k, v in request.query.items()}
            query["cursor"] = str(start + page_size)
            headers["Link"] = f'<{self._base_url(request)}{request.path}?{urlencode(query)}>; rel="next"'
        return _Response(200, page, headers)

    # endpoints: account, repos

    def _whoami(self, request: _Request) -> _Response:
        if request.token is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return _Response(
            200,
            {
                "type": "user", "id": "0" * 24, "name": self.user, "fullname": "Test User",
                "email": f"{self.user}@localhost", "emailVerified": True, "canPay": False, "isPro": False,
                "periodEnd": None, "avatarUrl": "", "orgs": [],
                "auth": {"type": "access_token",
                         "accessToken": {"displayName": "test", "role": "write", "createdAt": _now()}},
            },
        )  # fmt: skip

    def _control_inject(self, request: _Request) -> _Response:
        """Test control, for clients in other processes: the JSON body holds `inject`'s keyword arguments."""
        try:
            self.inject(**request.body.json())
        except (TypeError, ValueError) as err:
            raise HubError(400, f"bad injection: {err}") from None
        return _Response(200, {"pending": self.pending_injections})

    def _control_clear(self, request: _Request) -> _Response:
        self.clear_injections()
        return _Response(200, {"pending": 0})

    def _agent_harnesses(self, request: _Request) -> _Response:
        # huggingface_hub fetches this registry for telemetry (cached for a day under HF_HOME): an empty one
        return _Response(200, {"standardEnvVars": [], "harnesses": {}})

    def _create_repo(self, request: _Request) -> _Response:
        if request.token is None:
            raise HubError(401, "You must be authenticated to create a repo")
        payload = request.body.json()
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIX:
            raise HubError(400, f"unsupported repo type {repo_type!r}")
        ns, name = payload.get("organization") or self.user, payload.get("name") or ""
        if not (_NAME_RE.match(ns) and _NAME_RE.match(name)) or name.endswith(".git") or ".." in name:
            raise HubError(400, f"invalid repo name {ns}/{name}")
        visibility = payload.get("visibility")
        private = visibility == "private" if visibility is not None else bool(payload.get("private"))
        repo_id = f"{ns}/{name}"
        url = f"{self._base_url(request)}/{URL_PREFIX[repo_type]}{repo_id}"
        gd = self.repo_dir(repo_id, repo_type)
        with self._repo_lock(gd):
            if (gd / "hub.json").is_file():
                # the client reads "url" from the 409 body when exist_ok=True
                raise HubError(409, f"You already created this {repo_type} repo: {repo_id}", extra={"url": url})
            if gd.exists():
                shutil.rmtree(gd)
            gd.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                ["git", "init", "--quiet", "--bare", "--initial-branch=main", str(gd)],
                check=True, capture_output=True, env=_git_env(), timeout=GIT_TIMEOUT,
            )  # fmt: skip
            blob = git(gd, "hash-object", "-w", "--stdin", input=DEFAULT_GITATTRIBUTES.encode()).decode().strip()
            tree = git(gd, "mktree", input=f"100644 blob {blob}\t.gitattributes\n".encode()).decode().strip()
            commit = git(gd, "commit-tree", tree, "-m", "initial commit").decode().strip()
            git(gd, "update-ref", "refs/heads/main", commit, "")
            meta = {"id": repo_id, "type": repo_type, "private": private, "createdAt": _now()}
            (gd / "hub.json").write_text(json.dumps(meta))
        return _Response(200, {"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self, request: _Request) -> _Response:
        payload = request.body.json()
        repo_type = payload.get("type") or "model"
        ns, name = payload.get("organization") or self.user, payload.get("name") or ""
        _, gd, _ = self._open_repo(request, repo_type, ns, name, write=True)
        with self._repo_lock(gd):
            shutil.rmtree(gd)
        with self._lock:
            self._entries_cache = {k: v for k, v in self._entries_cache.items() if k[0] != gd}
        return _Response(200, b"")

    def _validate_yaml(self, request: _Request) -> _Response:
        content = request.body.json().get("content", "")
        if content.startswith("---") and "\n---" not in content[3:]:
            return _Response(400, {"errors": [{"message": "metadata block opened with --- is never closed"}],
                                   "warnings": []})  # fmt: skip
        return _Response(200, {"errors": [], "warnings": []})

    def _repo_info(self, request: _Request, repo_type, ns, name, rev: str = "main") -> _Response:
        repo_id, gd, meta = self._open_repo(request, repo_type, ns, name)
        commit = self._resolve_rev(gd, rev)
        entries = self._entries(gd, commit)
        blobs = request.flag("blobs")
        siblings = []
        for entry in entries.values():
            if entry["type"] != "file":
                continue
            sibling = {"rfilename": entry["path"]}
            if blobs:
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if "lfs" in entry:
                    sibling["lfs"] = {"size": entry["lfs"]["size"], "sha256": entry["lfs"]["oid"],
                                      "pointerSize": entry["lfs"]["pointerSize"]}  # fmt: skip
            siblings.append(sibling)
        date = _iso(git(gd, "show", "-s", "--format=%ct", commit).decode().strip())
        return _Response(
            200,
            {
                "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "modelId": repo_id,
                "author": ns, "sha": commit, "lastModified": date, "createdAt": meta["createdAt"],
                "private": meta["private"], "gated": False, "disabled": False, "downloads": 0, "likes": 0,
                "tags": [], "siblings": siblings, "cardData": {},
            },
        )  # fmt: skip

    def _xet(self, request: _Request, repo_type, ns, name, kind) -> _Response:
        raise HubError(
            501,
            f"This test Hub server does not speak Xet (xet-{kind}-token): set HF_HUB_DISABLE_XET=1 in the environment "
            "before huggingface_hub is imported so the client uses git-lfs basic transfers.",
        )

    # endpoints: upload

    def _preupload(self, request: _Request, repo_type, ns, name, rev) -> _Response:
        repo_id, gd, _ = self._open_repo(request, repo_type, ns, name, write=True)
        commit = self._resolve_rev(gd, rev)
        entries = self._entries(gd, commit)
        attributes = self._gitattributes(gd, commit)
        payload = request.body.json()
        gitignore = payload.get("gitIgnore")
        if gitignore is None and ".gitignore" in entries:
            gitignore = self._read_blob(gd, entries[".gitignore"]["oid"]).decode(errors="replace")
        files = []
        for item in payload.get("files", []):
            path, size = item.get("path"), item.get("size")
            if not isinstance(path, str) or not isinstance(size, int):
                raise HubError(400, "each file needs a path and an integer size")
            sample = base64.b64decode(item.get("sample") or "")
            if size == 0:
                mode = "regular"
            elif size > self.lfs_threshold or lfs_tracked(attributes, path) or looks_binary(sample):
                mode = "lfs"
            else:
                mode = "regular"
            existing = entries.get(path)
            oid = None
            if existing is not None and existing["type"] == "file":
                oid = existing["lfs"]["oid"] if "lfs" in existing else existing["oid"]
            files.append(
                {"path": path, "uploadMode": mode, "shouldIgnore": bool(gitignore and gitignored(gitignore, path)),
                 "oid": oid}
            )  # fmt: skip
        return _Response(200, {"files": files, "commitOid": commit})

    def _lfs_batch(self, request: _Request, repo_type, ns, name) -> _Response:
        payload = request.body.json()
        operation = payload.get("operation")
        if operation not in ("upload", "download"):
            raise HubError(422, f"unsupported LFS operation {operation!r}")
        repo_id, gd, _ = self._open_repo(request, repo_type, ns, name, write=operation == "upload")
        transfers = payload.get("transfers") or ["basic"]
        if "basic" not in transfers:
            raise HubError(422, f"only the 'basic' LFS transfer is supported, the client offered {transfers}")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj.get("oid"), obj.get("size")
            if not isinstance(oid, str) or not _OID_RE.match(oid) or not isinstance(size, int) or size < 0:
                error = {"code": 422, "message": "oid must be 64 hex digits, size an int >= 0"}
                objects.append({"oid": str(oid), "size": size if isinstance(size, int) else 0, "error": error})
                continue
            path = self._lfs_path(gd, oid)
            present = path.is_file() and path.stat().st_size == size
            out = {"oid": oid, "size": size, "authenticated": True}
            if operation == "upload":
                if not present:
                    out["actions"] = {
                        "upload": {"href": self._lfs_href(request, "upload", repo_type, repo_id, gd, oid, size),
                                   "header": {}, "expires_in": 3600},
                        "verify": {"href": self._lfs_href(request, "verify", repo_type, repo_id, gd, oid, size,
                                                          "/verify"), "header": {}, "expires_in": 3600},
                    }  # fmt: skip
            elif present:
                href = self._lfs_href(request, "download", repo_type, repo_id, gd, oid, size)
                out["actions"] = {"download": {"href": href, "header": {}, "expires_in": 3600}}
            else:
                out["error"] = {"code": 404, "message": f"Object {oid} does not exist"}
            objects.append(out)
        return _Response(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                         content_type="application/vnd.git-lfs+json")  # fmt: skip

    def _check_sig(self, request: _Request, action: str, gd: Path, oid: str) -> int:
        try:
            size = int(request.arg("size", ""))
        except ValueError:
            raise HubError(400, "missing size in the signed LFS URL") from None
        if not hmac.compare_digest(request.arg("sig", "") or "", self._sign(action, gd, oid, size)):
            raise HubError(403, "bad or missing signature on the LFS URL")
        return size

    def _lfs_upload(self, request: _Request, repo_type, ns, name, oid) -> _Response:
        gd = self.repo_dir(f"{ns}/{name}", repo_type)
        if not (gd / "hub.json").is_file():
            raise HubError(404, "Repository not found", "RepoNotFound")
        size = self._check_sig(request, "upload", gd, oid)
        if size > self.max_upload:
            raise HubError(413, f"object of {size} bytes over the server limit {self.max_upload}")
        tmp_dir = gd / "lfs" / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        digest, received = hashlib.sha256(), 0
        with tempfile.NamedTemporaryFile(dir=tmp_dir, delete=False) as f:
            try:
                while chunk := request.body.read():
                    received += len(chunk)
                    if received > size:
                        raise HubError(400, f"body is longer than the declared size {size}")
                    digest.update(chunk)
                    f.write(chunk)
            except BaseException:
                f.close()
                os.unlink(f.name)
                raise
        if received != size or digest.hexdigest() != oid:
            os.unlink(f.name)
            raise HubError(
                400, f"LFS object rejected: got {received} bytes with sha256 {digest.hexdigest()}, "
                f"expected {size} bytes with sha256 {oid}"
            )  # fmt: skip
        target = self._lfs_path(gd, oid)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f.name, target)
        return _Response(200, b"")

    def _lfs_verify(self, request: _Request, repo_type, ns, name, oid) -> _Response:
        _, gd, _ = self._open_repo(request, repo_type, ns, name, write=True)
        payload = request.body.json()
        path = self._lfs_path(gd, oid)
        if payload.get("oid") != oid:
            raise HubError(422, "verify payload oid does not match the URL")
        if not path.is_file():
            raise HubError(404, f"LFS object {oid} was not uploaded")
        if path.stat().st_size != payload.get("size"):
            raise HubError(422, f"LFS object {oid} has {path.stat().st_size} bytes, not {payload.get('size')}")
        return _Response(200, {"success": True})

    def _lfs_download(self, request: _Request, repo_type, ns, name, oid) -> _Response:
        gd = self.repo_dir(f"{ns}/{name}", repo_type)
        size = self._check_sig(request, "download", gd, oid)
        path = self._lfs_path(gd, oid)
        if not path.is_file() or path.stat().st_size != size:
            raise HubError(404, f"LFS object {oid} not found")
        return _Response(200, ("file", path, 0, size), content_type="application/octet-stream")

    def _commit(self, request: _Request, repo_type, ns, name, rev) -> _Response:
        repo_id, gd, _ = self._open_repo(request, repo_type, ns, name, write=True)
        if request.flag("create_pr"):
            raise HubError(501, "create_pr is not supported by the test hub server")
        lines = [line for line in request.body.read_all().splitlines() if line.strip()]
        try:
            items = [json.loads(line) for line in lines]
        except json.JSONDecodeError as err:
            raise HubError(400, f"invalid NDJSON commit payload: {err}") from None
        if not items or items[0].get("key") != "header":
            raise HubError(400, "the first NDJSON line of a commit must be the header")
        header = items[0].get("value") or {}
        summary = (header.get("summary") or "").strip()
        if not summary:
            raise HubError(400, "commit summary is empty")
        description = (header.get("description") or "").strip()
        message = summary + ("\n\n" + description if description else "")
        if rev.startswith("refs/heads/"):
            rev = rev[len("refs/heads/") :]
        with self._repo_lock(gd):
            branch_ref = f"refs/heads/{rev}"
            parent = git(gd, "rev-parse", "--verify", "--quiet", branch_ref, check=False).decode().strip()
            if not parent:
                raise HubError(404, f"Invalid rev id: {rev} is not a branch", "RevisionNotFound")
            if header.get("parentCommit") and header["parentCommit"] != parent:
                raise HubError(412, f"A commit has happened since {header['parentCommit']}: the head is {parent}")
            sha = self._write_commit(gd, parent, items[1:], message)
            git(gd, "update-ref", branch_ref, sha, parent)
        url = f"{self._base_url(request)}/{URL_PREFIX[repo_type]}{repo_id}/commit/{sha}"
        return _Response(200, {"success": True, "commitOid": sha, "commitUrl": url, "pullRequestUrl": None})

    def _write_commit(self, gd: Path, parent: str, ops: list[dict], message: str) -> str:
        """Applies NDJSON operations on top of `parent` and writes the commit; returns its sha (refs untouched)."""
        files: dict[str, tuple[str, str]] = {}  # path -> (mode, blob sha or "new:<i>")
        for record in git(gd, "ls-tree", "-r", "-z", "--full-tree", parent).split(b"\0"):
            if record:
                info, path = record.split(b"\t", 1)
                mode, kind, oid = info.decode().split()
                if kind == "blob":
                    files[path.decode()] = (mode, oid)
        new_blobs: list[bytes] = []
        lfs_paths: set[str] = set()
        attributes = self._gitattributes(gd, parent)
        for op in ops:  # a .gitattributes committed now decides what is tracked
            value = op.get("value") or {}
            if op.get("key") == "file" and value.get("path") == ".gitattributes":
                attributes = self._inline_content(value).decode(errors="replace")
            elif op.get("key") in ("deletedFile", "deletedFolder") and value.get("path", "").rstrip("/") in (
                ".gitattributes", ""
            ):  # fmt: skip
                attributes = ""

        def add(path: str, content: bytes) -> None:
            files[path] = ("100644", f"new:{len(new_blobs)}")
            new_blobs.append(content)

        for op in ops:
            key, value = op.get("key"), op.get("value") or {}
            path = self._check_path(value.get("path"), folder=key == "deletedFolder")
            if key == "file":
                content = self._inline_content(value)
                if path != ".gitattributes" and content and (
                    len(content) > self.lfs_threshold or lfs_tracked(attributes, path)
                ):
                    oid = self._store_lfs_bytes(gd, content)
                    add(path, lfs_pointer(oid, len(content)))
                    lfs_paths.add(path)
                else:
                    add(path, content)
                    lfs_paths.discard(path)
            elif key == "lfsFile":
                oid = value.get("oid")
                if value.get("algo", "sha256") != "sha256" or not isinstance(oid, str) or not _OID_RE.match(oid):
                    raise HubError(400, f"lfsFile {path}: oid must be a sha256 hex digest")
                obj = self._lfs_path(gd, oid)
                if not obj.is_file():
                    raise HubError(422, f"lfsFile {path}: LFS object {oid} has not been uploaded")
                size = obj.stat().st_size
                if value.get("size") is not None and value["size"] != size:
                    raise HubError(422, f"lfsFile {path}: size {value['size']} does not match the object ({size})")
                add(path, lfs_pointer(oid, size))
                lfs_paths.add(path)
            elif key == "deletedFile":
                if path not in files:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del files[path]
                lfs_paths.discard(path)
            elif key == "deletedFolder":
                prefix = path.rstrip("/") + "/" if path.rstrip("/") else ""
                doomed = [p for p in files if p.startswith(prefix)]
                if not doomed:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in doomed:
                    del files[p]
                    lfs_paths.discard(p)
            else:
                raise HubError(400, f"unknown commit operation {key!r}")
        # directory/file clashes (git would silently replace one with the other)
        for path in files:
            parts = path.split("/")
            for k in range(1, len(parts)):
                if "/".join(parts[:k]) in files:
                    raise HubError(409, f"{'/'.join(parts[:k])} is a file, cannot add {path} under it")
        untracked = sorted(p for p in lfs_paths if p in files and not lfs_tracked(attributes, p))
        if untracked:
            base = attributes if attributes.endswith("\n") or not attributes else attributes + "\n"
            add(".gitattributes", (base + "".join(gitattributes_line(p) for p in untracked)).encode())
        with tempfile.TemporaryDirectory(dir=gd, prefix="commit-") as tmp:
            if new_blobs:
                paths = []
                for i, content in enumerate(new_blobs):
                    p = os.path.join(tmp, f"blob{i}")
                    with open(p, "wb") as f:
                        f.write(content)
                    paths.append(p)
                shas = git(gd, "hash-object", "-w", "--no-filters", "--stdin-paths",
                           input=("\n".join(paths) + "\n").encode()).decode().split()  # fmt: skip
                files = {p: (m, shas[int(o[4:])] if o.startswith("new:") else o) for p, (m, o) in files.items()}
            env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
            index_info = b"".join(f"{m} {o}\t".encode() + p.encode() + b"\0" for p, (m, o) in sorted(files.items()))
            git(gd, "update-index", "--add", "-z", "--index-info", input=index_info, env=env)
            tree = git(gd, "write-tree", env=env).decode().strip()
        return git(gd, "commit-tree", tree, "-p", parent, input=message.encode()).decode().strip()

    @staticmethod
    def _inline_content(value: dict) -> bytes:
        content = value.get("content", "")
        if value.get("encoding", "base64") == "base64":
            try:
                return base64.b64decode(content, validate=True)
            except (ValueError, TypeError):
                raise HubError(400, f"file {value.get('path')}: content is not valid base64") from None
        return content.encode()

    @staticmethod
    def _check_path(path, folder: bool = False) -> str:
        if not isinstance(path, str) or (not path and not folder):
            raise HubError(400, "operation without a path")
        parts = path.rstrip("/").split("/") if path.rstrip("/") else []
        if path.startswith("/") or any(p in ("", ".", "..", ".git") for p in parts) or "\0" in path or "\n" in path:
            raise HubError(400, f"invalid path in repo: {path!r}")
        return path

    # endpoints: read

    def _tree(self, request: _Request, repo_type, ns, name, rev, path=None) -> _Response:
        _, gd, _ = self._open_repo(request, repo_type, ns, name)
        commit = self._resolve_rev(gd, rev)
        entries = self._entries(gd, commit)
        path = (path or "").strip("/")
        if path and entries.get(path, {}).get("type") != "directory":
            raise HubError(404, f"{path} is not a directory at {rev}", "EntryNotFound")
        prefix = path + "/" if path else ""
        recursive, expand = request.flag("recursive"), request.flag("expand")
        items = [
            self._file_info(e, gd, commit, expand)
            for p, e in sorted(entries.items())
            if p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :])
        ]
        return self._paginated(request, items, min(self.page_size, 50) if expand else self.page_size)

    def _paths_info(self, request: _Request, repo_type, ns, name, rev) -> _Response:
        _, gd, _ = self._open_repo(request, repo_type, ns, name)
        commit = self._resolve_rev(gd, rev)
        raw = request.body.read_all()
        if "json" in request.handler.headers.get("Content-Type", ""):
            payload = json.loads(raw or b"{}")
            paths, expand = payload.get("paths", []), bool(payload.get("expand"))
        else:
            form = parse_qs(raw.decode(), keep_blank_values=True)
            paths, expand = form.get("paths", []), (form.get("expand", ["false"])[-1].lower() in ("1", "true"))
        entries = self._entries(gd, commit)
        out = [self._file_info(entries[p.strip("/")], gd, commit, expand) for p in paths if p.strip("/") in entries]
        return _Response(200, out)

    def _resolve(self, request: _Request, repo_type, ns, name, rev, path) -> _Response:
        _, gd, _ = self._open_repo(request, repo_type, ns, name)
        commit = self._resolve_rev(gd, rev)
        entry = self._entries(gd, commit).get(path)
        if entry is None or entry["type"] != "file":
            raise HubError(404, f"Entry not found: {path} at {rev}", "EntryNotFound")
        headers = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if "lfs" in entry:
            oid, size = entry["lfs"]["oid"], entry["lfs"]["size"]
            source = self._lfs_path(gd, oid)
            if not source.is_file():
                raise HubError(500, f"LFS object {oid} of {path} is missing from the store")
            headers.update({"ETag": f'"{oid}"', "X-Linked-Etag": f'"{oid}"', "X-Linked-Size": str(size)})
            body_of = lambda start, length: ("file", source, start, length)  # noqa: E731
        else:
            data = self._read_blob(gd, entry["oid"])
            size = len(data)
            headers["ETag"] = f'"{entry["oid"]}"'
            body_of = lambda start, length: data[start : start + length]  # noqa: E731
        status, start, length = 200, 0, size
        range_header = request.handler.headers.get("Range")
        if range_header and (m := re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip())):
            first, last = m.group(1), m.group(2)
            if first:
                start, end = int(first), min(int(last), size - 1) if last else size - 1
            else:
                start, end = max(0, size - int(last or 0)), size - 1
            if start >= size and size > 0:
                return _Response(416, b"", {"Content-Range": f"bytes */{size}"})
            status, length = 206, max(0, end - start + 1)
            headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{size}"
        return _Response(status, body_of(start, length), headers)

    def _refs(self, request: _Request, repo_type, ns, name) -> _Response:
        _, gd, _ = self._open_repo(request, repo_type, ns, name)
        out = git(gd, "for-each-ref", "--format=%(refname)%00%(objectname)%00%(*objectname)", "refs/heads", "refs/tags")
        branches, tags = [], []
        for line in out.decode().splitlines():
            ref, target, peeled = line.split("\0")
            kind, _, short = ref[len("refs/") :].partition("/")
            info = {"name": short, "ref": ref, "targetCommit": peeled or target}
            (branches if kind == "heads" else tags).append(info)
        return _Response(200, {"branches": branches, "converts": [], "tags": tags, "pullRequests": []})

    def _commits(self, request: _Request, repo_type, ns, name, rev) -> _Response:
        _, gd, _ = self._open_repo(request, repo_type, ns, name)
        commit = self._resolve_rev(gd, rev)
        out = git(gd, "log", "--format=%H%x00%s%x00%b%x00%aN%x00%at%x1e", commit).decode()
        items = []
        for record in out.split("\x1e"):
            record = record.strip("\n")
            if record:
                sha, title, body, author, date = record.split("\0")
                items.append({"id": sha, "title": title, "message": body.strip(), "authors": [{"user": author}],
                              "date": _iso(date)})  # fmt: skip
        return self._paginated(request, items, self.page_size)

    def _create_branch(self, request: _Request, repo_type, ns, name, branch) -> _Response:
        _, gd, _ = self._open_repo(request, repo_type, ns, name, write=True)
        payload = request.body.json()
        if subprocess.run(["git", "check-ref-format", f"refs/heads/{branch}"], env=_git_env()).returncode != 0:
            raise HubError(400, f"invalid branch name {branch!r}")
        with self._repo_lock(gd):
            start = self._resolve_rev(gd, payload.get("startingPoint") or "main")
            if git(gd, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False).strip():
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            git(gd, "update-ref", f"refs/heads/{branch}", start, "")
        return _Response(200, {})

    def _delete_branch(self, request: _Request, repo_type, ns, name, branch) -> _Response:
        _, gd, _ = self._open_repo(request, repo_type, ns, name, write=True)
        if branch == "main":
            raise HubError(403, "the main branch cannot be deleted")
        with self._repo_lock(gd):
            if not git(gd, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False).strip():
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            git(gd, "update-ref", "-d", f"refs/heads/{branch}")
        return _Response(200, {})

    def _create_tag(self, request: _Request, repo_type, ns, name, rev) -> _Response:
        _, gd, _ = self._open_repo(request, repo_type, ns, name, write=True)
        payload = request.body.json()
        tag = payload.get("tag") or ""
        if subprocess.run(["git", "check-ref-format", f"refs/tags/{tag}"], env=_git_env()).returncode != 0:
            raise HubError(400, f"invalid tag name {tag!r}")
        with self._repo_lock(gd):
            target = self._resolve_rev(gd, rev)
            if git(gd, "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}", check=False).strip():
                raise HubError(409, f"Tag already exists: {tag}")
            if payload.get("message"):
                git(gd, "tag", "-a", tag, target, "-m", payload["message"])
            else:
                git(gd, "update-ref", f"refs/tags/{tag}", target, "")
        return _Response(200, {})

    def _delete_tag(self, request: _Request, repo_type, ns, name, tag) -> _Response:
        _, gd, _ = self._open_repo(request, repo_type, ns, name, write=True)
        with self._repo_lock(gd):
            if not git(gd, "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}", check=False).strip():
                raise HubError(404, f"Invalid rev id: {tag}", "RevisionNotFound")
            git(gd, "update-ref", "-d", f"refs/tags/{tag}")
        return _Response(200, {})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="folder holding the git repositories")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--user", default="tester", help="the user name whoami answers and the default namespace")
    args = parser.parse_args(argv)
    server = HubServer(args.root, host=args.host, port=args.port, user=args.user).start()
    print(f"Hub test server on {server.url} (root {server.root}); clients need:", flush=True)
    print(f"  HF_ENDPOINT={server.url} HF_HUB_DISABLE_XET=1 HF_TOKEN=<anything>", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
