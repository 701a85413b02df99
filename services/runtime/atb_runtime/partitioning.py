"""Which partition a key belongs to: the rule every ATB producer follows.

Every record of a request's life is keyed by its request id and placed by Kafka's
default partitioner (murmur2 of the key), so a request's records share one
partition index on every co-partitioned topic (docs/scaling.md). A consumer uses
`partition_for` to refuse a record that a hostile or buggy producer put on
another partition than its key's: judged there, it would meet neither its
request's state nor the instance that owns that state.

This module does not talk to Kafka.
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2

__all__ = ["partition_for"]


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for `key` among `partitions`."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, not {partitions}")
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions
