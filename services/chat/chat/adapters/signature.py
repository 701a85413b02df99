"""Slack request signing, v0 (api.slack.com/authentication/verifying-requests-from-slack).

`X-Slack-Signature` must be `v0=` + hex HMAC-SHA256, keyed with the app's
signing secret, of `v0:{X-Slack-Request-Timestamp}:{raw body}`. We verify the
exact bytes received (before any parsing), compare in constant time, and refuse
a timestamp more than 300 s away from our clock in either direction (replays of
old requests; a later replay inside the window is caught by the trigger_id
dedupe, see `chat.adapters.store`). `verify_slack_request` returns None or
raises `SignatureError` naming the rule; it never returns a bool.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping

from chat.errors import SignatureError

__all__ = ["MAX_SKEW_SECONDS", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "sign_slack_request", "verify_slack_request"]

TIMESTAMP_HEADER = "x-slack-request-timestamp"
SIGNATURE_HEADER = "x-slack-signature"
MAX_SKEW_SECONDS = 300
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")


def sign_slack_request(secret: bytes, timestamp: str, body: bytes) -> str:
    """The `X-Slack-Signature` value Slack sends for this body (used by the stand-in and tests)."""
    base = b"v0:" + timestamp.encode("ascii") + b":" + body
    return "v0=" + hmac.new(secret, base, hashlib.sha256).hexdigest()


def verify_slack_request(
    headers: Mapping[str, str], body: bytes, secret: bytes, *, now: float, max_skew: int = MAX_SKEW_SECONDS
) -> None:
    """Raise SignatureError unless `body` was signed with `secret` within `max_skew` seconds of `now`."""
    if not secret:
        raise SignatureError("no_secret", "no signing secret configured: every request is refused")
    lowered = {k.lower(): v for k, v in headers.items()}
    timestamp = lowered.get(TIMESTAMP_HEADER)
    signature = lowered.get(SIGNATURE_HEADER)
    if not timestamp:
        raise SignatureError("missing_timestamp", f"header {TIMESTAMP_HEADER} is missing")
    if not signature:
        raise SignatureError("missing_signature", f"header {SIGNATURE_HEADER} is missing")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise SignatureError("bad_timestamp", "the request timestamp is not a Unix time in seconds")
    skew = abs(now - int(timestamp))
    if skew > max_skew:
        raise SignatureError("stale_timestamp", f"the request timestamp is {skew:.0f}s from now (max {max_skew}s)")
    if not _SIGNATURE.fullmatch(signature):
        raise SignatureError("bad_signature", "the signature is not v0= followed by 64 hex digits")
    expected = sign_slack_request(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii")):
        raise SignatureError("bad_signature", "the signature does not match the body and timestamp")
