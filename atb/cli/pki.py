"""`atb pki init|issue`: the development PKI (a local CA and X.509-SVIDs) under the state folder.

The state folder is `$ATB_STATE_DIR`, else `<repo>/.state` (or `~/.atb` outside a
checkout). Errors are one line on stderr: exit 2 for what the user must fix (a
malformed or foreign SPIFFE ID, a bad number, a CA of another trust domain), 1
when the file system refuses.

This module only parses arguments and prints; the PKI is `atb_identity.pki`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer
from rich.console import Console

from atb_identity import KEY_TYPES, IdentityError, KeyType, bundle_path, ca_paths, init_ca, issue_svid
from atb_runtime.settings import default_state_dir

__all__ = ["pki_app"]

T = TypeVar("T")

STATE_DIR_ENV = "ATB_STATE_DIR"

pki_app = typer.Typer(
    name="pki",
    help="The development PKI: a local CA and X.509-SVIDs for agents, approvers and services.",
    no_args_is_help=True,
)


def _state_dir() -> Path:
    configured = os.environ.get(STATE_DIR_ENV, "").strip()
    return Path(configured).expanduser() if configured else default_state_dir()


def _key_type(value: str | None) -> KeyType | None:
    for known in KEY_TYPES:
        if value == known:
            return known
    if value is None:
        return None
    raise typer.BadParameter(f"{value!r} is not one of {', '.join(KEY_TYPES)}")


KEY_TYPE_HELP = (
    "Key type, by SPIRE's names: ed25519 (the default), ec-p256 (SPIRE's default), ec-p384, rsa-2048, rsa-4096."
)


def _run(action: Callable[[], T]) -> T:
    """Run `action`; an identity or argument error becomes one line on stderr and an exit code."""
    try:
        return action()
    except (IdentityError, ValueError) as exc:
        typer.echo(f"atb pki: error: {exc}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        typer.echo(f"atb pki: error: {exc}", err=True)
        raise typer.Exit(1) from None


@pki_app.command()
def init(
    trust_domain: str = typer.Option("atb.local", "--trust-domain", help="The SPIFFE trust domain of the CA."),
    days: int = typer.Option(3650, "--days", help="Lifetime of a newly created CA, in days."),
    key_type: str | None = typer.Option(
        None, "--key-type", help=KEY_TYPE_HELP + " Its SVIDs get the same type unless `issue --key-type` says."
    ),
) -> None:
    """Create the dev CA and trust bundle (an existing CA is kept)."""
    state = _state_dir()
    ca_cert, ca_key = ca_paths(state)
    existed = ca_cert.exists()
    kind = _key_type(key_type)
    bundle = _run(lambda: init_ca(state, trust_domain, days=days, key_type=kind))
    out = Console(soft_wrap=True, highlight=False)
    out.print(f"[bold]CA[/bold] for [cyan]{trust_domain}[/cyan] {'kept' if existed else 'created'}")
    out.print(f"  certificate  {ca_cert}", markup=False)
    out.print(f"  private key  {ca_key}", markup=False)
    out.print(f"  bundle       {bundle}", markup=False)


@pki_app.command()
def issue(
    spiffe_id: str = typer.Argument(..., help="spiffe://<trust domain>/agent/..., /user/... or /svc/..."),
    hours: float = typer.Option(24.0 * 30, "--hours", help="Lifetime of the SVID, in hours."),
    key_type: str | None = typer.Option(None, "--key-type", help=KEY_TYPE_HELP + " Default: the CA's."),
) -> None:
    """Issue an X.509-SVID for a SPIFFE ID from the dev CA (created first if missing)."""
    state = _state_dir()
    kind = _key_type(key_type)
    svid = _run(lambda: issue_svid(state, spiffe_id, hours=hours, key_type=kind))
    out = Console(soft_wrap=True, highlight=False)
    out.print(f"[bold]SVID[/bold] for [cyan]{svid.spiffe_id}[/cyan]")
    out.print(f"  chain        {svid.cert_path}", markup=False)
    out.print(f"  private key  {svid.key_path}", markup=False)
    out.print(f"  bundle       {bundle_path(state)}", markup=False)
    out.print(f"  expires      {svid.leaf.not_valid_after_utc.isoformat()}", markup=False)
    out.print(f"  x5t#S256     {svid.thumbprint()}", markup=False)
    out.print(f"  proof alg    {svid.alg}", markup=False)
