"""The console's JSON and form bodies, as pydantic models: the handlers parse and answer with them, and
tools/gen_openapi.py documents them (docs/openapi/console.json)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CeremonyFinish",
    "CeremonyOptions",
    "ConsoleFailure",
    "CsrfForm",
    "DelegationAsk",
    "DelegationForm",
    "Enrolled",
    "SignedInAnswer",
    "VoteAsk",
    "VoteForm",
]

Choice = Literal["approve", "deny"]


class ConsoleFailure(BaseModel):
    """Every refusal of a JSON call (and of a page asked with `Accept: application/json`)."""

    model_config = ConfigDict(frozen=True)
    ok: Literal[False] = False
    error: str = Field(description="a stable code (`csrf`, `signed_out`, `challenge_invalid`, `not_compliance`, ...)")
    message: str = Field(default="", description="for the person")


class CeremonyOptions(BaseModel):
    """WebAuthn options for the browser, and the nonce that names the server's challenge."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)
    nonce: str
    public_key: dict[str, Any] = Field(
        alias="publicKey", description="PublicKeyCredentialCreationOptions / RequestOptions (base64url fields)"
    )


class CeremonyFinish(BaseModel):
    """The browser's answer to a ceremony: the nonce it was given and its PublicKeyCredential as JSON."""

    model_config = ConfigDict(frozen=True)
    nonce: str = Field(min_length=1, max_length=256)
    credential: dict[str, Any] = Field(description="PublicKeyCredential, base64url fields (`id`, `response`, ...)")


class Enrolled(BaseModel):
    model_config = ConfigDict(frozen=True)
    ok: Literal[True] = True
    principal: str
    credential_id: str


class SignedInAnswer(BaseModel):
    model_config = ConfigDict(frozen=True)
    ok: Literal[True] = True
    principal: str
    next: str = Field(description="where the browser goes next")


class VoteAsk(BaseModel):
    """Ask for the WebAuthn options of a vote (the challenge binds digest, decision and a nonce)."""

    model_config = ConfigDict(frozen=True)
    choice: Choice
    on_behalf: str | None = Field(
        default=None, max_length=128, description="a delegation id: approve in its delegator's place"
    )


class DelegationAsk(BaseModel):
    """Ask for the WebAuthn options of a delegation grant (the challenge binds every term of it and a nonce)."""

    model_config = ConfigDict(frozen=True)
    delegate: str = Field(min_length=1, max_length=256, description="a principal or identity of the directory")
    until: datetime = Field(description="the end, ISO 8601 (UTC when no offset is given)")
    tiers: list[Literal["low", "medium", "high", "critical"]] = Field(
        default_factory=list, description="the tiers covered; empty: every tier"
    )
    reason: str = Field(default="", max_length=1000)


class CsrfForm(BaseModel):
    """A state-changing form: the session's CSRF token (or the `X-CSRF-Token` header)."""

    model_config = ConfigDict(frozen=True)
    csrf: str = Field(default="", description="the session's CSRF token")


class VoteForm(CsrfForm):
    choice: Choice
    reason: str = Field(default="", max_length=1024, description="required to deny")
    assertion: str = Field(
        default="", description="for approve on a step-up tier: the passkey's assertion (JSON, with its nonce)"
    )
    on_behalf: str = Field(
        default="", description="a delegation id: approve in its delegator's place (always with the passkey)"
    )


class DelegationForm(CsrfForm):
    """Grant the delegation a nonce names: the passkey's assertion (with that nonce) as JSON."""

    assertion: str = Field(default="", description="PublicKeyCredential of the assertion, with `nonce`, as JSON")
