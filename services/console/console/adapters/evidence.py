"""The compliance view's evidence: checkpoint status, verification, legal holds, bundles, the archive.

Everything here reads; nothing writes the audit store or the archive. The code
that knows the store's and the archive's formats is the audit sink's
(`audit_sink.evidence`, `audit_sink.adapters.ledger`, `audit_sink.archive`),
the same code `atb audit verify|export` runs, so a bundle downloaded here is
the folder `atb audit export` writes (zipped) and `atb audit verify --bundle`
checks it.

- **Checkpoint status:** the newest stored checkpoint, its signature checked
  with the verifier key the console is given (never a key read from the
  store), its size and age.
- **Verification:** `verify_store` over the whole store, in a worker thread,
  every `interval_s` and when a compliance officer asks; the last result (when,
  OK or the problems) is what the page shows.
- **Legal holds:** the active holds (`active_holds`).
- **Archive:** rows that hot retention removed from the database live in the
  archive's segments. They are read with `audit_sink.archive.read.read_archived`,
  what `atb trace --archive` reads: the manifests name the request ids and the
  occurred-at range of their rows, so only the segments of the request (or the
  range) are downloaded; the whole manifest chain and each segment read are
  verified with the log's key, and an archive that does not verify gives no row,
  only the problems, which name the segments. Those segments and their manifests
  are added to a bundle under `archive/` (`atb audit verify --archive
  file:///<folder>/archive#<prefix>` checks them).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, create_engine, select

from audit_sink.adapters.db import audit_checkpoints
from audit_sink.adapters.ledger import active_holds
from audit_sink.adapters.signing import load_verifier, verify_note
from audit_sink.archive.format import ArchiveFormatError, Manifest, sha256_hex
from audit_sink.archive.objects import (
    ArchiveObjects,
    ArchiveRefusedError,
    ArchiveUnavailableError,
    Originals,
    open_archive,
)
from audit_sink.archive.read import ArchiveTamperedError, read_archived
from audit_sink.domain.checkpoint import Checkpoint, NoteError, VerifierKey
from audit_sink.domain.facets import facets_of
from audit_sink.evidence import EvidenceError, export_bundle, verify_store
from console.adapters.audit import RAW_SHOWN, AuditHit, AuditQuery

__all__ = [
    "ArchivedRows",
    "CheckpointStatus",
    "EvidenceDesk",
    "EvidenceUnavailable",
    "Hold",
    "VerifyResult",
]

log = logging.getLogger(__name__)


class EvidenceUnavailable(Exception):
    """What the compliance officer asked for cannot be given: the message says why."""


@dataclass(frozen=True)
class CheckpointStatus:
    size: int
    root_hex: str
    created_at: datetime
    signature_ok: bool
    problem: str = ""

    def age_s(self, now: datetime) -> int:
        return max(0, int((now - self.created_at).total_seconds()))


@dataclass(frozen=True)
class VerifyResult:
    at: datetime
    ok: bool
    leaves: int
    rows: int
    checkpoint_size: int | None
    uncovered: int
    problems: tuple[str, ...]
    seconds: float


@dataclass(frozen=True)
class Hold:
    hold_id: int
    request_id: str | None
    since: datetime | None
    until: datetime | None
    reason: str


@dataclass(frozen=True)
class ArchivedRows:
    rows: tuple[AuditHit, ...]
    segments: tuple[int, ...]
    problems: tuple[str, ...]
    """Why no row is shown (the archive does not verify, or cannot be read), or notices of a versioned bucket."""


@dataclass(frozen=True)
class _Sealed:
    manifest_key: str
    manifest_bytes: bytes
    manifest: Manifest


class EvidenceDesk:
    """Checkpoint status, verification, holds, bundles and archived rows for the compliance view."""

    def __init__(
        self,
        url: str,
        key_path: Path,
        *,
        archive_url: str = "",
        archive_endpoint: str = "",
        interval_s: float = 600.0,
        archive: Callable[[], ArchiveObjects] | None = None,
    ) -> None:
        self._engine: Engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
        self._key_path = key_path
        self._interval_s = interval_s
        self._archive_url = archive_url
        self._archive_factory = archive or (
            (lambda: open_archive(archive_url, endpoint=archive_endpoint or None)) if archive_url else None
        )
        self._archive: ArchiveObjects | None = None
        self._verify_lock = asyncio.Lock()
        self.last_verify: VerifyResult | None = None
        self._task: asyncio.Task[None] | None = None
        self.verified = asyncio.Event()
        """Set after each verification (a test or a page can wait on it)."""

    @property
    def archive_location(self) -> str:
        return self._archive_url

    # -- lifecycle (a ServiceRunner component) -------------------------------------------

    async def start(self) -> None:
        if self._interval_s > 0:
            self._task = asyncio.create_task(self._every())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def aclose(self) -> None:
        await asyncio.to_thread(self._engine.dispose)

    async def _every(self) -> None:
        while True:
            try:
                await self.verify_now()
            except Exception as exc:  # the next round tries again; the page shows the last result
                log.error("audit store verification did not run: %r", exc)
            await asyncio.sleep(self._interval_s)

    # -- checkpoint status and verification ----------------------------------------------

    def key(self) -> VerifierKey:
        try:
            return load_verifier(str(self._key_path))
        except (NoteError, OSError, ValueError) as exc:
            raise EvidenceUnavailable(
                f"no usable verifier key of the audit log at {self._key_path} (ATB_CONSOLE_AUDIT_KEY_PATH): {exc}"
            ) from exc

    def checkpoint_status(self) -> CheckpointStatus | None:
        """The newest stored checkpoint and whether the key signed it; None when the store has none."""
        c = audit_checkpoints.c
        statement = select(c.tree_size, c.root_hash, c.note, c.created_at).order_by(c.tree_size.desc(), c.id.desc())
        with self._engine.connect() as conn:
            row = conn.execute(statement.limit(1)).first()
        if row is None:
            return None
        size, root, note, created = int(row[0]), bytes(row[1]), str(row[2]), row[3]
        created = created if created.tzinfo else created.replace(tzinfo=UTC)
        try:
            checkpoint = Checkpoint.parse(verify_note(note, self.key()).text)
        except EvidenceUnavailable as exc:
            return CheckpointStatus(size, root.hex(), created, False, str(exc))
        except (NoteError, ValueError) as exc:
            return CheckpointStatus(size, root.hex(), created, False, f"its signature does not verify: {exc}")
        if (checkpoint.size, checkpoint.root) != (size, root):
            return CheckpointStatus(size, root.hex(), created, False, "the signed note is for another tree")
        return CheckpointStatus(size, root.hex(), created, True)

    async def verify_now(self) -> VerifyResult:
        """Verify the whole store (one at a time); the result is also `last_verify`."""
        async with self._verify_lock:
            result = await asyncio.to_thread(self._verify)
            self.last_verify = result
            self.verified.set()
            return result

    def _verify(self) -> VerifyResult:
        started = datetime.now(UTC)
        clock = _monotonic()
        try:
            key = self.key()
        except EvidenceUnavailable as exc:
            return VerifyResult(started, False, 0, 0, None, 0, (str(exc),), 0.0)
        report = verify_store(self._engine, key)
        return VerifyResult(
            started,
            report.ok,
            report.leaves,
            report.rows,
            report.latest.size if report.latest else None,
            report.uncovered,
            tuple(report.problems),
            round(_monotonic() - clock, 3),
        )

    # -- legal holds ---------------------------------------------------------------------

    def holds(self) -> list[Hold]:
        return [Hold(i, r, f, u, why) for i, r, f, u, why in active_holds(self._engine)]

    # -- evidence bundles ----------------------------------------------------------------

    def bundle(
        self, *, request_id: str | None, since: datetime | None, until: datetime | None, fmt: str = "jsonl"
    ) -> tuple[bytes, int]:
        """A zip of what `atb audit export` writes for this selection (plus its archived segments); its event count."""
        key = self.key()
        with tempfile.TemporaryDirectory(prefix="atb-console-bundle-") as tmp:
            folder = Path(tmp) / "bundle"
            try:
                summary = export_bundle(
                    self._engine, key, folder, since=since, until=until, request_id=request_id, fmt=fmt
                )
            except EvidenceError as exc:
                raise EvidenceUnavailable(str(exc)) from exc
            archived = self._verified_segments(request_id=request_id, since=since, until=until)
            out = io.BytesIO()
            with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zipped:
                for path in sorted(folder.iterdir()):
                    zipped.write(path, path.name)
                for sealed, segment_bytes in archived:
                    zipped.writestr(f"archive/{sealed.manifest_key}", sealed.manifest_bytes)
                    zipped.writestr(f"archive/{sealed.manifest.segment_key}", segment_bytes)
            return out.getvalue(), summary.events

    # -- the archive ---------------------------------------------------------------------

    def archived(self, query: AuditQuery) -> ArchivedRows:
        """Archived rows of a request (or a time range) that match the query's other filters, oldest first.

        Read by `audit_sink.archive.read.read_archived` (what `atb trace --archive` reads): the whole manifest
        chain and each segment read are verified with the log's key; an archive that does not verify gives
        no row, only the problems, which name the segments."""
        if self._archive_factory is None or not (query.request_id or (query.since and query.until)):
            return ArchivedRows((), (), ())
        try:
            verified = read_archived(
                self._objects(), self.key(), request_id=query.request_id or None, since=query.since, until=query.until
            )
        except ArchiveTamperedError as exc:
            return ArchivedRows((), exc.segments, exc.problems)
        except (EvidenceUnavailable, ArchiveUnavailableError, ArchiveRefusedError) as exc:
            return ArchivedRows((), (), (str(exc),))
        hits: list[AuditHit] = []
        for archived in verified.rows:
            row = archived.row
            if not _matches(query, row.request_id, row.event_type, row.audit_type, row.producer, row.raw):
                continue
            if query.until is not None and row.occurred_at >= query.until:
                continue  # the store's search is [since, until)
            hits.append(
                AuditHit(
                    archived.seq if archived.seq is not None else -1,
                    row.topic,
                    row.event_type,
                    row.request_id,
                    row.producer,
                    row.audit_type,
                    row.occurred_at,
                    row.recorded_at,
                    row.raw[:RAW_SHOWN].decode("utf-8", errors="replace"),
                    segment=archived.segment,
                    position=(row.topic, row.partition, row.offset),
                )
            )
        return ArchivedRows(tuple(hits), verified.segments, verified.notices)

    def _objects(self) -> ArchiveObjects:
        if self._archive is None:
            assert self._archive_factory is not None
            try:
                self._archive = self._archive_factory()
            except Exception as exc:
                raise EvidenceUnavailable(f"the archive cannot be opened: {exc}") from exc
        return self._archive

    def _verified_segments(
        self, *, request_id: str | None, since: datetime | None, until: datetime | None
    ) -> list[tuple[_Sealed, bytes]]:
        """The segments that hold the request's rows (or rows in the range), after `read_archived` verified the
        chain and them: (manifest, segment bytes) for the bundle. EvidenceUnavailable if the archive does not verify."""
        if self._archive_factory is None or not (request_id or (since and until)):
            return []
        key = self.key()
        store = Originals(self._objects())  # the sealed versions, read and verified once, then bundled
        try:
            verified = read_archived(store, key, request_id=request_id, since=since, until=until)
            wanted = set(verified.segments)
            found: list[tuple[_Sealed, bytes]] = []
            for name in store.list("manifests/"):
                manifest_bytes = store.get(name)
                if manifest_bytes is None:
                    continue
                manifest = Manifest.decode(manifest_bytes)
                if manifest.seq not in wanted:
                    continue
                data = store.get(manifest.segment_key, manifest.segment_sha256)
                problem = _segment_problem(manifest, data, key)
                if problem:  # changed on the server's disk since it was verified
                    raise EvidenceUnavailable(f"no bundle: segment {manifest.seq}: {problem}")
                assert data is not None
                found.append((_Sealed(name, manifest_bytes, manifest), data))
        except (ArchiveTamperedError, ArchiveUnavailableError, ArchiveRefusedError, ArchiveFormatError) as exc:
            raise EvidenceUnavailable(f"no bundle: {exc}") from exc
        return found

    async def archived_async(self, query: AuditQuery) -> ArchivedRows:
        return await asyncio.to_thread(self.archived, query)


def _matches(
    query: AuditQuery,
    request_id: str | None,
    event_type: str,
    audit_type: str | None,
    producer: str | None,
    raw: bytes,
) -> bool:
    """The store's filters on an archived row; its facets read from its bytes as the sink reads them."""
    if not all(
        not wanted or wanted == have
        for wanted, have in (
            (query.request_id, request_id),
            (query.event_type, event_type),
            (query.audit_type, audit_type),
            (query.producer, producer),
        )
    ):
        return False
    if not (query.agent_id or query.action or query.tier or query.outcome):
        return True
    found = facets_of(event_type, raw)
    return all(
        not wanted or wanted == have
        for wanted, have in (
            (query.agent_id, found.agent_id),
            (query.action, found.action),
            (query.tier, found.tier),
            (query.outcome, found.outcome),
        )
    )


def _segment_problem(manifest: Manifest, data: bytes | None, key: VerifierKey) -> str:
    if data is None:
        return "missing from the archive"
    if sha256_hex(data) != manifest.segment_sha256 or len(data) != manifest.segment_len:
        return "its bytes are not the ones its manifest names (altered)"
    try:
        checkpoint = Checkpoint.parse(verify_note(manifest.checkpoint, key).text)
    except (NoteError, ValueError) as exc:
        return f"its checkpoint's signature does not verify: {exc}"
    if (checkpoint.size, checkpoint.root) != (manifest.end, manifest.root):
        return "its manifest's range or root is not its signed checkpoint's"
    return ""


def _monotonic() -> float:
    import time

    return time.monotonic()


def merge_timeline(hot: Sequence[AuditHit], archived: Sequence[AuditHit]) -> list[AuditHit]:
    """A request's rows from the archive and the store, each once (a row archived but still hot is the store's)."""
    seen = {h.position for h in hot}
    older = [h for h in archived if h.position not in seen]
    return [*older, *hot]
