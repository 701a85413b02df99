"""A runner always gives its processor a poison hook (found by tests/e2e/test_hostile_soak.py).

The broker built its runner without one: a record placed on another partition than
its key's reached the handler instead of a dead letter, and a record failing alone
would have been skipped with no letter at all. A runner without a hook of the
service's own now letters under the service's name, from its SPIFFE ID.
"""

from __future__ import annotations

from collections.abc import Sequence

from atb_runtime import Incoming, Outgoing
from atb_runtime.runner import ServiceRunner
from atb_runtime.settings import CommonSettings
from broker.settings import BrokerSettings
from contracts import AuditEvent, DeadLetter, decode_envelope, payload_of


async def _nothing(records: Sequence[Incoming]) -> Sequence[Outgoing]:
    return []


RECORD = Incoming(topic="u.atb.broker.actions", partition=2, offset=41, key=b"req-1", value=b"misplaced")


def test_a_runner_without_a_poison_hook_dead_letters_under_its_own_name() -> None:
    settings = BrokerSettings(topic_namespace="u.")
    runner = ServiceRunner(
        settings, name="broker", group_id="atb-broker", topics=(RECORD.topic,), handler=_nothing
    )  # as broker.main builds it: no poison hook of its own
    letter_record, audit_record = runner.poison(RECORD, "wrong_partition", "key belongs on partition 0 of 3")
    letter = payload_of(decode_envelope(letter_record.value))
    assert isinstance(letter, DeadLetter)
    assert (letter.consumer, letter.error_code, letter.request_id) == ("broker", "wrong_partition", "req-1")
    assert (letter.original_topic, letter.original_partition, letter.original_offset) == (RECORD.topic, 2, 41)
    assert letter_record.topic == "u.atb.dlq"
    assert decode_envelope(letter_record.value).source == settings.service_id
    audit = payload_of(decode_envelope(audit_record.value))
    assert isinstance(audit, AuditEvent)
    assert (audit.audit_type, audit.details["consumer"]) == ("event_dead_lettered", "broker")


def test_a_service_hook_is_kept_and_settings_without_an_id_get_one_from_the_trust_domain() -> None:
    def mine(record: Incoming, code: str, reason: str) -> Sequence[Outgoing]:
        return []

    own = ServiceRunner(CommonSettings(), name="x", group_id="g", topics=("t",), handler=_nothing, poison=mine)
    assert own.poison is mine
    bare = ServiceRunner(
        CommonSettings(trust_domain="example.org"), name="x", group_id="g", topics=(), handler=_nothing
    )
    assert decode_envelope(bare.poison(RECORD, "poison_record", "r")[0].value).source == "spiffe://example.org/svc/x"
