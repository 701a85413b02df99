"""`atb policy serve`: a small bundle server for development and tests.

Serves the files of a bundle store folder (atb/policy/publish.py) over HTTP:
`GET /bundles/<name>` and `GET /revisions/<name>`, with a strong ETag (the
SHA-256 of the bytes) so that OPA's polling costs a `304 Not Modified` while
nothing changed. With an upload token, `PUT` on the same paths stores a file
(a revision is immutable: a different body for an existing revision is `409`).
Production serves the same layout from any HTTP server or object store.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

__all__ = ["bundle_server_app"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}\.tar\.gz$")
_FOLDERS = ("bundles", "revisions")
_MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class _Cached:
    key: tuple[int, int, int]
    etag: str


class _BundleFiles:
    """Reads files of the store with their ETag, hashing a file again only when it changed."""

    def __init__(self, root: Path, token: str | None) -> None:
        self.root = root
        self.token = token
        self._etags: dict[Path, _Cached] = {}

    def path(self, request: web.Request) -> Path:
        folder, name = request.match_info["folder"], request.match_info["name"]
        if folder not in _FOLDERS or not _NAME.match(name):
            raise web.HTTPNotFound()
        return self.root / folder / name

    def read(self, path: Path) -> tuple[bytes, str]:
        try:
            data = path.read_bytes()
            st = path.stat()
        except FileNotFoundError:
            raise web.HTTPNotFound() from None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._etags.get(path)
        if cached is None or cached.key != key or len(data) != st.st_size:
            cached = _Cached(key, f'"{hashlib.sha256(data).hexdigest()}"')
            self._etags[path] = cached
        return data, cached.etag


def _write_atomic(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def bundle_server_app(root: Path, upload_token: str | None = None) -> web.Application:
    """The aiohttp application serving `root` (and taking PUTs when `upload_token` is set)."""
    files = _BundleFiles(root, upload_token)

    async def get(request: web.Request) -> web.StreamResponse:
        data, etag = files.read(files.path(request))
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if etag in [t.strip() for t in request.headers.get("If-None-Match", "").split(",")]:
            return web.Response(status=304, headers=headers)
        return web.Response(body=data, headers=headers, content_type="application/gzip")

    async def put(request: web.Request) -> web.StreamResponse:
        if files.token is None:
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(presented.encode(), files.token.encode()):
            raise web.HTTPUnauthorized(text="a bearer token is required to upload")
        target = files.path(request)
        if request.content_length is not None and request.content_length > _MAX_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=_MAX_BYTES, actual_size=request.content_length)
        data = await request.content.read(_MAX_BYTES + 1)
        if len(data) > _MAX_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=_MAX_BYTES, actual_size=len(data))
        if target.parent.name == "revisions" and target.is_file() and target.read_bytes() != data:
            raise web.HTTPConflict(text="this revision is already stored with other content")
        _write_atomic(target, data)
        return web.Response(status=204)

    async def healthz(_: web.Request) -> web.StreamResponse:
        return web.Response(text="ok\n")

    app = web.Application(client_max_size=_MAX_BYTES + 1024)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/{folder}/{name}", get)  # HEAD is added with GET
    app.router.add_put("/{folder}/{name}", put)
    return app
