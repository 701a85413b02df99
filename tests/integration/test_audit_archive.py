"""The audit archive against a real S3-compatible server with Object Lock (issue 21, point 2).

The server is versitygw (Apache-2.0), built by the project's toolchain from the
Go module proxy at a pinned version into `.cache/bin` (`build_versitygw`) and
run as a local process on a free port over a temporary folder (`LocalS3`).
Not a mock: the refusals below are the server's.

- sealing, then verifying the whole history from the archive alone (SQLite and
  PostgreSQL stores, a real witness's cosignature in the segments);
- an overwrite, a delete or a shortened retention of a locked object is refused
  by the server;
- a segment altered on the server's disk, a broken manifest chain and a
  truncated archive are named;
- sealing refuses a store that does not verify, completes an interrupted seal
  without rewriting, and maps legal holds to the objects' legal holds.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from atb.cli import app
from atb.dev.config import DevConfig
from atb.dev.s3 import LocalS3
from atb.dev.toolchain import VERSITYGW_VERSION, build_versitygw
from audit_sink.adapters.db import AuditStore, SealedCheckpoint, make_engine, migrate
from audit_sink.adapters.ledger import HoldScope, place_hold, release_hold
from audit_sink.archive.check import ArchiveReport, verify_archive
from audit_sink.archive.format import Manifest, manifest_key, segment_key
from audit_sink.archive.hot import hot_purge
from audit_sink.archive.objects import DirArchive, S3Archive
from audit_sink.archive.schedule import ArchiveSchedule, ArchiveSettings
from audit_sink.archive.seal import ArchiveStateError, Sealer
from audit_sink.domain.checkpoint import Checkpoint, SignedNote, VerifierKey
from audit_sink.evidence import verify_store
from audit_sink.settings import WitnessEndpoint
from audit_sink.witnessing import Witnessing
from contracts import JsonObject
from tests.audit_db import AuditDb
from tests.audit_support import ORIGIN, Filler, bypassing_triggers, rows
from tests.witness_support import witness_process

PREFIX = "audit/"


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    binary = asyncio.run(build_versitygw(DevConfig.from_env()))
    folder = tmp_path_factory.mktemp("versitygw")
    with LocalS3(binary, folder / "data") as server:
        yield server


@pytest.fixture
def archive(s3_server: LocalS3) -> S3Archive:
    target = S3Archive.connect(
        f"atb-{secrets.token_hex(4)}",
        PREFIX,
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        region=s3_server.region,
    )
    target.create_bucket()
    return target


@pytest.fixture
def aws_env(s3_server: LocalS3, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `atb audit archive` / `verify --archive` read: the usual AWS settings."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_REGION", s3_server.region)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)


def _sealer(url: str, archive: S3Archive, key: VerifierKey, *, max_leaves: int = 400, **kwargs: Any) -> Sealer:
    return Sealer(make_engine(url), archive, key, max_leaves=max_leaves, settle=timedelta(0), **kwargs)


def _sqlite(folder: Path) -> str:
    url = f"sqlite:///{folder / 'audit.db'}"
    migrate(url)
    return url


def _problems(report: ArchiveReport) -> str:
    return "\n".join(report.problems)


def _copy(archive: S3Archive, folder: Path) -> DirArchive:
    """A local copy of the archive, laid out as the bucket (what `aws s3 sync` gives)."""
    for key in archive.list(""):
        data = archive.get(key)
        assert data is not None
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        (folder / key).write_bytes(data)
    return DirArchive(folder, PREFIX)


def _cosign(store: AuditStore, witness_url: str, witness_key: str) -> None:
    """What the sink does with its newest checkpoint: have the witness cosign it, store the cosignature."""
    note = store.checkpoint_notes()[-1]
    cp = Checkpoint.parse(SignedNote.parse(note).text)

    async def announce(_type: str, _outcome: str, _details: JsonObject) -> None:
        return None

    async def run() -> None:
        witnessing = Witnessing([WitnessEndpoint(url=witness_url, vkey=witness_key)], store, announce)
        await witnessing.start()
        witnessing.submit(SealedCheckpoint(cp.size, cp.root, note, datetime.now(UTC)))
        await witnessing.stop(grace_s=15)

    asyncio.run(run())
    assert store.cosigned_sizes(), "the witness did not cosign"


def test_the_pinned_server_is_built_into_the_cache(s3_server: LocalS3) -> None:
    stamp = s3_server.binary.parent / ".versitygw.version"
    assert stamp.read_text().strip().endswith(f"@{VERSITYGW_VERSION}")


def test_sealed_history_verifies_from_the_archive_alone(
    audit_db: AuditDb, archive: S3Archive, aws_env: None, tmp_path: Path
) -> None:
    filler = Filler(audit_db.writer, tmp_path)
    key = filler.signer.verifier
    filler.fill(1000, every=300)  # checkpoints at 300, 600, 900, 1000
    with witness_process(tmp_path / "witness", (ORIGIN, str(key))) as witness:
        _cosign(filler.store, witness.url, str(witness.key))
        lines: list[str] = []
        sealed = _sealer(audit_db.writer, archive, key, progress=lines.append).run()
    assert [(s.seq, s.start, s.end, s.rows, s.written) for s in sealed] == [
        (0, 0, 300, 300, True),
        (1, 300, 600, 300, True),
        (2, 600, 1000, 400, True),
    ]
    assert lines[-1] == "segment 2: leaves 600..999 (400 rows) sealed"

    report = verify_archive(archive, key, witness_keys=[witness.key])
    assert report.ok, _problems(report)
    assert (report.segments, report.leaves, report.rows, report.witnessed) == (3, 1000, 1000, 1000)
    assert report.latest is not None
    assert report.latest.root == filler.frontier.root()

    # Every object is locked by the server in COMPLIANCE mode for 7 years.
    in_seven_years = datetime.now(UTC).replace(year=datetime.now(UTC).year + 7)
    for object_key in archive.list(""):
        lock = archive.lock(object_key)
        assert lock.mode == "COMPLIANCE", object_key
        assert lock.retain_until is not None
        assert abs(lock.retain_until - in_seven_years) < timedelta(days=1), (object_key, lock)

    # Idempotent: a second run verifies what is there and writes nothing; new leaves make one more segment.
    assert _sealer(audit_db.writer, archive, key).run() == []
    filler.append(rows(1000, 200))
    filler.checkpoint()
    assert [(s.seq, s.start, s.end) for s in _sealer(audit_db.writer, archive, key).run()] == [(3, 1000, 1200)]

    # The CLI, with nothing but the archive URL, the log's key and the witness's key.
    result = CliRunner().invoke(
        app,
        ["audit", "verify", "--archive", archive.location, "--key", str(key), "--witness-key", str(witness.key)],
    )
    assert result.exit_code == 0, result.output
    assert "4 segment(s), 1200 leaves, 1200 rows" in result.output
    assert "witnessed up to 1000" in result.output


def test_the_server_refuses_to_overwrite_or_delete_a_locked_object(
    archive: S3Archive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _sqlite(tmp_path)
    filler = Filler(url, tmp_path)
    filler.fill(300, every=300)
    _sealer(url, archive, filler.signer.verifier).run()
    s3, bucket = archive.client, archive.bucket
    target = manifest_key(PREFIX, 0)
    original = archive.get(target)

    refusals: dict[str, dict[str, str]] = {}
    attempts: dict[str, Callable[[], object]] = {
        "overwrite": lambda: s3.put_object(Bucket=bucket, Key=target, Body=b'{"forged": true}'),
        "delete": lambda: s3.delete_object(Bucket=bucket, Key=target),
        "shorten retention": lambda: s3.put_object_retention(
            Bucket=bucket,
            Key=target,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": datetime.now(UTC) + timedelta(days=1)},
        ),
        "switch to governance": lambda: s3.put_object_retention(
            Bucket=bucket,
            Key=target,
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": datetime.now(UTC) + timedelta(days=4000)},
            BypassGovernanceRetention=True,
        ),
    }
    for what, attempt in attempts.items():
        with pytest.raises(ClientError) as refused:
            attempt()
        refusals[what] = refused.value.response["Error"]
    with capsys.disabled():
        for what, error in refusals.items():
            print(f"\nversitygw refused the {what} of {target}: {error['Code']}: {error['Message']}")
    assert refusals["overwrite"]["Code"] == "AccessDenied"
    assert refusals["delete"]["Code"] == "AccessDenied"
    assert "object lock" in refusals["overwrite"]["Message"].lower()
    assert archive.get(target) == original
    report = verify_archive(archive, filler.signer.verifier)
    assert report.ok, _problems(report)


def test_a_segment_altered_on_the_servers_disk_is_named(archive: S3Archive, s3_server: LocalS3, tmp_path: Path) -> None:
    """What Object Lock cannot stop: someone with the server's disk. The archive's hashes name it."""
    url = _sqlite(tmp_path)
    filler = Filler(url, tmp_path)
    filler.fill(900, every=300)
    _sealer(url, archive, filler.signer.verifier).run()
    stored = s3_server.data_dir / archive.bucket / segment_key(PREFIX, 1)
    segment = json.loads(stored.read_bytes())
    entry = segment["entries"][17]
    entry["row"]["event_type"] = entry["row"]["event_type"].replace("atb", "xyz")  # same length
    stored.write_bytes(json.dumps(segment, separators=(",", ":"), sort_keys=True).encode())

    report = verify_archive(archive, filler.signer.verifier)
    problems = _problems(report)
    assert "segment 1 was altered" in problems
    assert f"leaf {300 + 17}: the archived row is not the one its leaf commits to" in problems

    # A leaf changed with its row: the root no longer is the signed checkpoint's.
    entry["leaf"] = entry["leaf"].replace('"offset":317', '"offset":318')
    stored.write_bytes(json.dumps(segment, separators=(",", ":"), sort_keys=True).encode())
    problems = _problems(verify_archive(archive, filler.signer.verifier))
    assert "segment 1: the root of its 600 leaves is not the signed checkpoint's" in problems


def test_a_broken_chain_and_a_truncated_archive_are_named(archive: S3Archive, aws_env: None, tmp_path: Path) -> None:
    url = _sqlite(tmp_path)
    filler = Filler(url, tmp_path)
    key = filler.signer.verifier
    filler.fill(1200, every=300)
    assert len(_sealer(url, archive, key).run()) == 4
    latest = tmp_path / "latest-checkpoint.txt"
    latest.write_text(filler.store.checkpoint_notes()[-1])

    def verify(copy: DirArchive, *extra: str) -> tuple[int, str]:
        result = CliRunner().invoke(
            app, ["audit", "verify", "--archive", f"file://{copy.root}#{PREFIX}", "--key", str(key), *extra]
        )
        return result.exit_code, result.output

    good = _copy(archive, tmp_path / "copy")
    assert verify(good, "--trusted-checkpoint", str(latest)) == (0, verify(good)[1])

    # A manifest missing from the middle.
    gap = _copy(archive, tmp_path / "gap")
    (gap.root / manifest_key(PREFIX, 1)).unlink()
    code, output = verify(gap)
    assert code == 1
    assert "chain break: manifest 2 follows manifest 0" in output

    # A manifest that does not chain to the one before it (re-written by someone who can).
    forged = _copy(archive, tmp_path / "forged")
    path = forged.root / manifest_key(PREFIX, 2)
    manifest = Manifest.decode(path.read_bytes())
    path.write_bytes(Manifest(**{**manifest.__dict__, "prev": "00" * 32}).encode())
    problems = _problems(verify_archive(forged, key))
    assert "chain break at manifest 2: it names 0000" in problems
    assert "chain break at manifest 3" in problems  # 3 chains to the original manifest 2, not to the forged one

    # The newest segment gone: only a checkpoint from outside the archive can tell.
    truncated = _copy(archive, tmp_path / "truncated")
    (truncated.root / manifest_key(PREFIX, 3)).unlink()
    (truncated.root / segment_key(PREFIX, 3)).unlink()
    assert verify(truncated)[0] == 0
    code, output = verify(truncated, "--trusted-checkpoint", str(latest))
    assert code == 1
    assert "truncated: the archive has 900 leaves" in output


def test_sealing_refuses_a_store_that_does_not_verify(archive: S3Archive, tmp_path: Path) -> None:
    url = _sqlite(tmp_path)
    filler = Filler(url, tmp_path)
    filler.fill(600, every=300)
    engine = make_engine(url)
    with bypassing_triggers(engine, "audit_events"), engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET raw = :raw WHERE leaf_idx = 450"), {"raw": b"rewritten"})
    sealer = _sealer(url, archive, filler.signer.verifier)
    with pytest.raises(ArchiveStateError, match="does not verify at leaf 450"):
        sealer.run()
    assert [k.rsplit("/", 1)[-1] for k in archive.list("segments/")] == ["000000000000.json"]  # up to 300 only


def test_an_interrupted_seal_is_completed_without_rewriting(
    archive: S3Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _sqlite(tmp_path)
    filler = Filler(url, tmp_path)
    filler.fill(300, every=300)
    real_put = archive.put_locked

    def crash_before_manifest(key: str, data: bytes, until: datetime, *, legal_hold: bool = False) -> None:
        if "/manifests/" in f"/{key}":
            raise KeyboardInterrupt("killed between the segment and its manifest")
        real_put(key, data, until, legal_hold=legal_hold)

    monkeypatch.setattr(archive, "put_locked", crash_before_manifest)
    with pytest.raises(KeyboardInterrupt):
        _sealer(url, archive, filler.signer.verifier).run()
    segment_bytes = archive.get(segment_key(PREFIX, 0))
    assert segment_bytes is not None
    assert archive.list("manifests/") == []

    monkeypatch.setattr(archive, "put_locked", real_put)
    written: list[str] = []

    def record(key: str, data: bytes, until: datetime, *, legal_hold: bool = False) -> None:
        written.append(key)
        real_put(key, data, until, legal_hold=legal_hold)

    monkeypatch.setattr(archive, "put_locked", record)
    _sealer(url, archive, filler.signer.verifier).run()
    assert written == [manifest_key(PREFIX, 0)]  # the segment was read back and verified, not rewritten
    assert archive.get(segment_key(PREFIX, 0)) == segment_bytes
    report = verify_archive(archive, filler.signer.verifier)
    assert report.ok, _problems(report)


def test_legal_holds_map_to_the_objects_legal_holds(archive: S3Archive, tmp_path: Path) -> None:
    url = _sqlite(tmp_path)
    filler = Filler(url, tmp_path)
    filler.fill(300, every=300)
    filler.append(rows(300, 100, request_id="req-subpoenaed"))
    filler.checkpoint()
    engine = make_engine(url)
    hold = place_hold(engine, HoldScope(request_id="req-subpoenaed"), reason="subpoena", actor="legal")
    sealed = _sealer(url, archive, filler.signer.verifier, max_leaves=300).run()
    assert [(s.seq, s.legal_hold) for s in sealed] == [(0, False), (1, True)]
    assert archive.lock(segment_key(PREFIX, 1)).legal_hold
    assert archive.lock(manifest_key(PREFIX, 1)).legal_hold
    assert not archive.lock(segment_key(PREFIX, 0)).legal_hold

    release_hold(engine, hold, reason="case closed", actor="legal")
    assert _sealer(url, archive, filler.signer.verifier).sync_holds() == [(1, False)]
    assert not archive.lock(segment_key(PREFIX, 1)).legal_hold
    assert not archive.lock(manifest_key(PREFIX, 1)).legal_hold

    place_hold(
        engine, HoldScope(since=datetime.now(UTC) - timedelta(days=1), until=datetime.now(UTC)), reason="r", actor="l"
    )
    assert sorted(_sealer(url, archive, filler.signer.verifier).sync_holds()) == [(0, True), (1, True)]


def test_archive_cli_seals_with_progress_and_refuses_a_bucket_without_object_lock(
    s3_server: LocalS3, archive: S3Archive, aws_env: None, tmp_path: Path
) -> None:
    url = _sqlite(tmp_path)
    filler = Filler(url, tmp_path)
    filler.fill(600, every=300)
    args = ["audit", "archive", archive.location, "--db", url, "--key", str(filler.signer.verifier)]
    result = CliRunner().invoke(app, [*args, "--settle", "0", "--max-leaves", "300"])
    assert result.exit_code == 0, result.output
    assert "segment 1: leaves 300..599 (300 rows) sealed" in result.output
    assert "2 segment(s) sealed, 0 found archived and verified" in result.output
    again = CliRunner().invoke(app, [*args, "--settle", "0"])
    assert again.exit_code == 0
    assert "0 segment(s) sealed" in again.output

    plain = f"atb-plain-{secrets.token_hex(4)}"
    archive.client.create_bucket(Bucket=plain)
    refused = CliRunner().invoke(
        app, ["audit", "archive", f"s3://{plain}/x", "--db", url, "--key", str(filler.signer.verifier)]
    )
    assert refused.exit_code == 1, refused.output
    assert "Object Lock" in refused.output


async def test_the_sinks_schedule_seals_closed_segments_each_round(archive: S3Archive, tmp_path: Path) -> None:
    url = _sqlite(tmp_path)
    filler = Filler(url, tmp_path)
    filler.fill(600, every=300)
    assert ArchiveSchedule.from_settings(make_engine(url), filler.signer.verifier, ArchiveSettings(url="")) is None
    schedule = ArchiveSchedule(_sealer(url, archive, filler.signer.verifier, max_leaves=300), interval_s=3600)
    assert await schedule.run_once() == 2
    assert await schedule.run_once() == 0
    filler.append(rows(600, 10))
    filler.checkpoint()
    assert await schedule.run_once() == 1
    assert schedule.sealed == 3
    report = verify_archive(archive, filler.signer.verifier)
    assert report.ok, _problems(report)
    assert report.leaves == 610


def _leaf_rows(engine: Engine) -> set[int]:
    with engine.connect() as conn:
        return {int(i) for (i,) in conn.execute(text("SELECT leaf_idx FROM audit_events WHERE leaf_idx IS NOT NULL"))}


def test_hot_retention_removes_only_rows_archived_and_verified(
    audit_db: AuditDb, archive: S3Archive, s3_server: LocalS3, tmp_path: Path
) -> None:
    filler = Filler(audit_db.writer, tmp_path)
    key = filler.signer.verifier
    filler.fill(900, every=300)
    purger, owner = make_engine(audit_db.purger), make_engine(audit_db.owner)
    with pytest.raises(ArchiveStateError, match="holds no segment yet"):
        hot_purge(purger, filler.signer, archive, keep=timedelta(0), actor="compliance")

    # The database itself refuses to let a young row go while nothing is archived.
    with pytest.raises(DBAPIError, match="refused"), purger.begin() as conn:
        conn.execute(
            text(
                'INSERT INTO audit_tombstones (leaf_idx, purge_id, topic, "partition", "offset", leaf)'
                ' SELECT leaf_idx, \'p\', topic, "partition", "offset", raw FROM audit_events WHERE leaf_idx = 10'
            )
        )

    assert len(_sealer(audit_db.writer, archive, key, max_leaves=300).run(limit=2)) == 2  # leaves 0..599
    held = place_hold(purger, HoldScope(request_id="req-0005"), reason="litigation", actor="legal")
    outcome, report = hot_purge(purger, filler.signer, archive, keep=timedelta(0), actor="compliance")
    assert (report.ok, report.leaves) == (True, 600)
    held_rows = {i for i in range(600) if i % 37 == 5 and i % 50 != 49}
    assert _leaf_rows(owner) == held_rows | set(range(600, 900))  # archived rows gone, held and newer ones stay
    assert outcome.removed == 600 - len(held_rows)
    assert outcome.held_back == len(held_rows)
    assert "\narchived 600 " in outcome.note

    # The store still verifies: the purge record names the verified archive the tombstones rely on.
    assert verify_store(owner, key, strict=True).problems == ()
    # A young row that is not archived still cannot go, by the database's own rule.
    with pytest.raises(DBAPIError, match="refused"), purger.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE leaf_idx = 700"))

    # An archive that no longer verifies stops the hot purge before any delete.
    release_hold(purger, held, reason="settled", actor="legal")
    stored = s3_server.data_dir / archive.bucket / segment_key(PREFIX, 1)
    stored.write_bytes(stored.read_bytes().replace(b'"offset":301', b'"offset":302', 1))
    with pytest.raises(ArchiveStateError, match="does not verify"):
        hot_purge(purger, filler.signer, archive, keep=timedelta(0), actor="compliance")
    assert _leaf_rows(owner) == held_rows | set(range(600, 900))


def test_purge_cli_hot_retention_needs_a_verified_archive(
    archive: S3Archive,
    aws_env: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kafka_bootstrap: str,
    namespace: str,
) -> None:
    url = _sqlite(tmp_path)
    monkeypatch.setenv("ATB_AUDIT_DB_URL", url)
    monkeypatch.setenv("ATB_CHECKPOINT_KEY_PATH", str(tmp_path / "checkpoint.key"))
    monkeypatch.setenv("ATB_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("ATB_TOPIC_NAMESPACE", namespace)
    filler = Filler(url, tmp_path)
    filler.fill(600, every=300)
    purge = ["audit", "purge", "--yes", "--actor", "compliance"]
    lonely = CliRunner().invoke(app, [*purge, "--hot-days", "0"])
    assert lonely.exit_code == 2
    assert "both --archive URL and --hot-days" in lonely.output
    _sealer(url, archive, filler.signer.verifier, max_leaves=300).run(limit=1)
    hot = [*purge, "--archive", archive.location]
    kept = CliRunner().invoke(app, [*hot, "--hot-days", "30"])  # archived, but recorded within the hot window
    assert kept.exit_code == 0, kept.output
    assert "0 rows removed" in kept.output
    result = CliRunner().invoke(app, [*hot, "--hot-days", "0"])
    assert result.exit_code == 0, result.output
    assert "archive verified: 1 segment(s), 300 leaves" in result.output
    assert "300 rows removed, 0 kept by legal holds" in result.output
    assert _leaf_rows(make_engine(url)) == set(range(300, 600))
    verified = CliRunner().invoke(
        app, ["audit", "verify", "--strict", "--no-kafka", "--key", str(filler.signer.verifier)]
    )
    assert verified.exit_code == 0, verified.output
