"""Replay's what-if for a quorum by groups: a changed composition, and a recorded quorum the candidate would refuse."""

from __future__ import annotations

from atb.replay.whatif import Requirement, compare_requirement
from contracts.quorum import Composition, GroupCount, Member

MANAGER_AND_COMPLIANCE = Composition((GroupCount("manager", 1), GroupCount("compliance", 1)))
TWO_MANAGERS = (Member("alice", frozenset({"manager"})), Member("dave", frozenset({"manager"})))
MANAGER_AND_OFFICER = (Member("alice", frozenset({"manager"})), Member("bob", frozenset({"compliance"})))


def test_a_new_composition_is_a_requirements_change() -> None:
    recorded = Requirement("high", 2, False, Composition())
    candidate = Requirement("high", 2, False, MANAGER_AND_COMPLIANCE)
    change = compare_requirement("r1", "sap.payment.execute", recorded, candidate)
    assert change is not None
    assert change.kind == "requirements_change"
    assert change.candidate == "high, 2 approvals, 1 manager + 1 compliance"
    assert compare_requirement("r1", "sap.payment.execute", candidate, candidate) is None


def test_a_recorded_quorum_the_candidate_would_refuse_is_named() -> None:
    recorded = Requirement("high", 2, None, None, TWO_MANAGERS)
    candidate = Requirement("high", 2, False, MANAGER_AND_COMPLIANCE)
    change = compare_requirement("r2", "sap.payment.execute", recorded, candidate)
    assert change is not None
    assert change.kind == "requirements_change"
    assert change.candidate.endswith("; the recorded quorum lacks 1 more from compliance")
    # The same candidate accepts a quorum of a manager and a compliance officer: nothing to report.
    fine = Requirement("high", 2, None, None, MANAGER_AND_OFFICER)
    assert compare_requirement("r3", "sap.payment.execute", fine, candidate) is None


def test_a_quorum_recorded_without_groups_is_not_judged_by_group() -> None:
    recorded = Requirement("high", 2, None, None, None)
    assert compare_requirement("r4", "x.y", recorded, Requirement("high", 2, False, MANAGER_AND_COMPLIANCE)) is None
