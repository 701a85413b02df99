"""contracts.leg: the four mandate templates and the tier evidence of docs/architecture.md §2.6."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import TypeAdapter, ValidationError

from contracts.canonical import canonical_json
from contracts.leg import (
    AccountableParty,
    Consent,
    ContractualNecessity,
    DualControl,
    DualControlApprover,
    Leg,
    LegalObligation,
    LegitimateInterest,
)

LEG = TypeAdapter[LegitimateInterest | ContractualNecessity | Consent | LegalObligation](Leg)

COMMON: dict[str, object] = {"jurisdiction": "US", "accountable_party": {"type": "employee", "id": "emp-100"}}

# The four templates of docs/architecture.md §2.6, verbatim (the inner object of `{"leg": ...}`).
SEED_TEMPLATES: list[tuple[dict[str, object], type[object]]] = [
    ({"basis": "LI", "ref": "LI-2024-001", "description": "Routine system maintenance"}, LegitimateInterest),
    ({"basis": "CONTRACT", "ref": "MSA-12345", "description": "Fulfill customer order #789"}, ContractualNecessity),
    (
        {
            "basis": "CONSENT",
            "ref": "CONSENT-TOKEN-abc123",
            "data_subject": "user@example.com",
            "purpose": "Marketing email",
        },
        Consent,
    ),
    ({"basis": "LEGAL", "ref": "GDPR-Art17", "description": "Right to erasure request"}, LegalObligation),
]


@pytest.mark.parametrize(("template", "model"), SEED_TEMPLATES, ids=[str(t["basis"]) for t, _ in SEED_TEMPLATES])
def test_seed_templates_parse_exactly(template: dict[str, object], model: type[object]) -> None:
    source = {**template, **COMMON}
    leg = LEG.validate_python(source)
    assert type(leg) is model
    assert leg.basis == template["basis"]
    assert leg.ref == template["ref"]
    assert leg.jurisdiction == "US"
    assert leg.accountable_party == AccountableParty(type="employee", id="emp-100")
    assert leg.approval is None
    assert leg.dual_control is None
    assert leg.ticket_ref is None
    # Nothing added, nothing lost: the JSON form is the example of docs/architecture.md §2.6.
    assert leg.model_dump(mode="json", exclude_none=True) == source
    assert LEG.validate_json(canonical_json(source)) == leg


def test_seed_medium_example_carries_the_approval() -> None:
    # docs/architecture.md §2.6, medium risk (single approver), with a contractual-necessity basis.
    source = {
        **SEED_TEMPLATES[1][0],
        "jurisdiction": "US",
        "accountable_party": {"type": "employee", "id": "emp-100"},
        "approval": {"approver_id": "manager-001", "approved_at": "2024-01-15T10:00:00Z"},
    }
    leg = LEG.validate_python(source)
    assert leg.approval is not None
    assert leg.approval.approver_id == "manager-001"
    assert leg.approval.approved_at == datetime(2024, 1, 15, 10, 0, tzinfo=UTC)
    assert leg.model_dump(mode="json", exclude_none=True) == source


def test_seed_high_example_carries_dual_control() -> None:
    # docs/architecture.md §2.6, high risk (dual control), with a legal-obligation basis.
    source = {
        **SEED_TEMPLATES[3][0],
        "jurisdiction": "EU",
        "accountable_party": {"type": "employee", "id": "emp-200"},
        "dual_control": {
            "required": True,
            "approvers": [{"id": "approver-a", "type": "manager"}, {"id": "approver-b", "type": "compliance"}],
        },
    }
    leg = LEG.validate_python(source)
    assert leg.dual_control is not None
    assert leg.dual_control.required is True
    assert [(a.id, a.type) for a in leg.dual_control.approvers] == [
        ("approver-a", "manager"),
        ("approver-b", "compliance"),
    ]
    assert leg.model_dump(mode="json", exclude_none=True) == source


@pytest.mark.parametrize(
    "basis",
    [
        pytest.param("GDPR", id="unknown"),
        pytest.param("li", id="lower case"),
        pytest.param("", id="empty"),
        pytest.param(None, id="null"),
        pytest.param(1, id="number"),
    ],
)
def test_unknown_basis_is_a_discriminator_error(basis: object) -> None:
    with pytest.raises(ValidationError) as info:
        LEG.validate_python({"basis": basis, "ref": "X-1", **COMMON})
    assert info.value.errors()[0]["type"] in {"union_tag_invalid", "union_tag_not_found"}


def test_missing_basis_is_a_discriminator_error() -> None:
    with pytest.raises(ValidationError) as info:
        LEG.validate_python({"ref": "X-1", **COMMON})
    assert info.value.errors()[0]["type"] == "union_tag_not_found"


CONSENT: dict[str, object] = {**SEED_TEMPLATES[2][0], **COMMON}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"data_subject": None}, "data_subject", id="no data subject"),
        pytest.param({"purpose": None}, "purpose", id="no purpose"),
        pytest.param({"data_subject": ""}, "data_subject", id="empty data subject"),
        pytest.param({"purpose": ""}, "purpose", id="empty purpose"),
        pytest.param({"ref": ""}, "ref", id="empty ref"),
    ],
)
def test_consent_requires_subject_purpose_and_ref(change: dict[str, object], field: str) -> None:
    source = {**CONSENT, **change}
    source = {k: v for k, v in source.items() if v is not None}
    with pytest.raises(ValidationError) as info:
        LEG.validate_python(source)
    assert info.value.errors()[0]["loc"] == ("CONSENT", field)


@pytest.mark.parametrize(
    ("basis", "extra"),
    [
        pytest.param("LI", {"data_subject": "user@example.com"}, id="LI with data subject"),
        pytest.param("CONSENT", {"description": "x"}, id="CONSENT with description"),
        pytest.param("LEGAL", {"unknown": 1}, id="unknown field"),
    ],
)
def test_fields_of_another_template_are_refused(basis: str, extra: dict[str, object]) -> None:
    template = next(t for t, _ in SEED_TEMPLATES if t["basis"] == basis)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        LEG.validate_python({**template, **COMMON, **extra})


@pytest.mark.parametrize(
    ("jurisdiction", "valid"),
    [
        ("US", True),
        ("EU", True),
        ("DE", True),
        ("us", False),
        ("Us", False),
        ("USA", False),
        ("U", False),
        ("U1", False),
        ("", False),
        ("US\n", False),
        (" US", False),
        ("ÜS", False),
    ],
)
def test_jurisdiction_is_two_upper_case_letters(jurisdiction: str, valid: bool) -> None:
    source = {**SEED_TEMPLATES[0][0], **COMMON, "jurisdiction": jurisdiction}
    if valid:
        assert LEG.validate_python(source).jurisdiction == jurisdiction
    else:
        with pytest.raises(ValidationError) as info:
            LEG.validate_python(source)
        assert info.value.errors()[0]["loc"] == ("LI", "jurisdiction")


@pytest.mark.parametrize("missing", ["jurisdiction", "accountable_party"])
def test_jurisdiction_and_accountable_party_are_required(missing: str) -> None:
    source = {k: v for k, v in {**SEED_TEMPLATES[0][0], **COMMON}.items() if k != missing}
    with pytest.raises(ValidationError):
        LEG.validate_python(source)


@pytest.mark.parametrize(
    "party",
    [{"type": "", "id": "emp-1"}, {"type": "employee", "id": ""}, {"type": "employee"}, {"id": "emp-1"}],
)
def test_accountable_party_needs_type_and_id(party: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        LEG.validate_python({**SEED_TEMPLATES[0][0], **COMMON, "accountable_party": party})


def test_dual_control_required_defaults_to_true() -> None:
    dual = DualControl(approvers=(DualControlApprover(id="a", type="manager"),))
    assert dual.required is True
    assert DualControl.model_validate({"approvers": []}).required is True


@pytest.mark.parametrize(
    ("required", "accepted"),
    [
        (True, True),
        (1, True),  # lax mode: equal to True, stored as True
        (1.0, True),
        (False, False),
        (0, False),
        ("false", False),
        ("true", False),
        (None, False),
        ("no", False),
    ],
)
def test_dual_control_required_is_always_true(required: object, accepted: bool) -> None:
    source = {"required": required, "approvers": [{"id": "a", "type": "manager"}]}
    if not accepted:
        with pytest.raises(ValidationError):
            DualControl.model_validate(source)
        return
    dual = DualControl.model_validate(source)
    assert dual.required is True
    assert dual.model_dump(mode="json")["required"] is True


def test_leg_models_are_frozen() -> None:
    leg = LEG.validate_python({**SEED_TEMPLATES[0][0], **COMMON})
    with pytest.raises(ValidationError, match="frozen"):
        leg.ref = "other"  # type: ignore[misc]
