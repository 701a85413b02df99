"""Publish the issuer's verification keys on `atb.keys`, signed with the issuer's SVID.

A key published here is trusted by every broker replica (services/broker/broker/adapters/keys.py),
so the event carries the issuer's proof of origin (docs/architecture.md §4.5): a broker takes a key
only from an envelope proven by a configured issuer, and anybody else's key on the topic is
dead-lettered. Keys go out before they sign anything (docs/architecture.md §5.5).

Used by the issuer's service at start (`IssuerService.start`) and by `atb keys rotate`, which
builds no issuer to do it.
"""

from __future__ import annotations

from collections.abc import Sequence

from atb_identity import Svid, sign_envelope
from atb_runtime import Outgoing, Publisher, outgoing_envelope
from contracts import SigningKeyPublished, make_envelope, topic_name
from issuer.adapters.keyring import KeyEntry

__all__ = ["key_events", "key_records", "publish_keys"]


def key_events(entries: Sequence[KeyEntry], *, issuer: str) -> list[SigningKeyPublished]:
    return [
        SigningKeyPublished(
            kid=e.key.kid,
            alg="EdDSA",
            jwk=e.key.jwk,
            issuer=issuer,
            not_before=e.activate_at,
            retire_after=e.retire_after,
        )
        for e in entries
    ]


def key_records(entries: Sequence[KeyEntry], *, namespace: str, issuer: str, svid: Svid) -> list[Outgoing]:
    """Each key as a SigningKeyPublished record whose envelope the issuer's SVID signs."""
    return [
        outgoing_envelope(sign_envelope(make_envelope(event, source=issuer), svid), topic_name(event.topic, namespace))
        for event in key_events(entries, issuer=issuer)
    ]


async def publish_keys(entries: Sequence[KeyEntry], *, bootstrap: str, namespace: str, issuer: str, svid: Svid) -> None:
    """Publish each key as a SigningKeyPublished whose envelope the issuer's SVID signs (`atb keys rotate`)."""
    records = key_records(entries, namespace=namespace, issuer=issuer, svid=svid)
    async with Publisher(bootstrap, "atb-issuer-keys") as publisher:
        await publisher.publish(records)
