"""The broker's spent store on SQLite and a real PostgreSQL: one owner per jti under contention, outbox rows.

Several OS processes spend the same `jti` at once against the same database:
exactly one owns it. On PostgreSQL that is several broker hosts sharing one store.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from atb.dev.postgres import TempPostgres
from broker.adapters.outbox import OutboxRelay, encode_outbox
from broker.adapters.spent import Spend, SpendVerdict, SpentStore


@pytest.fixture(params=["sqlite", "postgresql"])
def spent_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'spent.db'}"
    server: TempPostgres = request.getfixturevalue("postgres_server")
    name = f"spent_{secrets.token_hex(4)}"
    server.create_database(name)
    return server.url("owner", name)


def _spend(url: str, jtis: list[str], who: str, ready: Any, out: Any) -> None:
    store = SpentStore(url)
    ready.wait(60)  # everyone at the same moment: once every process has its store open
    owned = asyncio.run(store.spend_many([Spend(j, who, f"req-{j}", "agent", int(time.time()) + 60) for j in jtis]))
    out.put((who, owned))
    store.close()


def test_each_jti_has_exactly_one_owner_across_processes(spent_url: str) -> None:
    SpentStore(spent_url).close()  # create the table once
    jtis = [f"jti-race-{i:04d}-{secrets.token_hex(4)}" for i in range(50)]
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    ready = ctx.Barrier(4)
    procs = [ctx.Process(target=_spend, args=(spent_url, jtis, f"p{i}", ready, out)) for i in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    for index in range(len(jtis)):
        assert [owned[index] for _, owned in results].count(SpendVerdict.OWNED) == 1, jtis[index]


def _spend_one_request(url: str, jti: str, request_id: str, ready: Any, out: Any) -> None:
    store = SpentStore(url)
    ready.wait(60)  # everyone at the same moment: once every process has its store open
    out.put(
        (jti, asyncio.run(store.spend_many([Spend(jti, f"p-{jti}", request_id, "agent", int(time.time()) + 60)]))[0])
    )
    store.close()


def test_each_request_is_spent_by_exactly_one_poa_across_processes(spent_url: str) -> None:
    """Six different PoAs of one request, presented at once from six processes: one allow (docs/scaling.md)."""
    SpentStore(spent_url).close()
    request_id = f"req-race-{secrets.token_hex(4)}"
    jtis = [f"jti-req-race-{i}-{secrets.token_hex(4)}" for i in range(6)]
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    ready = ctx.Barrier(len(jtis))
    procs = [ctx.Process(target=_spend_one_request, args=(spent_url, j, request_id, ready, out)) for j in jtis]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
    winners = [j for j, verdict in results.items() if verdict == SpendVerdict.OWNED]
    assert len(winners) == 1, results
    assert sorted(results.values()).count(SpendVerdict.REQUEST_SPENT) == 5
    store = SpentStore(spent_url)
    assert store.request_owner(request_id) == winners[0]
    store.close()


def test_outbox_commit_and_relay(spent_url: str) -> None:
    from atb_runtime import Outgoing

    store = SpentStore(spent_url)
    events = [Outgoing(topic="atb.broker.decisions", key=b"req", value=b'{"x":1}')]
    sent: list[Outgoing] = []

    async def send(records: Any) -> None:
        sent.extend(records)

    async def scenario() -> list[SpendVerdict]:
        spends = [Spend(f"jti-outbox-{secrets.token_hex(6)}", "http:1", "req", "agent", int(time.time()) + 60)]
        owned = await store.commit(spends, lambda _owned: encode_outbox(events), "7")
        await OutboxRelay(store, send, "7").drain()
        await OutboxRelay(store, send, "7").drain()
        return owned

    assert asyncio.run(scenario()) == [SpendVerdict.OWNED]
    assert sent == events
    store.close()
