"""Console application service: passkey enrollment and sign-in, the approver inbox, device-bound votes.

Enrollment: `atb console enroll <principal> --as <officer>` stores a one-time
link (15 min) with the officer's signed grant; its page asks the browser for a
new passkey; the attestation is checked by the `webauthn` package (challenge,
origin, RP id, UP, UV), the link is used once, the grant judged as approvals and
the issuer will judge it (`atb_runtime.passkeys.EnrollmentGrants`), the
credential stored, audited (`console_passkey_enrolled`) and announced
(`PasskeyEnrolled` with the grant inside, signed with the console's SVID).

Sign-in: a discoverable-credential assertion over a random, single-use challenge
(`atb_identity.passkey.verify_assertion`, user verification required); the
session is server-side (console.adapters.store).

Votes: the events followed from Kafka are folded into views
(`console.domain.evolve`); `decide_vote` judges the signed-in approver. An
approval on a step-up tier (default high and critical) needs an assertion of
the approver's own active passkey over `vote_challenge(digest, choice, nonce)`
with a nonce the console handed out for this approver, request and decision,
used once. The vote is published as a `VoteCastV2` (channel `console`,
carrying the assertion) signed by the console's SVID; every refusal and every
cast vote is audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from pydantic import ValidationError
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_registration_response,
)
from webauthn.helpers.exceptions import InvalidRegistrationResponse
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from atb_identity import IdentityError, Origin, Svid, TrustBundle, sign_envelope, verify_origin
from atb_identity.passkey import (
    EnrolledPasskey,
    PasskeyAssertionError,
    b64url,
    b64url_decode,
    verify_assertion,
    verify_vote_assertion,
)
from atb_runtime import Outgoing, audit, outgoing_envelope
from atb_runtime.follow import Refused
from atb_runtime.passkeys import EnrollmentGrants, PasskeyRegistry
from atb_runtime.publisher import RecordPublisher
from console.adapters.store import ConsoleStore, Credential, DelegationRow, token_hash
from console.domain import (
    ApprovalView,
    VoteDecision,
    VoteRefused,
    decide_on_behalf,
    decide_vote,
    eligible,
    evolve,
    explain,
    request_id_of,
)
from console.settings import ConsoleSettings
from contracts import (
    Envelope,
    EventDecodeError,
    EventPayload,
    JsonObject,
    Tier,
    VoteChoice,
    decode_envelope,
    encode_envelope,
    make_envelope,
    payload_of,
    topic_name,
)
from contracts.approval_events import (
    MAX_DELEGATION_EVENT_CHARS,
    DelegationGranted,
    DelegationRevoked,
    VoteOnBehalf,
    delegation_challenge,
)
from contracts.console_events import (
    PasskeyAssertion,
    PasskeyEnrolled,
    PasskeyEnrollmentGranted,
    PasskeyRevoked,
    VoteCastV2,
    vote_challenge,
)
from contracts.delegation import MAX_DELEGATION, Delegation, DelegationBook
from contracts.directory import Approver, Directory
from contracts.reasons import Reason, ReasonCode

__all__ = ["ConsoleError", "ConsoleService", "SignedIn", "VoteOutcome"]

log = logging.getLogger(__name__)


class ConsoleError(Exception):
    """A refused console operation: `code` is stable, the message is for the person."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class SignedIn:
    session_id: str
    csrf: str
    principal: str


@dataclass(frozen=True)
class VoteOutcome:
    ok: bool
    code: str
    message: str
    vote_id: str | None = None


class ConsoleService:
    def __init__(
        self,
        settings: ConsoleSettings,
        directory: Directory,
        store: ConsoleStore,
        publisher: RecordPublisher,
        svid: Svid,
        bundle: TrustBundle | None = None,
    ) -> None:
        self._settings = settings
        self._bundle = bundle
        self._revocations = DelegationBook()
        """Delegation revocations read on the keys topic, by (delegation id, delegator): final, even for a grant
        read after them."""
        self._grants = (
            None
            if bundle is None
            else EnrollmentGrants(PasskeyRegistry(), bundle, directory, settings.passkey_enroller_groups)
        )
        """Judges an enrollment's grant as approvals and the issuer will (None: this service enrolls no one)."""
        self._directory = directory
        self._store = store
        self._publisher = publisher
        self._svid = svid
        self._source = settings.service_id
        self._ns = settings.topic_namespace
        self._origin = settings.origin()
        self._rp_id = settings.console_rp_id
        self._step_up = frozenset(settings.step_up_tiers)
        self._views: dict[str, ApprovalView] = {}
        self._changed = asyncio.Event()
        self.version = 0
        """Goes up whenever a view changes (the live updates wait on `changed`)."""

    @property
    def directory(self) -> Directory:
        return self._directory

    @property
    def origin(self) -> str:
        return self._origin

    # -- views ---------------------------------------------------------------------------

    async def on_events(self, events: Iterable[EventPayload]) -> None:
        touched = False
        for event in events:
            request_id = request_id_of(event)
            if request_id is None:
                continue
            view = evolve(self._views.get(request_id), event)
            if view is not None:
                self._views[request_id] = view
                touched = True
        if touched:
            self._bump()

    def _bump(self) -> None:
        """A view changed: live pages reload (`changed`)."""
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self, since: int, timeout: float) -> int:
        """Wait until the views change after version `since` (or `timeout`); the current version."""
        if self.version == since:
            waiter = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(), timeout)
        return self.version

    def view(self, request_id: str) -> ApprovalView | None:
        return self._views.get(request_id)

    def inbox(self, approver: Approver) -> list[ApprovalView]:
        """Open requests this approver may approve, soonest deadline first."""
        now = datetime.now(UTC)
        mine = [v for v in self._views.values() if v.open_at(now) and eligible(v, approver, now)]
        return sorted(mine, key=lambda v: v.required.deadline if v.required else now)

    def console_votes(self, request_id: str) -> dict[str, str]:
        return self._store.votes_on(request_id)

    def approver(self, principal: str) -> Approver:
        approver = self._directory.resolve(principal)
        if approver is None:
            raise ConsoleError("unknown_approver", explain("unknown_approver"), 403)
        return approver

    # -- enrollment ----------------------------------------------------------------------

    def enrollment_principal(self, token: str) -> str:
        principal = self._store.enrollment(token, now=time.time())
        if principal is None:
            raise ConsoleError("link_invalid", "This enrollment link is unknown, used or expired.", 404)
        return principal

    def enrollment_options(self, token: str) -> str:
        principal = self.enrollment_principal(token)
        existing = [
            PublicKeyCredentialDescriptor(id=b64url_decode(c.credential_id))
            for c in self._store.credentials_of(principal, include_revoked=False)
        ]
        options = generate_registration_options(
            rp_id=self._rp_id,
            rp_name=self._settings.console_rp_name,
            user_name=principal,
            user_id=hashlib.sha256(f"atb-console:{principal}".encode()).digest()[:16],
            exclude_credentials=existing,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED,
                user_verification=UserVerificationRequirement.REQUIRED,
            ),
            timeout=120_000,
        )
        now = time.time()
        nonce = self._store.put_challenge(
            "enroll", options.challenge, token_hash(token), now=now, ttl_s=self._settings.console_challenge_ttl_s
        )
        body = json.loads(options_to_json(options))
        return json.dumps({"nonce": nonce, "publicKey": body})

    async def enroll(self, token: str, nonce: str, credential: JsonObject) -> Credential:
        now = time.time()
        challenge = self._store.take_challenge(nonce, "enroll", now=now)
        if challenge is None or challenge.subject != token_hash(token):
            raise ConsoleError("challenge_invalid", "The enrollment took too long or was already finished.", 400)
        try:
            verified = verify_registration_response(
                credential=credential,
                expected_challenge=challenge.challenge,
                expected_rp_id=self._rp_id,
                expected_origin=self._origin,
                require_user_verification=True,
            )
        except (InvalidRegistrationResponse, ValueError, KeyError, TypeError) as exc:
            await self._audit("console_passkey_enroll_refused", "denied", None, str(exc)[:300], {})
            raise ConsoleError("registration_invalid", "The passkey could not be verified.", 400) from exc
        used = self._store.use_enrollment(token, now=now)
        if used is None:
            raise ConsoleError("link_invalid", "This enrollment link is unknown, used or expired.", 404)
        principal, grant = used
        record = Credential(
            credential_id=b64url(verified.credential_id),
            principal=principal,
            public_key=verified.credential_public_key,
            sign_count=verified.sign_count,
            rp_id=self._rp_id,
            user_verified=verified.user_verified,
            created_at=now,
            revoked_at=None,
            revoked_by=None,
        )
        announced = PasskeyEnrolled(
            principal=principal,
            credential_id=record.credential_id,
            public_key=b64url(record.public_key),
            sign_count=record.sign_count,
            rp_id=self._rp_id,
            origins=(self._origin,),
            user_verified=record.user_verified,
            enrolled_at=datetime.fromtimestamp(now, UTC),
            grant=grant,
        )
        refusal = (
            Reason(ReasonCode.PASSKEY_GRANT_INVALID, "this console has no trust bundle to verify grants with")
            if self._grants is None
            else self._grants.check(announced)
        )
        if refusal is not None:
            refused: JsonObject = {"principal": principal, "rule": refusal.code.value}
            await self._audit("console_passkey_enroll_refused", "denied", None, str(refusal)[:300], refused)
            raise ConsoleError(
                refusal.code.value, f"This link carries no valid enrollment grant: {refusal.detail}", 403
            )
        self._store.add_credential(record)
        details: JsonObject = {
            "principal": principal,
            "credential_id": record.credential_id,
            "aaguid": verified.aaguid,
            "grant_id": _grant_id(grant),
        }
        await self._publish(
            [
                self._signed(announced),
                self._audit_record("console_passkey_enrolled", "success", None, principal, details),
            ]
        )
        return record

    # -- sign-in -------------------------------------------------------------------------

    def signin_options(self) -> str:
        options = generate_authentication_options(
            rp_id=self._rp_id, user_verification=UserVerificationRequirement.REQUIRED, timeout=120_000
        )
        nonce = self._store.put_challenge(
            "signin", options.challenge, "", now=time.time(), ttl_s=self._settings.console_challenge_ttl_s
        )
        return json.dumps({"nonce": nonce, "publicKey": json.loads(options_to_json(options))})

    async def sign_in(self, nonce: str, credential: JsonObject) -> SignedIn:
        now = time.time()
        challenge = self._store.take_challenge(nonce, "signin", now=now)
        if challenge is None:
            raise ConsoleError("challenge_invalid", "The sign-in took too long or was already finished.", 400)
        try:
            assertion = _assertion(credential, nonce="n" * 22)
        except ConsoleError:
            await self._audit("console_signin_refused", "denied", None, "malformed", {})
            raise
        stored = self._store.credential(assertion.credential_id)
        if stored is None or not stored.active:
            await self._audit("console_signin_refused", "denied", None, "unknown_credential", {})
            raise ConsoleError("unknown_credential", "This passkey is not enrolled (or was revoked).", 403)
        try:
            verified = verify_assertion(assertion, self._enrolled(stored), challenge.challenge)
        except PasskeyAssertionError as exc:
            details: JsonObject = {"principal": stored.principal, "rule": exc.rule}
            await self._audit("console_signin_refused", "denied", None, str(exc)[:300], details)
            raise ConsoleError("assertion_invalid", "The passkey's answer could not be verified.", 403) from exc
        self._store.advance_counter(stored.credential_id, stored.sign_count, verified.sign_count)
        sid, csrf = self._store.create_session(stored.principal, now=now)
        await self._audit("console_signin", "success", None, stored.principal, {"credential_id": stored.credential_id})
        return SignedIn(sid, csrf, stored.principal)

    # -- votes ---------------------------------------------------------------------------

    def vote_options(self, principal: str, request_id: str, choice: VoteChoice, on_behalf: str | None = None) -> str:
        """The WebAuthn request options of a vote: the challenge binds digest, decision and a fresh nonce.

        `on_behalf`: a delegation id; an approval in its delegator's place (`decide_on_behalf`).
        """
        approver = self.approver(principal)
        view = self._views.get(request_id)
        if on_behalf is not None:
            decision = self._decide_on_behalf(approver, on_behalf, request_id, has_assertion=True)
            if choice is not VoteChoice.APPROVE:
                decision = VoteRefused("delegation_invalid", approver.principal)
        else:
            decision = decide_vote(
                view,
                approver,
                choice,
                reason="-",
                already_voted=self._store.has_voted(request_id, approver.principal),
                now=datetime.now(UTC),
                step_up_tiers=self._step_up,
                has_assertion=True,
            )
        if isinstance(decision, VoteRefused):
            raise ConsoleError(decision.code, explain(decision.code), 409)
        nonce = b64url(secrets.token_bytes(16))
        challenge = vote_challenge(decision.request_digest, choice, nonce)
        subject = _vote_subject(approver.principal, request_id, choice, on_behalf)
        return self._assertion_options("vote", challenge, subject, nonce, approver.principal)

    async def vote(
        self,
        principal: str,
        request_id: str,
        choice: VoteChoice,
        reason: str,
        credential: JsonObject | None,
        on_behalf: str | None = None,
    ) -> VoteOutcome:
        approver = self.approver(principal)
        if on_behalf is not None:
            return await self._vote_on_behalf(approver, request_id, choice, on_behalf, credential)
        view = self._views.get(request_id)
        decision = decide_vote(
            view,
            approver,
            choice,
            reason=reason,
            already_voted=self._store.has_voted(request_id, approver.principal),
            now=datetime.now(UTC),
            step_up_tiers=self._step_up,
            has_assertion=credential is not None,
        )
        if isinstance(decision, VoteRefused):
            return await self._refuse(request_id, decision.code, approver.principal, choice)
        assertion: PasskeyAssertion | None = None
        if credential is not None and decision.step_up:
            checked = await self._check_vote_assertion(
                approver.principal, request_id, choice, decision.request_digest, credential
            )
            if isinstance(checked, VoteOutcome):
                return checked
            assertion = checked
        vote_id = f"console-{secrets.token_hex(12)}"
        now = time.time()
        if not self._store.claim_vote(request_id, approver.principal, choice.value, vote_id, now=now):
            return await self._refuse(request_id, "duplicate", approver.principal, choice)
        event = VoteCastV2(
            request_id=request_id,
            vote_id=vote_id,
            approver_id=approver.principal,
            choice=choice,
            request_digest=decision.request_digest,
            channel="console",
            cast_at=datetime.fromtimestamp(now, UTC),
            reason=reason[:1024],
            assertion=assertion,
        )
        details: JsonObject = {
            "principal": approver.principal,
            "vote_id": vote_id,
            "choice": choice.value,
            "device_bound": assertion is not None,
            **({"credential_id": assertion.credential_id} if assertion else {}),
        }
        if (failed := await self._publish_vote(event, approver.principal, details)) is not None:
            return failed
        bound = " with your passkey" if assertion is not None else ""
        return VoteOutcome(True, "vote_cast", f"Your {choice.value} vote was recorded{bound}.", vote_id)

    async def _check_vote_assertion(
        self,
        principal: str,
        request_id: str,
        choice: VoteChoice,
        digest: str,
        credential: JsonObject,
        on_behalf: str | None = None,
    ) -> PasskeyAssertion | VoteOutcome:
        nonce = credential.get("nonce")
        if not isinstance(nonce, str):
            return await self._refuse(request_id, "assertion_invalid", principal, choice, "no nonce")
        challenge = self._store.take_challenge(nonce, "vote", now=time.time())
        if challenge is None or challenge.subject != _vote_subject(principal, request_id, choice, on_behalf):
            return await self._refuse(
                request_id, "assertion_invalid", principal, choice, "unknown, used or other nonce"
            )
        try:
            assertion = _assertion(credential, nonce=nonce)
        except ConsoleError:
            return await self._refuse(request_id, "assertion_invalid", principal, choice, "malformed")
        stored = self._store.credential(assertion.credential_id)
        if stored is None or not stored.active or stored.principal != principal:
            return await self._refuse(
                request_id, "assertion_invalid", principal, choice, "not an active passkey of yours"
            )
        try:
            verified = verify_vote_assertion(assertion, self._enrolled(stored), request_digest=digest, choice=choice)
        except PasskeyAssertionError as exc:
            return await self._refuse(request_id, "assertion_invalid", principal, choice, exc.rule)
        if not self._store.advance_counter(stored.credential_id, stored.sign_count, verified.sign_count):
            return await self._refuse(request_id, "assertion_invalid", principal, choice, "counter race")
        return assertion

    # -- votes in someone's place (a delegation this console knows) ----------------------

    def on_behalf_offers(self, principal: str, request_id: str) -> list[tuple[str, str]]:
        """(delegation id, delegator) of each delegation kept here (made here, or proven on the keys topic) that
        lets the signed-in person approve this
        request in someone's place now."""
        delegate = self.approver(principal)
        return [
            (row.delegation_id, row.delegator)
            for row in self._store.delegations_to(delegate.principal, now=time.time())
            if isinstance(
                self._decide_on_behalf(delegate, row.delegation_id, request_id, has_assertion=True), VoteDecision
            )
        ]

    def _decide_on_behalf(
        self, delegate: Approver, delegation_id: str, request_id: str, *, has_assertion: bool
    ) -> VoteDecision | VoteRefused:
        row = self._store.delegation(delegation_id)
        grant = _grant_in(row.grant_event) if row is not None else None
        delegator = self._directory.resolve(row.delegator) if row is not None else None
        if row is None or grant is None or delegator is None or row.delegate != delegate.principal:
            return VoteRefused("delegation_invalid", delegate.principal)
        if row.revoked_at is not None:
            return VoteRefused("delegation_not_in_force", delegate.principal)
        voted = self._store.has_voted(request_id, delegator.principal) or self._store.has_voted(
            request_id, delegate.principal
        )
        return decide_on_behalf(
            self._views.get(request_id),
            delegate,
            delegator,
            Delegation.of(grant),
            already_voted=voted,
            now=datetime.now(UTC),
            has_assertion=has_assertion,
        )

    async def _vote_on_behalf(
        self, delegate: Approver, request_id: str, choice: VoteChoice, delegation_id: str, credential: JsonObject | None
    ) -> VoteOutcome:
        decision: VoteDecision | VoteRefused = (
            self._decide_on_behalf(delegate, delegation_id, request_id, has_assertion=credential is not None)
            if choice is VoteChoice.APPROVE
            else VoteRefused("delegation_invalid", delegate.principal)
        )
        if isinstance(decision, VoteRefused):
            return await self._refuse(request_id, decision.code, delegate.principal, choice, f"for {delegation_id}")
        assert credential is not None  # decide_on_behalf refuses a vote without one
        checked = await self._check_vote_assertion(
            delegate.principal, request_id, choice, decision.request_digest, credential, delegation_id
        )
        if isinstance(checked, VoteOutcome):
            return checked
        row = self._store.delegation(delegation_id)
        grant = _grant_in(row.grant_event) if row is not None else None
        if row is None or grant is None:
            return await self._refuse(request_id, "delegation_invalid", delegate.principal, choice)
        vote_id = f"console-{secrets.token_hex(12)}"
        now = time.time()
        # One place per person: the delegator's (their own vote here, or another delegate's for them).
        if not self._store.claim_vote(request_id, decision.principal, choice.value, vote_id, now=now):
            return await self._refuse(request_id, "duplicate", delegate.principal, choice)
        event = VoteOnBehalf(
            request_id=request_id,
            vote_id=vote_id,
            approver_id=delegate.principal,
            on_behalf_of=grant.delegator,
            choice=choice,
            request_digest=decision.request_digest,
            channel="console",
            cast_at=datetime.fromtimestamp(now, UTC),
            delegation_event=row.grant_event,
            assertion=checked,
        )
        details: JsonObject = {
            "principal": delegate.principal,
            "on_behalf_of": decision.principal,
            "delegation_id": delegation_id,
            "vote_id": vote_id,
            "choice": choice.value,
            "device_bound": True,
            "credential_id": checked.credential_id,
        }
        if (failed := await self._publish_vote(event, decision.principal, details)) is not None:
            return failed
        return VoteOutcome(
            True, "vote_cast", f"Your approval for {decision.principal} was recorded with your passkey.", vote_id
        )

    async def _publish_vote(
        self, event: VoteCastV2 | VoteOnBehalf, place: str, details: JsonObject
    ) -> VoteOutcome | None:
        """Publish a vote and its audit (`console_vote_cast`) within 5 s; else free the place it claimed and say so."""
        audit_record = self._audit_record("console_vote_cast", "success", event.request_id, event.choice.value, details)
        try:
            await asyncio.wait_for(self._publish([self._signed(event), audit_record]), 5.0)
        except Exception as exc:
            self._store.release_vote(event.request_id, place)
            log.error("vote %s not published: %r", event.vote_id, exc)
            return VoteOutcome(False, "publish_failed", explain("publish_failed"))
        return None

    async def _refuse(
        self, request_id: str, code: str, principal: str, choice: VoteChoice, detail: str = ""
    ) -> VoteOutcome:
        details: JsonObject = {"principal": principal, "choice": choice.value, **({"rule": detail} if detail else {})}
        await self._audit("console_vote_refused", "denied", request_id, code, details)
        return VoteOutcome(False, code, explain(code))

    # -- delegations (out of office) -----------------------------------------------------

    def delegations(self, principal: str) -> list[DelegationRow]:
        """The delegations the signed-in person granted or was granted (here, with `atb delegate`, or in another
        replica), newest first."""
        return self._store.delegations_of(self.approver(principal).principal)

    def delegation_options(
        self, principal: str, delegate: str, until: datetime, tiers: Iterable[Tier], reason: str
    ) -> str:
        """The WebAuthn request options of a grant: the challenge binds every term of it and a fresh nonce.

        The grant is judged here (the delegate is someone else in the directory, the window is in the future and
        at most `MAX_DELEGATION` long) and kept with the challenge: the finish publishes exactly this grant.
        """
        delegator = self.approver(principal)
        target = self._directory.resolve(delegate)
        if target is None:
            raise ConsoleError("unknown_delegate", f"{delegate[:256]} is not in the approver directory.", 400)
        if target is delegator:
            raise ConsoleError("delegation_invalid", "A delegate is someone else.", 400)
        now = datetime.now(UTC).replace(microsecond=0)
        if until.utcoffset() is None or until <= now or until - now > MAX_DELEGATION:
            raise ConsoleError(
                "delegation_invalid", f"The end must lie in the future, at most {MAX_DELEGATION.days} days ahead.", 400
            )
        grant = DelegationGranted(
            delegation_id=f"dlg-{secrets.token_hex(16)}",
            delegator=_identity_of(delegator),
            delegate=_identity_of(target),
            tiers=tuple(dict.fromkeys(tiers)),
            not_before=now,
            until=until.astimezone(UTC),
            reason=reason[:1024],
            granted_at=now,
        )
        nonce = b64url(secrets.token_bytes(16))
        challenge = delegation_challenge(grant, nonce)
        return self._assertion_options("delegate", challenge, grant.model_dump_json(), nonce, delegator.principal)

    def _assertion_options(self, purpose: str, challenge: bytes, subject: str, nonce: str, principal: str) -> str:
        """Keep the challenge (used once, for `subject`) and answer the WebAuthn request options that ask one of
        `principal`'s active passkeys, with user verification, to sign it."""
        self._store.put_challenge(
            purpose, challenge, subject, now=time.time(), ttl_s=self._settings.console_challenge_ttl_s, nonce=nonce
        )
        allowed = [
            PublicKeyCredentialDescriptor(id=b64url_decode(c.credential_id))
            for c in self._store.credentials_of(principal, include_revoked=False)
        ]
        options = generate_authentication_options(
            rp_id=self._rp_id,
            challenge=challenge,
            allow_credentials=allowed,
            user_verification=UserVerificationRequirement.REQUIRED,
            timeout=120_000,
        )
        return json.dumps({"nonce": nonce, "publicKey": json.loads(options_to_json(options))})

    async def delegate(self, principal: str, credential: JsonObject) -> DelegationGranted:
        """Publish the grant the nonce names, with the delegator's passkey assertion over it (as approvals and
        the issuer will verify it: `atb_runtime.passkeys.delegation_refusal`)."""
        delegator = self.approver(principal)
        nonce = credential.get("nonce")
        challenge = self._store.take_challenge(nonce, "delegate", now=time.time()) if isinstance(nonce, str) else None
        if challenge is None or not isinstance(nonce, str):
            raise await self._delegation_refused(delegator.principal, "challenge_invalid", "unknown, used or no nonce")
        grant = DelegationGranted.model_validate_json(challenge.subject)
        if not self._directory.same_person(grant.delegator, delegator.principal):
            raise await self._delegation_refused(delegator.principal, "delegation_invalid", "another person's grant")
        try:
            assertion = _assertion(credential, nonce=nonce)
        except ConsoleError:
            raise await self._delegation_refused(delegator.principal, "assertion_invalid", "malformed") from None
        stored = self._store.credential(assertion.credential_id)
        if stored is None or not stored.active or stored.principal != delegator.principal:
            raise await self._delegation_refused(
                delegator.principal, "assertion_invalid", "not an active passkey of yours"
            )
        try:
            verified = verify_assertion(assertion, self._enrolled(stored), challenge.challenge)
        except PasskeyAssertionError as exc:
            raise await self._delegation_refused(delegator.principal, "assertion_invalid", exc.rule) from exc
        if not self._store.advance_counter(stored.credential_id, stored.sign_count, verified.sign_count):
            raise await self._delegation_refused(delegator.principal, "assertion_invalid", "counter race")
        signed = grant.model_copy(update={"assertion": assertion})
        target = self._directory.resolve(grant.delegate)
        details: JsonObject = {
            "principal": delegator.principal,
            "delegation_id": grant.delegation_id,
            "delegate": target.principal if target else grant.delegate,
            "tiers": [t.value for t in grant.tiers],
            "until": grant.until.isoformat(),
            "credential_id": assertion.credential_id,
        }
        published = self._signed(signed)
        await self._publish([published, self._audit_record("console_delegation_granted", "success", None, "", details)])
        self._store.add_delegation(
            _delegation_row(
                grant, delegator.principal, target.principal if target else grant.delegate, published.value or b""
            )
        )
        return signed

    async def revoke_delegation(self, principal: str, delegation_id: str, reason: str = "") -> DelegationRevoked:
        """End a delegation the signed-in person granted (here or elsewhere), now (no passkey needed: it only takes
        power away)."""
        delegator = self.approver(principal)
        row = self._store.delegation(delegation_id)
        if row is None or row.delegator != delegator.principal:
            raise ConsoleError("unknown_delegation", "You granted no such delegation here.", 404)
        if row.revoked_at is not None:
            raise ConsoleError("already_revoked", "This delegation was already revoked.", 409)
        identity = _identity_of(delegator)
        now = datetime.now(UTC)
        event = DelegationRevoked(
            delegation_id=delegation_id, delegator=identity, revoked_by=identity, reason=reason[:1024], revoked_at=now
        )
        details: JsonObject = {"principal": delegator.principal, "delegation_id": delegation_id}
        await self._publish(
            [self._signed(event), self._audit_record("console_delegation_revoked", "success", None, "", details)]
        )
        self._store.revoke_delegation(delegation_id, delegator.principal, now=now.timestamp())
        return event

    def delegation_seen(self, envelope: Envelope, event: EventPayload) -> Refused | None:
        """Keep a delegation granted or revoked elsewhere, read on the keys topic (None: kept, or not ours to keep).

        `atb delegate grant` (signed by the delegator's SVID) and the other replicas of this console (signed by
        the console's SVID, with the delegator's passkey assertion) publish grants there; this console lists
        them on `/delegations` and offers their delegates the approval in someone's place, with the exact signed
        grant, which approvals and the issuer verify again. A grant or revocation proven by anyone else, or
        dated ahead of now, is refused (dead-lettered by the follower) and changes nothing. A revocation is
        final: one read before its grant (a grant published again later) still ends it.
        """
        try:
            if isinstance(event, DelegationGranted):
                return self._grant_seen(envelope, event)
            if isinstance(event, DelegationRevoked):
                return self._revocation_seen(envelope, event)
        except Exception as exc:  # the store failed: the letter keeps the event for a re-drive, the follower goes on
            log.exception("delegation event %s not kept", envelope.id)
            return Refused("delegation_not_kept", f"not kept: {type(exc).__name__}")
        return None

    def _grant_seen(self, envelope: Envelope, grant: DelegationGranted) -> Refused | None:
        about = f"grant {grant.delegation_id[:64]}"
        if grant.granted_at > datetime.now(UTC):
            return Refused("delegation_unproven", f"{about}: dated ahead of now")
        origin = self._origin_of(envelope, grant.delegator, grant.granted_at)
        if isinstance(origin, Origin) and origin.attested and grant.assertion is None:
            origin = "a grant made in the console carries the delegator's passkey assertion"
        if isinstance(origin, str):
            return Refused("delegation_unproven", f"{about}: {origin}")
        delegator, delegate = self._directory.resolve(grant.delegator), self._directory.resolve(grant.delegate)
        if delegator is None or delegate is None:
            return Refused("unknown_principal", f"{about}: not between two known approvers")
        signed = encode_envelope(envelope)
        if len(signed) > MAX_DELEGATION_EVENT_CHARS:
            return Refused("delegation_unproven", f"{about}: too large to travel with a vote")
        known = self._store.delegation(grant.delegation_id)
        if known is not None:
            if (known.delegator, known.delegate) != (delegator.principal, delegate.principal):
                return Refused("delegation_conflict", f"{about}: the id is another delegation's")
            return None  # this console's own, or read before
        row = _delegation_row(grant, delegator.principal, delegate.principal, signed)
        ended = self._revocations.revoked_at(grant.delegation_id, grant.delegator)
        if self._store.add_delegation(row if ended is None else replace(row, revoked_at=ended.timestamp())):
            self._bump()  # the delegate's open request pages now offer the vote in the delegator's place
        return None

    def _revocation_seen(self, envelope: Envelope, revoked: DelegationRevoked) -> Refused | None:
        about = f"revocation of {revoked.delegation_id[:64]}"
        if revoked.revoked_by != revoked.delegator:
            return Refused("delegation_unproven", f"{about}: a revocation is the delegator's own act")
        if revoked.revoked_at > datetime.now(UTC):
            return Refused("delegation_unproven", f"{about}: dated ahead of now")
        origin = self._origin_of(envelope, revoked.revoked_by, revoked.revoked_at)
        if isinstance(origin, str):
            return Refused("delegation_unproven", f"{about}: {origin}")
        self._revocations.note(revoked)
        delegator = self._directory.resolve(revoked.delegator)
        if delegator is not None and self._store.revoke_delegation(
            revoked.delegation_id, delegator.principal, now=revoked.revoked_at.timestamp()
        ):
            self._bump()
        return None

    def _origin_of(self, envelope: Envelope, identity: str, at: datetime) -> str | Origin:
        """Why `envelope` is not proven by `identity` (or by this console for them) as of `at`, or its origin."""
        if self._bundle is None:
            return "this console has no trust bundle to verify proofs with"
        try:
            return verify_origin(envelope, identity, self._bundle, attesters=(self._source,), at=at)
        except IdentityError as exc:
            return str(exc)

    async def _delegation_refused(self, principal: str, code: str, rule: str) -> ConsoleError:
        await self._audit("console_delegation_refused", "denied", None, code, {"principal": principal, "rule": rule})
        return ConsoleError(code, "The delegation was not granted: your passkey's answer could not be verified.", 403)

    # -- credentials (operators) ----------------------------------------------------------

    async def revoke(self, credential_id: str, *, by: str, reason: str = "") -> Credential:
        stored = self._store.credential(credential_id)
        now = time.time()
        if stored is None or not self._store.revoke(credential_id, by=by, now=now):
            raise ConsoleError("unknown_credential", f"no active credential {credential_id}", 404)
        self._store.end_sessions_of(stored.principal, now=now)
        event = PasskeyRevoked(
            principal=stored.principal,
            credential_id=credential_id,
            revoked_by=by,
            reason=reason,
            revoked_at=datetime.fromtimestamp(now, UTC),
        )
        details: JsonObject = {"principal": stored.principal, "credential_id": credential_id, "revoked_by": by}
        await self._publish(
            [
                self._signed(event),
                self._audit_record("console_passkey_revoked", "success", None, reason or "revoked", details),
            ]
        )
        return stored

    # -- plumbing ------------------------------------------------------------------------

    def _enrolled(self, stored: Credential) -> EnrolledPasskey:
        return EnrolledPasskey(
            stored.principal, stored.credential_id, stored.public_key, stored.rp_id, (self._origin,), stored.sign_count
        )

    def _signed(self, event: EventPayload) -> Outgoing:
        envelope = sign_envelope(make_envelope(event, source=self._source), self._svid)
        return outgoing_envelope(envelope, topic_name(event.topic, self._ns))

    def _audit_record(
        self, audit_type: str, outcome: str, request_id: str | None, reason: str, details: JsonObject
    ) -> Outgoing:
        return audit(
            audit_type,
            source=self._source,
            namespace=self._ns,
            outcome=outcome,
            request_id=request_id,
            reason=reason[:1024],
            details=details,
        )

    async def evidence_exported(
        self,
        principal: str,
        *,
        request_id: str | None,
        since: datetime | None,
        until: datetime | None,
        fmt: str,
        events: int,
        bundle: bytes,
    ) -> None:
        """Audit one evidence-bundle download (`console_evidence_exported`), published and flushed before the
        bundle is given: raises if it cannot be, and then the download is refused (no unaudited export)."""
        details: JsonObject = {
            "principal": principal,
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
            "format": fmt,
            "events": events,
            "bytes": len(bundle),
            "sha256": hashlib.sha256(bundle).hexdigest(),
        }
        record = self._audit_record("console_evidence_exported", "success", request_id, principal, details)
        await self._publish([record])

    async def _audit(
        self, audit_type: str, outcome: str, request_id: str | None, reason: str, details: JsonObject
    ) -> None:
        try:
            await self._publish([self._audit_record(audit_type, outcome, request_id, reason, details)])
        except Exception as exc:
            log.error("audit event %s not published: %r", audit_type, exc)

    async def _publish(self, records: list[Outgoing]) -> None:
        await self._publisher.publish(records)
        await self._publisher.flush()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def _vote_subject(principal: str, request_id: str, choice: VoteChoice, on_behalf: str | None = None) -> str:
    return f"{principal}\n{request_id}\n{choice.value}" + (f"\n{on_behalf}" if on_behalf else "")


def _assertion(credential: JsonObject, *, nonce: str) -> PasskeyAssertion:
    """A browser's `PublicKeyCredential` (JSON, base64url fields) as a PasskeyAssertion."""
    response = credential.get("response")
    if not isinstance(response, dict):
        raise ConsoleError("malformed", "the passkey's answer is malformed", 400)
    try:
        return PasskeyAssertion(
            credential_id=credential.get("id"),  # type: ignore[arg-type]  # validated by the model
            authenticator_data=response.get("authenticatorData"),  # type: ignore[arg-type]
            client_data_json=response.get("clientDataJSON"),  # type: ignore[arg-type]
            signature=response.get("signature"),  # type: ignore[arg-type]
            user_handle=response.get("userHandle") or None,  # type: ignore[arg-type]
            nonce=nonce,
        )
    except ValidationError as exc:
        raise ConsoleError("malformed", "the passkey's answer is malformed", 400) from exc


def _grant_id(grant: str | None) -> str | None:
    """The grant id of a grant envelope already judged valid (for the audit record)."""
    if grant is None:
        return None
    try:
        event = payload_of(decode_envelope(grant.encode()))
    except EventDecodeError:
        return None
    return event.grant_id if isinstance(event, PasskeyEnrollmentGranted) else None


def _identity_of(approver: Approver) -> str:
    """The approver's SPIFFE identity (the form `atb delegate` uses), else their principal."""
    spiffe = sorted(i for i in approver.identities if i.startswith("spiffe://"))
    return spiffe[0] if spiffe else approver.principal


def _delegation_row(grant: DelegationGranted, delegator: str, delegate: str, signed: bytes) -> DelegationRow:
    """What the console keeps of a grant between two principals: its terms and the signed envelope (`signed`)."""
    return DelegationRow(
        delegation_id=grant.delegation_id,
        delegator=delegator,
        delegate=delegate,
        tiers=",".join(t.value for t in grant.tiers),
        not_before=grant.not_before.timestamp(),
        until=grant.until.timestamp(),
        reason=grant.reason,
        granted_at=grant.granted_at.timestamp(),
        revoked_at=None,
        grant_event=signed.decode(),
    )


def _grant_in(text: str) -> DelegationGranted | None:
    """The grant a delegation row keeps (the envelope this console published), or None if it does not decode."""
    try:
        event = payload_of(decode_envelope(text.encode()))
    except EventDecodeError:
        return None
    return event if isinstance(event, DelegationGranted) else None
