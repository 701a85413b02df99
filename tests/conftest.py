"""Session fixtures for tests that need the real Kafka and OPA (docs/architecture.md §9.2).

Where the infrastructure comes from, in order:

* `KAFKA_BOOTSTRAP_SERVERS` / `ATB_OPA_URL` when set: used as they are;
* `ATB_TEST_INFRA=testcontainers`: a Kafka container, if a Docker engine answers
  (otherwise the session fails with a usage error: it never skips silently);
* otherwise (`ATB_TEST_INFRA` unset or `launcher`): the project's own launcher,
  the same one `atb dev up` runs, started if it is not up yet.

What the session started it stops at the end; a stack that was already up
(`make test` starts it first) is left running. Several sessions at once (pytest-xdist)
should find the stack up already (`make infra`), or the first to finish stops it. Every test that needs topics takes
`namespace`: a fresh topic namespace with the whole catalogue in it, deleted after
the test, so tests never read each other's records.

Tests that use `kafka_bootstrap` or `opa_url` (directly or through another fixture)
are marked `kafka` / `opa` automatically, so `pytest -m "not kafka"` runs the rest.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest

from atb.dev import Infra, ensure_infra, ensure_topics, stop_infra
from atb.dev import delete_topics as delete_namespace_topics

pytest_plugins = ["tests.audit_db"]  # audit store on SQLite and PostgreSQL

INFRA_ENV = "ATB_TEST_INFRA"
_MODES = ("launcher", "testcontainers")


class _LauncherSession:
    """Starts launcher components on first use and remembers which ones this session started."""

    def __init__(self) -> None:
        self.started: set[str] = set()
        self._lock = asyncio.Lock()

    async def need(self, component: str) -> Infra:
        async with self._lock:
            infra = await ensure_infra(components=(component,))
            self.started |= infra.started
            return infra

    async def close(self) -> None:
        if self.started:
            await stop_infra(sorted(self.started))


def _mode() -> str:
    mode = os.environ.get(INFRA_ENV, "").strip() or "launcher"
    if mode not in _MODES:
        pytest.fail(f"{INFRA_ENV}={mode!r} is not one of {', '.join(_MODES)}", pytrace=False)
    return mode


@pytest.fixture(scope="session")
async def _launcher() -> AsyncIterator[_LauncherSession]:
    session = _LauncherSession()
    yield session
    await session.close()


@contextmanager
def _kafka_container() -> Iterator[str]:
    """A throw-away Kafka in Docker (testcontainers), only when an engine answers."""
    try:
        from testcontainers.community.kafka import KafkaContainer
        from testcontainers.core.docker_client import DockerClient

        DockerClient(timeout=5).client.ping()
    except Exception as exc:  # no engine, no socket, no permission: all mean "cannot use Docker"
        pytest.fail(
            f"{INFRA_ENV}=testcontainers but no Docker engine answers ({type(exc).__name__}: {exc}); "
            f"unset {INFRA_ENV} to use the project's own launcher, or set KAFKA_BOOTSTRAP_SERVERS",
            pytrace=False,
        )
    container = (
        KafkaContainer()
        .with_kraft()
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
    )
    with container as kafka:
        yield str(kafka.get_bootstrap_server())


@pytest.fixture(scope="session")
async def kafka_bootstrap(_launcher: _LauncherSession) -> AsyncIterator[str]:
    """`host:port` of a real Kafka broker for this test session."""
    if external := os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
        yield external
    elif _mode() == "testcontainers":
        with _kafka_container() as bootstrap:
            await ensure_topics(bootstrap)
            yield bootstrap
    else:
        yield (await _launcher.need("kafka")).kafka_bootstrap


@pytest.fixture(scope="session")
async def opa_url(_launcher: _LauncherSession) -> str:
    """Base URL of a real OPA server (policy from opa/policy) for this test session."""
    if external := os.environ.get("ATB_OPA_URL", "").strip():
        return external.rstrip("/")
    return (await _launcher.need("opa")).opa_url


@pytest.fixture
async def namespace(kafka_bootstrap: str) -> AsyncIterator[str]:
    """A fresh topic namespace (`t<8 hex>.`) holding every catalogue topic; deleted after the test."""
    ns = f"t{secrets.token_hex(4)}."
    await ensure_topics(kafka_bootstrap, ns)
    yield ns
    await delete_namespace_topics(kafka_bootstrap, ns)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by the real infrastructure they pull in, so `-m "not kafka"` selects the pure ones."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "kafka_bootstrap" in fixtures:
            item.add_marker(pytest.mark.kafka)
        if "opa_url" in fixtures:
            item.add_marker(pytest.mark.opa)
