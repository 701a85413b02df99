"""Create and delete the catalogue's topics (contracts/topics.py) in a namespace.

`ensure_topics` converges: missing topics are created, existing ones get the
catalogue's configs and, if they have fewer, its partition count; it returns once
every partition has a leader, so a producer right after it does not race the
metadata. `delete_topics` removes one namespace's topics (tests use a fresh
namespace each). Neither touches topics outside the catalogue.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError, for_code

from atb.dev.errors import DevError
from contracts.topics import CATALOGUE, TopicSpec, topic_name

__all__ = ["TopicSetupError", "admin_client", "catalogue_names", "delete_topics", "ensure_topics"]

_REQUEST_TIMEOUT_MS = 15_000


class TopicSetupError(DevError):
    """Kafka refused to create, alter or delete a catalogue topic."""


@asynccontextmanager
async def admin_client(bootstrap: str, request_timeout_ms: int = _REQUEST_TIMEOUT_MS) -> AsyncIterator[Any]:
    """A started `AIOKafkaAdminClient`, closed on exit."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=request_timeout_ms)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


def catalogue_names(namespace: str = "") -> dict[str, TopicSpec]:
    """Full topic name → catalogue entry, for one namespace."""
    return {topic_name(spec.topic, namespace): spec for spec in CATALOGUE}


def _raise_for(errors: Iterable[dict[str, Any]], action: str, ok: tuple[int, ...] = ()) -> list[str]:
    """Raise TopicSetupError for the first unexpected error code; return the topics that answered an `ok` code."""
    tolerated = []
    for entry in errors:
        code = int(entry["error_code"])
        if code == 0:
            continue
        if code in ok:
            tolerated.append(str(entry["topic"]))
            continue
        err = for_code(code)
        detail = entry.get("error_message") or err.message
        raise TopicSetupError(f"could not {action} topic {entry['topic']}: {err.__name__} ({detail})")
    return tolerated


async def ensure_topics(bootstrap: str, namespace: str = "", *, wait_s: float = 30.0) -> None:
    """Create every catalogue topic in `namespace` (replication 1), idempotently."""
    wanted = catalogue_names(namespace)
    async with admin_client(bootstrap) as admin:
        response = await admin.create_topics(
            [NewTopic(name, spec.partitions, 1, topic_configs=spec.configs()) for name, spec in wanted.items()]
        )
        existing = _raise_for(response.to_object()["topic_errors"], "create", ok=(TopicAlreadyExistsError.errno,))
        if existing:
            await _converge(admin, {name: wanted[name] for name in existing})
        await _wait_for_leaders(admin, wanted, wait_s)


_DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs config_source: set on the topic itself


async def _topic_overrides(admin: Any, names: list[str]) -> dict[str, dict[str, str]]:
    """The configs set on each topic itself (not inherited from the broker)."""
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name) for name in names])
    overrides: dict[str, dict[str, str]] = {}
    for response in responses:
        for res in response.to_object()["resources"]:
            if res["error_code"]:
                _raise_for([{"topic": res["resource_name"], **res}], "describe")
            overrides[res["resource_name"]] = {
                e["config_names"]: e["config_value"]
                for e in res["config_entries"]
                if e["config_source"] == _DYNAMIC_TOPIC_CONFIG
            }
    return overrides


async def _converge(admin: Any, specs: dict[str, TopicSpec]) -> None:
    """Bring topics that already existed to the catalogue's configs and (at least) its partitions."""
    described = {t["topic"]: t for t in await admin.describe_topics(list(specs))}
    grow = {
        name: NewPartitions(spec.partitions)
        for name, spec in specs.items()
        if len(described[name]["partitions"]) < spec.partitions
    }
    if grow:
        await admin.create_partitions(grow)
    current = await _topic_overrides(admin, list(specs))
    drifted = [name for name, spec in specs.items() if current.get(name) != spec.configs()]
    if not drifted:
        return
    # AlterConfigs (not incremental) sets exactly the catalogue's configs, resetting any others.
    responses = await admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, specs[name].configs()) for name in drifted]
    )
    for response in responses:
        for res in response.to_object()["resources"]:
            if res["error_code"]:
                _raise_for([{"topic": res["resource_name"], **res}], "configure")


async def _wait_for_leaders(admin: Any, wanted: dict[str, TopicSpec], wait_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        topics = await admin.describe_topics(list(wanted))
        ready = {
            t["topic"]
            for t in topics
            if t["error_code"] == 0
            and len(t["partitions"]) >= wanted[t["topic"]].partitions
            and all(p["leader"] >= 0 for p in t["partitions"])
        }
        if ready >= wanted.keys():
            return
        if asyncio.get_running_loop().time() >= deadline:
            raise TopicSetupError(f"topics without a leader after {wait_s:.0f}s: {sorted(wanted.keys() - ready)}")
        await asyncio.sleep(0.1)


async def delete_topics(bootstrap: str, namespace: str, *, wait_s: float = 30.0) -> None:
    """Delete the catalogue topics of `namespace`; topics already gone are fine."""
    names = list(catalogue_names(namespace))
    async with admin_client(bootstrap) as admin:
        response = await admin.delete_topics(names)
        _raise_for(response.to_object()["topic_error_codes"], "delete", ok=(UnknownTopicOrPartitionError.errno,))
        deadline = asyncio.get_running_loop().time() + wait_s
        while set(names) & set(await admin.list_topics()):
            if asyncio.get_running_loop().time() >= deadline:
                raise TopicSetupError(f"topics of namespace {namespace!r} still listed {wait_s:.0f}s after deletion")
            await asyncio.sleep(0.1)
