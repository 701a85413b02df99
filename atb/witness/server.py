"""The witness's HTTP interface (aiohttp): C2SP tlog-witness `POST /add-checkpoint`, and two read endpoints.

- `POST /add-checkpoint`: body `old <size>`, proof lines, empty line, signed checkpoint.
  404 unknown origin, 403 no valid signature by a configured log key, 400 malformed
  or `old` > size, 409 `old` is not the recorded size (body: that size,
  `text/x.tlog.size`) or a fork at the same size, 422 the consistency proof does not
  verify; 200 with the cosignature line. Check and record run under one lock, and
  the record is on disk before the answer.
- `GET /checkpoint?origin=<origin>`: the latest checkpoint it cosigned for the
  origin, with the log's signature and its cosignature (what an auditor passes to
  `atb audit verify --trusted-checkpoint`); 404 if none. The monitoring side of
  tlog-witness is still open in C2SP; this is ours.
- `GET /healthz`: 200 `{"status": "ok", "witness": <vkey>}`.

Request bodies are capped at 64 KiB (a checkpoint and 63 proof lines are ~3 KiB).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence

from aiohttp import web

from atb.witness.adapters.keys import Cosigner
from atb.witness.adapters.state import Entry, WitnessState
from atb.witness.domain import judge
from audit_sink.adapters.signing import verify_note
from audit_sink.domain.checkpoint import Checkpoint, NoteError, SignedNote, VerifierKey
from audit_sink.domain.cosignature import AddCheckpoint

__all__ = ["MAX_BODY", "make_app"]

log = logging.getLogger("atb.witness")
MAX_BODY = 64 * 1024


def make_app(cosigner: Cosigner, state: WitnessState, logs: Mapping[str, Sequence[VerifierKey]]) -> web.Application:
    lock = asyncio.Lock()

    async def add_checkpoint(request: web.Request) -> web.Response:
        try:
            body = (await request.read()).decode("utf-8")
            submitted = AddCheckpoint.parse(body)
            note = SignedNote.parse(submitted.note)
            checkpoint = Checkpoint.parse(note.text)
        except (UnicodeDecodeError, NoteError) as exc:
            return web.Response(status=400, text=f"malformed add-checkpoint request: {exc}\n")
        keys = logs.get(checkpoint.origin)
        if not keys:
            return web.Response(status=404, text=f"unknown log origin {checkpoint.origin!r}\n")
        signed_by = [key for key in keys if _signed(submitted.note, key)]
        if not signed_by:
            log.warning("witness: checkpoint %d of %s not signed by its log key", checkpoint.size, checkpoint.origin)
            return web.Response(status=403, text="no valid signature by a known key of this log\n")
        async with lock:  # check and record atomically (C2SP tlog-witness)
            verdict = judge(submitted, checkpoint, state.recorded(checkpoint.origin))
            if not verdict.cosign:
                log.warning(
                    "witness: refused checkpoint %d of %s (old %d): %d %s",
                    checkpoint.size,
                    checkpoint.origin,
                    submitted.old,
                    verdict.status,
                    verdict.body.strip(),
                )
                return web.Response(
                    status=verdict.status, body=verdict.body.encode(), content_type=verdict.content_type
                )
            cosignature = cosigner.cosign(note.text, int(time.time()))
            log_sigs = [
                sig for sig in note.signatures if any(sig.name == k.name and sig.key_id == k.key_id for k in signed_by)
            ]
            cosigned = SignedNote(note.text, (*log_sigs, cosignature.line())).render()
            entry = Entry(checkpoint.size, checkpoint.root, cosigned, cosignature.timestamp)
            await asyncio.to_thread(state.record, checkpoint.origin, entry)
        return web.Response(text=cosignature.line().line())

    async def latest(request: web.Request) -> web.Response:
        origin = request.query.get("origin", "")
        entry = state.entry(origin)
        if entry is None:
            return web.Response(status=404, text=f"nothing cosigned for origin {origin!r}\n")
        return web.Response(text=entry.note)

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "witness": str(cosigner.key)})

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/add-checkpoint", add_checkpoint)
    app.router.add_get("/checkpoint", latest)
    app.router.add_get("/healthz", healthz)
    return app


def _signed(note: str, key: VerifierKey) -> bool:
    try:
        verify_note(note, key)
    except NoteError:
        return False
    return True
