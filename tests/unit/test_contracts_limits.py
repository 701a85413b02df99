"""The size limits of contracts/limits.py hold together, and every place that applies one uses it.

A record accepted at one gate and refused at the next stalls whoever holds it
(issue 14: a ~1 MB record stopped approvals, the issuer and the broker), so the
order of the gates is tested, not just documented.
"""

from __future__ import annotations

import base64
import hashlib
import inspect

from aiokafka.record.default_records import DefaultRecordBatchBuilder

import atb_runtime.publisher as publisher_module
from atb.replay import redrive as redrive_module
from atb_runtime import DeadLetters, Incoming, Publisher
from atb_runtime.records import letter_for
from chat.adapters import http as chat_http
from contracts import CATALOGUE, DeadLetter, Topic, decode_envelope, payload_of, topic_name
from contracts import http as contracts_http
from contracts.envelope import MAX_EVENT_BYTES as ENVELOPE_MAX
from contracts.limits import (
    DEAD_LETTER_KEY_CHARS,
    DEAD_LETTER_PREFIX_BYTES,
    HTTP_MAX_BODY_BYTES,
    MAX_EVENT_BYTES,
    PRODUCER_MAX_REQUEST_SIZE,
    RECORD_OVERHEAD_BYTES,
    TOPIC_MAX_MESSAGE_BYTES,
)


def test_the_gates_are_in_order() -> None:
    assert HTTP_MAX_BODY_BYTES < MAX_EVENT_BYTES < TOPIC_MAX_MESSAGE_BYTES
    assert TOPIC_MAX_MESSAGE_BYTES <= PRODUCER_MAX_REQUEST_SIZE - RECORD_OVERHEAD_BYTES
    # An outcome embeds its request twice (the model and the escaped envelope): still an event.
    assert 3 * HTTP_MAX_BODY_BYTES < MAX_EVENT_BYTES


def test_the_record_overhead_covers_a_batch_with_key_and_headers() -> None:
    key = b"k" * 256
    headers = [("content-type", b"application/cloudevents+json"), ("atb-redriven-from", b"x" * 200)]
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=1, producer_id=1,
                                        producer_epoch=0, base_sequence=0, batch_size=2**31)  # fmt: skip
    builder.append(0, timestamp=0, key=key, value=b"v" * TOPIC_MAX_MESSAGE_BYTES, headers=headers)
    overhead = len(builder.build()) - TOPIC_MAX_MESSAGE_BYTES
    assert overhead < RECORD_OVERHEAD_BYTES


async def test_every_place_uses_the_one_set_of_limits() -> None:
    assert ENVELOPE_MAX == MAX_EVENT_BYTES
    assert contracts_http.MAX_BODY_BYTES == HTTP_MAX_BODY_BYTES
    assert chat_http.MAX_BODY == HTTP_MAX_BODY_BYTES
    for spec in CATALOGUE:
        assert spec.configs()["max.message.bytes"] == str(TOPIC_MAX_MESSAGE_BYTES), spec.topic
    publisher = Publisher("127.0.0.1:1", "limits-test")
    assert publisher._producer._max_request_size == PRODUCER_MAX_REQUEST_SIZE
    assert "max_request_size=PRODUCER_MAX_REQUEST_SIZE" in inspect.getsource(publisher_module)
    assert "max_request_size=PRODUCER_MAX_REQUEST_SIZE" in inspect.getsource(redrive_module)


def _record(value: bytes | None, key: bytes | None = b"req-1") -> Incoming:
    return Incoming(topic=topic_name(Topic.POA_REQUESTS, "ns."), partition=2, offset=41, key=key, value=value)


def test_a_dead_letter_is_bounded_and_decodes_whatever_the_original() -> None:
    original = bytes(range(256)) * (TOPIC_MAX_MESSAGE_BYTES // 256)  # the largest a topic accepts, not UTF-8
    dead = DeadLetters("approvals", "spiffe://atb.local/svc/approvals", "ns.")
    records = dead(_record(original, key=b"\xff" * 10_000), "oversize", "r" * 5000)
    letter_record, audit_record = records
    assert letter_record.value is not None
    assert audit_record.value is not None
    assert len(letter_record.value) < 16 * 1024
    assert len(audit_record.value) < 16 * 1024
    letter = payload_of(decode_envelope(letter_record.value))
    assert isinstance(letter, DeadLetter)
    assert letter.original_size == len(original)
    assert letter.original_sha256 == "sha256:" + hashlib.sha256(original).hexdigest()
    assert base64.b64decode(letter.original_prefix_b64) == original[:DEAD_LETTER_PREFIX_BYTES]
    assert letter.original_key is not None
    assert len(letter.original_key) == DEAD_LETTER_KEY_CHARS
    assert (letter.original_partition, letter.original_offset) == (2, 41)
    assert letter.request_id is not None
    assert len(letter.request_id) <= 128
    assert letter_record.topic == topic_name(Topic.DLQ, "ns.")


def test_a_tombstone_and_a_small_record_are_described_exactly() -> None:
    empty = letter_for(_record(None, key=None), consumer="c", error_code="empty_record", reason="")
    assert (empty.original_size, empty.original_prefix_b64, empty.original_key) == (0, "", None)
    assert empty.original_sha256 == "sha256:" + hashlib.sha256(b"").hexdigest()
    small = letter_for(_record(b"garbage"), consumer="c", error_code="invalid_envelope", reason="x")
    assert base64.b64decode(small.original_prefix_b64) == b"garbage"
    assert small.original_size == 7
