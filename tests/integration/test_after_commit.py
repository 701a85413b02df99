"""Side effects that wait for their record (`Outgoing.after_commit`), outside a transaction.

The transactional processor's side (effects run after the commit, never for a
fenced zombie) is tests/e2e/test_fencing.py; the issuer's use of it for outcome
callbacks is tests/service/test_callbacks.py.
"""

from __future__ import annotations

import logging

import pytest

from atb_runtime import Outgoing, Publisher, with_after_commit
from atb_runtime.readback import read_records
from atb_runtime.records import run_after_commit
from contracts import Topic, topic_name


def _record(topic: str, key: bytes, seen: list[str]) -> Outgoing:
    async def effect() -> None:
        seen.append(key.decode())

    return with_after_commit(Outgoing(topic=topic, key=key, value=b"v", headers=()), effect)


@pytest.mark.kafka
async def test_a_published_records_effect_runs_once_kafka_has_the_record(kafka_bootstrap: str, namespace: str) -> None:
    topic = topic_name(Topic.POA_REQUESTS, namespace)
    seen: list[str] = []
    async with Publisher(kafka_bootstrap, "after-commit-test") as publisher:
        await publisher.publish([_record(topic, b"queued", seen)])
        assert seen == [], "run before Kafka acknowledged the record"
        await publisher.flush()
        assert seen == ["queued"]
        await publisher.send_and_wait([_record(topic, b"sent", seen)])
        assert seen == ["queued", "sent"]
        await publisher.flush()
        assert seen == ["queued", "sent"], "an effect runs once"
    keys = [r.key or b"" for r in await read_records(kafka_bootstrap, topic)]
    assert sorted(keys) == [b"queued", b"sent"]  # read back partition by partition


async def test_a_failing_effect_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    async def broken() -> None:
        raise RuntimeError("the notifier is gone")

    outputs = [
        _record("t", b"first", seen),
        with_after_commit(Outgoing(topic="t", key=b"broken", value=b"v", headers=()), broken),
        Outgoing(topic="t", key=b"plain", value=b"v", headers=()),
        _record("t", b"last", seen),
    ]
    with caplog.at_level(logging.ERROR, logger="atb_runtime.records"):
        await run_after_commit(outputs)
    assert seen == ["first", "last"]
    assert "a side effect of a committed record on t failed" in caplog.text
    # An effect is not part of a record's value: records compare equal with or without one.
    assert outputs[1] == Outgoing(topic="t", key=b"broken", value=b"v", headers=())
