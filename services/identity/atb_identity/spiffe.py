"""SPIFFE IDs: parse and validate `spiffe://<trust domain><path>` (SPIFFE ID standard).

The rules (spiffe/standards SPIFFE-ID.md §2; docs/architecture.md §4.5):
the scheme is `spiffe`; the trust domain is lowercase letters, digits, `.`, `-`
and `_`, with no port or userinfo; there is no query or fragment; the path is
non-empty, and each segment is non-empty, not `.` or `..`, and made of letters,
digits, `.`, `-` and `_`; the whole ID is at most 2048 bytes.

This module only checks syntax. Whether an ID belongs to a trust domain we trust
is decided by `svid.validate_svid`, never here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from atb_identity.errors import (
    EmptySpiffePathError,
    InvalidSpiffeIdError,
    NotSpiffeSchemeError,
    SpiffeIdTooLongError,
)

__all__ = ["MAX_SPIFFE_ID_BYTES", "SCHEME_PREFIX", "SpiffeId", "validate_trust_domain"]

SCHEME_PREFIX = "spiffe://"
MAX_SPIFFE_ID_BYTES = 2048
MAX_TRUST_DOMAIN_BYTES = 255
_TRUST_DOMAIN_CHARS = re.compile(r"[a-z0-9._-]+")
_SEGMENT_CHARS = re.compile(r"[A-Za-z0-9._-]+")


def validate_trust_domain(trust_domain: str) -> None:
    """Raise InvalidSpiffeIdError unless `trust_domain` is a valid SPIFFE trust domain name."""
    if not trust_domain:
        raise InvalidSpiffeIdError("the trust domain is missing", code="missing_trust_domain")
    if "@" in trust_domain:
        raise InvalidSpiffeIdError("userinfo (`user@`) is not allowed before the trust domain", code="userinfo")
    if ":" in trust_domain:
        raise InvalidSpiffeIdError("a port is not allowed in the trust domain", code="port")
    if len(trust_domain.encode()) > MAX_TRUST_DOMAIN_BYTES:
        raise InvalidSpiffeIdError(
            f"the trust domain is longer than {MAX_TRUST_DOMAIN_BYTES} bytes", code="trust_domain_too_long"
        )
    if not _TRUST_DOMAIN_CHARS.fullmatch(trust_domain):
        raise InvalidSpiffeIdError(
            f"trust domain {trust_domain!r} may hold only lowercase letters, digits, '.', '-' and '_'",
            code="trust_domain_chars",
        )


def _validate_path(path: str) -> None:
    if path in ("", "/"):
        raise EmptySpiffePathError("the path is empty: a SPIFFE ID names a workload, not only a trust domain")
    if not path.startswith("/"):
        raise InvalidSpiffeIdError("the path must start with '/'", code="path_no_leading_slash")
    for segment in path[1:].split("/"):
        _validate_segment(segment)


def _validate_segment(segment: str) -> None:
    if not segment:
        raise InvalidSpiffeIdError("the path has an empty segment ('//' or a trailing '/')", code="empty_segment")
    if segment in (".", ".."):
        raise InvalidSpiffeIdError(f"the path has a {segment!r} segment", code="dot_segment")
    if not _SEGMENT_CHARS.fullmatch(segment):
        raise InvalidSpiffeIdError(
            f"path segment {segment!r} may hold only letters, digits, '.', '-' and '_'", code="segment_chars"
        )


def _split(text: str) -> tuple[str, str]:
    """`spiffe://td/path` → (td, /path), refusing what a URI may carry but a SPIFFE ID may not."""
    if not text.startswith(SCHEME_PREFIX):
        raise NotSpiffeSchemeError(f"{text[:64]!r} does not start with {SCHEME_PREFIX!r}")
    rest = text[len(SCHEME_PREFIX) :]
    if "?" in rest:
        raise InvalidSpiffeIdError("a query ('?') is not allowed", code="query")
    if "#" in rest:
        raise InvalidSpiffeIdError("a fragment ('#') is not allowed", code="fragment")
    trust_domain, slash, path = rest.partition("/")
    return trust_domain, slash + path


@dataclass(frozen=True)
class SpiffeId:
    """A syntactically valid SPIFFE ID. Constructing one with bad parts raises."""

    trust_domain: str
    path: str

    def __post_init__(self) -> None:
        validate_trust_domain(self.trust_domain)
        _validate_path(self.path)
        size = len(str(self).encode())
        if size > MAX_SPIFFE_ID_BYTES:
            raise SpiffeIdTooLongError(f"the SPIFFE ID is {size} bytes, more than {MAX_SPIFFE_ID_BYTES}")

    def __str__(self) -> str:
        return f"{SCHEME_PREFIX}{self.trust_domain}{self.path}"

    @classmethod
    def parse(cls, text: str) -> SpiffeId:
        """Parse `spiffe://<td><path>`, or raise InvalidSpiffeIdError whose `code` names the broken rule."""
        size = len(text.encode())
        if size > MAX_SPIFFE_ID_BYTES:  # before any other work on untrusted input
            raise SpiffeIdTooLongError(f"the SPIFFE ID is {size} bytes, more than {MAX_SPIFFE_ID_BYTES}")
        trust_domain, path = _split(text)
        validate_trust_domain(trust_domain)
        return cls(trust_domain=trust_domain, path=path)
