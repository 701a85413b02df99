"""contracts.poa.x5t_s256: the one RFC 8705 `x5t#S256` function, and every place that binds with it."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization

from atb_identity import Svid, cert_thumbprint, sign_envelope
from broker.service import presentation_from_envelope
from contracts import ActionRequested, make_envelope
from contracts.poa import x5t_s256
from tests.unit.test_identity_support import AGENT_ID, AT, World, make_svid, world


@pytest.mark.parametrize(
    ("der", "expected"),
    [
        (b"", "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"),
        (b"abc", "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"),
        (b"\x00" * 64, base64.urlsafe_b64encode(hashlib.sha256(b"\x00" * 64).digest()).rstrip(b"=").decode()),
    ],
)
def test_x5t_s256_is_unpadded_base64url_sha256(der: bytes, expected: str) -> None:
    assert x5t_s256(der) == expected
    assert len(expected) == 43
    assert "=" not in expected


@pytest.fixture(scope="module")
def svid() -> Svid:
    w: World = world()
    return make_svid(w.intermediate, intermediates=[w.intermediate])


def test_the_svid_the_identity_package_and_the_broker_agree(svid: Svid) -> None:
    der = svid.leaf.public_bytes(serialization.Encoding.DER)
    assert cert_thumbprint(svid.leaf) == svid.thumbprint() == x5t_s256(der)
    action = ActionRequested(
        request_id="req-1",
        action_id="act-1",
        agent_id=AGENT_ID,
        tenant="acme",
        action="crm.contact.read",
        resource="crm:contact/1",
        requested_at=AT,
    )
    envelope = sign_envelope(make_envelope(action, source=AGENT_ID, time=AT), svid)
    trust = world().bundle
    presentation = presentation_from_envelope(envelope, action, trust, "p-1", at=AT)
    assert presentation.cert_thumbprint == x5t_s256(der)
