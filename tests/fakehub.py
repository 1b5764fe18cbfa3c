"""A fake Hugging Face Hub (plus a plain CDN-like file server) on loopback, for offline tests.

Why: checkpoint downloads go through ``huggingface_hub`` (and, for the original OpenAI release,
through plain static URLs). Tests of resuming, verifying and caching need real HTTP - redirects,
ranges, truncated bodies, corrupted bytes, no network - without touching the internet, so this
module serves just enough of the Hub protocol with the standard library only.

Two listening sockets share one handler: ``url`` plays huggingface.co and ``cdn_url`` plays the
LFS CDN. They must be different origins: for a HEAD on ``/resolve`` huggingface_hub follows
redirects that stay on the same origin and stops at the first one that leaves it, reading the
file metadata (X-Linked-Etag, X-Linked-Size, X-Repo-Commit) from that redirect, as with the real
Hub. Any path (static, ``/lfs/...`` or ``/resolve/...``) is answered on both.

    with FakeHub() as hub:
        sha = hub.add_repo("openai/jukebox-1b-lyrics", {"config.json": b"{}", "model.bin": weights})
        hf_hub_download("openai/jukebox-1b-lyrics", "model.bin", endpoint=hub.url, cache_dir=tmp)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".bin", ".safetensors", ".pth", ".tar")
LFS_MIN_SIZE = 10_000  # bytes; larger files count as LFS whatever their name
_RANGE = re.compile(r"\s*bytes\s*=\s*(\d+)\s*-\s*(\d*)\s*")
_DATE = "2024-01-01T00:00:00.000Z"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of ``data``: what the Hub uses as the ETag / blobId of a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(filename: str, data: bytes) -> bool:
    return filename.endswith(LFS_SUFFIXES) or len(data) > LFS_MIN_SIZE


def lfs_pointer(data: bytes) -> bytes:
    """The git-lfs pointer file stored in git instead of the content (its size is ``pointerSize``)."""
    digest = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{digest}\nsize {len(data)}\n".encode()


def file_etag(filename: str, data: bytes) -> str:
    """sha256 for LFS files (so the cache blob is named by it), the git blob sha1 otherwise."""
    return hashlib.sha256(data).hexdigest() if is_lfs(filename, data) else git_blob_sha1(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: FakeHub


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real Hub: exercises the client's connection pool
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.hub._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.hub._track(self.connection, add=False)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - keep test output quiet
        pass

    def do_HEAD(self) -> None:
        self.server.hub._handle(self, "HEAD")

    def do_GET(self) -> None:
        self.server.hub._handle(self, "GET")

    def do_POST(self) -> None:
        self.server.hub._handle(self, "POST")


class FakeHub:
    """Serves repos registered with :meth:`add_repo` and files registered with :meth:`add_static`."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None]] = []  # (method, unquoted path, Range header)
        self._lock = threading.Lock()
        self._repos: dict[str, dict] = {}  # repo_id -> {"refs": {name: sha}, "commits": {sha: files}}
        self._blobs: dict[str, bytes] = {}  # sha256 -> LFS content, served at /lfs/{sha256}
        self._static: dict[str, bytes] = {}
        self._drops: dict[str, list[int]] = {}  # path -> [n_bytes, times left]
        self._tampered: dict[str, bytes] = {}
        self._slow: dict[str, float] = {}
        self._conns: set[socket.socket] = set()
        self._servers: list[tuple[_Server, threading.Thread]] = []
        self._ports = (0, 0)

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> FakeHub:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Listen (again: same ports after a stop) and serve in daemon threads."""
        if self._servers:
            return
        for port in self._ports:
            server = _Server(("127.0.0.1", port), _Handler)
            server.hub = self
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self._servers.append((server, thread))
        self._ports = tuple(server.server_address[1] for server, _ in self._servers)

    def stop(self) -> None:
        for server, thread in self._servers:
            server.shutdown()
            server.server_close()
            thread.join()
        self._servers.clear()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # kept-alive connections would otherwise still be served
            _abort(conn)

    def offline(self) -> None:
        """No network: connections are refused (httpx ConnectError, which huggingface_hub treats as
        offline and falls back to its cache) and open keep-alive connections are cut."""
        self.stop()

    def online(self) -> None:
        """Listen again on the same ports, so ``url`` and ``cdn_url`` stay valid."""
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._ports[0]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self._ports[1]}"

    # -- content -----------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: dict[str, bytes], revision: str = "main") -> str:
        """Register a commit of model repo ``repo_id`` (``owner/name``) under ``revision``; return its sha.

        A repo always has a ``main`` (the first commit registered if no ``main`` was given), and each
        commit is also reachable by its sha."""
        if repo_id.count("/") != 1:
            raise ValueError(f"repo id must be 'owner/name', got {repo_id!r}")
        listing = "".join(f"{name}\0{file_etag(name, data)}\n" for name, data in sorted(files.items()))
        sha = hashlib.sha1(f"{repo_id}\0{revision}\0{listing}".encode()).hexdigest()
        with self._lock:
            repo = self._repos.setdefault(repo_id, {"refs": {}, "commits": {}})
            repo["commits"][sha] = dict(files)
            repo["refs"][revision] = sha
            repo["refs"].setdefault("main", sha)
            for name, data in files.items():
                if is_lfs(name, data):
                    self._blobs[hashlib.sha256(data).hexdigest()] = data
        return sha

    def add_static(self, path: str, data: bytes) -> None:
        """Serve ``data`` at URL path ``path`` like a CDN (HEAD, GET, ranges, ETag)."""
        self._static[path] = data

    def file_path(self, repo_id: str, filename: str, revision: str = "main") -> str:
        """The URL path a download of this file GETs (the fault-injection key)."""
        repo = self._repos[repo_id]
        data = repo["commits"][repo["refs"].get(revision, revision)][filename]
        if is_lfs(filename, data):
            return f"/lfs/{hashlib.sha256(data).hexdigest()}"
        return f"/{repo_id}/resolve/{revision}/{filename}"

    # -- faults ------------------------------------------------------------------------------------
    def drop_after(self, path: str, n_bytes: int, times: int = 1) -> None:
        """The next ``times`` GETs of ``path`` send full headers but only ``n_bytes`` of body, then cut."""
        with self._lock:
            self._drops[path] = [n_bytes, times]

    def tamper(self, path: str, data: bytes) -> None:
        """GET bodies of ``path`` become ``data`` (same length) while metadata still describes the original."""
        with self._lock:
            self._tampered[path] = data

    def slow(self, path: str, bytes_per_second: float) -> None:
        with self._lock:
            self._slow[path] = bytes_per_second

    def clear_faults(self) -> None:
        with self._lock:
            self._drops.clear()
            self._tampered.clear()
            self._slow.clear()

    # -- serving -----------------------------------------------------------------------------------
    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def _handle(self, req: _Handler, method: str) -> None:
        split = urlsplit(req.path)
        path = unquote(split.path)
        with self._lock:
            self.requests.append((method, path, req.headers.get("Range")))
        # Read a POST body up front: with keep-alive, an unread body would be parsed as the next request.
        form = parse_qs(req.rfile.read(int(req.headers.get("Content-Length") or 0)).decode())
        seg = [unquote(part) for part in split.path.split("/")[1:]]
        query = {key: values[-1] for key, values in parse_qs(split.query).items()}
        if path in self._static:
            data = self._static[path]
            etag = '"' + hashlib.md5(data).hexdigest() + '"'
            self._send_content(req, method, path, data, {"ETag": etag})
        elif len(seg) == 2 and seg[0] == "lfs" and seg[1] in self._blobs:
            data = self._blobs[seg[1]]
            etag = '"' + hashlib.md5(data).hexdigest() + '"'
            self._send_content(req, method, path, data, {"ETag": etag})
        elif len(seg) >= 4 and seg[:2] == ["api", "models"]:
            self._api(req, method, f"{seg[2]}/{seg[3]}", seg[4:], query, form)
        elif len(seg) >= 5 and seg[2] == "resolve":
            self._resolve(req, method, path, f"{seg[0]}/{seg[1]}", seg[3], "/".join(seg[4:]))
        else:
            self._send_error(req, 404, None, f"{path} not found")

    def _commit(self, req: _Handler, repo_id: str, revision: str) -> tuple[str, dict] | None:
        """(sha, files) of ``revision``, or None after answering 404 the way the Hub does."""
        repo = self._repos.get(repo_id)
        if repo is None:
            self._send_error(req, 404, "RepoNotFound", "Repository not found")
            return None
        sha = repo["refs"].get(revision, revision)
        if sha not in repo["commits"]:
            self._send_error(req, 404, "RevisionNotFound", "Invalid rev id: " + revision)
            return None
        return sha, repo["commits"][sha]

    def _resolve(self, req: _Handler, method: str, path: str, repo_id: str, revision: str, filename: str):
        commit = self._commit(req, repo_id, revision)
        if commit is None:
            return
        sha, files = commit
        if filename not in files:
            # X-Repo-Commit lets the client cache the file's absence under .no_exist/{sha}/
            self._send_error(req, 404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": sha})
            return
        data = files[filename]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{file_etag(filename, data)}"'}
        if not is_lfs(filename, data):
            self._send_content(req, method, path, data, headers)
            return
        # LFS: like the Hub, redirect to the CDN (another origin) and describe the target in X-Linked-*.
        location = f"{self.cdn_url}/lfs/{hashlib.sha256(data).hexdigest()}"
        headers |= {"X-Linked-Etag": headers["ETag"], "X-Linked-Size": str(len(data)), "Location": location}
        body = f"Found. Redirecting to {location}".encode()
        self._send_head(req, 302, headers | {"Content-Type": "text/plain", "Content-Length": str(len(body))})
        if method == "GET":
            req.wfile.write(body)

    def _api(self, req: _Handler, method: str, repo_id: str, rest: list[str], query: dict, form: dict):
        kind = rest[0] if rest else "revision"
        commit = self._commit(req, repo_id, rest[1] if len(rest) >= 2 else "main")
        if commit is None:
            return
        sha, files = commit
        dirs = sorted({name.rsplit("/", i)[0] for name in files for i in range(1, name.count("/") + 1)})
        if kind == "revision" and len(rest) <= 2 and method == "GET":
            blobs = query.get("blobs", "").lower() in ("1", "true")
            siblings = [self._sibling(name, files[name], blobs) for name in sorted(files)]
            owner = repo_id.split("/")[0]
            info = {"_id": sha[:24], "id": repo_id, "modelId": repo_id, "author": owner, "sha": sha}
            info |= {"private": False, "gated": False, "disabled": False, "downloads": 0, "likes": 0}
            self._send_json(req, info | {"tags": [], "lastModified": _DATE, "siblings": siblings})
        elif kind == "tree" and method == "GET":
            prefix = "/".join(rest[2:])
            if prefix and prefix not in dirs:
                self._send_error(req, 404, "EntryNotFound", f"{prefix} does not exist on {rest[1]}")
                return
            recursive = query.get("recursive", "").lower() in ("1", "true")
            under = [p for p in dirs + sorted(files) if not prefix or p.startswith(prefix + "/")]
            depth = prefix.count("/") + 1 if prefix else 0
            under = [p for p in under if recursive or p.count("/") == depth]
            self._send_json(req, [self._entry(p, files, sha) for p in under])
        elif kind == "paths-info" and len(rest) == 2 and method == "POST":
            wanted = [p for p in form.get("paths", []) if p in files or p in dirs]
            self._send_json(req, [self._entry(p, files, sha) for p in wanted])
        else:
            self._send_error(req, 404, None, "Not found")

    @staticmethod
    def _sibling(name: str, data: bytes, blobs: bool) -> dict:
        if not blobs:
            return {"rfilename": name}
        if not is_lfs(name, data):
            return {"rfilename": name, "size": len(data), "blobId": git_blob_sha1(data)}
        pointer = lfs_pointer(data)
        lfs = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(pointer)}
        return {"rfilename": name, "size": len(data), "blobId": git_blob_sha1(pointer), "lfs": lfs}

    @staticmethod
    def _entry(path: str, files: dict[str, bytes], sha: str) -> dict:
        """A tree / paths-info entry (``RepoFile`` or ``RepoFolder`` on the client side)."""
        if path not in files:
            oid = hashlib.sha1(f"{sha}\0{path}".encode()).hexdigest()
            return {"type": "directory", "oid": oid, "size": 0, "path": path}
        data = files[path]
        if not is_lfs(path, data):
            return {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}
        pointer = lfs_pointer(data)
        lfs = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(pointer)}
        return {"type": "file", "oid": git_blob_sha1(pointer), "size": len(data), "path": path, "lfs": lfs}

    def _send_content(self, req: _Handler, method: str, path: str, data: bytes, headers: dict) -> None:
        """Answer with ``data`` honouring ``Range: bytes=N-[M]`` and the faults registered for ``path``."""
        total, start, end, status = len(data), 0, len(data) - 1, 200
        match = _RANGE.fullmatch(req.headers.get("Range") or "")
        if match:
            start = int(match[1])
            if start >= total:
                self._send_error(
                    req, 416, None, "Range not satisfiable", {"Content-Range": f"bytes */{total}"}
                )
                return
            end, status = min(int(match[2] or total - 1), total - 1), 206
            headers = headers | {"Content-Range": f"bytes {start}-{end}/{total}"}
        headers = headers | {"Content-Length": str(end + 1 - start), "Accept-Ranges": "bytes"}
        self._send_head(req, status, headers | {"Content-Type": "application/octet-stream"})
        if method != "GET":
            return
        with self._lock:
            body = self._tampered.get(path, data)[start : end + 1]
            drop, rate = self._drops.get(path), self._slow.get(path)
            if drop is not None:
                body, drop[1] = body[: drop[0]], drop[1] - 1
                if drop[1] <= 0:
                    del self._drops[path]
        cut = drop is not None
        try:
            step = max(1, int(rate / 20)) if rate else 1 << 20
            for i in range(0, len(body), step):
                req.wfile.write(body[i : i + step])
                if rate:
                    time.sleep(len(body[i : i + step]) / rate)
        except OSError:  # the client went away
            cut = True
        if cut:
            req.close_connection = True
            _abort(req.connection)

    def _send_head(self, req: _Handler, status: int, headers: dict) -> None:
        req.send_response(status)
        for key, value in headers.items():
            req.send_header(key, value)
        req.end_headers()

    def _send_json(self, req: _Handler, payload) -> None:
        body = json.dumps(payload).encode()
        self._send_head(req, 200, {"Content-Type": "application/json", "Content-Length": str(len(body))})
        if req.command != "HEAD":
            req.wfile.write(body)

    def _send_error(self, req: _Handler, status: int, code: str | None, message: str, extra=None) -> None:
        """Errors as the Hub sends them: huggingface_hub picks the exception class from X-Error-Code."""
        body = json.dumps({"error": message}).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
        if code is not None:
            headers |= {"X-Error-Code": code, "X-Error-Message": message}
        self._send_head(req, status, headers | (extra or {}))
        if req.command != "HEAD":
            req.wfile.write(body)


def _abort(conn: socket.socket) -> None:
    """Cut a connection now, so the peer sees EOF in the middle of whatever it expects."""
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
