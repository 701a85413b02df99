"""The console's compliance view over a real audit store and a real archive, in a real browser.

The audit store (SQLite) is filled as the sink fills it, with signed checkpoints; its first two
segments are sealed to the archive on versitygw (the S3-compatible server with Object Lock the
archive tests use, `atb.dev.s3.LocalS3`), a legal hold is placed, and the hot retention removes the
archived rows from the database. The console process then reads:

- the checkpoint status (newest signed checkpoint, its age) and the result of a verification of the
  whole store that a compliance officer starts from the page (and that names a changed row);
- the active legal holds;
- a request's timeline and search results that include the rows only the archive still holds;
- evidence bundles (a request, a range) in the `atb audit export` format, which `check_bundle` and
  `verify_archive` accept offline with the log's key.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page
from sqlalchemy import text

from atb.dev.config import DevConfig
from atb.dev.s3 import LocalS3
from atb.dev.toolchain import build_versitygw
from audit_sink.adapters.db import make_engine, migrate
from audit_sink.adapters.ledger import HoldScope, place_hold
from audit_sink.archive.check import verify_archive
from audit_sink.archive.format import segment_key
from audit_sink.archive.hot import hot_purge
from audit_sink.archive.objects import DirArchive, S3Archive
from audit_sink.archive.seal import Sealer
from audit_sink.domain.checkpoint import VerifierKey
from audit_sink.evidence import check_bundle
from contracts import Topic
from tests.audit_support import NOW, Filler, bypassing_triggers
from tests.e2e.test_console import (  # noqa: F401  # fixtures shared with the console's browser tests
    DIALOGS,
    Console,
    _chromium,
    _device,
    _enroll_and_sign_in,
    _read,
    _screenshot,
    _until_serving,
    launched_chromium,
)

PREFIX = "audit/"
TOTAL = 900
ARCHIVED = 600
"""The first two segments (300 leaves each) are archived and leave the database."""
OLD = "req-0003"
HELD = "req-0005"


def _rows_of(request_id: str, indexes: range) -> set[int]:
    """The leaves of `request_id` among `indexes` (tests.audit_support.rows: every 50th row is undecodable)."""
    n = int(request_id.removeprefix("req-"))
    return {i for i in indexes if i % 37 == n and i % 50 != 49}


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with launched_chromium() as chromium:
        yield chromium


@dataclass(frozen=True)
class Stack:
    console: Console
    audit_url: str
    key: VerifierKey
    s3: LocalS3
    bucket: str


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    binary = asyncio.run(build_versitygw(DevConfig.from_env()))
    with LocalS3(binary, tmp_path_factory.mktemp("versitygw") / "data") as server:
        yield server


@pytest.fixture(scope="module")
def _socket() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    yield sock
    sock.close()


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, _socket: socket.socket, s3_server: LocalS3
) -> AsyncIterator[Stack]:
    from atb.dev.topics import delete_topics, ensure_topics

    state = tmp_path_factory.mktemp("compliance")
    audit_url = f"sqlite:///{state / 'audit.db'}"
    migrate(audit_url)
    filler = Filler(audit_url, state / "audit")
    filler.fill(TOTAL, every=300)
    bucket = f"atb-{os.urandom(4).hex()}"
    archive = S3Archive.connect(
        bucket,
        PREFIX,
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        region=s3_server.region,
    )
    archive.create_bucket()
    engine = make_engine(audit_url)
    sealed = Sealer(engine, archive, filler.signer.verifier, max_leaves=300, settle=timedelta(0)).run(limit=2)
    assert len(sealed) == 2
    place_hold(engine, HoldScope(request_id=HELD), reason="litigation <b>2026-17</b>", actor="legal")
    outcome, report = hot_purge(engine, filler.signer, archive, keep=timedelta(0), actor="compliance")
    assert report.ok
    assert outcome.removed > 0
    with engine.connect() as conn:
        hot_old = conn.execute(
            text("SELECT COUNT(*) FROM audit_events WHERE request_id = :r AND leaf_idx < :n"),
            {"r": OLD, "n": ARCHIVED},
        ).scalar_one()
    assert hot_old == 0  # the old rows of OLD are in the archive only
    engine.dispose()

    ns = f"k{os.urandom(4).hex()}."
    await ensure_topics(kafka_bootstrap, ns)
    port = _socket.getsockname()[1]
    url = f"http://localhost:{port}"
    env = {
        **os.environ,
        "ATB_STATE_DIR": str(state),
        "ATB_TOPIC_NAMESPACE": ns,
        "ATB_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "ATB_CONSOLE_PORT": str(port),
        "ATB_CONSOLE_RP_ID": "localhost",
        "ATB_CONSOLE_ORIGIN": url,
        "ATB_CONSOLE_DB_PATH": str(state / "console.db"),
        "ATB_LISTEN_FDS": str(_socket.fileno()),
        "ATB_CONSOLE_AUDIT_DB_URL": audit_url,
        "ATB_CONSOLE_AUDIT_ARCHIVE_URL": f"s3://{bucket}/{PREFIX}",
        "ATB_CONSOLE_AUDIT_ARCHIVE_ENDPOINT": s3_server.endpoint,
        "ATB_CONSOLE_VERIFY_INTERVAL_S": "0",
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_REGION": s3_server.region,
    }
    log = (state / "console.log").open("wb")
    process = subprocess.Popen(  # noqa: ASYNC220  # started once per module
        [sys.executable, "-m", "faststream", "run", "console.main:app"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        pass_fds=(_socket.fileno(),),
    )
    try:
        await _until_serving(f"http://127.0.0.1:{port}/signin", process, state / "console.log")
        console = Console(
            url, port, state, ns, kafka_bootstrap, state / "console.db",
            {k: v for k, v in env.items() if k != "ATB_LISTEN_FDS"}, process.pid,
        )  # fmt: skip
        yield Stack(console, audit_url, filler.signer.verifier, s3_server, bucket)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        await delete_topics(kafka_bootstrap, ns)


async def _download(page: Page, selector: str, folder: Path) -> Path:
    async with page.expect_download() as info:
        await page.click(selector)
    download = await info.value
    data = await asyncio.to_thread(Path(await download.path()).read_bytes)
    with zipfile.ZipFile(io.BytesIO(data)) as zipped:
        zipped.extractall(folder)
    return folder


async def test_timeline_search_and_bundle_read_the_archive_for_old_requests(
    stack: Stack, browser: Browser, tmp_path: Path
) -> None:
    context, bob = await _device(browser)
    try:
        await _enroll_and_sign_in(stack.console, bob, "bob")  # group compliance
        await bob.goto(f"{stack.console.url}/compliance/requests/{OLD}")
        archived = await bob.eval_on_selector_all("#timeline li.archived", "items => items.map(i => i.dataset.segment)")
        every = await bob.query_selector_all("#timeline li.event")
        assert sorted(set(archived)) == ["0", "1"]
        assert len(archived) == len(_rows_of(OLD, range(ARCHIVED)))
        assert len(every) == len(_rows_of(OLD, range(TOTAL)))

        # The search shows the archived rows of the request besides the stored ones.
        await bob.goto(f"{stack.console.url}/compliance?request_id={OLD}")
        assert len(await bob.query_selector_all("tr.archived-event")) == len(_rows_of(OLD, range(ARCHIVED)))
        assert len(await bob.query_selector_all("tr.event")) == len(_rows_of(OLD, range(ARCHIVED, TOTAL)))
        # A facet filters archived rows as it filters stored ones (read from their bytes as the sink reads them):
        # every decodable event here is an AuditEvent whose outcome is `success`.
        await bob.goto(f"{stack.console.url}/compliance?request_id={OLD}&outcome=success")
        assert len(await bob.query_selector_all("tr.archived-event")) == len(_rows_of(OLD, range(ARCHIVED)))
        assert len(await bob.query_selector_all("tr.event")) == len(_rows_of(OLD, range(ARCHIVED, TOTAL)))
        await bob.goto(f"{stack.console.url}/compliance?request_id={OLD}&outcome=failure")
        assert await bob.query_selector_all("tr.archived-event") == []
        assert await bob.query_selector_all("tr.event") == []

        # The request's bundle: `atb audit export`'s folder for the stored rows, the archived segments beside it.
        folder = await _download(bob, "#export", tmp_path / "request")
        checkpoint, count, problems = check_bundle(folder, stack.key)
        assert problems == []
        assert checkpoint.size == TOTAL
        assert count == len(_rows_of(OLD, range(ARCHIVED, TOTAL)))
        copy = DirArchive(folder / "archive", PREFIX)
        report = verify_archive(copy, stack.key)
        assert report.problems == ()
        assert report.leaves == ARCHIVED

        # A range: the stored rows that occurred in it.
        since = (NOW - timedelta(minutes=1)).isoformat()
        until = (NOW + timedelta(minutes=1)).isoformat()
        await bob.goto(f"{stack.console.url}/compliance/status")
        await bob.fill("#bundle-since", since)
        await bob.fill("#bundle-until", until)
        folder = await _download(bob, "#bundle-download", tmp_path / "range")
        _, count, problems = check_bundle(folder, stack.key)
        assert problems == []
        with make_engine(stack.audit_url).connect() as conn:
            stored = conn.execute(text("SELECT COUNT(*) FROM audit_events")).scalar_one()
        assert count == stored
        # Each download was audited (published and flushed before the bundle was given): who, what, the zip's digest.
        audits = [d for _, d in await _read(stack.console, Topic.AUDIT)]
        exported = [d for d in audits if d["audit_type"] == "console_evidence_exported"]
        assert sorted(
            (e["details"]["until"] or "", e["request_id"] or "", e["details"]["principal"]) for e in exported
        ) == [
            ("", OLD, "bob"),
            (until, "", "bob"),
        ]
        assert all(len(e["details"]["sha256"]) == 64 and e["details"]["events"] > 0 for e in exported)
        assert DIALOGS == []
    finally:
        await context.close()


async def test_checkpoint_status_verification_and_legal_holds(stack: Stack, browser: Browser) -> None:
    context, bob = await _device(browser)
    other, alice = await _device(browser)
    try:
        await _enroll_and_sign_in(stack.console, bob, "bob")
        await bob.goto(f"{stack.console.url}/compliance/status")
        assert await bob.get_attribute("#checkpoint", "data-size") == str(TOTAL)
        assert await bob.get_attribute("#checkpoint", "data-signature") == "ok"
        assert int(await bob.get_attribute("#checkpoint", "data-age") or "-1") >= 0
        holds = await bob.query_selector_all("tr.hold")
        assert len(holds) == 1
        assert HELD in (await holds[0].text_content() or "")
        assert "<b>2026-17</b>" in (await holds[0].text_content() or "")  # shown as text

        await bob.click("#verify-now")
        await bob.wait_for_url(f"{stack.console.url}/compliance/status")
        assert await bob.get_attribute("#verify", "data-result") == "ok"
        await _screenshot(bob, "status.png")

        # A DBA changes a stored row: the next verification names it.
        engine = make_engine(stack.audit_url)
        with bypassing_triggers(engine, "audit_events"), engine.begin() as conn:
            conn.execute(text("UPDATE audit_events SET event_id = 'forged' WHERE leaf_idx = 800"))
        engine.dispose()
        await bob.click("#verify-now")
        await bob.wait_for_url(f"{stack.console.url}/compliance/status")
        assert await bob.get_attribute("#verify", "data-result") == "failed"
        assert "800" in (await bob.text_content("#verify-problems") or "")
        engine = make_engine(stack.audit_url)
        with bypassing_triggers(engine, "audit_events"), engine.begin() as conn:
            conn.execute(text("UPDATE audit_events SET event_id = 'evt-000800' WHERE leaf_idx = 800"))
        engine.dispose()

        # A state-changing POST without the session's token is refused.
        status = await bob.evaluate(
            "fetch('/compliance/verify', {method: 'POST', body: new URLSearchParams({csrf: 'x'})}).then(r => r.status)"
        )
        assert status == 403

        # Another group sees none of it.
        await _enroll_and_sign_in(stack.console, alice, "alice")
        for path in ("/compliance/status", f"/compliance/export?request_id={OLD}"):
            response = await alice.goto(f"{stack.console.url}{path}")
            assert response is not None
            assert response.status == 403
    finally:
        await context.close()
        await other.close()


async def test_bundle_requests_need_a_selection(stack: Stack, browser: Browser) -> None:
    context, bob = await _device(browser)
    try:
        await _enroll_and_sign_in(stack.console, bob, "bob")
        for query in ("", "since=2026-01-01T00:00:00", "format=xml&request_id=x", "since=b&until=c"):
            response = await context.request.get(
                f"{stack.console.url}/compliance/export?{query}", headers={"Accept": "application/json"}
            )
            assert response.status == 400, query
            assert (await response.json())["error"] == "bad_query"
    finally:
        await context.close()


async def test_an_altered_archived_segment_is_named_not_shown(stack: Stack, browser: Browser) -> None:
    """Segment 0 changed on the server's disk (behind Object Lock's back): the archive does not verify, so no
    archived row is shown, the page names the segment, and no bundle is given. Restored afterwards."""
    stored = stack.s3.data_dir / stack.bucket / segment_key(PREFIX, 0)
    original = await asyncio.to_thread(stored.read_bytes)
    context, bob = await _device(browser)
    try:
        await asyncio.to_thread(stored.write_bytes, original.replace(b'"offset":3', b'"offset":4', 1))
        await _enroll_and_sign_in(stack.console, bob, "bob")
        await bob.goto(f"{stack.console.url}/compliance/requests/{OLD}")
        assert await bob.query_selector_all("#timeline li.archived") == []
        assert len(await bob.query_selector_all("#timeline li.event")) == len(_rows_of(OLD, range(ARCHIVED, TOTAL)))
        problems = await bob.text_content("#archive-problems") or ""
        assert "segment 0" in problems
        response = await context.request.get(
            f"{stack.console.url}/compliance/export?request_id={OLD}", headers={"Accept": "application/json"}
        )
        assert response.status == 409
        assert "segment 0" in (await response.json())["message"]
    finally:
        await asyncio.to_thread(stored.write_bytes, original)
        await context.close()
