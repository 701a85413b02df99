"""`atb delegate`: out of office. A delegator lets a delegate vote in their place, signed with their own SVID.

    atb delegate alice dave --until 2026-12-24T18:00Z --tiers high     # alice signs: dave may vote for her
    atb delegate vote req-42 approve --for alice --as dave              # dave votes in alice's place
    atb delegate revoke dlg-... --as alice                              # alice ends it early
    atb delegate list                                                   # the delegations on the keys topic

`<from>` and `<to>` are approver names (`spiffe://<trust domain>/user/<name>`) or
SPIFFE IDs. The grant (`DelegationGranted`) is published on the keys topic,
signed by the delegator's SVID (`--as` defaults to `<from>`; `--svid-cert` and
`--svid-key` select any SVID, which must be the delegator's). A revocation
(`DelegationRevoked`) must be signed by the delegator too. A delegate's vote is
a `VoteOnBehalf`, signed by the delegate, embedding the signed grant: approvals
and the issuer verify both and judge it by `contracts.delegation` (window,
tiers, both eligible, neither the requester, one human one place).

`--until` takes an ISO 8601 time (with its offset, or `Z`) or a duration from now
(`90m`, `8h`, `3d`). Kafka and the dev PKI as `atb vote`.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from typer._click.core import Context
from typer.core import TyperGroup

from atb.cli.vote import AS_OPTION, CERT_OPTION, KEY_OPTION, _bootstrap, _bundle, _namespace, _svid
from atb.errors import AtbError, AtbUsageError
from atb.sdk import ApproverClient, PoaTimeoutError
from atb_identity import IdentityError, Svid, sign_envelope
from atb_runtime import Publisher, outgoing_envelope
from atb_runtime.readback import read_events
from contracts import ApprovalRequired, Envelope, EventPayload, Tier, Topic, VoteChoice, make_envelope, topic_name
from contracts.approval_events import DelegationGranted, DelegationRevoked, VoteOnBehalf
from contracts.delegation import MAX_DELEGATION
from contracts.envelope import encode_envelope

__all__ = ["delegate_app", "parse_until"]

"""A longer absence is a change of the directory, not a delegation."""

TIERS_OPTION = typer.Option([], "--tiers", help="Only these tiers (repeat); none: every tier.")
CHOICE_ARGUMENT = typer.Argument(..., help="approve or deny")
_DURATION = re.compile(r"^(\d+)([mhd])$")


class _GrantByDefault(TyperGroup):
    """`atb delegate <from> <to> ...` is `atb delegate grant <from> <to> ...`."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["grant", *args]
        return super().parse_args(ctx, args)


delegate_app = typer.Typer(
    cls=_GrantByDefault,
    no_args_is_help=True,
    help="Out of office: let a delegate vote in your place (signed with your SVID); revoke it; vote for someone.",
)


def parse_until(text: str, now: datetime) -> datetime:
    """An ISO 8601 time with an offset, or a duration from `now` (`90m`, `8h`, `3d`)."""
    match = _DURATION.fullmatch(text.strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        return now + {"m": timedelta(minutes=amount), "h": timedelta(hours=amount), "d": timedelta(days=amount)}[unit]
    try:
        until = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise AtbUsageError(f"--until {text!r}: an ISO 8601 time (2026-12-24T18:00Z) or a duration (8h, 3d)") from None
    if until.utcoffset() is None:
        raise AtbUsageError(f"--until {text!r}: say which time zone (Z or +01:00)")
    return until.astimezone(UTC)


def _identity(name: str) -> str:
    if name.startswith("spiffe://"):
        return name
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise AtbUsageError(f"{name!r} is neither an approver name nor a SPIFFE ID")
    return f"spiffe://{os.environ.get('ATB_TRUST_DOMAIN', 'atb.local')}/user/{name}"


def _signer(name: str, cert: Path | None, key: Path | None) -> Svid:
    short = name.rsplit("/user/", 1)[-1] if name.startswith("spiffe://") else name
    svid = _svid(short, cert, key)
    if str(svid.spiffe_id) != _identity(name):
        raise AtbUsageError(f"the SVID is {svid.spiffe_id}, not {_identity(name)}: only they may sign this")
    return svid


async def _publish(svid: Svid, payload: EventPayload) -> Envelope:
    envelope = sign_envelope(make_envelope(payload, source=str(svid.spiffe_id)), svid)
    publisher = Publisher(_bootstrap(), client_id="atb-delegate")
    await publisher.start()
    try:
        await publisher.publish([outgoing_envelope(envelope, topic_name(payload.topic, _namespace()))])
        await publisher.flush()
    finally:
        await publisher.stop()
    return envelope


@delegate_app.command("grant")
def grant(
    delegator: str = typer.Argument(..., metavar="FROM", help="Who is away (you): name or SPIFFE ID."),
    delegate: str = typer.Argument(..., metavar="TO", help="Who votes in your place: name or SPIFFE ID."),
    until: str = typer.Option(..., "--until", help="End: ISO 8601 time (2026-12-24T18:00Z) or duration (8h, 3d)."),
    tiers: list[Tier] = TIERS_OPTION,
    reason: str = typer.Option("", "--reason", help="Why (kept with the grant)."),
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
) -> None:
    """Let TO vote in FROM's place until --until (signed with FROM's SVID)."""
    now = datetime.now(UTC).replace(microsecond=0)
    end = parse_until(until, now)
    if end <= now:
        raise AtbUsageError("--until must lie in the future")
    if end - now > MAX_DELEGATION:
        raise AtbUsageError(f"a delegation lasts at most {MAX_DELEGATION.days} days")
    if _identity(delegator) == _identity(delegate):
        raise AtbUsageError("a delegate is someone else")
    try:
        svid = _signer(delegator, cert, key)
        event = DelegationGranted(
            delegation_id=f"dlg-{uuid.uuid4().hex}",
            delegator=str(svid.spiffe_id),
            delegate=_identity(delegate),
            tiers=tuple(dict.fromkeys(tiers)),
            not_before=now,
            until=end,
            reason=reason,
            granted_at=now,
        )
        asyncio.run(_publish(svid, event))
    except IdentityError as exc:
        raise AtbError(str(exc)) from None
    scope = ", ".join(t.value for t in event.tiers) or "every tier"
    typer.echo(f"{event.delegation_id}: {event.delegate} may vote for {event.delegator} ({scope})")
    typer.echo(f"until {end:%Y-%m-%dT%H:%M:%SZ}; revoke with `atb delegate revoke {event.delegation_id}`")


@delegate_app.command("revoke")
def revoke(
    delegation_id: str = typer.Argument(..., help="The delegation to end (dlg-...)."),
    reason: str = typer.Option("", "--reason"),
    name: str | None = AS_OPTION,
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
) -> None:
    """End a delegation now (signed with the delegator's SVID)."""
    try:
        svid = _svid(name, cert, key)
        granted = asyncio.run(_grants()).get(delegation_id)
        if granted is None:
            raise AtbUsageError(f"no delegation {delegation_id} on the keys topic")
        if granted.delegator != str(svid.spiffe_id):
            raise AtbUsageError(f"only {granted.delegator} may revoke {delegation_id}")
        event = DelegationRevoked(
            delegation_id=delegation_id,
            delegator=granted.delegator,
            revoked_by=str(svid.spiffe_id),
            reason=reason,
            revoked_at=datetime.now(UTC),
        )
        asyncio.run(_publish(svid, event))
    except IdentityError as exc:
        raise AtbError(str(exc)) from None
    typer.echo(f"{delegation_id} revoked: {granted.delegate} no longer votes for {granted.delegator}")


@delegate_app.command("list")
def list_() -> None:
    """The delegations on the keys topic, and whether each is in force."""
    now = datetime.now(UTC)
    events = asyncio.run(_delegation_events())
    revoked = {e.delegation_id for _, e in events if isinstance(e, DelegationRevoked)}
    table = Table(title="Delegations")
    for column in ("id", "delegator", "delegate", "tiers", "until (UTC)", "state"):
        table.add_column(column)
    for _, event in events:
        if isinstance(event, DelegationGranted):
            state = "revoked" if event.delegation_id in revoked else ("ended" if event.until < now else "in force")
            tiers = ", ".join(t.value for t in event.tiers) or "all"
            table.add_row(
                event.delegation_id, event.delegator, event.delegate, tiers, f"{event.until:%Y-%m-%d %H:%M}", state
            )
    Console().print(table)


@delegate_app.command("vote")
def vote(
    request_id: str = typer.Argument(..., help="The request to vote on."),
    choice: VoteChoice = CHOICE_ARGUMENT,
    delegator: str = typer.Option(..., "--for", help="Whose place you vote in: name or SPIFFE ID."),
    reason: str = typer.Option("", "--reason"),
    name: str | None = AS_OPTION,
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds to wait for the request's ApprovalRequired."),
) -> None:
    """Vote in a delegator's place (signed with your SVID, carrying their signed grant)."""
    try:
        svid = _svid(name, cert, key)
        cast = asyncio.run(_vote_for(svid, _identity(delegator), request_id, choice, reason, timeout))
    except (IdentityError, PoaTimeoutError) as exc:
        raise AtbError(str(exc)) from None
    typer.echo(
        f"{cast.approver_id} voted {cast.choice.value} on {request_id} for {cast.on_behalf_of} (vote {cast.vote_id}); "
        "the approvals service decides whether it counts."
    )


async def _delegation_events() -> list[tuple[Envelope, DelegationGranted | DelegationRevoked]]:
    out: list[tuple[Envelope, DelegationGranted | DelegationRevoked]] = []
    for event in await read_events(_bootstrap(), {topic_name(Topic.KEYS, _namespace()): None}):
        if isinstance(event.payload, (DelegationGranted, DelegationRevoked)):
            out.append((event.envelope, event.payload))
    return out


async def _grants() -> dict[str, DelegationGranted]:
    return {e.delegation_id: e for _, e in await _delegation_events() if isinstance(e, DelegationGranted)}


async def _vote_for(
    svid: Svid, delegator: str, request_id: str, choice: VoteChoice, reason: str, timeout: float
) -> VoteOnBehalf:
    now = datetime.now(UTC)
    events = await _delegation_events()
    revoked = {e.delegation_id for _, e in events if isinstance(e, DelegationRevoked)}
    grants = [
        (envelope, e)
        for envelope, e in events
        if isinstance(e, DelegationGranted)
        and e.delegator == delegator
        and e.delegate == str(svid.spiffe_id)
        and e.delegation_id not in revoked
        and e.not_before <= now <= e.until
    ]
    if not grants:
        raise AtbUsageError(f"no delegation in force lets {svid.spiffe_id} vote for {delegator}")
    envelope, _ = max(grants, key=lambda g: g[1].granted_at)
    async with ApproverClient(
        svid=svid, bootstrap=_bootstrap(), namespace=_namespace(), bundle_path=_bundle()
    ) as approver:
        required: ApprovalRequired = await approver.approval_required(request_id, timeout=timeout)
    vote = VoteOnBehalf(
        request_id=request_id,
        vote_id=f"vote-{uuid.uuid4().hex}",
        approver_id=str(svid.spiffe_id),
        on_behalf_of=delegator,
        choice=choice,
        request_digest=required.request_digest,
        channel="cli",
        cast_at=datetime.now(UTC),
        reason=reason,
        delegation_event=encode_envelope(envelope).decode(),
    )
    await _publish(svid, vote)
    return vote
