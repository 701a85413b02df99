"""contracts.reasons: codes as data, one enum holding every audit name of docs/architecture.md §2.9."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from contracts.reasons import AUDIT_NAMES, MAX_DETAIL, Reason, ReasonCode

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("reason", "text"),
    [
        (Reason(ReasonCode.POA_VALID), "poa_valid"),
        (Reason(ReasonCode.TIER_TOO_LOW, "PoA was issued for low"), "tier_too_low: PoA was issued for low"),
        (Reason("cnf_mismatch", "another certificate"), "cnf_mismatch: another certificate"),  # type: ignore[arg-type]
    ],
)
def test_the_text_form_is_written_from_the_value(reason: Reason, text: str) -> None:
    assert str(reason) == text
    assert isinstance(reason.code, ReasonCode)


def test_an_unknown_code_is_refused() -> None:
    with pytest.raises(ValueError, match="no_such_code"):
        Reason("no_such_code")  # type: ignore[arg-type]


def test_a_long_detail_is_cut() -> None:
    assert len(Reason(ReasonCode.MALFORMED, "x" * 5000).detail) == MAX_DETAIL


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("poa_valid", Reason(ReasonCode.POA_VALID)),
        (
            "tier_too_low: PoA was issued for low, the action is high",
            Reason(ReasonCode.TIER_TOO_LOW, "PoA was issued for low, the action is high"),
        ),
        ("identity_unproven: bad_signature: x", Reason(ReasonCode.IDENTITY_UNPROVEN, "bad_signature: x")),
    ],
)
def test_legacy_text_reads_back(text: str, reason: Reason) -> None:
    assert Reason.legacy(text) == reason
    assert str(Reason.legacy(text)) == text


def test_every_documented_audit_name_is_a_code() -> None:
    section = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").split("### 2.9 Audit event names")[1]
    section = section.split("\n## ")[0]
    documented = set(re.findall(r"`([a-z][a-z0-9_]+)`", section)) - {"audit_type", "atb"}
    assert documented, "the section lists the audit names"
    assert documented <= {c.value for c in AUDIT_NAMES}
    assert set(ReasonCode) >= AUDIT_NAMES


def test_codes_are_snake_case_and_unique() -> None:
    values = [c.value for c in ReasonCode]
    assert len(values) == len(set(values))
    assert all(re.fullmatch(r"[a-z][a-z0-9_]{0,63}", v) for v in values)
