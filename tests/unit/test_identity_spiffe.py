"""atb_identity.spiffe: SPIFFE ID syntax, one row per rule (SPIFFE-ID.md §2)."""

from __future__ import annotations

import pytest

from atb_identity import (
    EmptySpiffePathError,
    InvalidSpiffeIdError,
    NotSpiffeSchemeError,
    SpiffeId,
    SpiffeIdTooLongError,
)

GOOD = [
    ("spiffe://atb.local/agent/crm-bot", "atb.local", "/agent/crm-bot"),
    ("spiffe://atb.local/user/alice", "atb.local", "/user/alice"),
    ("spiffe://atb.local/svc/issuer", "atb.local", "/svc/issuer"),
    ("spiffe://example-1_x.org/A/b.c/D-e_F/0", "example-1_x.org", "/A/b.c/D-e_F/0"),
    ("spiffe://td/x", "td", "/x"),
    ("spiffe://atb.local/...", "atb.local", "/..."),  # only "." and ".." are dot segments
]


@pytest.mark.parametrize(("text", "trust_domain", "path"), GOOD)
def test_a_valid_id_parses_and_prints_back(text: str, trust_domain: str, path: str) -> None:
    parsed = SpiffeId.parse(text)
    assert parsed == SpiffeId(trust_domain, path)
    assert str(parsed) == text


BAD: list[tuple[str, type[InvalidSpiffeIdError], str]] = [
    ("https://atb.local/agent/x", NotSpiffeSchemeError, "not_spiffe_scheme"),
    ("SPIFFE://atb.local/agent/x", NotSpiffeSchemeError, "not_spiffe_scheme"),
    ("spiffe:/atb.local/agent/x", NotSpiffeSchemeError, "not_spiffe_scheme"),
    ("atb.local/agent/x", NotSpiffeSchemeError, "not_spiffe_scheme"),
    ("", NotSpiffeSchemeError, "not_spiffe_scheme"),
    ("spiffe://atb.local", EmptySpiffePathError, "empty_path"),
    ("spiffe://atb.local/", EmptySpiffePathError, "empty_path"),
    ("spiffe://", InvalidSpiffeIdError, "missing_trust_domain"),
    ("spiffe:///agent/x", InvalidSpiffeIdError, "missing_trust_domain"),
    ("spiffe://ATB.local/agent/x", InvalidSpiffeIdError, "trust_domain_chars"),
    ("spiffe://atb local/agent/x", InvalidSpiffeIdError, "trust_domain_chars"),
    ("spiffe://atb.lócal/agent/x", InvalidSpiffeIdError, "trust_domain_chars"),
    ("spiffe://atb.local:8443/agent/x", InvalidSpiffeIdError, "port"),
    ("spiffe://bob@atb.local/agent/x", InvalidSpiffeIdError, "userinfo"),
    ("spiffe://bob:pw@atb.local/agent/x", InvalidSpiffeIdError, "userinfo"),
    ("spiffe://atb.local/agent/x?q=1", InvalidSpiffeIdError, "query"),
    ("spiffe://atb.local/agent/x#f", InvalidSpiffeIdError, "fragment"),
    ("spiffe://atb.local?q=1", InvalidSpiffeIdError, "query"),
    ("spiffe://atb.local/agent/../x", InvalidSpiffeIdError, "dot_segment"),
    ("spiffe://atb.local/agent/..", InvalidSpiffeIdError, "dot_segment"),
    ("spiffe://atb.local/./x", InvalidSpiffeIdError, "dot_segment"),
    ("spiffe://atb.local//x", InvalidSpiffeIdError, "empty_segment"),
    ("spiffe://atb.local/agent/x/", InvalidSpiffeIdError, "empty_segment"),
    ("spiffe://atb.local/agent/a%2Fb", InvalidSpiffeIdError, "segment_chars"),
    ("spiffe://atb.local/agent/a b", InvalidSpiffeIdError, "segment_chars"),
    ("spiffe://atb.local/agent/bøt", InvalidSpiffeIdError, "segment_chars"),
    ("spiffe://" + "a" * 256 + "/x", InvalidSpiffeIdError, "trust_domain_too_long"),
    ("spiffe://atb.local/" + "a" * 2030, SpiffeIdTooLongError, "spiffe_id_too_long"),
    # Size is checked before anything else is done with untrusted input.
    ("https://ATB.local/?" + "a" * 2048, SpiffeIdTooLongError, "spiffe_id_too_long"),
]


@pytest.mark.parametrize(("text", "error", "code"), BAD)
def test_an_invalid_id_is_refused_naming_the_rule(text: str, error: type[InvalidSpiffeIdError], code: str) -> None:
    with pytest.raises(error) as caught:
        SpiffeId.parse(text)
    assert type(caught.value) is error
    assert caught.value.code == code


def test_the_limit_is_2048_bytes_inclusive() -> None:
    prefix = "spiffe://atb.local/"
    assert len(str(SpiffeId.parse(prefix + "a" * (2048 - len(prefix))))) == 2048
    with pytest.raises(SpiffeIdTooLongError):
        SpiffeId.parse(prefix + "a" * (2049 - len(prefix)))


@pytest.mark.parametrize(
    ("trust_domain", "path", "code"),
    [
        ("ATB.local", "/x", "trust_domain_chars"),
        ("", "/x", "missing_trust_domain"),
        ("atb.local", "x", "path_no_leading_slash"),
        ("atb.local", "/", "empty_path"),
        ("atb.local", "/a/../b", "dot_segment"),
        ("atb.local", "/a?b", "segment_chars"),
    ],
)
def test_the_constructor_applies_the_same_rules(trust_domain: str, path: str, code: str) -> None:
    with pytest.raises(InvalidSpiffeIdError) as caught:
        SpiffeId(trust_domain, path)
    assert caught.value.code == code


def test_ids_are_values() -> None:
    assert SpiffeId.parse("spiffe://atb.local/agent/x") == SpiffeId.parse("spiffe://atb.local/agent/x")
    assert len({SpiffeId.parse("spiffe://atb.local/agent/x"), SpiffeId("atb.local", "/agent/x")}) == 1
    assert SpiffeId.parse("spiffe://atb.local/agent/x") != SpiffeId.parse("spiffe://atb.local/agent/X")
