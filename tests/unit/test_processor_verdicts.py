"""How the exactly-once processor judges a transaction that fails, with a producer that fails on cue.

The real broker's fencing is tests/e2e/test_fencing.py (SIGSTOP, SIGCONT). Here: errors
that broker run only meets now and then. A thawed instance's producer can have its
transaction put in an error state by its own background sender, and its next send then
raises aiokafka's IllegalOperation, which is no KafkaError: the scale-out soak saw it end
an approvals instance's processing loop. It is judged as fenced now, and the effects of
the records are not run.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from aiokafka.errors import IllegalOperation, KafkaConnectionError, ProducerFenced

from atb_runtime import Incoming, Outgoing, ProcessorConfig, TransactionalProcessor, with_after_commit
from atb_runtime.eos import _Task, _Verdict


class Producer:
    def __init__(self, failure: BaseException | None) -> None:
        self.failure = failure
        self.calls: list[str] = []

    async def begin_transaction(self) -> None:
        self.calls.append("begin")

    async def send(self, topic: str, **_: object) -> object:
        self.calls.append("send")
        if self.failure is not None:
            raise self.failure
        raise AssertionError("not reached in these tests")

    async def send_offsets_to_transaction(self, offsets: object, group_id: str) -> None:
        self.calls.append("offsets")

    async def commit_transaction(self) -> None:
        self.calls.append("commit")


async def _handler(records: Sequence[Incoming]) -> list[Outgoing]:
    return []


@pytest.mark.parametrize(
    ("failure", "verdict"),
    [
        (IllegalOperation("Can't send messages while not in transaction"), _Verdict.FENCED),
        (ProducerFenced(), _Verdict.FENCED),
        (KafkaConnectionError(), _Verdict.TRANSIENT),
    ],
    ids=["illegal_operation", "fenced", "connection"],
)
async def test_a_failed_send_is_judged_and_its_effects_are_not_run(failure: BaseException, verdict: _Verdict) -> None:
    config = ProcessorConfig(
        bootstrap="unused:9092", topics=("t",), group_id="g", transactional_prefix="p", member_id="m", client_id="c"
    )
    processor = TransactionalProcessor(config, _handler)
    producer = Producer(failure)
    task = _Task(partition=0, producer=producer)
    told: list[str] = []

    async def tell() -> None:
        told.append("told")

    record = with_after_commit(Outgoing(topic="t", key=b"k", value=b"v", headers=()), tell)
    assert await processor._commit(task, [record], {}) is verdict  # judged, not raised out of the loop
    assert producer.calls == ["begin", "send"]
    assert told == []
    assert type(failure).__name__ in task.last_error
