"""`atb audit ...` end to end on SQLite and the real Kafka broker: the commands compliance runs.

verify (ok / exit 1 on a tampered store), prove + verify --proof with the key
alone, export + verify --bundle, and hold / purge, which must also leave their
AuditEvents on `atb.audit` (read back with the tail reader).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from atb.cli import app
from atb.cli.audit_tail import follow
from audit_sink.adapters.db import make_engine, migrate
from tests.audit_support import Filler, bypassing_triggers, rows

OLD = datetime(2015, 3, 1, tzinfo=UTC)


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kafka_bootstrap: str, namespace: str) -> Filler:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    migrate(url)
    monkeypatch.setenv("ATB_AUDIT_DB_URL", url)
    monkeypatch.setenv("ATB_CHECKPOINT_KEY_PATH", str(tmp_path / "checkpoint.key"))
    monkeypatch.setenv("ATB_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("ATB_TOPIC_NAMESPACE", namespace)
    filler = Filler(url, tmp_path)
    filler.append(rows(0, 50, occurred=OLD))
    filler.append(rows(50, 50, request_id="req-keep", occurred=OLD))
    filler.checkpoint()
    return filler


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["audit", *args])
    return result.exit_code, result.output


def test_audit_commands(cli_env: Filler, tmp_path: Path, kafka_bootstrap: str, namespace: str) -> None:
    key = str(cli_env.signer.verifier)
    assert _run("verify", "--strict") == (0, _run("verify", "--strict")[1])
    assert "OK" in _run("verify", "--strict")[1]

    code, _ = _run("prove", "evt-000010", "--out", str(tmp_path / "proof.json"))
    assert code == 0
    assert json.loads((tmp_path / "proof.json").read_text())["leaf_index"] == 10
    code, out = _run("verify", "--proof", str(tmp_path / "proof.json"), "--key", key)
    assert (code, "OK" in out) == (0, True)

    bundle = tmp_path / "bundle"
    code, out = _run("export", "--since", "2000-01-01", "--until", "2100-01-01", "--format", "csv", "-o", str(bundle))
    assert code == 0, out
    code, out = _run("verify", "--bundle", str(bundle), "--key", key)
    assert (code, "OK: 100 events" in out) == (0, True), out

    code, out = _run("hold", "req-keep", "--reason", "case 7", "--actor", "legal")
    assert code == 0, out
    code, out = _run("purge", "--yes", "--actor", "compliance")
    assert code == 0, out
    # 50 old rows + the undecodable row among req-keep's (no request id, so no hold covers it).
    assert "51 rows removed, 49 kept by legal holds" in out, out
    assert _run("verify")[0] == 0

    lines: list[str] = []
    asyncio.run(
        follow(kafka_bootstrap, namespace, {}, from_beginning=True, max_events=2, timeout=20, emit=lines.append)
    )
    kinds = [json.loads(line)["audit_type"] for line in lines]
    assert sorted(kinds) == ["audit_legal_hold_placed", "audit_purged"]  # two keys, two partitions: any order

    engine = make_engine(str(cli_env.store.engine.url))
    with bypassing_triggers(engine, "audit_events"), engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET producer = 'x' WHERE request_id = 'req-keep' AND seq % 7 = 0"))
    code, out = _run("verify")
    assert code == 1
    assert "FAILED" in out
