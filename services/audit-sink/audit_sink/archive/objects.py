"""Where segments and manifests are kept: S3-compatible object storage with Object Lock.

`S3Archive` writes every object once, in Object Lock **COMPLIANCE** mode with a
retain-until date: until then the server refuses to overwrite or delete it, for
every user, the account's root included, and the date can only be extended.
A legal hold on the audit store maps to the object's legal hold (`set_legal_hold`).
The bucket must have been created with Object Lock enabled (`create_bucket`
does that); `require_object_lock` refuses to archive into any other.

The URL is `s3://<bucket>/<prefix>`. The endpoint and the credentials come from
the usual AWS settings (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, a profile...) unless given.
`DirArchive` reads a local copy of an archive (`file:///path/to/copy`, laid out
as the bucket: `<prefix>manifests/...`), for verification away from the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from audit_sink.archive.format import sha256_hex

__all__ = [
    "ArchiveObjects",
    "ArchiveRefusedError",
    "ArchiveUnavailableError",
    "ArchiveUrlError",
    "DirArchive",
    "Lock",
    "Originals",
    "S3Archive",
    "Versions",
    "open_archive",
]


class ArchiveUrlError(ValueError):
    """An archive URL this module cannot use."""


class ArchiveUnavailableError(RuntimeError):
    """The object store did not answer, or refused the credentials."""


class ArchiveRefusedError(RuntimeError):
    """The object store refused a write: `code` and `message` are the server's."""

    def __init__(self, key: str, operation: str, code: str, message: str) -> None:
        super().__init__(f"{operation} {key}: refused by the object store: {code}: {message}")
        self.key, self.operation, self.code, self.server_message = key, operation, code, message


@dataclass(frozen=True)
class Lock:
    """An object's Object Lock state as the server reports it."""

    mode: str | None
    retain_until: datetime | None
    legal_hold: bool


@dataclass(frozen=True)
class Versions:
    """The versions a versioned bucket keeps of one key."""

    key: str
    ids: tuple[str, ...]
    """Version ids of the object's bodies, oldest first (the first is the one written first)."""
    delete_markers: int = 0


class ArchiveObjects(Protocol):
    """What reading an archive needs."""

    @property
    def location(self) -> str: ...

    def list(self, prefix: str) -> list[str]: ...

    def get(self, key: str) -> bytes | None: ...

    def lock(self, key: str) -> Lock | None:
        """None where the copy cannot say (a local folder)."""
        ...


def _error_code(exc: Exception) -> tuple[str, str]:
    response: dict[str, Any] = getattr(exc, "response", {}) or {}
    error = response.get("Error", {})
    return str(error.get("Code", type(exc).__name__)), str(error.get("Message", exc))


class S3Archive:
    """An archive in an S3 bucket (any S3-compatible server with Object Lock)."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self._s3 = client
        self.bucket = bucket
        self.prefix = prefix

    @classmethod
    def connect(
        cls,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str | None = None,
    ) -> S3Archive:
        import boto3  # imported late: only the archive paths need it
        from botocore.config import Config

        config = Config(
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 4, "mode": "standard"},
            s3={"addressing_style": "path"},
            # Read what is stored and let the archive's own digests judge it: a body that fails the
            # server's stored checksum would otherwise raise before the verifier could name the segment.
            response_checksum_validation="when_required",
        )
        client = boto3.session.Session().client(  # a session of its own: no credentials cached process-wide
            "s3",
            endpoint_url=endpoint or None,
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            region_name=region or None,
            config=config,
        )
        return cls(client, bucket, prefix)

    @property
    def client(self) -> Any:
        return self._s3

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _call(self, operation: str, key: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._s3, operation)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code, message = _error_code(exc)
            if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket"}:
                raise ArchiveUnavailableError(f"{self.location}: {code}: {message}") from exc
            raise ArchiveRefusedError(key, operation, code, message) from exc
        except BotoCoreError as exc:
            raise ArchiveUnavailableError(f"{self.location}: {exc}") from exc

    def create_bucket(self) -> None:
        """Create the bucket with Object Lock enabled (a no-op if this caller owns it already)."""
        try:
            self._call("create_bucket", self.bucket, ObjectLockEnabledForBucket=True)
        except ArchiveRefusedError as exc:
            if exc.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise

    def require_object_lock(self) -> None:
        """ArchiveRefusedError unless the bucket has Object Lock enabled."""
        try:
            answer = self._call("get_object_lock_configuration", self.bucket)
        except ArchiveRefusedError as exc:
            raise ArchiveRefusedError(
                self.bucket, "archive into", exc.code, f"the bucket has no Object Lock ({exc.server_message})"
            ) from exc
        if answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
            raise ArchiveRefusedError(self.bucket, "archive into", "ObjectLockNotEnabled", "Object Lock is disabled")

    def put_locked(self, key: str, data: bytes, retain_until: datetime, *, legal_hold: bool = False) -> None:
        """Write `data` once, locked in COMPLIANCE mode until `retain_until` (refused if the key exists)."""
        self._call(
            "put_object",
            key,
            Key=key,
            Body=data,
            ContentType="application/json",
            ObjectLockMode="COMPLIANCE",
            ObjectLockRetainUntilDate=retain_until.astimezone(UTC),
            ObjectLockLegalHoldStatus="ON" if legal_hold else "OFF",
        )

    def extend_retention(self, key: str, retain_until: datetime, *, version_id: str | None = None) -> None:
        """Lock an existing object (its current version, or `version_id`) in COMPLIANCE mode until
        `retain_until` (the server refuses to shorten)."""
        self._call(
            "put_object_retention",
            key,
            Key=key,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": retain_until.astimezone(UTC)},
            **_version(version_id),
        )

    def get(self, key: str) -> bytes | None:
        try:
            answer = self._call("get_object", key, Key=key)
        except ArchiveRefusedError as exc:
            if exc.code in {"NoSuchKey", "404", "NotFound"}:
                return None
            raise
        body: bytes = answer["Body"].read()
        return body

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            answer = self._call("list_objects_v2", prefix, Prefix=self.prefix + prefix, **extra)
            keys += [str(item["Key"]) for item in answer.get("Contents", [])]
            if not answer.get("IsTruncated"):
                return sorted(keys)
            token = answer.get("NextContinuationToken")

    def versions(self, prefix: str) -> dict[str, Versions] | None:
        """Every version of every key under `prefix`, oldest first; None when the bucket keeps no versions.

        Object Lock forbids changing or deleting a locked version, not adding one: on a versioned
        bucket a write to a sealed key becomes a newer version, a delete a delete marker."""
        try:
            status = self._call("get_bucket_versioning", self.bucket).get("Status")
        except ArchiveRefusedError as exc:
            if exc.code in {"NotImplemented", "NotImplementedError"}:
                return None
            raise
        if status not in {"Enabled", "Suspended"}:
            return None
        bodies: dict[str, list[str]] = {}
        markers: dict[str, int] = {}
        extra: dict[str, str] = {}
        while True:
            answer = self._call("list_object_versions", prefix, Prefix=self.prefix + prefix, **extra)
            for item in answer.get("Versions", []):  # per key, newest first (S3's order)
                bodies.setdefault(str(item["Key"]), []).append(str(item["VersionId"]))
            for item in answer.get("DeleteMarkers", []):
                markers[str(item["Key"])] = markers.get(str(item["Key"]), 0) + 1
            if not answer.get("IsTruncated"):
                break
            extra = {"KeyMarker": answer["NextKeyMarker"], "VersionIdMarker": answer["NextVersionIdMarker"]}
        return {
            key: Versions(key, tuple(reversed(bodies.get(key, []))), markers.get(key, 0))
            for key in sorted(bodies.keys() | markers.keys())
        }

    def get_version(self, key: str, version_id: str) -> bytes | None:
        """One version's bytes; None if there is no such version."""
        try:
            answer = self._call("get_object", key, Key=key, VersionId=version_id)
        except ArchiveRefusedError as exc:
            if exc.code in {"NoSuchKey", "NoSuchVersion", "404", "NotFound"}:
                return None
            raise
        body: bytes = answer["Body"].read()
        return body

    def lock(self, key: str, *, version_id: str | None = None) -> Lock:
        """The Object Lock state of the key's current version, or of `version_id`."""
        version = _version(version_id)
        try:
            retention = self._call("get_object_retention", key, Key=key, **version).get("Retention", {})
        except ArchiveRefusedError as exc:
            if exc.code not in {"NoSuchObjectLockConfiguration", "ObjectLockConfigurationNotFoundError"}:
                raise
            retention = {}
        try:
            answer = self._call("get_object_legal_hold", key, Key=key, **version)
            hold = answer.get("LegalHold", {}).get("Status") == "ON"
        except ArchiveRefusedError as exc:
            if exc.code not in {"NoSuchObjectLockConfiguration", "ObjectLockConfigurationNotFoundError"}:
                raise
            hold = False
        until = retention.get("RetainUntilDate")
        return Lock(retention.get("Mode"), until.astimezone(UTC) if until is not None else None, hold)

    def set_legal_hold(self, key: str, on: bool, *, version_id: str | None = None) -> None:
        """Place or clear the legal hold of the key's current version, or of `version_id`."""
        self._call(
            "put_object_legal_hold", key, Key=key, LegalHold={"Status": "ON" if on else "OFF"}, **_version(version_id)
        )


def _version(version_id: str | None) -> dict[str, str]:
    return {"VersionId": version_id} if version_id is not None else {}


class Originals:
    """An archive's objects as they were sealed: what everything that trusts an archive reads through.

    Object Lock keeps a locked version from being changed or deleted, not from being
    covered. On a versioned bucket (every AWS bucket with Object Lock is one) a write to
    a sealed key is accepted as a newer version and a delete as a delete marker, and a
    plain GET, retention or legal-hold call then reaches those. Here every key is its
    original: the oldest version (with a digest asked for, the oldest version whose
    bytes have it, else the oldest), and `lock`, `extend_retention` and
    `set_legal_hold` act on that version. Whatever else was written over a key read is
    reported in `notices`, never read. The reader (`read.read_archived`),
    `check.verify_archive`, hot retention and the sealer read through this class.

    `list` and the versions are a snapshot taken on first use and after `refresh`; a key
    missing from it is looked up on its own (one the sealer has just written). On a
    bucket without versions, or a local copy, the objects are read as they are.
    """

    def __init__(self, archive: ArchiveObjects) -> None:
        self._archive = archive
        self._s3 = archive if isinstance(archive, S3Archive) else None
        self._versions: dict[str, Versions] | None = None
        self._loaded = False
        self._chosen: dict[str, str] = {}
        self.notices: list[str] = []
        """What else was written over the keys read, in the order found (a key may repeat after a refresh)."""

    def refresh(self) -> None:
        """Take the listing and the versions again when next asked (the archive may have grown since)."""
        self._loaded = False
        self._chosen.clear()

    def _snapshot(self) -> dict[str, Versions] | None:
        if not self._loaded:
            self._versions = self._s3.versions("") if self._s3 is not None else None
            self._loaded = True
        return self._versions

    @property
    def location(self) -> str:
        return self._archive.location

    @property
    def versioned(self) -> bool:
        """Whether the bucket keeps versions (a write over a key then adds one instead of being refused)."""
        return self._snapshot() is not None

    def list(self, prefix: str) -> list[str]:
        """The keys under `prefix` that have a sealed version (a delete marker hides none of them)."""
        versions = self._snapshot()
        if self._s3 is None or versions is None:
            return self._archive.list(prefix)
        full = self._s3.prefix + prefix
        return sorted(key for key, found in versions.items() if key.startswith(full) and found.ids)

    def get(self, key: str, sha256: str | None = None) -> bytes | None:
        """The key's original bytes (see the class doc); None if it has none."""
        if self._s3 is None or self._snapshot() is None:
            return self._archive.get(key)
        found = self._found(key)
        if found is None or not found.ids:
            return None
        chosen, data = found.ids[0], self._s3.get_version(key, found.ids[0])
        if sha256 is not None and (data is None or sha256_hex(data) != sha256):
            for version in found.ids[1:]:
                candidate = self._s3.get_version(key, version)
                if candidate is not None and sha256_hex(candidate) == sha256:
                    chosen, data = version, candidate
                    break
        self._chosen[key] = chosen
        later = sum(1 for v in found.ids if v != chosen)
        if later or found.delete_markers:
            self.notices.append(
                f"{key}: {later} other version(s) and {found.delete_markers} delete marker(s) were written "
                f"besides the sealed version; ignored, version {chosen} was read and verified"
            )
        return data

    def lock(self, key: str) -> Lock | None:
        """The Object Lock state of the key's original version (None where the copy cannot say)."""
        if self._s3 is None:
            return self._archive.lock(key)
        return self._s3.lock(key, version_id=self._original(key))

    def extend_retention(self, key: str, retain_until: datetime) -> None:
        """Extend the original version's COMPLIANCE lock to `retain_until`."""
        self._writer().extend_retention(key, retain_until, version_id=self._original(key))

    def set_legal_hold(self, key: str, on: bool) -> None:
        """Place or clear the original version's legal hold."""
        self._writer().set_legal_hold(key, on, version_id=self._original(key))

    def put_locked(self, key: str, data: bytes, retain_until: datetime, *, legal_hold: bool = False) -> None:
        """`S3Archive.put_locked`; the key is looked up again when next read."""
        self._writer().put_locked(key, data, retain_until, legal_hold=legal_hold)
        if (versions := self._snapshot()) is not None:
            versions.pop(key, None)
        self._chosen.pop(key, None)

    def _writer(self) -> S3Archive:
        if self._s3 is None:
            raise ArchiveUrlError(f"{self._archive.location}: a local copy is read only")
        return self._s3

    def _found(self, key: str) -> Versions | None:
        versions = self._snapshot()
        assert self._s3 is not None
        assert versions is not None
        found = versions.get(key)
        if found is None and key.startswith(self._s3.prefix):
            fresh = self._s3.versions(key.removeprefix(self._s3.prefix)) or {}
            found = fresh.get(key)
            if found is not None:
                versions[key] = found
        return found

    def _original(self, key: str) -> str | None:
        """The version id read for `key` (the oldest if not read yet); None on a bucket without versions."""
        if self._snapshot() is None:
            return None
        if key in self._chosen:
            return self._chosen[key]
        found = self._found(key)
        return found.ids[0] if found is not None and found.ids else None


class DirArchive:
    """A local copy of an archive, read only."""

    def __init__(self, root: Path, prefix: str = "") -> None:
        self.root = root
        self.prefix = prefix

    @property
    def location(self) -> str:
        return f"file://{self.root}/{self.prefix}"

    def list(self, prefix: str) -> list[str]:
        base = self.root / (self.prefix + prefix)
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file())

    def get(self, key: str) -> bytes | None:
        path = self.root / key
        return path.read_bytes() if path.is_file() else None

    def lock(self, key: str) -> Lock | None:
        return None


def open_archive(url: str, *, endpoint: str | None = None) -> S3Archive | DirArchive:
    """`s3://bucket/prefix` or `file:///path/to/copy` (a prefix inside the copy: `file:///copy#prefix/`)."""
    parts = urlsplit(url)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ArchiveUrlError(f"{url!r}: no bucket (s3://<bucket>/<prefix>)")
        prefix = parts.path.lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return S3Archive.connect(parts.netloc, prefix, endpoint=endpoint)
    if parts.scheme == "file":
        root = Path(parts.path)
        if not root.is_dir():
            raise ArchiveUrlError(f"{url!r}: no folder {root}")
        prefix = parts.fragment
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return DirArchive(root, prefix)
    raise ArchiveUrlError(f"{url!r}: an archive URL is s3://<bucket>/<prefix> or file:///<folder>")
