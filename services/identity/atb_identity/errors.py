"""Errors of the identity package: one tree, a stable `code` and a one-line reason each.

    IdentityError                           base; `code` is stable snake_case, `reason` says which rule failed
    ├── InvalidSpiffeIdError                a SPIFFE ID breaks a syntax rule; `code` names the rule
    │   ├── NotSpiffeSchemeError            not_spiffe_scheme
    │   ├── EmptySpiffePathError            empty_path
    │   └── SpiffeIdTooLongError            spiffe_id_too_long
    ├── SvidError                           a chain is not an acceptable X.509-SVID for the bundle
    │   ├── EmptyChainError                 empty_chain
    │   ├── ChainTooLongError               chain_too_long
    │   ├── MalformedCertificateError       malformed_certificate
    │   ├── NoUriSanError                   no_uri_san
    │   ├── MultipleUriSansError            multiple_uri_sans
    │   ├── ForeignTrustDomainError         foreign_trust_domain
    │   ├── LeafIsCaError                   leaf_is_ca
    │   ├── LeafKeyCertSignError            leaf_key_cert_sign
    │   ├── LeafCrlSignError                leaf_crl_sign
    │   ├── MissingDigitalSignatureError    missing_digital_signature
    │   ├── UnhandledCriticalExtensionError unhandled_critical_extension
    │   ├── ValidityError                   a certificate is outside its validity period
    │   │   ├── LeafExpiredError            leaf_expired
    │   │   ├── LeafNotYetValidError        leaf_not_yet_valid
    │   │   ├── IntermediateExpiredError    intermediate_expired
    │   │   ├── IntermediateNotYetValidError intermediate_not_yet_valid
    │   │   ├── RootExpiredError            root_expired
    │   │   └── RootNotYetValidError        root_not_yet_valid
    │   ├── IntermediateNotCaError          intermediate_not_ca
    │   ├── IntermediateKeyUsageError       intermediate_no_key_cert_sign
    │   ├── PathLengthExceededError         path_length_exceeded
    │   ├── IssuerMismatchError             issuer_mismatch
    │   ├── BadCertificateSignatureError    bad_certificate_signature
    │   └── UntrustedIssuerError            untrusted_issuer
    ├── OriginProofError                    an event's proof of origin does not hold
    │   ├── MissingProofError               missing_proof
    │   ├── MalformedX5cError               malformed_x5c
    │   ├── MalformedSignatureError         malformed_signature
    │   ├── UnsupportedAlgorithmError       unsupported_algorithm
    │   ├── BadSignatureError               bad_signature
    │   ├── SourceMismatchError             source_mismatch
    │   └── ClaimNotProvenError             claim_not_proven (valid proof, by neither claimant nor attester)
    ├── TrustBundleError                    bad_trust_bundle
    ├── CredentialError                     bad_credential (an SVID's files or key/chain pair)
    └── PkiError                            pki_state (the dev PKI on disk)

Codes are part of the interface: dead letters and audit records carry them, so a
code is never renamed. Reasons are for humans and may change.
"""

from __future__ import annotations

__all__ = [
    "BadCertificateSignatureError",
    "BadSignatureError",
    "ChainTooLongError",
    "ClaimNotProvenError",
    "CredentialError",
    "EmptyChainError",
    "EmptySpiffePathError",
    "ForeignTrustDomainError",
    "IdentityError",
    "IntermediateExpiredError",
    "IntermediateKeyUsageError",
    "IntermediateNotCaError",
    "IntermediateNotYetValidError",
    "InvalidSpiffeIdError",
    "IssuerMismatchError",
    "LeafCrlSignError",
    "LeafExpiredError",
    "LeafIsCaError",
    "LeafKeyCertSignError",
    "LeafNotYetValidError",
    "MalformedCertificateError",
    "MalformedSignatureError",
    "MalformedX5cError",
    "MissingDigitalSignatureError",
    "MissingProofError",
    "MultipleUriSansError",
    "NoUriSanError",
    "NotSpiffeSchemeError",
    "OriginProofError",
    "PathLengthExceededError",
    "PkiError",
    "RootExpiredError",
    "RootNotYetValidError",
    "SourceMismatchError",
    "SpiffeIdTooLongError",
    "SvidError",
    "TrustBundleError",
    "UnhandledCriticalExtensionError",
    "UnsupportedAlgorithmError",
    "UntrustedIssuerError",
    "ValidityError",
]


class IdentityError(Exception):
    """Base of every identity error: `code` for machines, `reason` for humans."""

    code: str = "identity_error"

    def __init__(self, reason: str) -> None:
        super().__init__(f"{self.code}: {reason}")
        self.reason = reason


# --- SPIFFE ID syntax (spiffe.py) ---------------------------------------------------


class InvalidSpiffeIdError(IdentityError):
    """A SPIFFE ID breaks a rule of the SPIFFE ID standard; `code` names the rule."""

    code = "invalid_spiffe_id"

    def __init__(self, reason: str, *, code: str | None = None) -> None:
        if code is not None:
            self.code = code
        super().__init__(reason)


class NotSpiffeSchemeError(InvalidSpiffeIdError):
    code = "not_spiffe_scheme"


class EmptySpiffePathError(InvalidSpiffeIdError):
    code = "empty_path"


class SpiffeIdTooLongError(InvalidSpiffeIdError):
    code = "spiffe_id_too_long"


# --- X.509-SVID validation (svid.py) ------------------------------------------------


class SvidError(IdentityError):
    """A certificate chain is not an acceptable X.509-SVID for the trust bundle."""

    code = "invalid_svid"


class EmptyChainError(SvidError):
    code = "empty_chain"


class ChainTooLongError(SvidError):
    code = "chain_too_long"


class MalformedCertificateError(SvidError):
    code = "malformed_certificate"


class NoUriSanError(SvidError):
    code = "no_uri_san"


class MultipleUriSansError(SvidError):
    code = "multiple_uri_sans"


class ForeignTrustDomainError(SvidError):
    code = "foreign_trust_domain"


class LeafIsCaError(SvidError):
    code = "leaf_is_ca"


class LeafKeyCertSignError(SvidError):
    code = "leaf_key_cert_sign"


class LeafCrlSignError(SvidError):
    code = "leaf_crl_sign"


class MissingDigitalSignatureError(SvidError):
    code = "missing_digital_signature"


class UnhandledCriticalExtensionError(SvidError):
    code = "unhandled_critical_extension"


class ValidityError(SvidError):
    """A certificate of the chain is outside its validity period at the checked time."""

    code = "outside_validity"


class LeafExpiredError(ValidityError):
    code = "leaf_expired"


class LeafNotYetValidError(ValidityError):
    code = "leaf_not_yet_valid"


class IntermediateExpiredError(ValidityError):
    code = "intermediate_expired"


class IntermediateNotYetValidError(ValidityError):
    code = "intermediate_not_yet_valid"


class RootExpiredError(ValidityError):
    code = "root_expired"


class RootNotYetValidError(ValidityError):
    code = "root_not_yet_valid"


class IntermediateNotCaError(SvidError):
    code = "intermediate_not_ca"


class IntermediateKeyUsageError(SvidError):
    code = "intermediate_no_key_cert_sign"


class PathLengthExceededError(SvidError):
    code = "path_length_exceeded"


class IssuerMismatchError(SvidError):
    code = "issuer_mismatch"


class BadCertificateSignatureError(SvidError):
    code = "bad_certificate_signature"


class UntrustedIssuerError(SvidError):
    code = "untrusted_issuer"


# --- event proofs (proof.py) ----------------------------------------------------------


class OriginProofError(IdentityError):
    """An event's proof of origin is missing or does not hold."""

    code = "invalid_proof"


class MissingProofError(OriginProofError):
    code = "missing_proof"


class MalformedX5cError(OriginProofError):
    code = "malformed_x5c"


class MalformedSignatureError(OriginProofError):
    code = "malformed_signature"


class UnsupportedAlgorithmError(OriginProofError):
    code = "unsupported_algorithm"


class BadSignatureError(OriginProofError):
    code = "bad_signature"


class SourceMismatchError(OriginProofError):
    code = "source_mismatch"


# --- files: bundles, credentials, the dev PKI ---------------------------------------------


class TrustBundleError(IdentityError):
    """A trust bundle is unreadable, empty, or holds a certificate that is no CA."""

    code = "bad_trust_bundle"


class CredentialError(IdentityError):
    """An SVID's files are unreadable, or its key does not belong to its leaf certificate."""

    code = "bad_credential"


class PkiError(IdentityError):
    """The dev PKI on disk is missing, corrupt, expired, or for another trust domain."""

    code = "pki_state"


class ClaimNotProvenError(OriginProofError):
    """The proof is valid, but by someone who neither is the claimed identity nor may attest it."""

    code = "claim_not_proven"
