"""Fixtures for end-to-end tests: the four services as real processes in a test namespace."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from atb.dev.stack import ServiceStack, StackConfig
from atb.dev.topics import delete_topics, ensure_topics


@dataclass(frozen=True)
class RunningStack:
    stack: ServiceStack
    namespace: str
    state_dir: Path
    db_url: str
    kafka_bootstrap: str


@pytest.fixture
async def running_stack(
    kafka_bootstrap: str, opa_url: str, namespace: str, tmp_path: Path
) -> AsyncIterator[RunningStack]:
    db_url = f"sqlite:///{tmp_path / 'audit.db'}"
    stack = ServiceStack(StackConfig(kafka_bootstrap, opa_url, tmp_path, namespace=namespace, audit_db_url=db_url))
    await stack.start(ready_timeout=90)
    try:
        yield RunningStack(stack, namespace, tmp_path, db_url, kafka_bootstrap)
    finally:
        await stack.stop()


@pytest.fixture(scope="module")
async def module_stack(
    kafka_bootstrap: str, opa_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningStack]:
    """One stack for a whole module whose tests do not interfere (distinct request ids)."""
    ns = f"m{secrets.token_hex(4)}."
    await ensure_topics(kafka_bootstrap, ns)
    state = tmp_path_factory.mktemp("stack")
    db_url = f"sqlite:///{state / 'audit.db'}"
    stack = ServiceStack(StackConfig(kafka_bootstrap, opa_url, state, namespace=ns, audit_db_url=db_url))
    await stack.start(ready_timeout=90)
    try:
        yield RunningStack(stack, ns, state, db_url, kafka_bootstrap)
    finally:
        await stack.stop()
        await delete_topics(kafka_bootstrap, ns)
