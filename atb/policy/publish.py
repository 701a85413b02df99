"""Put signed bundles where OPA polls them, and point the served name at one of them.

A bundle store is a folder (served by `atb policy serve`, nginx, or synced to an
object store), an HTTP endpoint that takes PUT (`atb policy serve
--upload-token-file`, or any store with the same two paths), or an S3-compatible
bucket (`s3://<bucket>/<prefix>`, credentials and endpoint from the usual AWS
settings: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
`AWS_ENDPOINT_URL`), which OPA polls with its own S3 signing:

    revisions/<revision>.tar.gz   every published bundle, immutable (a second,
                                  different bundle under the same revision is refused)
    bundles/atb.tar.gz            the bundle OPA downloads (`SERVED_NAME`)

Publishing writes the revision's file, then replaces the served name with a copy
of it: in a folder by `os.replace` of a complete temporary file (atomic: a reader
sees the old bundle or the new one, never a torn one); over HTTP by one PUT (an
object store replaces an object whole). A rollback points the served name at an
earlier revision's file again: the same signed bytes, unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from atb.policy.bundle import REVISION_RE, BundleInfo, read_bundle, read_bundle_bytes
from atb.policy.errors import PolicyBundleUsageError, PolicyEndpointError

__all__ = [
    "SERVED_NAME",
    "PublishedRevision",
    "http_publish",
    "http_rollback",
    "publish_to_dir",
    "published_revisions",
    "revision_path",
    "rollback_dir",
    "s3_publish",
    "s3_rollback",
    "served_revision",
]

SERVED_NAME = "bundles/atb.tar.gz"
MAX_BUNDLE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class PublishedRevision:
    revision: str
    path: Path
    served: bool


def revision_path(revision: str) -> str:
    """`revisions/<revision>.tar.gz`, with `:` (of `sha256:`) spelled `-` so the name is safe everywhere."""
    if not REVISION_RE.match(revision):
        raise PolicyBundleUsageError(f"{revision!r} is not a bundle revision")
    return f"revisions/{revision.replace(':', '-')}.tar.gz"


def _write_atomic(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


def _refuse_unsigned(path: Path, info: BundleInfo) -> None:
    if not info.signed:
        raise PolicyBundleUsageError(f"{path} is not signed (no .signatures.json); build it with `atb policy build`")


def publish_to_dir(bundle: Path, root: Path) -> BundleInfo:
    """Store the bundle as `revisions/<rev>.tar.gz` in `root` and serve it as `bundles/atb.tar.gz`."""
    info = read_bundle(bundle)
    _refuse_unsigned(bundle, info)
    data = bundle.read_bytes()
    stored = root / revision_path(info.revision)
    if stored.exists():
        if hashlib.sha256(stored.read_bytes()).digest() != hashlib.sha256(data).digest():
            raise PolicyBundleUsageError(
                f"revision {info.revision} is already published with other content ({stored}); "
                "revisions are immutable: commit the change and build again"
            )
    else:
        _write_atomic(stored, data)
    _write_atomic(root / SERVED_NAME, data)
    return info


def rollback_dir(root: Path, revision: str) -> BundleInfo:
    """Serve the earlier bundle `revisions/<revision>.tar.gz` again, byte for byte."""
    stored = root / revision_path(revision)
    if not stored.is_file():
        known = ", ".join(r.revision for r in published_revisions(root)) or "none"
        raise PolicyBundleUsageError(f"revision {revision} was never published to {root} (published: {known})")
    info = read_bundle(stored)
    if info.revision != revision:
        raise PolicyBundleUsageError(f"{stored} holds revision {info.revision}, not {revision}")
    _refuse_unsigned(stored, info)
    _write_atomic(root / SERVED_NAME, stored.read_bytes())
    return info


def served_revision(root: Path) -> str | None:
    """The revision of `bundles/atb.tar.gz` in `root`, or None when nothing is served yet."""
    served = root / SERVED_NAME
    return read_bundle(served).revision if served.is_file() else None


def published_revisions(root: Path) -> list[PublishedRevision]:
    """Every bundle under `revisions/`, oldest first, with the one being served marked."""
    current = served_revision(root)
    found = []
    for path in sorted((root / "revisions").glob("*.tar.gz"), key=lambda p: (p.stat().st_mtime_ns, p.name)):
        revision = read_bundle(path).revision
        found.append(PublishedRevision(revision=revision, path=path, served=revision == current))
    return found


# -- HTTP PUT -------------------------------------------------------------------------------------


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def _get(session: aiohttp.ClientSession, url: str, token: str | None) -> bytes | None:
    async with session.get(url, headers=_headers(token)) as response:
        if response.status == 404:
            return None
        if response.status != 200:
            raise PolicyEndpointError(f"GET {url} answered {response.status}")
        return await response.content.read(MAX_BUNDLE_BYTES + 1)


async def _put(session: aiohttp.ClientSession, url: str, data: bytes, token: str | None) -> None:
    headers = {**_headers(token), "Content-Type": "application/gzip"}
    async with session.put(url, data=data, headers=headers) as response:
        if response.status not in (200, 201, 204):
            text = (await response.text())[:200]
            raise PolicyEndpointError(f"PUT {url} answered {response.status}: {text}")


async def http_publish(bundle: Path, base_url: str, token: str | None = None) -> BundleInfo:
    """PUT the bundle to `<base>/revisions/<rev>.tar.gz`, then to `<base>/bundles/atb.tar.gz`."""
    info = read_bundle(bundle)
    _refuse_unsigned(bundle, info)
    data = await asyncio.to_thread(bundle.read_bytes)
    base = base_url.rstrip("/")
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            existing = await _get(session, f"{base}/{revision_path(info.revision)}", token)
            if existing is not None and existing != data:
                raise PolicyBundleUsageError(
                    f"revision {info.revision} is already published at {base} with other content; "
                    "revisions are immutable"
                )
            if existing is None:
                await _put(session, f"{base}/{revision_path(info.revision)}", data, token)
            await _put(session, f"{base}/{SERVED_NAME}", data, token)
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise PolicyEndpointError(f"bundle store {base} did not answer: {exc}") from exc
    return info


async def http_rollback(base_url: str, revision: str, token: str | None = None) -> None:
    """Serve `<base>/revisions/<revision>.tar.gz` again as `<base>/bundles/atb.tar.gz` (same bytes)."""
    base = base_url.rstrip("/")
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            data = await _get(session, f"{base}/{revision_path(revision)}", token)
            if data is None:
                raise PolicyBundleUsageError(f"revision {revision} was never published to {base}")
            info = read_bundle_bytes(data, f"{base}/{revision_path(revision)}")
            if info.revision != revision or not info.signed:
                raise PolicyBundleUsageError(
                    f"{base}/{revision_path(revision)} holds revision {info.revision} (signed: {info.signed}), "
                    f"not a signed {revision}"
                )
            await _put(session, f"{base}/{SERVED_NAME}", data, token)
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise PolicyEndpointError(f"bundle store {base} did not answer: {exc}") from exc


# -- S3 -------------------------------------------------------------------------------------------


def _s3(url: str) -> tuple[Any, str, str]:
    """(client, bucket, prefix) of `s3://<bucket>/<prefix>`; the client reads the usual AWS settings."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise PolicyBundleUsageError(f"{url!r} is not s3://<bucket>/<prefix>")
    import boto3  # imported late: only S3 stores need it
    from botocore.config import Config

    config = Config(connect_timeout=5, read_timeout=30, s3={"addressing_style": "path"})
    prefix = parts.path.strip("/")
    # A session of its own: the credentials and endpoint are read from the environment now, not from
    # whatever boto3's process-wide default session cached at its first use.
    return boto3.session.Session().client("s3", config=config), parts.netloc, f"{prefix}/" if prefix else ""


def _s3_get(client: Any, bucket: str, key: str) -> bytes | None:
    from botocore.exceptions import ClientError

    try:
        body: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    return body


def _s3_call(url: str, work: Any) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return work()
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise PolicyEndpointError(f"bundle store {url}: {error.get('Code')}: {error.get('Message')}") from exc
    except BotoCoreError as exc:
        raise PolicyEndpointError(f"bundle store {url} did not answer: {exc}") from exc


def s3_publish(bundle: Path, url: str) -> BundleInfo:
    """Store the bundle as `<prefix>revisions/<rev>.tar.gz` and serve it as `<prefix>bundles/atb.tar.gz`."""
    info = read_bundle(bundle)
    _refuse_unsigned(bundle, info)
    data = bundle.read_bytes()
    client, bucket, prefix = _s3(url)

    def work() -> None:
        stored_key = prefix + revision_path(info.revision)
        existing = _s3_get(client, bucket, stored_key)
        if existing is not None and existing != data:
            raise PolicyBundleUsageError(
                f"revision {info.revision} is already published at {url} with other content; revisions are immutable"
            )
        if existing is None:
            client.put_object(Bucket=bucket, Key=stored_key, Body=data, ContentType="application/gzip")
        client.put_object(Bucket=bucket, Key=prefix + SERVED_NAME, Body=data, ContentType="application/gzip")

    _s3_call(url, work)
    return info


def s3_rollback(url: str, revision: str) -> BundleInfo:
    """Serve `<prefix>revisions/<revision>.tar.gz` again as `<prefix>bundles/atb.tar.gz` (same bytes)."""
    client, bucket, prefix = _s3(url)
    stored_key = prefix + revision_path(revision)
    data = _s3_call(url, lambda: _s3_get(client, bucket, stored_key))
    if data is None:
        raise PolicyBundleUsageError(f"revision {revision} was never published to {url}")
    info = read_bundle_bytes(data, f"{url}/{revision_path(revision)}")
    if info.revision != revision or not info.signed:
        raise PolicyBundleUsageError(f"{stored_key} holds revision {info.revision}, not a signed {revision}")
    _s3_call(
        url,
        lambda: client.put_object(Bucket=bucket, Key=prefix + SERVED_NAME, Body=data, ContentType="application/gzip"),
    )
    return info
