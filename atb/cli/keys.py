"""`atb keys rotate`: a new PoA signing key, published before it signs anything.

Works on the issuer's keyring in the state folder (dev and single-host
deployments). The new key activates after `--activation-delay` seconds; its public
key and the previous key's retirement time are published on `atb.keys` right
away, and the issuer's JWKS lists both until the old key retires. Production
deployments that mount the key as a secret rotate by replacing the secret.
Kafka is asked first: with Kafka down nothing is rotated (exit 4, atb/errors.py).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import typer
from rich.console import Console

from atb.errors import UnavailableError, describe
from atb_runtime import Publisher

__all__ = ["keys_app", "rotate_keys"]

keys_app = typer.Typer(no_args_is_help=True, help="PoA signing keys: rotation.")


async def rotate_keys(activation_delay_s: float = 10.0) -> tuple[str, list[str]]:
    """Rotate the keyring and publish every published key; returns (new kid, published kids)."""
    from atb_runtime.identity import service_svid
    from issuer.adapters.announce import publish_keys
    from issuer.adapters.keyring import SigningKeyRing
    from issuer.settings import IssuerSettings

    settings = IssuerSettings()  # read now, not when issuer.main was first imported
    bootstrap = settings.kafka_bootstrap_servers
    # Kafka first: a key added to the ring but never published would sign after its delay all the same.
    async with Publisher(bootstrap, "atb-keys-probe"):
        pass
    ring = SigningKeyRing.ensure(settings.keyring_dir())
    now = datetime.now(UTC)
    entry = ring.rotate(now, activation_delay=timedelta(seconds=activation_delay_s))
    published = ring.published(now)
    try:
        # Signed with the issuer's SVID, which brokers require of a key (issuer/adapters/announce.py).
        svid = service_svid(settings.state_dir, settings.service_id, settings.svid_cert_path, settings.svid_key_path)
        await publish_keys(
            published, bootstrap=bootstrap, namespace=settings.topic_namespace, issuer=settings.service_id, svid=svid
        )
    except Exception as exc:
        raise UnavailableError(
            f"key {entry.key.kid} was added but not published ({describe(exc).message});"
            " run `atb keys rotate` again once Kafka answers"
        ) from exc
    return entry.key.kid, [e.key.kid for e in published]


@keys_app.command("rotate")
def rotate(
    activation_delay: float = typer.Option(10.0, help="Seconds before the new key signs (time to propagate)."),
) -> None:
    """Add a signing key; keep the old one published until every token it signed has expired."""
    kid, published = asyncio.run(rotate_keys(activation_delay))
    console = Console()
    console.print(f"new key [bold]{kid}[/bold] activates in {activation_delay:.0f}s")
    console.print(f"published on atb.keys: {', '.join(published)}")
