"""The audit sink as a real process seals its log to the immutable archive on its own schedule.

With `ATB_AUDIT_ARCHIVE_URL` set, the sink runs the same sealer as `atb audit archive`
every `ATB_AUDIT_ARCHIVE_INTERVAL_S` (audit_sink/archive/schedule.py). Events go through
Kafka into the sink; the test waits until the archive on a real S3-compatible server
(versitygw, Object Lock in COMPLIANCE mode) verifies on its own and holds them all.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from atb.dev.config import DevConfig
from atb.dev.s3 import LocalS3
from atb.dev.stack import ServiceStack, StackConfig
from atb.dev.toolchain import build_versitygw
from audit_sink.adapters.signing import load_or_create_signer
from audit_sink.archive.check import ArchiveReport, verify_archive
from audit_sink.archive.objects import S3Archive
from tests.audit_support import ORIGIN
from tests.e2e.test_audit_sink import _publish
from tests.waits import until


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    binary = asyncio.run(build_versitygw(DevConfig.from_env()))
    with LocalS3(binary, tmp_path_factory.mktemp("versitygw") / "data") as server:
        yield server


async def test_the_sink_seals_its_log_into_the_locked_archive_on_schedule(
    kafka_bootstrap: str, namespace: str, s3_server: LocalS3, tmp_path: Path
) -> None:
    bucket = f"atb-{secrets.token_hex(4)}"
    archive = S3Archive.connect(
        bucket,
        "audit/",
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        region=s3_server.region,
    )
    archive.create_bucket()
    env = {
        "ATB_CHECKPOINT_EVERY": "50",
        "ATB_CHECKPOINT_INTERVAL_S": "1",
        "ATB_AUDIT_ARCHIVE_URL": f"s3://{bucket}/audit/",
        "ATB_AUDIT_ARCHIVE_ENDPOINT": s3_server.endpoint,
        "ATB_AUDIT_ARCHIVE_INTERVAL_S": "1",
        "ATB_AUDIT_ARCHIVE_SETTLE_S": "0",
        "ATB_AUDIT_ARCHIVE_MAX_LEAVES": "100",
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_REGION": s3_server.region,
    }
    config = StackConfig(
        kafka_bootstrap,
        "http://127.0.0.1:1",
        tmp_path,
        namespace=namespace,
        audit_db_url=f"sqlite:///{tmp_path / 'audit.db'}",
        extra_env=env,
    )
    stack = ServiceStack(config, services=("audit-sink",))
    await stack.start(ready_timeout=90)
    key = load_or_create_signer(tmp_path / "audit" / "checkpoint.key", ORIGIN).verifier
    report: ArchiveReport | None = None
    try:
        await _publish(kafka_bootstrap, namespace, 0, 300)
        # The archive is objects the sink writes to S3 on its schedule: nothing on Kafka says they are there.
        report = await until(
            lambda: asyncio.to_thread(verify_archive, archive, key),
            lambda found: found.ok and found.leaves >= 300,
            timeout=90,
            what="the sink archiving 300 events",
            interval=0.5,
        )
    finally:
        await stack.stop()
    assert report is not None
    assert report.segments >= 1
    assert report.rows >= 300
