"""Enrollment grants: the one rule that makes a console's passkey announcement count.

A console that alone decided whose passkey is whose could enroll a key of its own
for an approver and then approve in their name. So a `PasskeyEnrolled` counts
only with a `PasskeyEnrollmentGranted` inside it: a one-time, short-lived
permission for that person, signed by an enrollment officer's own SVID (`atb
console enroll <principal> --as <officer>`). Approvals and the issuer apply this
rule to every announcement they read (`atb_runtime.passkeys`), the console
before it announces, and `atb console enroll` before it signs.

`judge_grant` names the first rule an announcement fails:

================================  ===============================================
``passkey_grant_invalid``         the grant is not for the enrolled person, or its
                                  window is empty or longer than `MAX_GRANT_S`
``passkey_grant_not_in_force``    the credential was enrolled outside the window
``passkey_enroller_not_allowed``  the officer is not in the directory, or in none
                                  of the enroller groups
``passkey_grant_used``            another credential was enrolled with this grant
================================  ===============================================

(``passkey_grant_missing``, an announcement with no grant, and a grant whose
signature is not its officer's are the caller's: this module does no crypto.)

One grant, one credential: when a second credential shows up with a grant
already used, the grant is burnt and *neither* credential counts
(`GrantUses`). A console that races the real person's enrollment therefore
wins nothing, and both sides see the refusal; and the result does not depend on
which announcement a reader happened to read first (they may lie on different
partitions).

Pure: no I/O, no clock, no crypto.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from contracts.console_events import PasskeyEnrolled, PasskeyEnrollmentGranted
from contracts.directory import Directory
from contracts.reasons import Reason, ReasonCode

__all__ = ["DEFAULT_ENROLLER_GROUPS", "MAX_GRANT_S", "GrantUses", "judge_grant", "officer_refusal"]

MAX_GRANT_S = 3600
"""A grant's window may not be longer than this (the console's links last 15 minutes by default)."""
DEFAULT_ENROLLER_GROUPS: tuple[str, ...] = ("security",)
"""Directory groups whose members may sign enrollment grants, unless configured otherwise."""


def officer_refusal(directory: Directory, officer: str, enroller_groups: Collection[str]) -> Reason | None:
    """Why `officer` (an identity) may not sign enrollment grants, or None."""
    person = directory.resolve(officer)
    if person is None:
        return Reason(ReasonCode.PASSKEY_ENROLLER_NOT_ALLOWED, f"{officer[:256]} is not in the approver directory")
    if not person.groups & frozenset(enroller_groups):
        groups = ", ".join(sorted(enroller_groups)) or "none configured"
        return Reason(
            ReasonCode.PASSKEY_ENROLLER_NOT_ALLOWED,
            f"{person.principal} is in none of the enroller groups ({groups})",
        )
    return None


def judge_grant(
    enrolled: PasskeyEnrolled,
    grant: PasskeyEnrollmentGranted,
    *,
    directory: Directory,
    enroller_groups: Collection[str],
) -> Reason | None:
    """The first rule (see the module) the announcement fails with this grant, single use aside; None: it counts."""
    if not directory.same_person(grant.principal, enrolled.principal):
        return Reason(
            ReasonCode.PASSKEY_GRANT_INVALID,
            f"the grant is for {grant.principal[:256]}, the credential for {enrolled.principal[:256]}",
        )
    window = (grant.expires_at - grant.granted_at).total_seconds()
    if not 0 < window <= MAX_GRANT_S:
        return Reason(ReasonCode.PASSKEY_GRANT_INVALID, f"the grant's window is {window:.0f}s (1 to {MAX_GRANT_S}s)")
    if not grant.granted_at <= enrolled.enrolled_at <= grant.expires_at:
        return Reason(
            ReasonCode.PASSKEY_GRANT_NOT_IN_FORCE,
            f"enrolled at {enrolled.enrolled_at.isoformat()}, the grant holds from"
            f" {grant.granted_at.isoformat()} to {grant.expires_at.isoformat()}",
        )
    return officer_refusal(directory, grant.granted_by, enroller_groups)


@dataclass
class GrantUses:
    """Which credentials each grant enrolled: one grant, one credential, else none of them counts."""

    _users: dict[str, set[str]] = field(default_factory=dict)
    _grant_of: dict[str, str] = field(default_factory=dict)

    def use(self, grant_id: str, credential_id: str) -> Reason | None:
        """Record that `credential_id` was enrolled with `grant_id`; a refusal when another one was before."""
        users = self._users.setdefault(grant_id, set())
        users.add(credential_id)
        self._grant_of.setdefault(credential_id, grant_id)
        if len(users) > 1:
            return Reason(
                ReasonCode.PASSKEY_GRANT_USED,
                f"grant {grant_id} enrolled {len(users)} credentials: none of them counts",
            )
        return None

    def burnt(self, credential_id: str) -> bool:
        """Whether the grant that enrolled this credential enrolled another one too."""
        grant_id = self._grant_of.get(credential_id)
        return grant_id is not None and len(self._users.get(grant_id, ())) > 1
