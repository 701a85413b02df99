"""The pure parts of `atb replay`: time ranges, dead-letter filters and re-drive planning, run files."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from atb.replay.errors import ReplayUsageError, RunNotFoundError
from atb.replay.letters import LetterFilter, LetterRef, Original, Redrive, check_original, plan_redrive, resolve_topic
from atb.replay.runs import PartitionSpan, RunPlan, RunStore, SpooledRecord
from atb.replay.timerange import TimeRange, parse_instant
from contracts import DeadLetter, DeadLetterV1

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", NOW - timedelta(hours=2)),
        ("30m", NOW - timedelta(minutes=30)),
        ("90s", NOW - timedelta(seconds=90)),
        ("7d", NOW - timedelta(days=7)),
        ("1w", NOW - timedelta(weeks=1)),
        ("now", NOW),
        ("2026-11-25T10:00:00Z", datetime(2026, 11, 25, 10, tzinfo=UTC)),
        ("2026-11-25T10:00:00+01:00", datetime(2026, 11, 25, 9, tzinfo=UTC)),
        ("2026-11-25T10:00:00", datetime(2026, 11, 25, 10, tzinfo=UTC)),  # naive = UTC
    ],
)
def test_instants(text: str, expected: datetime) -> None:
    assert parse_instant(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2x", "-2h", "2026-13-01", "h2"])
def test_bad_instants_name_the_option(text: str) -> None:
    with pytest.raises(ReplayUsageError, match="--until"):
        parse_instant(text, NOW, option="--until")


def test_a_range_must_not_be_empty() -> None:
    with pytest.raises(ReplayUsageError, match="not before"):
        TimeRange.parse("1h", "2h", NOW)
    assert TimeRange.parse("2h", "1h", NOW).since_ms == int((NOW - timedelta(hours=2)).timestamp() * 1000)
    assert TimeRange.parse(None, None, NOW) == TimeRange()


ORIGINAL = b'{"x":1}'


def _letter(**overrides: object) -> DeadLetter:
    fields: dict[str, object] = {
        "original_topic": "ns.atb.poa.requests",
        "original_partition": 1,
        "original_offset": 7,
        "original_key": "req-1",
        "original_size": len(ORIGINAL),
        "original_sha256": "sha256:" + hashlib.sha256(ORIGINAL).hexdigest(),
        "original_prefix_b64": base64.b64encode(ORIGINAL).decode(),
        "consumer": "approvals",
        "error_code": "unexpected_type",
        "reason": "wrong topic",
        "request_id": "req-1",
    }
    return DeadLetter.model_validate({**fields, **overrides})


def _letter_v1(**overrides: object) -> DeadLetterV1:
    fields: dict[str, object] = {
        "original_topic": "ns.atb.poa.requests",
        "original_partition": 1,
        "original_offset": 7,
        "original_key": "req-1",
        "original_value_b64": base64.b64encode(ORIGINAL).decode(),
        "consumer": "approvals",
        "error_code": "unexpected_type",
        "reason": "wrong topic",
        "request_id": "req-1",
    }
    return DeadLetterV1.model_validate({**fields, **overrides})


@pytest.mark.parametrize(
    ("filters", "matches"),
    [
        ([], True),
        (["consumer=approvals"], True),
        (["consumer=issuer"], False),
        (["consumer=approvals", "error_code=unexpected_type"], True),
        (["consumer=approvals", "error_code=invalid_envelope"], False),
        (["original_topic=atb.poa.requests"], True),  # base name: the namespace is added
        (["original_topic=ns.atb.poa.requests"], True),
        (["original_topic=atb.approvals.votes"], False),
        (["request_id=req-1"], True),
        (["request_id=req-2"], False),
    ],
)
def test_filters_are_anded(filters: list[str], matches: bool) -> None:
    assert LetterFilter.parse(filters).matches(_letter(), "ns.") is matches
    assert LetterFilter.parse(filters).matches(_letter_v1(), "ns.") is matches


@pytest.mark.parametrize("text", ["consumer", "consumer=", "=x", "reason=x", "topic=atb.dlq"])
def test_bad_filters_are_refused(text: str) -> None:
    with pytest.raises(ReplayUsageError, match="--filter"):
        LetterFilter.parse([text])


def test_targets_are_catalogue_topics_in_the_namespace() -> None:
    assert resolve_topic("atb.approvals.votes", "ns.") == "ns.atb.approvals.votes"
    assert resolve_topic("ns.atb.approvals.votes", "ns.") == "ns.atb.approvals.votes"
    assert resolve_topic("atb.approvals.votes", "") == "atb.approvals.votes"
    with pytest.raises(ReplayUsageError, match="unknown topic"):
        resolve_topic("atb.nope", "ns.")
    with pytest.raises(ReplayUsageError, match="loop"):
        resolve_topic("atb.dlq", "ns.")


def test_plan_skips_what_was_redriven_unless_again() -> None:
    one, two = LetterRef("ns.atb.dlq", 0, 1), LetterRef("ns.atb.dlq", 0, 2)
    letters = [(one, _letter()), (two, _letter(consumer="issuer"))]
    everything = LetterFilter()
    planned = plan_redrive(letters, everything, namespace="ns.", target=None, done={str(one)}, again=False)
    assert [(r.ref, r.status, r.target) for r in planned] == [
        (one, "already_redriven", "ns.atb.poa.requests"),
        (two, "send", "ns.atb.poa.requests"),
    ]
    again = plan_redrive(
        letters, everything, namespace="ns.", target="ns.atb.approvals.votes", done={str(one)}, again=True
    )
    assert [(r.status, r.target) for r in again] == [("send", "ns.atb.approvals.votes")] * 2
    only = plan_redrive(
        letters, LetterFilter.parse(["consumer=issuer"]), namespace="ns.", target=None, done=(), again=False
    )
    assert [r.ref for r in only] == [two]
    assert only[0].original is None  # read back from the coordinates before anything is sent


def _planned(letter: DeadLetter | DeadLetterV1) -> Redrive:
    return Redrive(LetterRef("ns.atb.dlq", 0, 1), letter, "ns.atb.poa.requests", "send")


def test_the_original_read_back_is_sent_when_its_digest_is_the_letters() -> None:
    found = Original(key=b"req-1\xff", value=ORIGINAL, headers=(("content-type", b"x"),))
    checked = check_original(_planned(_letter()), found)
    assert (checked.status, checked.original, checked.refused) == ("send", found, False)


def test_a_gone_original_is_refused_with_its_coordinates() -> None:
    checked = check_original(_planned(_letter()), None)
    assert checked.status == "original_gone"
    assert checked.refused
    assert checked.original is None
    assert "ns.atb.poa.requests:1:7" in checked.why
    assert "retention" in checked.why


def test_a_changed_original_is_refused() -> None:
    checked = check_original(_planned(_letter()), Original(key=b"req-1", value=b'{"x":2}'))
    assert checked.status == "digest_mismatch"
    assert checked.original is None
    assert "sha256:" in checked.why


def test_a_v1_letter_is_checked_against_the_bytes_it_carried_and_falls_back_to_them() -> None:
    assert check_original(_planned(_letter_v1()), None).original == Original(key=b"req-1", value=ORIGINAL)
    assert check_original(_planned(_letter_v1()), Original(key=b"k", value=b"other")).status == "digest_mismatch"
    assert check_original(_planned(_letter_v1()), Original(key=b"k", value=ORIGINAL)).original == Original(
        key=b"k", value=ORIGINAL
    )


def test_letters_not_to_send_are_left_alone() -> None:
    skipped = Redrive(LetterRef("ns.atb.dlq", 0, 1), _letter(), "t", "already_redriven")
    assert check_original(skipped, None) is skipped


def test_run_files_round_trip_and_merge(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    plan = RunPlan(
        run_id="20261126T120000-abcdef",
        command="redrive",
        topics=("atb.dlq",),
        since=None,
        until=NOW.isoformat(),
        spans=(PartitionSpan("atb.dlq", 0, 3, 9),),
        created_at=NOW.isoformat(),
        options={"filters": ["consumer=approvals"], "execute": True},
    )
    store.save(plan)
    assert store.load(plan.run_id) == plan
    assert plan.total == 6
    store.update(plan.run_id, lambda p: p.with_ledger("atb.dlq:0:4"))
    store.update(plan.run_id, lambda p: p.with_progress("stopped", {"atb.dlq:0": 5}))
    loaded = store.load(plan.run_id)
    assert loaded.ledger == ("atb.dlq:0:4",)
    assert (loaded.status, loaded.positions) == ("stopped", {"atb.dlq:0": 5})
    with pytest.raises(RunNotFoundError):
        store.load("20261126T120000-000000")
    with pytest.raises(ReplayUsageError, match="not a replay run id"):
        store.load("../../etc/passwd")


def test_a_spool_yields_each_record_once(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    run_id = "20261126T120000-abcdef"
    a, b = SpooledRecord("t", 0, 1, 10, "a"), SpooledRecord("t", 0, 2, 11, "b")
    store.spool(run_id, [a, b])
    store.spool(run_id, [b])  # a batch spooled again after a crash before its commit
    assert list(store.spooled(run_id)) == [a, b]
