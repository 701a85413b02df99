"""Submitting the sink's checkpoints to witnesses (C2SP tlog-witness), in the background.

Every checkpoint the sink stores is handed to `Witnessing.submit`; one task per
witness sends the newest one with a consistency proof from the size that witness
last cosigned (known from `audit_cosignatures`, else 0). A 409 answer names the
size the witness holds: the task proves again from there. A witness that holds a
*larger* size than the log has, or refuses as a fork or an inconsistency, is
reported (log error and an AuditEvent `audit_checkpoint_witness_refused`): the
store was rolled back or rewritten. Network failures are retried with exponential
backoff (up to `witness_max_backoff_s`); ingest never waits for a witness.

A cosignature is verified with the witness key the sink is configured with,
stored (`audit_cosignatures`) and announced on `atb.audit` as an AuditEvent
`audit_checkpoint_cosigned` whose `checkpoint` is the note with the log's
signature and the cosignature. docs/audit.md, "Witnessed checkpoints".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp

from audit_sink.adapters.db import SealedCheckpoint, StoredCosignature
from audit_sink.adapters.signing import verify_cosignature
from audit_sink.adapters.witnesses import post_checkpoint
from audit_sink.domain.checkpoint import NoteError, SignedNote
from audit_sink.domain.cosignature import SIZE_CONTENT_TYPE, AddCheckpoint, CosignerKey, parse_size
from audit_sink.domain.merkle import MerkleTree
from audit_sink.ports import CosignatureStore
from audit_sink.settings import WitnessEndpoint
from contracts import JsonObject

__all__ = ["COSIGNED_AUDIT_TYPE", "REFUSED_AUDIT_TYPE", "Witnessing"]

log = logging.getLogger(__name__)

COSIGNED_AUDIT_TYPE = "audit_checkpoint_cosigned"
REFUSED_AUDIT_TYPE = "audit_checkpoint_witness_refused"

Announce = Callable[[str, str, dict[str, object]], Awaitable[None]] | Callable[[str, str, JsonObject], Awaitable[None]]
"""(audit type, outcome, details): publish an AuditEvent on atb.audit. The details are JSON values;
an announcer may take them as either type."""


@dataclass
class _Witness:
    url: str
    key: CosignerKey
    size: int = 0
    """The size it last cosigned, as far as we know."""
    done: int = -1
    """The size of our newest checkpoint it cosigned (or refused for good)."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class Witnessing:
    def __init__(
        self,
        endpoints: Sequence[WitnessEndpoint],
        store: CosignatureStore,
        announce: Announce,
        *,
        timeout_s: float = 10.0,
        max_backoff_s: float = 60.0,
    ) -> None:
        self._witnesses = [_Witness(e.url, CosignerKey.parse(e.vkey)) for e in endpoints]
        self._store = store
        self._announce = announce
        self._timeout = timeout_s
        self._max_backoff = max_backoff_s
        self._latest: SealedCheckpoint | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self.cosigned = 0

    def __bool__(self) -> bool:
        return bool(self._witnesses)

    async def start(self) -> None:
        if not self._witnesses:
            return
        sizes = await asyncio.to_thread(self._store.cosigned_sizes)
        for witness in self._witnesses:
            witness.size = sizes.get(witness.key.key_id.hex(), 0)
        self._session = aiohttp.ClientSession()
        self._tasks = [asyncio.create_task(self._run(w), name=f"witness {w.key.name}") for w in self._witnesses]

    def submit(self, checkpoint: SealedCheckpoint) -> None:
        """The newest checkpoint; older ones still queued are skipped (the newest covers them)."""
        if not self._witnesses:
            return
        self._latest = checkpoint
        for witness in self._witnesses:
            witness.wake.set()

    async def stop(self, grace_s: float = 5.0) -> None:
        """Give the witnesses `grace_s` to cosign the newest checkpoint, then stop."""
        latest = self._latest
        deadline = time.monotonic() + grace_s
        while latest is not None and time.monotonic() < deadline:
            if all(w.done >= latest.size for w in self._witnesses):
                break
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _run(self, witness: _Witness) -> None:
        failures = 0
        while True:
            await witness.wake.wait()
            witness.wake.clear()
            checkpoint = self._latest
            if checkpoint is None or witness.done >= checkpoint.size:
                continue
            try:
                await self._submit(witness, checkpoint)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = min(self._max_backoff, 0.5 * 2**failures)
                log.warning(
                    "audit sink: witness %s (%s) did not cosign checkpoint %d: %s; retrying in %.1f s",
                    witness.key.name,
                    witness.url,
                    checkpoint.size,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                witness.wake.set()

    async def _submit(self, witness: _Witness, checkpoint: SealedCheckpoint) -> None:
        assert self._session is not None
        for _ in range(3):  # a 409 tells the size to prove from; then once more
            if witness.size > checkpoint.size:
                await self._refused(
                    witness,
                    checkpoint,
                    f"the witness cosigned size {witness.size} but the log has {checkpoint.size}: "
                    "the store was rolled back",
                )
                return
            proof = await asyncio.to_thread(self._proof, witness.size, checkpoint.size)
            body = AddCheckpoint(witness.size, tuple(proof), checkpoint.note).render()
            answer = await post_checkpoint(self._session, witness.url, body, self._timeout)
            if answer.status == 200:
                await self._cosigned(witness, checkpoint, answer.text)
                return
            if answer.status == 409 and answer.content_type == SIZE_CONTENT_TYPE:
                witness.size = parse_size(answer.text)
                continue
            if answer.status in (409, 422):
                await self._refused(witness, checkpoint, f"{answer.status}: {answer.text.strip()}")
                return
            raise RuntimeError(f"HTTP {answer.status}: {answer.text.strip()[:200]}")
        raise RuntimeError("the witness keeps changing its size")

    def _proof(self, old: int, size: int) -> list[bytes]:
        if old == 0 or old == size:
            return []
        return MerkleTree(self._store.leaf_hashes(0, size)).consistency_proof(old, size)

    async def _cosigned(self, witness: _Witness, checkpoint: SealedCheckpoint, lines: str) -> None:
        note = SignedNote.parse(checkpoint.note)
        try:
            answer = SignedNote.parse(note.text + "\n" + lines)
            cosig = verify_cosignature(answer, witness.key)
        except NoteError as exc:
            raise RuntimeError(f"its answer carries no valid cosignature: {exc}") from exc
        cosigned = SignedNote(note.text, (*note.signatures, cosig.line())).render()
        stored = StoredCosignature(
            checkpoint.size,
            checkpoint.root,
            witness.key.name,
            witness.key.key_id.hex(),
            cosig.timestamp,
            cosigned,
            datetime.now(UTC),
        )
        await asyncio.to_thread(self._store.add_cosignature, stored)
        witness.size = witness.done = checkpoint.size
        self.cosigned += 1
        await self._announce(
            COSIGNED_AUDIT_TYPE,
            "info",
            {
                "checkpoint": cosigned,
                "tree_size": checkpoint.size,
                "witness": witness.key.name,
                "witness_key": str(witness.key),
                "cosigned_at": cosig.timestamp,
            },
        )

    async def _refused(self, witness: _Witness, checkpoint: SealedCheckpoint, why: str) -> None:
        log.error("audit sink: witness %s refused checkpoint %d: %s", witness.key.name, checkpoint.size, why)
        witness.done = checkpoint.size  # the next checkpoint is tried again
        await self._announce(
            REFUSED_AUDIT_TYPE,
            "failure",
            {"checkpoint": checkpoint.note, "tree_size": checkpoint.size, "witness": witness.key.name, "reason": why},
        )
