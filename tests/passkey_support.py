"""Enrollment grants for tests: what `atb console enroll <principal> --as <officer>` signs.

`grant` makes a `PasskeyEnrollmentGranted` signed with the officer's SVID and returns its envelope's
JSON, the form a `PasskeyEnrolled.grant` carries.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from atb_identity import Svid, sign_envelope
from contracts import make_envelope
from contracts.console_events import PasskeyEnrollmentGranted

OFFICER = "spiffe://atb.local/user/carol"
"""carol, of the security group: an enrollment officer under the default enroller groups."""


def grant(
    officer: Svid,
    principal: str,
    at: datetime,
    *,
    seconds: float = 900,
    grant_id: str | None = None,
    granted_by: str | None = None,
) -> str:
    """A grant for `principal` from `at` on, for `seconds`, signed by `officer` (naming `granted_by`)."""
    event = PasskeyEnrollmentGranted(
        grant_id=grant_id or f"grant-{uuid.uuid4()}",
        principal=principal,
        granted_by=granted_by or str(officer.spiffe_id),
        granted_at=at,
        expires_at=at + timedelta(seconds=seconds),
    )
    return sign_envelope(make_envelope(event, source=str(officer.spiffe_id)), officer).model_dump_json()
