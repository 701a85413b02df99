"""Every size limit on ATB's path, in one place, and how they relate.

A record passes four gates on its way through ATB. Each must let through
everything the gate before it lets through, or a valid record would be refused
half-way (and a refusal half-way is what stalls a pipeline):

    HTTP_MAX_BODY_BYTES  <  MAX_EVENT_BYTES  <  TOPIC_MAX_MESSAGE_BYTES
        TOPIC_MAX_MESSAGE_BYTES + RECORD_OVERHEAD_BYTES  <=  PRODUCER_MAX_REQUEST_SIZE

- `HTTP_MAX_BODY_BYTES` (64 KiB): the bodies the gateway (`POST /issue`), the
  broker (`POST /v1/authorize`) and the chat service (`POST /slack/interactions`)
  read; a larger body is answered 413 with a JSON error. An outcome embeds its
  request twice (`request` and the escaped `request_event`), so a request from
  HTTP stays far below `MAX_EVENT_BYTES` even after that.
- `MAX_EVENT_BYTES` (512 KiB): the largest record value `decode_envelope`
  accepts; anything larger is `oversize` and dead-lettered.
- `TOPIC_MAX_MESSAGE_BYTES` (1 MiB): every catalogue topic's `max.message.bytes`
  (contracts/topics.py, applied by `atb dev up`): the broker refuses a larger
  record batch at produce, so nothing larger is ever on a topic. Between
  `MAX_EVENT_BYTES` and it is the room in which a record is on the topic but
  not an event: it costs a (bounded) dead letter, never a stall.
- `PRODUCER_MAX_REQUEST_SIZE` (1 MiB + 64 KiB): every ATB producer's
  `max_request_size`, so a producer never refuses what the topic accepts
  (`RECORD_OVERHEAD_BYTES` covers the batch header, key and headers).

A dead letter never carries more than `DEAD_LETTER_PREFIX_BYTES` of its original
(and `DEAD_LETTER_KEY_CHARS` of its key); the original stays on its topic and in
the audit store. The audit store keeps at most `AUDIT_MAX_STORED_BYTES` of a
record: a larger one is stored as its SHA-256, its size and its first
`AUDIT_PREFIX_BYTES`. See docs/hostile-input.md.

Constants only: no I/O.
"""

from __future__ import annotations

__all__ = [
    "AUDIT_MAX_STORED_BYTES",
    "AUDIT_PREFIX_BYTES",
    "DEAD_LETTER_KEY_CHARS",
    "DEAD_LETTER_PREFIX_BYTES",
    "HTTP_MAX_BODY_BYTES",
    "MAX_EVENT_BYTES",
    "PRODUCER_MAX_REQUEST_SIZE",
    "RECORD_OVERHEAD_BYTES",
    "TOPIC_MAX_MESSAGE_BYTES",
]

KIB = 1024

HTTP_MAX_BODY_BYTES = 64 * KIB
"""Request bodies of the gateway, the broker and the chat service (413 above)."""

MAX_EVENT_BYTES = 512 * KIB
"""The largest record value that decodes as an event (`oversize` above)."""

TOPIC_MAX_MESSAGE_BYTES = 1024 * KIB
"""`max.message.bytes` of every catalogue topic: Kafka refuses larger batches at produce."""

RECORD_OVERHEAD_BYTES = 64 * KIB
"""Room for a record batch's header, the key and the headers around a value."""

PRODUCER_MAX_REQUEST_SIZE = TOPIC_MAX_MESSAGE_BYTES + RECORD_OVERHEAD_BYTES
"""`max_request_size` of every ATB Kafka producer (the publisher, the transactional processor, re-drive)."""

DEAD_LETTER_PREFIX_BYTES = 4 * KIB
"""How much of the original value a dead letter carries (base64-encoded)."""

DEAD_LETTER_KEY_CHARS = 256
"""How much of the original key (as text) a dead letter carries."""

AUDIT_MAX_STORED_BYTES = MAX_EVENT_BYTES
"""The audit store keeps a record's exact bytes up to this size..."""

AUDIT_PREFIX_BYTES = 4 * KIB
"""...and above it its SHA-256, its size and this many of its first bytes."""
