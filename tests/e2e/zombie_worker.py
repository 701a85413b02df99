"""A minimal exactly-once worker for the processor tests: copies each input record to an output topic.

Run as a separate process (`python -m tests.e2e.zombie_worker ...`) so that a test
can freeze it with a real SIGSTOP. The first time it meets the record `freeze`
it stops itself (SIGSTOP) at the chosen moment — in the handler, or inside the
transaction after its output was sent and before the commit — and writes a
marker file first, so the process that takes over does not freeze too.

Each copy carries an after-commit effect (`Outgoing.after_commit`) that prints
`TOLD <key>`: it must be printed only by whoever committed.

With the moment `poison`, the record `huge` makes an output larger than any topic
accepts: its transaction fails however often it is tried, and the processor must
set it aside (a dead letter) while the records around it are copied.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from aiokafka import TopicPartition

from atb_runtime import DeadLetters, Incoming, Outgoing, ProcessorConfig, TransactionalProcessor
from atb_runtime.eos import _Task
from atb_runtime.records import AfterCommit
from contracts import Topic, topic_name

FREEZE = b"freeze"
HUGE = b"huge"


class _FreezingProcessor(TransactionalProcessor):
    """Freezes inside its transaction (outputs sent, not committed) when told to."""

    def __init__(self, *args: object, marker: Path, moment: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._marker = marker
        self._moment = moment

    async def _transaction(
        self, task: _Task, outputs: Sequence[Outgoing], offsets: Mapping[TopicPartition, int]
    ) -> None:
        if self._moment == "transaction" and any(o.value == FREEZE for o in outputs) and _claim(self._marker):
            producer = task.producer
            assert producer is not None
            await producer.begin_transaction()
            for out in outputs:
                await producer.send_and_wait(out.topic, value=out.value, key=out.key)
            _stop_myself()
            await producer.send_offsets_to_transaction(dict(offsets), self._config.group_id)
            await producer.commit_transaction()
            return
        await super()._transaction(task, outputs, offsets)


def _claim(marker: Path) -> bool:
    try:
        with marker.open("x") as f:
            f.write(str(os.getpid()))
    except FileExistsError:
        return False
    return True


def _stop_myself() -> None:
    print("FROZEN", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)
    print("THAWED", flush=True)


async def main(bootstrap: str, namespace: str, instance: str, marker: Path, moment: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    out_topic = topic_name(Topic.POA_ISSUED, namespace)

    async def handler(records: Sequence[Incoming]) -> list[Outgoing]:
        if moment == "handler" and any(r.value == FREEZE for r in records) and _claim(marker):
            _stop_myself()
        return [
            Outgoing(topic=out_topic, key=r.key or b"", value=_copy(r.value), headers=(), after_commit=_told(r.key))
            for r in records
        ]

    def _told(key: bytes | None) -> AfterCommit:
        async def tell() -> None:  # an outcome callback's stand-in: it may happen only once the copy is committed
            print(f"TOLD {(key or b'').decode()}", flush=True)

        return tell

    def _copy(value: bytes | None) -> bytes | None:
        return value * 2_000_000 if value == HUGE and moment == "poison" else value

    ns = namespace.rstrip(".")
    config = ProcessorConfig(
        bootstrap=bootstrap,
        topics=(topic_name(Topic.POA_REQUESTS, namespace),),
        group_id=f"zombie.{ns}",
        transactional_prefix=f"atb-zombie-{ns}",
        member_id=f"atb-zombie-{ns}-{instance}",
        client_id=f"zombie-{instance}",
        service="zombie",
        session_timeout_ms=6_000,
        max_batch=1 if moment != "poison" else 50,
    )
    letters = DeadLetters("zombie", "spiffe://atb.local/svc/zombie", namespace)
    processor = _FreezingProcessor(config, handler, marker=marker, moment=moment, poison=letters)
    await processor.start()
    print("READY", flush=True)
    try:
        await processor.run()
    finally:
        await processor.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4]), sys.argv[5]))
