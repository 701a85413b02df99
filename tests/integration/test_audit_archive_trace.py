"""Reading a request back from the immutable archive (`atb trace --archive`, `audit_sink.archive.read`).

Against versitygw with a versioning folder (`LocalS3(versioned=True)`): a bucket
with Object Lock then keeps versions, as a versioned AWS bucket does, so a write
to a sealed key is accepted as a newer version and a delete leaves a delete
marker, while the sealed version stays.

- after hot retention removed a request's rows from the audit store, `atb trace`
  shows the whole timeline, the archived steps marked as read from the archive and verified;
- only the segments whose manifest lists the request are read, each checked
  against the signed root of the leaves before it;
- a newer version or a delete marker over a sealed object is ignored (the sealed
  version is read) and reported, by the reader, `atb audit verify --archive`, hot
  retention and the sealer alike; the sealer chains new segments to the sealed
  versions, and puts legal holds on them, not on what was written over them;
- two sealers racing on a versioned bucket (where the server takes the second
  write as a newer version instead of refusing it) agree on the first one's objects;
- a segment altered where the archive is not locked (a local copy, the server's
  disk) fails the read, naming the segment;
- a row redacted after it was signed (migration 0006) is verified with its
  redaction record, read from a later segment.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from typer.testing import CliRunner, Result

from atb.cli import app
from atb.dev.config import DevConfig
from atb.dev.s3 import LocalS3
from atb.dev.toolchain import build_versitygw
from audit_sink.adapters.db import make_engine, migrate
from audit_sink.adapters.ledger import HoldScope, place_hold
from audit_sink.archive.check import verify_archive
from audit_sink.archive.format import manifest_key, segment_key
from audit_sink.archive.hot import hot_purge
from audit_sink.archive.objects import DirArchive, S3Archive
from audit_sink.archive.read import ArchiveTamperedError, read_archived
from audit_sink.archive.seal import Sealer
from audit_sink.domain.checkpoint import VerifierKey
from console.adapters.evidence import EvidenceDesk
from tests.audit_db import AuditDb
from tests.audit_support import NOW, Filler, rows
from tests.integration.test_audit_redaction import MIGRATIONS, OldStore, old_rows, sign_tip

PREFIX = "audit/"
REQUEST = "req-0005"


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    binary = asyncio.run(build_versitygw(DevConfig.from_env()))
    with LocalS3(binary, tmp_path_factory.mktemp("versitygw") / "data", versioned=True) as server:
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
    assert target.client.get_bucket_versioning(Bucket=target.bucket).get("Status") == "Enabled"
    return target


@pytest.fixture
def cli_env(
    s3_server: LocalS3, monkeypatch: pytest.MonkeyPatch, kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    """What `atb trace` reads: Kafka (a fresh namespace: nothing of the request is there), the AWS settings."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_REGION", s3_server.region)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("ATB_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("ATB_TOPIC_NAMESPACE", namespace)
    monkeypatch.setenv("ATB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("ATB_AUDIT_ARCHIVE_URL", raising=False)
    monkeypatch.setenv("COLUMNS", "400")  # the table's lines whole


def _sealer(url: str, archive: S3Archive, key: VerifierKey, max_leaves: int = 300) -> Sealer:
    return Sealer(make_engine(url), archive, key, max_leaves=max_leaves, settle=timedelta(0))


def _sqlite(folder: Path) -> str:
    url = f"sqlite:///{folder / 'audit.db'}"
    migrate(url)
    return url


def _ids(lo: int, hi: int) -> set[str]:
    """Event ids of REQUEST's decodable rows among leaves lo..hi-1 (`rows`: request i % 37, every 50th garbage)."""
    return {f"evt-{i:06d}" for i in range(lo, hi) if i % 37 == 5 and i % 50 != 49}


def _trace(*args: str) -> Result:
    return CliRunner().invoke(app, ["trace", *args])


def _copy(archive: S3Archive, folder: Path) -> DirArchive:
    for key in archive.list(""):
        data = archive.get(key)
        assert data is not None
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        (folder / key).write_bytes(data)
    return DirArchive(folder, PREFIX)


def _alter_row(data: bytes, index: int) -> bytes:
    """The segment with one row's event type changed (same length), written as the sealer writes."""
    segment: dict[str, Any] = json.loads(data)
    row = segment["entries"][index]["row"]
    row["event_type"] = row["event_type"].replace("atb", "xyz")
    return json.dumps(segment, separators=(",", ":"), sort_keys=True).encode()


def test_trace_shows_the_rows_hot_retention_removed_from_the_archive_verified(
    audit_db: AuditDb, archive: S3Archive, cli_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    filler = Filler(audit_db.writer, tmp_path)
    key = filler.signer.verifier
    filler.fill(900, every=300)
    assert len(_sealer(audit_db.writer, archive, key).run(limit=2)) == 2  # leaves 0..599
    outcome, _ = hot_purge(make_engine(audit_db.purger), filler.signer, archive, keep=timedelta(0), actor="ops")
    assert outcome.removed == 600
    with make_engine(audit_db.owner).connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM audit_events WHERE request_id = :r"), {"r": REQUEST}).scalar()
    assert left == len(_ids(600, 900))

    # The store alone no longer knows the request's first 600 leaves.
    store_only = _trace(REQUEST, "--json", "--audit-db", audit_db.writer)
    assert store_only.exit_code == 0, store_only.output
    assert {s["event_id"] for s in json.loads(store_only.stdout)["steps"]} == _ids(600, 900)

    # With the archive: the whole timeline, the archived steps marked and verified.
    result = _trace(REQUEST, "--json", "--audit-db", audit_db.writer, "--archive", archive.location, "--key", str(key))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    steps = data["steps"]
    assert {s["event_id"] for s in steps} == _ids(0, 900)
    assert len(steps) == len(_ids(0, 900))
    from_archive = [s for s in steps if s["origin"] == "archive"]
    assert {s["event_id"] for s in from_archive} == _ids(0, 600)
    assert {s["event_id"] for s in steps if s["origin"] == "audit store"} == _ids(600, 900)
    for step in from_archive:
        leaf = int(step["event_id"].removeprefix("evt-"))
        segment, size = (0, 300) if leaf < 300 else (1, 600)
        assert step["details"]["checkpoint"] == (
            f"leaf {leaf}, archived segment {segment}, signed checkpoint (tree size {size}), verified"
        )
    summary = data["archive"]
    assert (summary["verified"], summary["segments"], summary["manifests"]) == (True, [0, 1], 2)
    assert (summary["rows"], summary["checkpoint_size"], summary["notices"]) == (len(_ids(0, 600)), 600, [])

    # The table, the archive named by ATB_AUDIT_ARCHIVE_URL.
    monkeypatch.setenv("ATB_AUDIT_ARCHIVE_URL", archive.location)
    table = _trace(REQUEST, "--audit-db", audit_db.writer, "--key", str(key))
    assert table.exit_code == 0, table.output
    assert table.output.count("(archive, verified)") == len(_ids(0, 600))
    assert table.output.count("(audit store)") == len(_ids(600, 900))
    assert (
        f"{len(_ids(0, 600))} of {len(_ids(0, 900))} steps read from the archive {archive.location} and verified: "
        "segment(s) 0, 1 against their manifests and signed checkpoints, the hash chain of its 2 manifest(s), "
        "up to the signed checkpoint of tree size 600"
    ) in " ".join(table.output.split())  # the caption wraps at the table's width


def test_only_the_segments_listing_the_request_are_read(archive: S3Archive, tmp_path: Path) -> None:
    url = _sqlite(tmp_path)
    filler = Filler(url, tmp_path)
    key = filler.signer.verifier
    filler.fill(600, every=300)
    earlier = NOW - timedelta(days=30)
    filler.append(rows(600, 40, request_id="req-solo", occurred=earlier))
    filler.checkpoint()
    filler.append(rows(640, 60))
    filler.checkpoint()
    assert len(_sealer(url, archive, key, max_leaves=40).run()) == 4  # 0..299, 300..599, 600..639, 640..699

    found = read_archived(archive, key, request_id="req-solo")
    assert found.segments == (2,)  # 0, 1 and 3 skipped: segment 2 checked against the signed root of 600 leaves
    assert [(r.leaf, r.segment, r.checkpoint_size) for r in found.rows] == [
        (i, 2, 640) for i in range(600, 640) if i % 50 != 49
    ]
    assert found.manifests == 4
    assert found.latest is not None
    assert found.latest.size == 700
    by_time = read_archived(archive, key, since=earlier - timedelta(seconds=1), until=earlier + timedelta(seconds=1))
    assert (by_time.segments, len(by_time.rows)) == ((2,), 40)  # the undecodable row too: its record time

    # A frontier that does not give the signed root of the leaves before it is named.
    copy = _copy(archive, tmp_path / "copy")
    stored = copy.root / segment_key(PREFIX, 2)
    segment = json.loads(stored.read_bytes())
    segment["frontier"][0] = "00" * 32
    stored.write_bytes(json.dumps(segment, separators=(",", ":"), sort_keys=True).encode())
    with pytest.raises(ArchiveTamperedError) as tampered:
        read_archived(copy, key, request_id="req-solo")
    assert tampered.value.segments == (2,)
    assert "segment 2: its frontier does not give the signed root of the leaves before it" in tampered.value.problems
    assert read_archived(copy, key, request_id="req-0005").segments == (0, 1, 3)  # what does not need segment 2


def test_a_newer_version_or_delete_marker_over_a_sealed_object_is_ignored_and_reported(
    archive: S3Archive, cli_env: None, tmp_path: Path
) -> None:
    url = _sqlite(tmp_path)
    filler = Filler(url, tmp_path)
    key = filler.signer.verifier
    filler.fill(600, every=300)
    assert len(_sealer(url, archive, key).run()) == 2
    sealed = read_archived(archive, key, request_id=REQUEST)
    assert {r.row.event_id for r in sealed.rows} == _ids(0, 600)

    s3, bucket = archive.client, archive.bucket
    first, second = segment_key(PREFIX, 0), segment_key(PREFIX, 1)
    original = archive.get(first)
    assert original is not None
    forged = _alter_row(original, 5)
    s3.put_object(Bucket=bucket, Key=first, Body=forged)  # accepted: a new version over the locked one
    s3.put_object(Bucket=bucket, Key=manifest_key(PREFIX, 1), Body=b'{"forged": true}')
    s3.delete_object(Bucket=bucket, Key=second)  # accepted: a delete marker
    assert archive.get(first) == forged
    assert archive.get(second) is None
    versions = archive.versions("")
    assert versions is not None
    assert (len(versions[first].ids), versions[second].delete_markers) == (2, 1)

    # A plain read sees the writes; `audit verify --archive` checks the sealed versions and reports the rest.
    report = verify_archive(archive, key)
    assert report.ok, report.problems
    assert (report.segments, report.leaves) == (2, 600)
    assert len(report.notices) == 3

    # The reader reads the sealed versions, verifies them, and reports the rest.
    again = read_archived(archive, key, request_id=REQUEST)
    assert again.rows == sealed.rows
    assert again.head == sealed.head
    notices = "\n".join(again.notices)
    assert f"{first}: 1 other version(s) and 0 delete marker(s) were written besides the sealed version" in notices
    assert f"{manifest_key(PREFIX, 1)}: 1 other version(s)" in notices
    assert f"{second}: 0 other version(s) and 1 delete marker(s)" in notices

    result = _trace(REQUEST, "--json", "--archive", archive.location, "--key", str(key))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {s["event_id"] for s in data["steps"]} == _ids(0, 600)
    assert len(data["archive"]["notices"]) == 3
    table = _trace(REQUEST, "--archive", archive.location, "--key", str(key))
    assert table.exit_code == 0, table.output
    assert f"archive: {first}: 1 other version(s)" in table.output


def _overwrite(archive: S3Archive) -> dict[str, str]:
    """What anyone allowed to write to the bucket can do over sealed, locked objects: segment 0 written
    over (a forged row), manifest 1 written over, segment 1 deleted. The sealed version ids, by key."""
    s3, bucket = archive.client, archive.bucket
    first, second, manifest = segment_key(PREFIX, 0), segment_key(PREFIX, 1), manifest_key(PREFIX, 1)
    versions = archive.versions("")
    assert versions is not None
    sealed = {k: versions[k].ids[0] for k in (first, second, manifest)}
    original = archive.get(first)
    assert original is not None
    s3.put_object(Bucket=bucket, Key=first, Body=_alter_row(original, 5))
    s3.put_object(Bucket=bucket, Key=manifest, Body=b'{"forged": true}')
    s3.delete_object(Bucket=bucket, Key=second)
    assert archive.get(second) is None
    return sealed


def test_verify_hot_retention_and_the_sealer_work_on_the_sealed_versions_under_writes_over_them(
    audit_db: AuditDb, archive: S3Archive, cli_env: None, tmp_path: Path
) -> None:
    filler = Filler(audit_db.writer, tmp_path)
    key = filler.signer.verifier
    filler.fill(900, every=300)
    warned: list[str] = []
    sealer = Sealer(make_engine(audit_db.writer), archive, key, max_leaves=300, settle=timedelta(0), warn=warned.append)
    assert len(sealer.run(limit=2)) == 2  # leaves 0..599
    sealed = _overwrite(archive)
    first, second = segment_key(PREFIX, 0), segment_key(PREFIX, 1)

    # `atb audit verify --archive`: the sealed versions verify, locks included; the writes are named.
    result = CliRunner().invoke(app, ["audit", "verify", "--archive", archive.location, "--key", str(key)])
    assert result.exit_code == 0, result.output
    assert "every manifest, segment, leaf, root and checkpoint of the archive verifies" in result.output
    assert f"{first}: 1 other version(s) and 0 delete marker(s) were written besides the sealed version" in (
        result.output
    )
    assert f"{second}: 0 other version(s) and 1 delete marker(s)" in result.output
    assert f"{manifest_key(PREFIX, 1)}: 1 other version(s)" in result.output

    # The sealer goes on from the sealed tip (manifest 1 and segment 1 as sealed), and says what it met.
    again = sealer.run()
    assert [(s.seq, s.start, s.end, s.written) for s in again] == [(2, 600, 900, True)]
    assert any(f"{second}: 0 other version(s) and 1 delete marker(s)" in line for line in warned), warned
    assert any(f"{manifest_key(PREFIX, 1)}: 1 other version(s)" in line for line in warned), warned
    report = verify_archive(archive, key)
    assert report.ok, report.problems
    assert (report.segments, report.leaves, len(report.notices)) == (3, 900, 3)

    # A legal hold lands on the sealed version of segment 0, not on the version written over it.
    place_hold(make_engine(audit_db.purger), HoldScope(request_id=REQUEST), reason="subpoena", actor="legal")
    assert (0, True) in sealer.sync_holds()

    def held(key_name: str, version: str) -> bool:
        return archive.lock(key_name, version_id=version).legal_hold

    versions = archive.versions("")
    assert versions is not None
    assert versions[first].ids[0] == sealed[first]
    assert held(first, sealed[first])
    assert not held(first, versions[first].ids[1])
    assert held(manifest_key(PREFIX, 0), versions[manifest_key(PREFIX, 0)].ids[0])

    # The console's evidence bundle carries the sealed versions it verified, not what was written over them.
    desk = EvidenceDesk(audit_db.writer, tmp_path / "checkpoint.key.pub", interval_s=0, archive=lambda: archive)
    bundle, _ = desk.bundle(request_id=REQUEST, since=None, until=None)
    with zipfile.ZipFile(io.BytesIO(bundle)) as zipped:
        assert (
            zipped.read(f"archive/{first}")
            == archive.client.get_object(Bucket=archive.bucket, Key=first, VersionId=sealed[first])["Body"].read()
        )
        assert f"archive/{second}" in zipped.namelist()  # deleted by a marker, still bundled as sealed

    # Hot retention verifies the sealed versions, then purges what they hold.
    outcome, purged = hot_purge(make_engine(audit_db.purger), filler.signer, archive, keep=timedelta(0), actor="ops")
    assert purged.ok
    assert len(purged.notices) == 3
    assert outcome.removed > 0


def test_two_sealers_racing_on_a_versioned_bucket_agree_on_the_first_ones_objects(
    archive: S3Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server does not refuse the second write to a key: it keeps it as a newer version. The
    sealer that wrote second must adopt what was sealed first, or its next manifest chains to bytes
    that no reader of the sealed versions sees."""
    url = _sqlite(tmp_path)
    filler = Filler(url, tmp_path)
    key = filler.signer.verifier
    filler.fill(600, every=300)
    other = Sealer(
        make_engine(url),
        archive,
        key,
        max_leaves=300,
        settle=timedelta(0),
        now=lambda: datetime.now(UTC) + timedelta(hours=1),
    )
    racer = S3Archive(archive.client, archive.bucket, archive.prefix)
    real_put = racer.put_locked
    raced: list[str] = []

    def the_other_sealer_first(name: str, data: bytes, until: datetime, *, legal_hold: bool = False) -> None:
        if name == manifest_key(PREFIX, 0) and not raced:
            raced.append(name)  # between this sealer's look at the key and its write, the other seals segment 0
            assert [s.seq for s in other.run(limit=1)] == [0]
        real_put(name, data, until, legal_hold=legal_hold)

    monkeypatch.setattr(racer, "put_locked", the_other_sealer_first)
    sealed = Sealer(make_engine(url), racer, key, max_leaves=300, settle=timedelta(0)).run()
    assert raced
    assert [(s.seq, s.end) for s in sealed] == [(0, 300), (1, 600)]
    versions = archive.versions("manifests/")
    assert versions is not None
    assert len(versions[manifest_key(PREFIX, 0)].ids) == 2  # both writes were taken
    report = verify_archive(archive, key)
    assert report.ok, report.problems  # manifest 1 chains to the sealed (first) manifest 0
    assert read_archived(archive, key, request_id=REQUEST).segments == (0, 1)


def test_an_altered_segment_fails_the_trace_naming_it(
    archive: S3Archive, s3_server: LocalS3, cli_env: None, tmp_path: Path
) -> None:
    url = _sqlite(tmp_path)
    filler = Filler(url, tmp_path)
    key = filler.signer.verifier
    filler.fill(600, every=300)
    assert len(_sealer(url, archive, key).run()) == 2

    # A local copy of the archive (nothing locks it): one row of segment 1 changed.
    copy = _copy(archive, tmp_path / "copy")
    stored = copy.root / segment_key(PREFIX, 1)
    stored.write_bytes(_alter_row(stored.read_bytes(), 17))
    result = _trace(REQUEST, "--archive", f"file://{copy.root}#{PREFIX}", "--key", str(key))
    assert result.exit_code == 1, result.output
    assert f"FAILED: the archive {copy.location} does not verify at segment(s) 1: segment 1 was altered" in (
        result.output
    )
    assert "leaf 317: the archived row is not the one its leaf commits to" in result.output
    assert "Trace of" not in result.output  # nothing from it is shown

    # The sealed version itself changed on the server's disk (what Object Lock cannot stop).
    on_disk = s3_server.data_dir / archive.bucket / segment_key(PREFIX, 0)
    on_disk.write_bytes(_alter_row(on_disk.read_bytes(), 5))
    with pytest.raises(ArchiveTamperedError) as tampered:
        read_archived(archive, key, request_id=REQUEST)
    assert tampered.value.segments == (0,)
    assert any(p.startswith("segment 0 was altered") for p in tampered.value.problems)
    failed = _trace(REQUEST, "--archive", archive.location, "--key", str(key))
    assert failed.exit_code == 1
    assert "does not verify at segment(s) 0: segment 0 was altered" in failed.output


def test_a_redacted_row_is_verified_with_its_redaction_record_from_a_later_segment(
    archive: S3Archive, tmp_path: Path
) -> None:
    """Migration 0006 redacted the tokens of rows already signed: the redaction record (leaf 40) explains them."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    config.attributes["configure_logger"] = False
    command.upgrade(config, "0005")
    old = OldStore(url, tmp_path)
    before = old_rows()
    old.append(before[:20])
    old.checkpoint()
    old.append(before[20:])
    old.checkpoint()
    command.upgrade(config, "head")
    sign_tip(old.engine, old.signer)
    key = old.signer.verifier
    sealed = Sealer(old.engine, archive, key, max_leaves=20, settle=timedelta(0)).run()
    assert [(s.start, s.end) for s in sealed] == [(0, 20), (20, 40), (40, 41)]

    found = read_archived(archive, key, request_id="req-0009")
    assert found.segments == (0,)
    assert [(r.leaf, r.row.redacted) for r in found.rows] == [(9, True)]
    assert b"sha256:" in found.rows[0].row.raw
