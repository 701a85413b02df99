"""`atb vote` and `atb pending`: an approver votes with their own X.509-SVID.

Who you are: `--as alice` (or `ATB_APPROVER=alice`) selects the SVID of
`spiffe://<trust domain>/user/alice` in the state folder's dev PKI (create it
once with `atb pki issue spiffe://atb.local/user/alice`); `--svid-cert` /
`--svid-key` (or `ATB_SVID_CERT_PATH` / `ATB_SVID_KEY_PATH`) point at any
SVID instead, e.g. one SPIRE wrote. The vote is signed with that key: the
approvals service counts it for the SVID's SPIFFE ID, whatever the CLI says.
The ApprovalRequired voted on counts only with the approvals service's proof,
verified against `ATB_TRUST_BUNDLE_PATH` (default: the dev PKI's bundle).

This is the only way to approve tiers that chat may not approve (critical, by
default). Kafka: `ATB_KAFKA_BOOTSTRAP_SERVERS`, else the local stack
(`ATB_KAFKA_PORT`); topics: `ATB_TOPIC_NAMESPACE`.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from atb.errors import AtbError, AtbUsageError, kafka_bootstrap
from atb.sdk import ApproverClient, PoaTimeoutError
from atb_identity import IdentityError, Svid, bundle_path, load_svid, svid_paths
from atb_runtime.readback import read_committed
from atb_runtime.settings import default_state_dir
from contracts import (
    ApprovalStateChanged,
    Topic,
    VoteCast,
    VoteChoice,
    topic_name,
)
from contracts.directory import Approver, Directory

__all__ = ["awaiting", "pending", "vote"]

_DIRECTORY = Path(__file__).resolve().parents[2] / "config" / "approvers.json"

AS_OPTION = typer.Option(None, "--as", envvar="ATB_APPROVER", help="Approver name: uses the SVID of .../user/<name>.")
CERT_OPTION = typer.Option(None, "--svid-cert", envvar="ATB_SVID_CERT_PATH", help="SVID chain (PEM).")
REQUEST_ARGUMENT = typer.Argument(..., help="The request to vote on.")
CHOICE_ARGUMENT = typer.Argument(..., help="approve or deny")
KEY_OPTION = typer.Option(None, "--svid-key", envvar="ATB_SVID_KEY_PATH", help="SVID key (PEM).")


def _state_dir() -> Path:
    configured = os.environ.get("ATB_STATE_DIR", "").strip()
    return Path(configured).expanduser() if configured else default_state_dir()


def _bootstrap() -> str:
    return kafka_bootstrap()


def _namespace() -> str:
    return os.environ.get("ATB_TOPIC_NAMESPACE", "")


def _bundle() -> Path:
    """The trust bundle the outcomes read are verified against: ATB_TRUST_BUNDLE_PATH, else the dev PKI's."""
    configured = os.environ.get("ATB_TRUST_BUNDLE_PATH", "").strip()
    path = Path(configured).expanduser() if configured else bundle_path(_state_dir())
    if not path.exists():
        raise AtbUsageError(f"no trust bundle at {path}: set ATB_TRUST_BUNDLE_PATH (or run `atb pki init`)")
    return path


def _svid(name: str | None, cert: Path | None, key: Path | None) -> Svid:
    if cert is not None and key is not None:
        return load_svid(cert, key)
    if not name:
        raise AtbUsageError("say who votes: --as <name> (or ATB_APPROVER), or --svid-cert and --svid-key")
    trust_domain = os.environ.get("ATB_TRUST_DOMAIN", "atb.local")
    spiffe_id = f"spiffe://{trust_domain}/user/{name}"
    cert_path, key_path = svid_paths(_state_dir(), spiffe_id)
    if not cert_path.exists() or not key_path.exists():
        raise AtbUsageError(f"no SVID for {spiffe_id}: create it with `atb pki issue {spiffe_id}`")
    return load_svid(cert_path, key_path)


def _directory() -> Directory:
    path = Path(os.environ.get("ATB_APPROVER_DIRECTORY_PATH", "") or _DIRECTORY)
    return Directory.from_mapping(json.loads(path.read_text(encoding="utf-8")))


def vote(
    request_id: str = REQUEST_ARGUMENT,
    choice: VoteChoice = CHOICE_ARGUMENT,
    reason: str = typer.Option("", "--reason", help="Why (kept with the vote)."),
    name: str | None = AS_OPTION,
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds to wait for the request's ApprovalRequired."),
) -> None:
    """Vote on a request with your own SVID (signed; bound to the request's exact digest)."""
    try:
        svid = _svid(name, cert, key)
        cast = asyncio.run(_vote(svid, request_id, choice, reason, timeout))
    except (IdentityError, PoaTimeoutError) as exc:
        raise AtbError(str(exc)) from None
    typer.echo(
        f"{cast.approver_id} voted {cast.choice.value} on {request_id} (vote {cast.vote_id}); "
        "the approvals service decides whether it counts."
    )


async def _vote(svid: Svid, request_id: str, choice: VoteChoice, reason: str, timeout: float) -> VoteCast:
    async with ApproverClient(
        svid=svid, bootstrap=_bootstrap(), namespace=_namespace(), bundle_path=_bundle()
    ) as approver:
        required = await approver.approval_required(request_id, timeout=timeout)
        return await approver.vote(required, choice, reason=reason)


def pending(
    name: str | None = AS_OPTION,
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
) -> None:
    """List the open requests that await your vote."""
    try:
        svid = _svid(name, cert, key)
    except IdentityError as exc:
        raise AtbError(str(exc)) from None
    directory = _directory()
    approver = directory.resolve(str(svid.spiffe_id))
    if approver is None:
        raise AtbUsageError(f"{svid.spiffe_id} is not in the approver directory (ATB_APPROVER_DIRECTORY_PATH)")
    states = asyncio.run(_read_states(_bootstrap(), _namespace()))
    rows = awaiting(states, approver, directory, datetime.now(UTC))
    table = Table(title=f"Awaiting {approver.principal} ({len(rows)})")
    for column in ("request", "action", "resource", "tier", "needs", "deadline (UTC)", "agent", "accountable"):
        table.add_column(column)
    for state in rows:
        request, req = state.request, state.requirements
        if request is None or req is None or state.deadline is None:
            continue
        table.add_row(
            state.request_id,
            request.action,
            request.resource,
            req.tier.value,
            str(req.approvals),
            f"{state.deadline:%Y-%m-%d %H:%M:%S}",
            request.agent_id,
            request.leg.accountable_party.id,
        )
    Console().print(table)


def awaiting(
    states: Sequence[ApprovalStateChanged], approver: Approver, directory: Directory, now: datetime
) -> list[ApprovalStateChanged]:
    """Open requests this approver may approve and has not voted on yet, soonest deadline first."""
    rows = []
    for state in states:
        request, req = state.request, state.requirements
        if state.status != "open" or request is None or req is None or state.deadline is None:
            continue
        requester = (request.agent_id, request.leg.accountable_party.id)
        if state.deadline < now or any(directory.same_person(approver.principal, r) for r in requester):
            continue
        if req.tier not in approver.tiers or approver.groups.isdisjoint(req.eligible_groups):
            continue
        if any(directory.resolve(b.identity) is approver for b in state.ballots):
            continue
        rows.append(state)
    return sorted(rows, key=lambda s: s.deadline or now)


async def _read_states(bootstrap: str, namespace: str) -> list[ApprovalStateChanged]:
    """The latest state of every request on the compacted changelog, read to its current end."""
    latest: dict[str, ApprovalStateChanged] = {}
    for state in await read_committed(bootstrap, topic_name(Topic.APPROVALS_STATE, namespace)):
        if isinstance(state, ApprovalStateChanged):
            latest[state.request_id] = state
    return list(latest.values())
