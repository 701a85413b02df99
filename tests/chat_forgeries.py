"""A corpus of forged Slack interaction requests: every one must be refused.

Built from one valid, signed click (`body` signed at `now` with `secret`), each
forgery changes one thing: a wrong key, one flipped body byte, a missing or
malformed header, a timestamp 301 s or more away (signed correctly for that
timestamp, so only the clock check can catch it), a signature over another
timestamp. Shared by the unit tests (verifier alone) and the end-to-end test
(the chat service over HTTP).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

__all__ = ["Forgery", "forgeries"]


@dataclass(frozen=True)
class Forgery:
    name: str
    headers: dict[str, str]
    body: bytes


def _sign(secret: bytes, ts: str, body: bytes) -> str:
    return "v0=" + hmac.new(secret, b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()


def _headers(ts: str | None, sig: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if ts is not None:
        headers["X-Slack-Request-Timestamp"] = ts
    if sig is not None:
        headers["X-Slack-Signature"] = sig
    return headers


def forgeries(secret: bytes, body: bytes, now: int) -> list[Forgery]:
    ts = str(now)
    good = _sign(secret, ts, body)
    out: list[Forgery] = []
    # First, so that over HTTP they arrive within a second of `now`: stale or future,
    # each signed correctly for its own timestamp, so only the clock check can refuse it.
    for skew in (301, 302, 360, 600, 3600, 86_400, now):
        for sign in (-1, 1):
            other = str(now + sign * skew)
            if int(other) >= 0:
                out.append(Forgery(f"skew_{sign * skew}", _headers(other, _sign(secret, other, body)), body))
    for i in range(110):  # signed with the wrong key
        wrong = hashlib.sha256(b"wrong-%d" % i).hexdigest().encode()
        out.append(Forgery(f"wrong_key_{i}", _headers(ts, _sign(wrong, ts, body)), body))
    step = max(1, len(body) // 100)
    for i in range(0, step * 100, step):  # one changed body byte, same signature
        pos = i % len(body)
        changed = body[:pos] + bytes([body[pos] ^ 0x01]) + body[pos + 1 :]
        out.append(Forgery(f"body_byte_{pos}", _headers(ts, good), changed))
    out += [
        Forgery("appended_byte", _headers(ts, good), body + b"&"),
        Forgery("truncated_body", _headers(ts, good), body[:-1]),
        Forgery("empty_body", _headers(ts, good), b""),
        Forgery("no_timestamp", _headers(None, good), body),
        Forgery("no_signature", _headers(ts, None), body),
        Forgery("no_headers", _headers(None, None), body),
        Forgery("empty_timestamp", _headers("", good), body),
        Forgery("empty_signature", _headers(ts, ""), body),
        Forgery("v1_signature", _headers(ts, "v1=" + good[3:]), body),
        Forgery("upper_hex", _headers(ts, "v0=" + good[3:].upper()), body),
        Forgery("short_signature", _headers(ts, good[:-2]), body),
        Forgery("long_signature", _headers(ts, good + "00"), body),
        Forgery("spaced_signature", _headers(ts, "v0= " + good[3:]), body),
        Forgery("bare_hex", _headers(ts, good[3:]), body),
        Forgery("float_timestamp", _headers(ts + ".0", _sign(secret, ts + ".0", body)), body),
        Forgery("negative_timestamp", _headers("-" + ts, _sign(secret, "-" + ts, body)), body),
        Forgery("hex_timestamp", _headers(hex(now), _sign(secret, hex(now), body)), body),
        Forgery("sig_for_other_ts", _headers(str(now + 1), good), body),
        Forgery("sig_without_ts", _headers(ts, "v0=" + hmac.new(secret, body, hashlib.sha256).hexdigest()), body),
        Forgery(
            "sha1_mac",
            _headers(ts, "v0=" + hmac.new(secret, b"v0:" + ts.encode() + b":" + body, "sha1").hexdigest()),
            body,
        ),
    ]
    for i in range(60):  # right time, random signatures
        fake = "v0=" + hashlib.sha256(b"guess-%d" % i).hexdigest()
        out.append(Forgery(f"guess_{i}", _headers(ts, fake), body))
    return out
