"""Proofs by SVIDs of every key type SPIRE issues, and no algorithm confusion between them (real crypto).

The chains come from a SPIRE-like CA (tests/spire_support.py): EC P-256 by
default, as SPIRE issues them, with or without an upstream root. An algorithm is
never taken from the proof alone: the leaf's key decides, and a proof naming any
other algorithm is refused, whatever its signature.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pydantic import ValidationError

from atb_identity import (
    BadCertificateSignatureError,
    BadSignatureError,
    CredentialError,
    KeyType,
    MalformedSignatureError,
    PkiError,
    SpiffeId,
    Svid,
    TrustBundle,
    UnsupportedAlgorithmError,
    alg_for_key,
    build_certificate,
    ensure_svid,
    init_ca,
    issue_svid,
    key_type_of,
    load_svid,
    sign_envelope,
    verify_envelope,
)
from atb_identity.pki import ca_paths
from atb_identity.tls import client_context, peer_certificate, peer_identity, server_context
from contracts import (
    AccountableParty,
    Envelope,
    EventDecodeError,
    IssuanceRequested,
    LegitimateInterest,
    Proof,
    decode_envelope,
    encode_envelope,
    make_envelope,
    signing_bytes,
)
from tests.spire_support import SpireCa, write_helper_files

AGENT = "spiffe://atb.local/agent/crm-bot"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
GOLDEN = Path(__file__).parent / "data" / "proof_ed25519_golden.json"


def event(source: str = AGENT, request_id: str = "req-alg-1") -> Envelope:
    request = IssuanceRequested(
        request_id=request_id,
        agent_id=source,
        tenant="acme",
        action="crm.contact.update",
        resource="crm:contact/42",
        params={"email": "new@example.com"},
        leg=LegitimateInterest(
            ref="LI-1", jurisdiction="US", accountable_party=AccountableParty(type="employee", id="e1")
        ),
        requested_at=NOW,
    )
    return make_envelope(request, source=source, time=NOW)


@pytest.fixture(scope="module")
def spire() -> SpireCa:
    return SpireCa.create(now=NOW)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_sig(envelope: Envelope) -> bytes:
    assert envelope.proof is not None
    return base64.urlsafe_b64decode(envelope.proof.sig + "=" * (-len(envelope.proof.sig) % 4))


def _with_proof(envelope: Envelope, **changes: object) -> Envelope:
    assert envelope.proof is not None
    proof = Proof.model_construct(**{**envelope.proof.model_dump(), **changes})
    return envelope.model_copy(update={"proof": proof})


# --- every key type SPIRE issues -------------------------------------------------------------


@pytest.mark.parametrize(
    ("ca_type", "leaf_type", "alg"),
    [
        ("ec-p256", "ec-p256", "ES256"),  # SPIRE's default
        ("ec-p256", "ec-p384", "ES384"),
        ("ec-p256", "rsa-2048", "RS256"),
        ("rsa-2048", "rsa-4096", "RS256"),
        ("ec-p384", "ec-p256", "ES256"),
        ("ec-p256", "ed25519", "Ed25519"),
    ],
)
def test_a_proof_by_each_key_type_proves_its_source(ca_type: KeyType, leaf_type: KeyType, alg: str) -> None:
    ca = SpireCa.create(now=NOW, key_type=ca_type)
    svid = ca.issue(AGENT, now=NOW, key_type=leaf_type)
    signed = sign_envelope(event(), svid)
    assert signed.proof is not None
    assert signed.proof.alg == alg == svid.alg
    received = decode_envelope(encode_envelope(signed))  # the record bytes, within the proof's size limits
    assert verify_envelope(received, ca.bundle, at=NOW) == SpiffeId.parse(AGENT)


def test_a_chain_through_a_spire_server_ca_under_an_upstream_root_is_proven() -> None:
    upstream = SpireCa.create(now=NOW)
    server_ca = upstream.intermediate(now=NOW)
    svid = server_ca.issue(AGENT, now=NOW)
    assert len(svid.x5c()) == 2  # leaf, then the SPIRE server's CA; the bundle holds the upstream root
    signed = sign_envelope(event(), svid)
    assert verify_envelope(signed, server_ca.bundle, at=NOW) == SpiffeId.parse(AGENT)
    # Another SPIRE root of the same name (C=US, O=SPIFFE) does not anchor it.
    with pytest.raises(BadCertificateSignatureError):
        verify_envelope(signed, TrustBundle("atb.local", (SpireCa.create(now=NOW).cert,)), at=NOW)


def test_an_es256_signature_is_r_and_s_over_the_signing_bytes_in_low_s_form(spire: SpireCa) -> None:
    svid = spire.issue(AGENT, now=NOW)
    public = svid.leaf.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    for n in range(40):  # an unnormalised ECDSA signature has a high S half the time
        signed = sign_envelope(event(request_id=f"req-low-s-{n}"), svid)
        raw = _raw_sig(signed)
        assert len(raw) == 64
        r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
        assert 0 < s <= P256_ORDER // 2
        public.verify(encode_dss_signature(r, s), signing_bytes(signed), ec.ECDSA(hashes.SHA256()))  # raises if not


def test_the_high_s_twin_of_a_valid_es256_signature_is_refused(spire: SpireCa) -> None:
    signed = sign_envelope(event(), spire.issue(AGENT, now=NOW))
    raw = _raw_sig(signed)
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    twin = r.to_bytes(32, "big") + (P256_ORDER - s).to_bytes(32, "big")
    public = signed.proof and x509.load_der_x509_certificate(base64.b64decode(signed.proof.x5c[0])).public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(encode_dss_signature(r, P256_ORDER - s), signing_bytes(signed), ec.ECDSA(hashes.SHA256()))
    with pytest.raises(MalformedSignatureError, match="low-S"):
        verify_envelope(_with_proof(signed, sig=_b64url(twin)), spire.bundle, at=NOW)


@pytest.mark.parametrize(
    ("r", "s"), [(0, 1), (1, 0), (P256_ORDER, 1), (2**256 - 1, 1)], ids=["r0", "s0", "r-is-n", "r-max"]
)
def test_es256_signatures_out_of_range_are_refused(spire: SpireCa, r: int, s: int) -> None:
    signed = sign_envelope(event(), spire.issue(AGENT, now=NOW))
    sig = _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    with pytest.raises(MalformedSignatureError):
        verify_envelope(_with_proof(signed, sig=sig), spire.bundle, at=NOW)


@pytest.mark.parametrize(("key_type", "size"), [("ec-p256", 64), ("ec-p384", 96), ("rsa-2048", 256)])
def test_a_signature_of_another_length_is_refused(spire: SpireCa, key_type: KeyType, size: int) -> None:
    signed = sign_envelope(event(), spire.issue(AGENT, now=NOW, key_type=key_type))
    raw = _raw_sig(signed)
    assert len(raw) == size
    for wrong in (raw[:-1], raw + b"\x00", raw[: size // 2]):
        with pytest.raises(MalformedSignatureError, match=f"is {size} bytes"):
            verify_envelope(_with_proof(signed, sig=_b64url(wrong)), spire.bundle, at=NOW)


def test_a_tampered_es256_event_fails(spire: SpireCa) -> None:
    signed = sign_envelope(event(), spire.issue(AGENT, now=NOW))
    other = event(request_id="req-alg-2").model_copy(update={"id": signed.id, "time": signed.time})
    with pytest.raises(BadSignatureError):
        verify_envelope(other.model_copy(update={"proof": signed.proof}), spire.bundle, at=NOW)


# --- algorithm confusion ---------------------------------------------------------------------


def _leaf_x5c(ca: SpireCa, key_type: KeyType) -> tuple[Svid, tuple[str, ...]]:
    svid = ca.issue(AGENT, now=NOW, key_type=key_type)
    return svid, svid.x5c()


def test_es256_named_over_an_ed25519_leaf_is_refused_even_with_a_valid_ed25519_signature(spire: SpireCa) -> None:
    # Both signatures are 64 bytes: the proof's word must not make a verifier read one as the other.
    svid = spire.issue(AGENT, now=NOW, key_type="ed25519")
    signed = sign_envelope(event(), svid)
    assert verify_envelope(signed, spire.bundle, at=NOW) == SpiffeId.parse(AGENT)
    with pytest.raises(UnsupportedAlgorithmError, match="signs Ed25519 only"):
        verify_envelope(_with_proof(signed, alg="ES256"), spire.bundle, at=NOW)


def test_ed25519_named_over_an_ec_leaf_is_refused_even_with_a_valid_es256_signature(spire: SpireCa) -> None:
    signed = sign_envelope(event(), spire.issue(AGENT, now=NOW))
    with pytest.raises(UnsupportedAlgorithmError, match="signs ES256 only"):
        verify_envelope(_with_proof(signed, alg="Ed25519"), spire.bundle, at=NOW)


def test_an_ed25519_signature_under_an_ec_leaf_is_refused(spire: SpireCa) -> None:
    # An attacker with some Ed25519 key signs, names Ed25519, and attaches a victim's EC chain.
    victim = spire.issue(AGENT, now=NOW)
    attacker = Ed25519PrivateKey.generate()
    forged = event().model_copy(
        update={"proof": Proof(alg="Ed25519", sig=_b64url(attacker.sign(signing_bytes(event()))), x5c=victim.x5c())}
    )
    with pytest.raises(UnsupportedAlgorithmError):
        verify_envelope(forged, spire.bundle, at=NOW)


@pytest.mark.parametrize(
    ("leaf_type", "named"),
    [
        ("ec-p256", "ES384"),
        ("ec-p256", "RS256"),
        ("ec-p384", "ES256"),
        ("rsa-2048", "ES256"),
        ("rsa-2048", "Ed25519"),
        ("ed25519", "RS256"),
    ],
)
def test_a_proof_naming_another_algorithm_than_its_leafs_key_is_refused(
    spire: SpireCa, leaf_type: KeyType, named: str
) -> None:
    signed = sign_envelope(event(), spire.issue(AGENT, now=NOW, key_type=leaf_type))
    with pytest.raises(UnsupportedAlgorithmError) as caught:
        verify_envelope(_with_proof(signed, alg=named), spire.bundle, at=NOW)
    assert caught.value.code == "unsupported_algorithm"


@pytest.mark.parametrize("named", ["none", "None", "HS256", "PS256", "EdDSA", "es256", ""])
def test_an_algorithm_outside_the_table_is_refused_before_any_key_is_used(spire: SpireCa, named: str) -> None:
    signed = sign_envelope(event(), spire.issue(AGENT, now=NOW, key_type="rsa-2048"))
    for sig in ("", "AA", signed.proof.sig if signed.proof else ""):
        with pytest.raises(UnsupportedAlgorithmError, match="is not one of"):
            verify_envelope(_with_proof(signed, alg=named, sig=sig), spire.bundle, at=NOW)
    # And a record naming one does not even decode.
    assert signed.proof is not None
    with pytest.raises(ValidationError):
        Proof.model_validate({**signed.proof.model_dump(), "alg": named})
    record = json.loads(encode_envelope(signed))
    record["proof"]["alg"] = named
    with pytest.raises(EventDecodeError):
        decode_envelope(json.dumps(record).encode())


def _trusted_leaf(ca: SpireCa, public: object) -> str:
    leaf = build_certificate(
        subject_key=public,  # type: ignore[arg-type]
        issuer_cert=ca.cert,
        issuer_key=ca.key,
        uris=[AGENT],
        is_ca=False,
        key_usage={"digital_signature": True},
        not_before=NOW - timedelta(minutes=1),
        not_after=NOW + timedelta(hours=1),
    )
    return base64.b64encode(leaf.public_bytes(serialization.Encoding.DER)).decode()


@pytest.mark.parametrize(
    "make_key",
    [
        pytest.param(lambda: ec.generate_private_key(ec.SECP521R1()), id="ec-p521"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP256K1()), id="ec-secp256k1"),
        pytest.param(lambda: rsa.generate_private_key(65537, 1024), id="rsa-1024"),  # noqa: S505 - it is refused
        pytest.param(lambda: ed448.Ed448PrivateKey.generate(), id="ed448"),
    ],
)
def test_a_trusted_leaf_with_a_key_of_no_proof_algorithm_is_refused(spire: SpireCa, make_key: object) -> None:
    key = make_key()  # type: ignore[operator]
    signed = sign_envelope(event(), spire.issue(AGENT, now=NOW))
    for alg in ("ES256", "RS256", "Ed25519"):
        with pytest.raises(UnsupportedAlgorithmError):
            verify_envelope(
                _with_proof(signed, alg=alg, x5c=(_trusted_leaf(spire, key.public_key()),)), spire.bundle, at=NOW
            )
    with pytest.raises(UnsupportedAlgorithmError):
        alg_for_key(key)


def test_rsa_pss_and_pkcs1_are_not_interchangeable(spire: SpireCa) -> None:
    svid = spire.issue(AGENT, now=NOW, key_type="rsa-2048")
    assert isinstance(svid.key, rsa.RSAPrivateKey)
    pss = svid.key.sign(
        signing_bytes(event()), padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.MAX_LENGTH), hashes.SHA256()
    )
    forged = event().model_copy(update={"proof": Proof(alg="RS256", sig=_b64url(pss), x5c=svid.x5c())})
    with pytest.raises(BadSignatureError):
        verify_envelope(forged, spire.bundle, at=NOW)


# --- the files SPIRE's helpers write ---------------------------------------------------------


def test_spiffe_helper_files_load_and_sign(spire: SpireCa, tmp_path: Path) -> None:
    server_ca = spire.intermediate(now=NOW)
    svid = server_ca.issue(AGENT, now=NOW)
    files = write_helper_files(svid, server_ca.roots, tmp_path / "svid")
    loaded = load_svid(files.svid, files.key)
    bundle = TrustBundle.load(files.bundle, "atb.local")
    assert loaded.alg == "ES256"
    assert loaded.chain == svid.chain
    assert verify_envelope(sign_envelope(event(), loaded), bundle, at=NOW) == SpiffeId.parse(AGENT)


@pytest.mark.parametrize(
    ("key_type", "fmt"),
    [("ec-p256", serialization.PrivateFormat.TraditionalOpenSSL), ("rsa-2048", serialization.PrivateFormat.PKCS8)],
    ids=["sec1-ec", "pkcs8-rsa"],
)
def test_other_pem_key_forms_load(
    spire: SpireCa, tmp_path: Path, key_type: KeyType, fmt: serialization.PrivateFormat
) -> None:
    svid = spire.issue(AGENT, now=NOW, key_type=key_type)
    files = write_helper_files(svid, spire.roots, tmp_path / "svid")
    files.key.write_bytes(svid.key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()))
    assert load_svid(files.svid, files.key).alg == svid.alg


def test_a_key_that_is_not_the_leafs_is_refused_whatever_its_type(spire: SpireCa, tmp_path: Path) -> None:
    files = write_helper_files(spire.issue(AGENT, now=NOW), spire.roots, tmp_path / "svid")
    for other in (
        spire.issue(AGENT, now=NOW),
        spire.issue(AGENT, now=NOW, key_type="ed25519"),
    ):  # same type, another type
        files.key.write_bytes(
            other.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        with pytest.raises(CredentialError, match="does not belong"):
            load_svid(files.svid, files.key)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(ec.generate_private_key(ec.SECP521R1()), id="ec-p521"),
        pytest.param(rsa.generate_private_key(65537, 1024), id="rsa-1024"),  # noqa: S505 - it is refused
        pytest.param(ed448.Ed448PrivateKey.generate(), id="ed448"),
    ],
)
def test_an_svid_key_of_no_proof_algorithm_is_refused(spire: SpireCa, tmp_path: Path, key: object) -> None:
    files = write_helper_files(spire.issue(AGENT, now=NOW), spire.roots, tmp_path / "svid")
    files.key.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(CredentialError, match="cannot sign proofs"):
        load_svid(files.svid, files.key)


# --- Ed25519 as it was -----------------------------------------------------------------------


def test_an_ed25519_proof_made_before_other_algorithms_still_verifies_and_signs_the_same() -> None:
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    bundle = TrustBundle("atb.local", (x509.load_pem_x509_certificate(golden["bundle_pem"].encode()),))
    received = decode_envelope(golden["record"].encode())
    at = datetime.fromisoformat(golden["verify_at"])
    assert verify_envelope(received, bundle, at=at) == SpiffeId.parse(AGENT)
    assert received.proof is not None
    assert received.proof.alg == "Ed25519"
    # Ed25519 is deterministic: the same key over the same bytes gives the very same record.
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
    leaf = x509.load_der_x509_certificate(base64.b64decode(received.proof.x5c[0]))
    resigned = sign_envelope(received.model_copy(update={"proof": None}), Svid(SpiffeId.parse(AGENT), key, (leaf,)))
    assert encode_envelope(resigned) == golden["record"].encode()


# --- the dev PKI's key types -----------------------------------------------------------------


def test_the_dev_pki_stays_ed25519_by_default(tmp_path: Path) -> None:
    svid = ensure_svid(tmp_path, AGENT)
    assert (svid.alg, key_type_of(svid.leaf.public_key())) == ("Ed25519", "ed25519")


def test_a_dev_ca_of_spires_key_type_issues_ec_svids(tmp_path: Path) -> None:
    bundle = init_ca(tmp_path, key_type="ec-p256")
    ca_key = serialization.load_pem_private_key(ca_paths(tmp_path)[1].read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    svid = ensure_svid(tmp_path, AGENT)
    assert svid.alg == "ES256"
    assert ensure_svid(tmp_path, AGENT).leaf == svid.leaf  # reused, not reissued
    signed = sign_envelope(event(), svid)
    assert verify_envelope(signed, TrustBundle.load(bundle, "atb.local"), at=datetime.now(UTC)) == svid.spiffe_id
    # Another leaf type on request; ensure_svid then reissues to the type it is asked for.
    assert issue_svid(tmp_path, AGENT, key_type="rsa-2048").alg == "RS256"
    assert ensure_svid(tmp_path, AGENT).alg == "ES256"
    assert init_ca(tmp_path) == bundle  # an existing CA is kept


def test_a_dev_ca_is_not_silently_of_another_key_type(tmp_path: Path) -> None:
    init_ca(tmp_path)
    with pytest.raises(PkiError, match="ed25519 key, not ec-p256"):
        init_ca(tmp_path, key_type="ec-p256")
    with pytest.raises(ValueError, match="unknown key type"):
        init_ca(tmp_path, key_type="ec-p999")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown key type"):
        issue_svid(tmp_path, AGENT, key_type="dsa")  # type: ignore[arg-type]


# --- mutual TLS with SPIRE's key types -------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048"])
async def test_mutual_tls_between_svids_of_spires_key_types(tmp_path: Path, key_type: KeyType) -> None:
    ca = SpireCa.create(key_type="ec-p256")  # real time: OpenSSL checks validity against the clock
    server = write_helper_files(ca.issue("spiffe://atb.local/svc/gateway", key_type=key_type), ca.roots, tmp_path / "s")
    client = write_helper_files(ca.issue(AGENT, key_type=key_type), ca.roots, tmp_path / "c")
    seen: list[str] = []

    async def whoami(request: web.Request) -> web.Response:
        cert = peer_certificate(request.transport.get_extra_info("ssl_object") if request.transport else None)
        assert cert is not None
        seen.append(str(peer_identity(cert, ca.bundle)))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", whoami)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(server.svid, server.key, server.bundle))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        good = client_context(client.svid, client.key, client.bundle, expect_server="spiffe://atb.local/svc/gateway")
        async with aiohttp.ClientSession() as session, session.get(f"https://127.0.0.1:{port}/", ssl=good) as answer:
            assert answer.status == 200
        wrong = client_context(client.svid, client.key, client.bundle, expect_server="spiffe://atb.local/svc/broker")
        with pytest.raises(aiohttp.ClientSSLError) as refused:
            async with aiohttp.ClientSession() as session, session.get(f"https://127.0.0.1:{port}/", ssl=wrong):
                pass
        assert "is spiffe://atb.local/svc/gateway, not spiffe://atb.local/svc/broker" in str(refused.value.os_error)
    finally:
        await runner.cleanup()
    assert seen == [AGENT]
