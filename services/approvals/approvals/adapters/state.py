"""The approvals changelog: read each request's state back from `atb.approvals.state`.

Writes happen in the processor's transactions (with the outcomes they cause);
this adapter only reads, `read_committed`, up to the end offsets taken at the
start of the read, so aborted writes of a crashed instance are never loaded.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from atb_runtime import Outgoing, outgoing
from contracts import ApprovalStateChanged, EventDecodeError, Topic, decode_envelope, payload_of, topic_name

__all__ = ["StateStore"]


class StateStore:
    def __init__(self, bootstrap: str, namespace: str, source: str) -> None:
        self._bootstrap = bootstrap
        self._namespace = namespace
        self._topic = topic_name(Topic.APPROVALS_STATE, namespace)
        self._source = source

    def record(self, state: ApprovalStateChanged) -> Outgoing:
        return outgoing(state, source=self._source, namespace=self._namespace)

    async def load(self, partitions: Iterable[int]) -> dict[str, ApprovalStateChanged]:
        """The latest state of every request on the given partitions."""
        tps = [TopicPartition(self._topic, p) for p in sorted(set(partitions))]
        if not tps:
            return {}
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, enable_auto_commit=False, isolation_level="read_committed"
        )
        await consumer.start()
        states: dict[str, ApprovalStateChanged] = {}
        try:
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            remaining = [tp for tp in tps if end[tp] > 0]
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=5000)
                for messages in batches.values():
                    for msg in messages:
                        self._apply(states, msg.value)
                remaining = [tp for tp in remaining if await consumer.position(tp) < end[tp]]
        finally:
            await consumer.stop()
        return states

    @staticmethod
    def _apply(states: dict[str, ApprovalStateChanged], value: bytes | None) -> None:
        try:
            payload = payload_of(decode_envelope(value))
        except EventDecodeError:
            return  # only this service writes here; a bad record cannot be a state
        if isinstance(payload, ApprovalStateChanged):
            states[payload.request_id] = payload
