"""`atb poa revoke <jti | request-id>`: stop honouring a PoA before it expires.

Publishes a PoaRevoked (and an audit event) on `atb.poa.revoked`; every broker
replica follows that topic and denies the PoA within about a second. A request
id revokes every PoA of that request; a jti is looked up on `atb.poa.issued` to
find its request (the partition key).
"""

from __future__ import annotations

import asyncio
import getpass
from datetime import UTC, datetime, timedelta

import typer
from rich.console import Console

from atb.errors import AtbUsageError, kafka_bootstrap
from atb_runtime import Publisher, audit, outgoing
from atb_runtime.readback import read_committed
from atb_runtime.settings import CommonSettings
from contracts import PoaIssued, PoaRevoked, Topic, topic_name

__all__ = ["RevokeError", "poa_app", "revoke_poa"]

poa_app = typer.Typer(no_args_is_help=True, help="Issued PoAs: revocation.")

CLI_SOURCE = "spiffe://atb.local/ops/cli"


class RevokeError(AtbUsageError, LookupError):
    """The PoA or request to revoke is not known (exit 2)."""


REQUEST_REVOCATION_S = 15 * 60
"""A whole request's revocation covers PoAs issued later too: the issuer signs only within 10 minutes
of the quorum, and a PoA lives at most 5 minutes, so 15 minutes after the revocation none can be valid."""


async def _find(bootstrap: str, namespace: str, target: str) -> tuple[str, str, datetime]:
    """(request id, jti, latest expiry) of `target`, a jti or a request id; jti "*" for a whole request."""
    topic = topic_name(Topic.POA_ISSUED, namespace)
    issued = await read_committed(bootstrap, topic)
    for payload in issued:
        if isinstance(payload, PoaIssued) and payload.jti == target:
            return payload.request_id, payload.jti, payload.expires_at
    of_request = [p.expires_at for p in issued if isinstance(p, PoaIssued) and p.request_id == target]
    if of_request:
        return target, "*", max([*of_request, datetime.now(UTC) + timedelta(seconds=REQUEST_REVOCATION_S)])
    raise RevokeError(f"no PoA was issued with jti {target!r} or for request {target!r}")


async def revoke_poa(
    target: str, *, reason: str, bootstrap: str, namespace: str = "", revoked_by: str | None = None
) -> PoaRevoked:
    request_id, jti, expires_at = await _find(bootstrap, namespace, target)
    revocation = PoaRevoked(
        request_id=request_id,
        jti=jti,
        reason=reason,
        revoked_by=revoked_by or getpass.getuser(),
        revoked_at=datetime.now(UTC),
        expires_at=expires_at,
    )
    async with Publisher(bootstrap, "atb-cli-revoke") as publisher:
        await publisher.publish(
            [
                outgoing(revocation, source=CLI_SOURCE, namespace=namespace),
                audit(
                    "poa_revoked",
                    source=CLI_SOURCE,
                    namespace=namespace,
                    outcome="success",
                    request_id=request_id,
                    reason=reason,
                    details={"jti": jti, "revoked_by": revocation.revoked_by},
                ),
            ]
        )
    return revocation


@poa_app.command("revoke")
def revoke(
    target: str = typer.Argument(..., help="The PoA's jti, or a request id (revokes every PoA of the request)."),
    reason: str = typer.Option("revoked by an operator", "--reason", help="Why (recorded in the audit trail)."),
) -> None:
    """Revoke a PoA: every broker replica denies it from now on."""
    settings = CommonSettings()
    done = asyncio.run(
        revoke_poa(target, reason=reason, bootstrap=kafka_bootstrap(), namespace=settings.topic_namespace)
    )  # RevokeError, Kafka unreachable: one line (atb/cli/errors.py)
    what = "every PoA of" if done.jti == "*" else f"PoA {done.jti} of"
    Console().print(f"revoked {what} request {done.request_id}: {done.reason}")
