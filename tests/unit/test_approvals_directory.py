"""approvals.domain.directory: one person, many identity spellings (docs/architecture.md §2.2)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from approvals.domain.directory import Approver, Directory, DirectoryError, normalize
from contracts import Tier

HIGH = frozenset({Tier.HIGH, Tier.CRITICAL})


def approver(
    principal: str = "alice",
    identities: tuple[str, ...] = ("spiffe://atb.local/user/alice",),
    *,
    type_: str = "manager",
    groups: tuple[str, ...] = ("manager",),
    tiers: frozenset[Tier] = HIGH,
) -> Approver:
    return Approver(principal, type_, frozenset(groups), tiers, frozenset(identities))


ALICE = approver("alice", ("spiffe://atb.local/user/alice", "slack:U024BE7LH", "emp-100"))
BOB = approver("bob", ("spiffe://atb.local/user/bob", "slack:U0BOB"), type_="compliance", groups=("compliance",))
DIRECTORY = Directory((ALICE, BOB))


# --- normalize -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("alice", "alice"),
        ("ALICE", "alice"),
        ("AlIcE", "alice"),
        ("EMP-100", "emp-100"),
        ("Slack:U024BE7LH", "slack:u024be7lh"),
        ("SPIFFE://ATB.local/User/Alice", "spiffe://atb.local/user/alice"),
        # NFKC: fullwidth and compatibility forms fold to ASCII.
        ("ａｌｉｃｅ", "alice"),
        ("ＡＬＩＣＥ", "alice"),
        ("ｅｍｐ－１００", "emp-100"),
        ("emp\u2010100", "emp\u2010100"),  # a real hyphen (U+2010) is not a hyphen-minus: stays distinct
        ("①", "1"),
        ("ⓐlice", "alice"),
        ("\u2160", "i"),  # ROMAN NUMERAL ONE
        ("x\u00b2", "x2"),  # superscript two
        # Ligatures.
        ("ﬁnance", "finance"),
        ("ﬀ", "ff"),
        ("ǆ", "dž"),
        # Case folding beyond lower(): German sharp s, Greek final sigma, Kelvin sign.
        ("STRASSE", "strasse"),
        ("straße", "strasse"),
        ("ẞ", "ss"),
        ("ΟΔΟΣ", "οδοσ"),
        ("οδος", "οδοσ"),
        ("\u212a", "k"),  # KELVIN SIGN
        # Combining sequences compose; the second NFKC keeps it idempotent after casefold.
        ("e\u0301mile", "\u00e9mile"),
        ("\u00c9MILE", "\u00e9mile"),
        ("ß\u0301", "s\u015b"),
        # Whitespace at either end, including non-ASCII spaces; inner space is kept.
        ("  alice\t\n", "alice"),
        ("\u00a0alice\u3000", "alice"),
        ("\u2003ALICE\u2009", "alice"),
        ("alice smith", "alice smith"),
        ("", ""),
        ("   ", ""),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@given(st.text())
def test_normalize_is_idempotent(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once


@given(st.text())
def test_normalize_ignores_case_compatibility_form_and_surrounding_space(text: str) -> None:
    assert normalize(unicodedata.normalize("NFKD", text)) == normalize(text)
    assert normalize(text.casefold()) == normalize(text)
    assert normalize(f" \u3000{text}\u00a0\n") == normalize(text)


# --- Approver ------------------------------------------------------------------


def test_approver_stores_identities_normalized_and_keeps_principal_as_given() -> None:
    made = approver("Alice", ("SPIFFE://atb.local/user/Alice", "ＥＭＰ-100"))
    assert made.principal == "Alice"
    assert made.identities == frozenset({"spiffe://atb.local/user/alice", "emp-100"})
    assert made.keys == made.identities | {"alice"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"principal": ""}, "principal: must not be empty"),
        ({"principal": " \u3000 "}, "principal: must not be empty"),
        ({"principal": "p" * 257}, "principal: longer than 256"),
        ({"type_": ""}, "type: must be 1 to 64"),
        ({"type_": "t" * 65}, "type: must be 1 to 64"),
        ({"groups": ()}, "groups: need at least one"),
        ({"groups": ("manager", " ")}, "no empty group names"),
        ({"identities": ()}, "identities: need at least one"),
        ({"identities": ("alice", "\t")}, "no empty identities"),
        ({"tiers": frozenset()}, "tiers: need at least one"),
        ({"tiers": frozenset({Tier.LOW})}, "tier low needs no approver"),
        ({"tiers": frozenset({Tier.LOW, Tier.HIGH})}, "tier low needs no approver"),
    ],
)
def test_approver_rejects(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(DirectoryError, match=message):
        approver(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["groups", "tiers", "identities"])
def test_approver_rejects_a_bare_string_where_a_set_belongs(field: str) -> None:
    args: dict[str, object] = {
        "principal": "alice",
        "type": "manager",
        "groups": frozenset({"manager"}),
        "tiers": HIGH,
        "identities": frozenset({"alice"}),
    }
    with pytest.raises(DirectoryError, match=f"{field}: must be a set"):
        Approver(**(args | {field: "manager"}))  # type: ignore[arg-type]


def test_directory_error_is_a_value_error() -> None:
    assert issubclass(DirectoryError, ValueError)


# --- Directory -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("second", "shared"),
    [
        (approver("alice", ("spiffe://atb.local/user/other",)), "alice"),
        (approver("ALICE", ("spiffe://atb.local/user/other",)), "alice"),
        (approver("ａｌｉｃｅ", ("spiffe://atb.local/user/other",)), "alice"),
        (approver("carol", ("emp-100",)), "emp-100"),
        (approver("carol", ("EMP-100",)), "emp-100"),
        (approver("carol", ("Slack:U024BE7LH",)), "slack:u024be7lh"),
        # One approver's principal is another's identity: one string, two people.
        (approver("emp-100", ("spiffe://atb.local/user/carol",)), "emp-100"),
        (approver("carol", ("Alice",)), "alice"),
    ],
)
def test_directory_rejects_shared_principal_or_identity(second: Approver, shared: str) -> None:
    with pytest.raises(DirectoryError, match=f"share the identity '{shared}'"):
        Directory((ALICE, second))


def test_directory_allows_principal_equal_to_own_identity() -> None:
    made = approver("alice", ("alice", "ALICE", "spiffe://atb.local/user/alice"))
    assert Directory((made,)).resolve("Alice") is made


def test_empty_directory_resolves_nobody() -> None:
    assert Directory(()).resolve("alice") is None


@pytest.mark.parametrize(
    ("identity", "principal"),
    [
        ("spiffe://atb.local/user/alice", "alice"),
        ("SPIFFE://ATB.LOCAL/USER/ALICE", "alice"),
        ("slack:U024BE7LH", "alice"),
        ("slack:u024be7lh", "alice"),
        ("ＥＭＰ－１００", "alice"),
        (" emp-100 ", "alice"),
        ("alice", "alice"),
        ("Alice", "alice"),
        ("bob", "bob"),
        ("slack:U0BOB", "bob"),
        ("carol", None),
        ("spiffe://atb.local/user/carol", None),
        ("", None),
        ("emp-10", None),
        ("spiffe://atb.local/user/alice/", None),
    ],
)
def test_resolve(identity: str, principal: str | None) -> None:
    found = DIRECTORY.resolve(identity)
    assert (found.principal if found else None) == principal


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("slack:U024BE7LH", "spiffe://atb.local/user/alice", True),
        ("emp-100", "EMP-100", True),
        ("emp-100", "alice", True),
        ("Ａｌｉｃｅ", "slack:u024be7lh", True),
        ("stranger", "STRANGER", True),  # not in the directory, but one spelling
        ("stranger", "other-stranger", False),
        ("alice", "bob", False),
        ("slack:U024BE7LH", "slack:U0BOB", False),
        ("emp-100", "stranger", False),
        ("stranger", "emp-100", False),
    ],
)
def test_same_person(a: str, b: str, same: bool) -> None:
    assert DIRECTORY.same_person(a, b) is same
    assert DIRECTORY.same_person(b, a) is same


# --- from_mapping --------------------------------------------------------------

GOOD_ENTRY: dict[str, object] = {
    "principal": "alice",
    "type": "manager",
    "groups": ["manager"],
    "tiers": ["medium", "high", "critical"],
    "identities": ["spiffe://atb.local/user/alice", "slack:U024BE7LH", "emp-100"],
}


def test_from_mapping_parses_the_config_shape() -> None:
    bob = {**GOOD_ENTRY, "principal": "bob", "type": "compliance", "groups": ["compliance"], "identities": ["b"]}
    directory = Directory.from_mapping({"approvers": [GOOD_ENTRY, bob]})
    alice = directory.resolve("SLACK:U024BE7LH")
    assert alice == Approver(
        "alice",
        "manager",
        frozenset({"manager"}),
        frozenset({Tier.MEDIUM, Tier.HIGH, Tier.CRITICAL}),
        frozenset({"spiffe://atb.local/user/alice", "slack:u024be7lh", "emp-100"}),
    )
    assert [a.principal for a in directory.approvers] == ["alice", "bob"]


def test_from_mapping_accepts_no_approvers() -> None:
    assert Directory.from_mapping({"approvers": []}).approvers == ()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, r"'approvers' must be a list"),
        ({"approvers": {"alice": GOOD_ENTRY}}, r"'approvers' must be a list"),
        ({"approvers": [], "extra": 1}, r"unknown field\(s\) extra"),
        ({"approvers": ["alice"]}, r"approvers\[0\]: must be an object"),
        ({"approvers": [GOOD_ENTRY, {**GOOD_ENTRY, "colour": "red"}]}, r"approvers\[1\]: unknown field\(s\) colour"),
        ({"approvers": [{"principal": "x"}]}, r"approvers\[0\]: missing field\(s\) groups, identities, tiers, type"),
        ({"approvers": [{**GOOD_ENTRY, "principal": 7}]}, r"approvers\[0\]\.principal: must be a string, not int"),
        ({"approvers": [{**GOOD_ENTRY, "principal": ""}]}, r"approvers\[0\]: .*principal: must not be empty"),
        ({"approvers": [{**GOOD_ENTRY, "type": None}]}, r"approvers\[0\]\.type: must be a string, not NoneType"),
        ({"approvers": [{**GOOD_ENTRY, "groups": "manager"}]}, r"approvers\[0\]\.groups: must be a list of strings"),
        ({"approvers": [{**GOOD_ENTRY, "groups": []}]}, r"approvers\[0\]: approver 'alice': groups: need at least"),
        ({"approvers": [{**GOOD_ENTRY, "tiers": ["high", 3]}]}, r"approvers\[0\]\.tiers\[1\]: must be a string"),
        ({"approvers": [{**GOOD_ENTRY, "tiers": ["urgent"]}]}, r"approvers\[0\]\.tiers: unknown tier 'urgent'"),
        ({"approvers": [{**GOOD_ENTRY, "tiers": ["HIGH"]}]}, r"approvers\[0\]\.tiers: unknown tier 'HIGH'"),
        ({"approvers": [{**GOOD_ENTRY, "tiers": ["low", "high"]}]}, r"approvers\[0\]: .*tiers: tier low needs no"),
        ({"approvers": [{**GOOD_ENTRY, "tiers": []}]}, r"approvers\[0\]: .*tiers: need at least one"),
        ({"approvers": [{**GOOD_ENTRY, "identities": []}]}, r"approvers\[0\]: .*identities: need at least one"),
        ({"approvers": [{**GOOD_ENTRY, "identities": "alice"}]}, r"approvers\[0\]\.identities: must be a list"),
        ({"approvers": [{**GOOD_ENTRY, "identities": ["a", None]}]}, r"approvers\[0\]\.identities\[1\]: must be a"),
        ({"approvers": [GOOD_ENTRY, GOOD_ENTRY]}, r"approvers 'alice' and 'alice' share the identity"),
        (
            {"approvers": [GOOD_ENTRY, {**GOOD_ENTRY, "principal": "carol", "identities": ["EMP-100"]}]},
            r"approvers 'alice' and 'carol' share the identity 'emp-100'",
        ),
    ],
)
def test_from_mapping_rejects(data: dict[str, object], message: str) -> None:
    with pytest.raises(DirectoryError, match=message):
        Directory.from_mapping(data)
