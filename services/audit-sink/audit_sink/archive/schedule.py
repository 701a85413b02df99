"""Sealing on a schedule, in the audit sink: the same `Sealer` as `atb audit archive`, every interval.

Off unless `ATB_AUDIT_ARCHIVE_URL` is set. The sink builds it with
`ArchiveSchedule.from_settings(engine, key)` and runs it beside its ingest
(`await schedule.start()` after the store is open, `await schedule.stop()` on
shutdown). Each round runs in a worker thread (SQLAlchemy and boto3 block) and
never holds the writer lock: ingest does not wait for it. A failed round (the
object store unreachable, a store or archive that does not verify) is logged
and retried at the next interval; `failures` counts them in a row, `sealed`
counts segments sealed, for metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import Engine

from audit_sink.archive.objects import S3Archive, open_archive
from audit_sink.archive.seal import Sealer
from audit_sink.domain.checkpoint import VerifierKey

__all__ = ["ArchiveSchedule", "ArchiveSettings"]

log = logging.getLogger("atb.audit_sink.archive")


class ArchiveSettings(BaseSettings):
    """`ATB_AUDIT_ARCHIVE_*`; the endpoint and credentials are the usual AWS settings."""

    model_config = SettingsConfigDict(env_prefix="ATB_AUDIT_ARCHIVE_", extra="ignore")

    url: str = ""
    """`s3://<bucket>/<prefix>`; empty: no scheduled sealing."""
    endpoint: str = ""
    """S3 endpoint URL (default `AWS_ENDPOINT_URL` or AWS)."""
    interval_s: float = 3600.0
    settle_s: float = 300.0
    """A checkpoint younger than this is sealed at a later round (its cosignatures have time to arrive)."""
    max_leaves: int = 10_000


class ArchiveSchedule:
    def __init__(self, sealer: Sealer, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError("the archive interval must be positive")
        self._sealer = sealer
        self._interval = interval_s
        self._task: asyncio.Task[None] | None = None
        self.sealed = 0
        self.failures = 0

    @classmethod
    def from_settings(
        cls, engine: Engine, key: VerifierKey, settings: ArchiveSettings | None = None
    ) -> ArchiveSchedule | None:
        """The schedule `ATB_AUDIT_ARCHIVE_*` asks for, or None when archiving is off."""
        settings = settings or ArchiveSettings()
        if not settings.url:
            return None
        archive = open_archive(settings.url, endpoint=settings.endpoint or None)
        if not isinstance(archive, S3Archive):
            raise ValueError(f"ATB_AUDIT_ARCHIVE_URL must be s3://<bucket>/<prefix>, not {settings.url!r}")
        sealer = Sealer(
            engine,
            archive,
            key,
            max_leaves=settings.max_leaves,
            settle=timedelta(seconds=settings.settle_s),
            progress=log.info,
            warn=log.warning,
        )
        return cls(sealer, settings.interval_s)

    async def run_once(self) -> int:
        """One round: seal what is closed and map the legal holds; how many segments were sealed."""
        sealed = await asyncio.to_thread(self._sealer.run)
        await asyncio.to_thread(self._sealer.sync_holds)
        written = sum(1 for s in sealed if s.written)
        self.sealed += written
        return written

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
                self.failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                log.error("archive round failed (%d in a row): %s", self.failures, exc)
            await asyncio.sleep(self._interval)  # the schedule itself, not a synchronisation

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="audit archive")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
