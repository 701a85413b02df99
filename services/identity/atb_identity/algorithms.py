"""Which signature an SVID key makes, as a JWS `alg`, and the raw sign/verify for each.

An X.509-SVID may carry any key its issuer chose: the project's dev CA issues
Ed25519 ones, SPIRE issues EC P-256 by default and, when configured, EC P-384,
RSA-2048 or RSA-4096. A proof of origin names its algorithm, but a verifier
never takes it from the proof alone: `alg_for_key` derives the one algorithm
the leaf certificate's key allows, and the proof must name exactly that one
(RFC 8725 §3.1).

    key in the leaf            alg       signature bytes
    Ed25519                    Ed25519   64 (RFC 8032), the format of every proof so far
    EC P-256                   ES256     64: R || S, each 32 bytes big-endian (RFC 7518 §3.4)
    EC P-384                   ES384     96: R || S, each 48 bytes
    RSA, 2048 to 4096 bits     RS256     the modulus length, PKCS #1 v1.5 with SHA-256

ECDSA signatures are made and accepted only in their low-S form (S <= n/2), so a
third party cannot turn one valid signature into a second one by negating S.
Any other key (another curve, Ed448, DSA, RSA under 2048 or over 4096 bits) is
refused, as is an algorithm that is not in the table (such as `none`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes, PrivateKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from atb_identity.errors import BadSignatureError, MalformedSignatureError, UnsupportedAlgorithmError

__all__ = [
    "ED25519",
    "ES256",
    "ES384",
    "MAX_RSA_BITS",
    "MIN_RSA_BITS",
    "PROOF_ALGS",
    "RS256",
    "ProofAlg",
    "SvidPrivateKey",
    "SvidPublicKey",
    "alg_for_key",
    "check_private_key",
    "sign",
    "signature_length",
    "verify",
]

ProofAlg = Literal["Ed25519", "ES256", "ES384", "RS256"]
"""A proof's `alg` (as `contracts.Proof.alg`)."""

ED25519: Final = "Ed25519"
ES256: Final = "ES256"
ES384: Final = "ES384"
RS256: Final = "RS256"
PROOF_ALGS: Final = frozenset({ED25519, ES256, ES384, RS256})
MIN_RSA_BITS: Final = 2048
MAX_RSA_BITS: Final = 4096

SvidPrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
SvidPublicKey = Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey


@dataclass(frozen=True)
class _Curve:
    alg: ProofAlg
    size: int  # bytes of R and of S
    order: int
    hash: type[hashes.SHA256] | type[hashes.SHA384]


_CURVES: Final[dict[str, _Curve]] = {
    ec.SECP256R1.name: _Curve(
        ES256, 32, 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551, hashes.SHA256
    ),
    ec.SECP384R1.name: _Curve(
        ES384,
        48,
        0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973,
        hashes.SHA384,
    ),
}


def _curve(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> _Curve:
    curve = _CURVES.get(key.curve.name)
    if curve is None:
        raise UnsupportedAlgorithmError(f"EC curve {key.curve.name} is not supported (P-256 or P-384)")
    return curve


def _check_rsa_size(bits: int) -> None:
    if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
        raise UnsupportedAlgorithmError(f"an RSA key of {bits} bits is outside {MIN_RSA_BITS}-{MAX_RSA_BITS}")


def alg_for_key(key: CertificatePublicKeyTypes | PrivateKeyTypes) -> ProofAlg:
    """The one proof algorithm `key` (public or private) signs with; UnsupportedAlgorithmError for any other key."""
    if isinstance(key, Ed25519PublicKey | Ed25519PrivateKey):
        return ED25519
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return _curve(key).alg
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        _check_rsa_size(key.key_size)
        return RS256
    raise UnsupportedAlgorithmError(f"a {type(key).__name__} cannot sign proofs (Ed25519, EC P-256/P-384 or RSA)")


def check_private_key(key: PrivateKeyTypes) -> SvidPrivateKey:
    """`key` as an SVID key, or UnsupportedAlgorithmError naming why it cannot sign proofs."""
    if not isinstance(key, Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise UnsupportedAlgorithmError(f"a {type(key).__name__} cannot sign proofs (Ed25519, EC P-256/P-384 or RSA)")
    alg_for_key(key)  # the curve or modulus size
    return key


def signature_length(key: SvidPublicKey) -> int:
    """The exact length in bytes of a signature by `key`."""
    if isinstance(key, Ed25519PublicKey):
        return 64
    if isinstance(key, ec.EllipticCurvePublicKey):
        return 2 * _curve(key).size
    return (key.key_size + 7) // 8


def sign(key: SvidPrivateKey, payload: bytes) -> bytes:
    """The raw signature of `payload` (the table above)."""
    if isinstance(key, Ed25519PrivateKey):
        return key.sign(payload)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        curve = _curve(key)
        r, s = decode_dss_signature(key.sign(payload, ec.ECDSA(curve.hash())))
        if s > curve.order // 2:
            s = curve.order - s  # the low-S twin: the only form `verify` accepts
        return r.to_bytes(curve.size, "big") + s.to_bytes(curve.size, "big")
    _check_rsa_size(key.key_size)
    return key.sign(payload, padding.PKCS1v15(), hashes.SHA256())


def verify(key: SvidPublicKey, alg: str, signature: bytes, payload: bytes) -> None:
    """Check `signature` over `payload` with `key`, which must be a key of `alg`; raise the named reason."""
    expected = alg_for_key(key)
    if alg != expected:
        raise UnsupportedAlgorithmError(f"the proof names {alg!r}, but the leaf's key signs {expected} only")
    if len(signature) != signature_length(key):
        raise MalformedSignatureError(f"an {alg} signature is {signature_length(key)} bytes, not {len(signature)}")
    try:
        if isinstance(key, Ed25519PublicKey):
            key.verify(signature, payload)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            curve = _curve(key)
            r = int.from_bytes(signature[: curve.size], "big")
            s = int.from_bytes(signature[curve.size :], "big")
            if not (0 < r < curve.order and 0 < s <= curve.order // 2):
                raise MalformedSignatureError(f"the {alg} signature is not in its canonical low-S form")
            key.verify(encode_dss_signature(r, s), payload, ec.ECDSA(curve.hash()))
        else:
            key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature as exc:
        raise BadSignatureError("the proof signature does not match the event's canonical bytes") from exc
