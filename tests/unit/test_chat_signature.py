"""Slack request signatures: the forged-request corpus is refused, 299 s is accepted, 301 s is not.

Our verifier is checked against slack_sdk's own `SignatureVerifier` on every
case, so the two independent implementations must agree.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from slack_sdk.signature import Clock, SignatureVerifier

from atb.dev.slack_standin import click_body, signed_headers
from chat.adapters.interaction import parse_interaction
from chat.adapters.secret import ensure_signing_secret
from chat.adapters.signature import verify_slack_request
from chat.adapters.store import ChatStore
from chat.errors import MalformedInteractionError, SignatureError
from contracts import VoteChoice
from tests.chat_forgeries import forgeries

SECRET = b"8f742231b10e8888abcd99yyyzzz85a5"
NOW = 1_700_000_000
BODY = click_body(user_id="UALICE01", request_id="req-1", action_id="atb_approve", trigger_id="1.2.abc")


def _slack_sdk_accepts(headers: dict[str, str], body: bytes, now: int) -> bool:
    verifier = SignatureVerifier(SECRET.decode(), clock=_Clock(now))
    try:
        return verifier.is_valid_request(body, headers)
    except ValueError:
        # slack_sdk 3.48 raises (rather than refusing) on a non-integer timestamp such as
        # "" or "1.0": one reason the service has its own verifier, which refuses them.
        return False


class _Clock(Clock):
    def __init__(self, now: int) -> None:
        self._now = now

    def now(self) -> float:
        return float(self._now)


def test_a_valid_signature_is_accepted_by_both_verifiers() -> None:
    headers = signed_headers(SECRET, BODY, NOW)
    verify_slack_request(headers, BODY, SECRET, now=NOW)
    assert _slack_sdk_accepts(headers, BODY, NOW)


@pytest.mark.parametrize("skew", [-299, -1, 0, 1, 299, 300, -300])
def test_timestamps_within_300_seconds_are_accepted(skew: int) -> None:
    headers = signed_headers(SECRET, BODY, NOW + skew)
    verify_slack_request(headers, BODY, SECRET, now=NOW)


@pytest.mark.parametrize("skew", [-301, 301, -86_400, 86_400])
def test_timestamps_beyond_300_seconds_are_refused(skew: int) -> None:
    headers = signed_headers(SECRET, BODY, NOW + skew)
    with pytest.raises(SignatureError) as refused:
        verify_slack_request(headers, BODY, SECRET, now=NOW)
    assert refused.value.code == "stale_timestamp"
    assert not _slack_sdk_accepts(headers, BODY, NOW)


def test_every_forgery_in_the_corpus_is_refused() -> None:
    corpus = forgeries(SECRET, BODY, NOW)
    assert len(corpus) >= 300
    codes: dict[str, int] = {}
    for forgery in corpus:
        with pytest.raises(SignatureError) as refused:
            verify_slack_request(forgery.headers, forgery.body, SECRET, now=NOW)
        codes[refused.value.code] = codes.get(refused.value.code, 0) + 1
        assert not _slack_sdk_accepts(forgery.headers, forgery.body, NOW), forgery.name
    assert set(codes) == {"bad_signature", "missing_timestamp", "missing_signature", "bad_timestamp", "stale_timestamp"}


def test_an_empty_secret_refuses_everything() -> None:
    headers = signed_headers(b"", BODY, NOW)
    with pytest.raises(SignatureError) as refused:
        verify_slack_request(headers, BODY, b"", now=NOW)
    assert refused.value.code == "no_secret"


def test_a_replayed_trigger_id_is_seen_once(tmp_path: Path) -> None:
    store = ChatStore(tmp_path / "chat.db")
    assert store.first_interaction("1.2.abc", time.time())
    assert not any(store.first_interaction("1.2.abc", time.time()) for _ in range(30))
    reopened = ChatStore(tmp_path / "chat.db")  # survives a restart
    assert not reopened.first_interaction("1.2.abc", time.time())


def test_one_chat_vote_per_request_and_principal(tmp_path: Path) -> None:
    store = ChatStore(tmp_path / "chat.db")
    assert store.claim_vote("req-1", "alice", "approve", "v1")
    assert not store.claim_vote("req-1", "alice", "deny", "v2")
    assert store.claim_vote("req-1", "bob", "approve", "v3")
    store.release_vote("req-1", "alice")
    assert store.claim_vote("req-1", "alice", "approve", "v4")


def test_the_dev_secret_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "chat" / "slack_signing_secret"
    first = ensure_signing_secret(path)
    assert ensure_signing_secret(path) == first
    assert len(first) == 64
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_click_parses_to_the_immutable_user_id() -> None:
    click = parse_interaction(BODY)
    assert (click.user_id, click.request_id, click.choice) == ("UALICE01", "req-1", VoteChoice.APPROVE)
    assert click.trigger_id == "1.2.abc"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "bad_body"),
        (b"payload=%7Bgarbage", "bad_body"),
        (b"\xff\xfe", "bad_body"),
        (b"payload=%5B%5D", "unsupported_type"),
        (b"payload=%7B%22type%22%3A%22view_submission%22%7D", "unsupported_type"),
        (b"payload=%7B%22type%22%3A%22block_actions%22%7D", "bad_actions"),
        (click_body(user_id="UALICE01", request_id="r", action_id="other"), "unknown_action"),
        (click_body(user_id="alice@example.com", request_id="r", action_id="atb_approve"), "bad_id"),
        (click_body(user_id="UALICE01", request_id="", action_id="atb_deny"), "missing_field"),
    ],
)
def test_malformed_interactions_are_refused_with_a_code(body: bytes, code: str) -> None:
    with pytest.raises(MalformedInteractionError) as refused:
        parse_interaction(body)
    assert refused.value.code == code
