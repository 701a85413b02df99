"""A bad record is dead-lettered alone; a transient failure retries the whole batch."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from atb_runtime import Incoming, Outgoing, TransientError, dead_letter, each_record
from contracts import Topic, decode_envelope, payload_of, topic_name

RECORDS = [
    Incoming(topic="atb.poa.requests", partition=0, offset=i, key=f"r{i}".encode(), value=b"v") for i in range(3)
]


def _on_error(record: Incoming, exc: Exception) -> list[Outgoing]:
    return dead_letter(
        record,
        consumer="t",
        error_code="internal_error",
        reason=repr(exc),
        source="spiffe://atb.local/svc/t",
        namespace="",
    )


async def test_an_unexpected_error_dead_letters_only_that_record() -> None:
    async def one(record: Incoming) -> Sequence[Outgoing]:
        if record.offset == 1:
            raise ZeroDivisionError("boom")
        return [Outgoing(topic="out", key=record.key or b"", value=b"ok")]

    out = await each_record(RECORDS, one, _on_error)
    assert [o.topic for o in out] == ["out", topic_name(Topic.DLQ), topic_name(Topic.AUDIT), "out"]
    letter = payload_of(decode_envelope(out[1].value))
    assert getattr(letter, "original_offset") == 1  # noqa: B009
    assert "ZeroDivisionError" in getattr(letter, "reason")  # noqa: B009


async def test_a_transient_error_fails_the_whole_batch() -> None:
    async def one(record: Incoming) -> Sequence[Outgoing]:
        raise TransientError("OPA down")

    with pytest.raises(TransientError):
        await each_record(RECORDS, one, _on_error)
