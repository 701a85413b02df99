"""A negative corpus of crafted PoAs through the broker's whole decision path (RFC 8725).

Every token goes through `Authorizer.decide_many` with real Ed25519 keys, the
real verifier, binding checks, revocation list, connector registry and a real
SQLite spent store; only OPA is replaced by an always-allow stand-in (the policy
has its own tests in opa/policy/ and on the real OPA in tests/e2e). Each
crafted token must be denied with its own reason code, and the untouched token
must be allowed, so the corpus cannot pass by denying everything.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.adapters.keys import KeyRing
from broker.adapters.revocations import RevocationList
from broker.adapters.spent import SpentStore
from broker.adapters.verify import PoaVerifier
from broker.domain import Connector, ConnectorRegistry, Outcome, PolicyDecision, Presentation
from broker.service import Authorizer, outcome_events
from contracts import (
    ActionRequested,
    AuditEvent,
    BrokerDecision,
    DigestFields,
    PoaClaims,
    PoaRevoked,
    Tier,
    decode_envelope,
    payload_of,
    request_digest,
)
from contracts.agents import AgentRegistry, RegisteredAgent
from contracts.reasons import Reason, ReasonCode
from issuer.adapters.keys import SigningKey, load_or_create_key

ISSUER = "spiffe://atb.local/svc/issuer"
AUDIENCE = "spiffe://atb.local/svc/broker"
AGENT = "spiffe://atb.local/agent/crm-bot"
THUMB = "C" * 43
LEEWAY = 10

ACTION = ActionRequested(
    request_id="req-corpus-1",
    action_id="act-1",
    agent_id=AGENT,
    tenant="acme",
    action="crm.contact.update",
    resource="crm:contact/42",
    params={"email": "new@example.com"},
    requested_at=datetime(2026, 1, 1, tzinfo=UTC),
)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: object) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def digest_of(action: ActionRequested, body: dict[str, Any] | None = None) -> str:
    """The v2 digest the issuer would have signed for `action` with the claims' `leg` and `cnf`."""
    claims_of = PoaClaims.model_validate(body or claims())
    return request_digest(DigestFields.of_presentation(action, claims_of))


def claims(**changes: object) -> dict[str, Any]:
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": ISSUER,
        "sub": AGENT,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 120,
        "jti": "corpus-" + hashlib.sha256(str(time.perf_counter_ns()).encode()).hexdigest()[:24],
        "act": ACTION.action,
        "res": ACTION.resource,
        "req_digest": "sha256:" + "0" * 64,  # replaced below by the digest of this body
        "req_id": ACTION.request_id,
        "tier": "medium",
        "leg": {
            "basis": "LI",
            "ref": "LI-2024-001",
            "jurisdiction": "US",
            "accountable_party": {"type": "employee", "id": "emp-100"},
            "approval": {"approver_id": "alice", "approved_at": "2026-01-01T00:00:00Z"},
        },
        "cnf": {"x5t#S256": THUMB},
        "ver": 1,
    }
    with contextlib.suppress(ValueError):  # a body that is not a valid claim set has no digest of its own
        body["req_digest"] = request_digest(DigestFields.of_presentation(ACTION, PoaClaims.model_validate(body)))
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def header(key: SigningKey, **changes: object) -> dict[str, Any]:
    h: dict[str, Any] = {"alg": "EdDSA", "typ": "poa+jwt", "kid": key.kid}
    h.update(changes)
    return {k: v for k, v in h.items() if v is not None}


def by_hand(
    key: SigningKey, head: dict[str, Any], body: dict[str, Any], signer: Ed25519PrivateKey | None = None
) -> str:
    signing_input = b64json(head) + "." + b64json(body)
    return signing_input + "." + b64url((signer or key.private).sign(signing_input.encode()))


def good(key: SigningKey, **changes: object) -> str:
    return by_hand(key, header(key), claims(**changes))


def hmac_token(key: SigningKey, alg: str, secret: bytes) -> str:
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signing_input = b64json(header(key, alg=alg)) + "." + b64json(claims())
    return signing_input + "." + b64url(hmac.new(secret, signing_input.encode(), digest).digest())


def foreign_alg(key: SigningKey, alg: str) -> str:
    """A token really signed with another algorithm (RSA or ECDSA key of the attacker's own)."""
    if alg.startswith(("RS", "PS")):
        private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        private = ec.generate_private_key({"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1()}[alg])
    return jwt.encode(claims(), private, algorithm=alg, headers={"typ": "poa+jwt", "kid": key.kid})


def unsigned(key: SigningKey, alg: object) -> str:
    return b64json(header(key, alg=alg)) + "." + b64json(claims()) + "."


def flip(token: str, part: int, index: int) -> str:
    pieces = token.split(".")
    text = pieces[part]
    i = index % (len(text) - 1)  # never the last character (its low bits may be padding)
    pieces[part] = text[:i] + ("A" if text[i] != "A" else "B") + text[i + 1 :]
    return ".".join(pieces)


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def twin(token: str, part: int, bits: int) -> str:
    """The same token with `bits` set in the unused low bits of a part's last character (decodes the same)."""
    pieces = token.split(".")
    text = pieces[part]
    unused = {2: 4, 3: 2}[len(text) % 4]
    assert 0 < bits < 1 << unused
    pieces[part] = text[:-1] + _ALPHABET[_ALPHABET.index(text[-1]) | bits]
    pad = "=" * (-len(text) % 4)
    assert base64.urlsafe_b64decode(pieces[part] + pad) == base64.urlsafe_b64decode(text + pad)
    return ".".join(pieces)


def cut_signature(token: str, keep: int) -> str:
    head, body, sig = token.split(".")
    return ".".join((head, body, sig[:keep]))


def public_forms(key: SigningKey) -> list[tuple[str, bytes]]:
    public = key.private.public_key()
    return [
        ("PEM", public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)),
        ("raw", public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)),
        ("jwk x", key.jwk["x"].encode()),
    ]


@dataclass(frozen=True)
class Case:
    id: str
    token: Callable[..., str]
    """Called with the signing key; loop values ride in default arguments."""
    code: str
    presentation: Callable[[Presentation], Presentation] = lambda p: p


def _cases() -> list[Case]:
    cases: list[Case] = []
    add = cases.append
    # 1. Algorithms: only EdDSA, whatever the spelling or the trick.
    for alg in ("none", "None", "NONE", "nOnE", "", "eddsa", "EDDSA", "Ed25519", "ES256K", "HS256", "RS1"):
        add(Case(f"unsigned alg {alg!r}", lambda k, a=alg: unsigned(k, a), "alg_not_allowed"))
    add(Case("alg null", lambda k: unsigned(k, None), "alg_not_allowed"))
    add(Case("alg as a list", lambda k: by_hand(k, header(k, alg=["EdDSA"]), claims()), "alg_not_allowed"))
    for alg in ("HS256", "HS384", "HS512"):
        for form in ("PEM", "raw", "jwk x"):
            add(
                Case(
                    f"{alg} keyed with the public key ({form})",
                    lambda k, a=alg, f=form: hmac_token(k, a, dict(public_forms(k))[f]),
                    "alg_not_allowed",
                )
            )
    for alg in ("RS256", "PS256", "ES256", "ES384"):
        add(Case(f"really signed with {alg}", lambda k, a=alg: foreign_alg(k, a), "alg_not_allowed"))
    # 2. Headers that would make us fetch or trust a key from the token itself.
    hostile_urls = ("https://evil.example/jwks.json", "http://127.0.0.1:18181/v1/data", "file:///etc/passwd")
    for name in ("jku", "x5u"):
        for url in hostile_urls:
            add(
                Case(
                    f"{name} {url}",
                    lambda k, n=name, u=url: by_hand(k, header(k, **{n: u}), claims()),
                    "forbidden_header",
                )
            )
    add(Case("embedded jwk (ours)", lambda k: by_hand(k, header(k, jwk=k.jwk), claims()), "forbidden_header"))
    add(
        Case(
            "embedded jwk (attacker's) signing",
            lambda k: _self_signed_with_embedded_jwk(k),
            "forbidden_header",
        )
    )
    add(Case("x5c chain", lambda k: by_hand(k, header(k, x5c=["MIIBszCCAVmgAwIBAgIU"]), claims()), "forbidden_header"))
    add(Case("x5c empty", lambda k: by_hand(k, header(k, x5c=[]), claims()), "forbidden_header"))
    add(Case("crit exp", lambda k: by_hand(k, header(k, crit=["exp"]), claims()), "forbidden_header"))
    add(
        Case(
            "crit unknown",
            lambda k: by_hand(k, header(k, crit=["x-poa"], **{"x-poa": 1}), claims()),
            "forbidden_header",
        )
    )
    # 3. kid: only selects among keys we hold; anything else is unknown.
    hostile_kids = (
        "unknown-kid",
        "../../../../etc/passwd",
        "' OR '1'='1",
        "${jndi:ldap://evil.example/a}",
        "https://evil.example/key",
        "*",
        "%00",
        "kid\nX-Injected: 1",
        "\u202ekid",
        "",
        "k" * 10_000,
    )
    for kid in hostile_kids:
        add(Case(f"kid {kid[:24]!r}", lambda k, d=kid: by_hand(k, header(k, kid=d), claims()), "unknown_kid"))
    add(Case("kid in upper case", lambda k: by_hand(k, header(k, kid=k.kid.upper()), claims()), "unknown_kid"))
    add(Case("kid with a space", lambda k: by_hand(k, header(k, kid=k.kid + " "), claims()), "unknown_kid"))
    add(Case("no kid", lambda k: by_hand(k, header(k, kid=None), claims()), "unknown_kid"))
    for odd_kid in (7, ["a"], {"a": 1}):
        add(
            Case(
                f"kid of type {type(odd_kid).__name__}",
                lambda k, v=odd_kid: by_hand(k, header(k, kid=v), claims()),
                "malformed",
            )
        )
    # 4. typ: explicit typing (RFC 8725 §3.11).
    for typ in ("JWT", "jwt", "at+jwt", "POA+JWT", "poa+jwt ", "application/poa+jwt", "poa", "secevent+jwt"):
        add(Case(f"typ {typ!r}", lambda k, t=typ: by_hand(k, header(k, typ=t), claims()), "wrong_typ"))
    add(Case("no typ", lambda k: by_hand(k, header(k, typ=None), claims()), "wrong_typ"))
    add(Case("typ number", lambda k: by_hand(k, header(k, typ=1), claims()), "wrong_typ"))
    # 5. Audience and issuer.
    add(Case("aud empty", lambda k: good(k, aud=""), "wrong_audience"))
    add(Case("aud empty list", lambda k: good(k, aud=[]), "wrong_audience"))
    for aud in ("spiffe://atb.local/svc/other", "spiffe://atb.local/svc/broker/", "SPIFFE://atb.local/svc/broker"):
        add(Case(f"aud {aud!r}", lambda k, a=aud: good(k, aud=a), "wrong_audience"))
    add(Case("aud list without us", lambda k: good(k, aud=[ISSUER]), "wrong_audience"))
    for iss in ("spiffe://evil.example/svc/issuer", "spiffe://atb.local/svc/gateway", ISSUER.upper(), ""):
        add(Case(f"iss {iss!r}", lambda k, i=iss: good(k, iss=i), "wrong_issuer"))
    # 6. Time.
    for ago in (LEEWAY + 5, 100, 3600, 86_400 * 365):
        add(
            Case(
                f"expired {ago}s ago",
                lambda k, a=ago: good(
                    k, iat=int(time.time()) - a - 60, nbf=int(time.time()) - a - 60, exp=int(time.time()) - a
                ),
                "expired",
            )
        )
    for ahead in (LEEWAY + 5, 120, 3600):
        add(
            Case(
                f"nbf {ahead}s ahead",
                lambda k, a=ahead: good(k, nbf=int(time.time()) + a, exp=int(time.time()) + a + 60),
                "not_yet_valid",
            )
        )
    add(Case("lives longer than 5 min", lambda k: good(k, exp=int(time.time()) + 3600), "invalid_claims"))
    add(Case("iat after nbf", lambda k: good(k, iat=int(time.time()) + 5), "invalid_claims"))
    # 7. Signature.
    for index in (0, 3, 17, 40, 99, 150, 222, 333, 444, 555):
        add(Case(f"payload byte flipped at {index}", lambda k, i=index: flip(good(k), 1, i), "bad_signature"))
    for index in (2, 10, 20, 30, 40, 50, 60, 70, 80):
        add(Case(f"signature char flipped at {index}", lambda k, i=index: flip(good(k), 2, i), "bad_signature"))
    for keep in (0, 4, 8, 40, 64, 80, 84):
        add(Case(f"signature cut to {keep} chars", lambda k, n=keep: cut_signature(good(k), n), "bad_signature"))
    add(Case("signature one char short", lambda k: cut_signature(good(k), 85), "malformed"))
    # Non-canonical base64url: an Ed25519 signature is 86 characters, the last one with 4 unused
    # bits. With them set, 15 other strings decode to the same signature: all 16 spellings but the
    # canonical one are refused, so nothing keyed on the token's text can be presented twice.
    for bits in range(1, 16):
        add(Case(f"signature trailing-bit twin {bits}", lambda k, b=bits: twin(good(k), 2, b), "malformed"))
    add(Case("header trailing-bit twin", lambda k: twin(_header_of_length(k, 2), 0, 1), "malformed"))
    add(Case("payload trailing-bit twin", lambda k: twin(_payload_of_length(k, 3), 1, 1), "malformed"))
    add(
        Case(
            "signed by another key under our kid",
            lambda k: by_hand(k, header(k), claims(), Ed25519PrivateKey.generate()),
            "bad_signature",
        )
    )
    add(Case("signature of another token spliced on", lambda k: _spliced(k), "bad_signature"))
    add(Case("header swapped after signing", lambda k: _header_swapped(k), "bad_signature"))
    # 8. Claims that must be there and be well-formed.
    for name in ("jti", "exp", "nbf", "iat", "sub", "iss", "aud"):
        add(Case(f"missing {name}", lambda k, n=name: good(k, **{n: None}), "invalid_token"))
    for name in ("act", "res", "req_digest", "req_id", "tier", "leg"):
        add(Case(f"missing {name}", lambda k, n=name: good(k, **{n: None}), "invalid_claims"))
    bad_values: tuple[tuple[str, object], ...] = (
        ("jti", "short"),
        ("ver", 2),
        ("tier", "trivial"),
        ("sub", "agent-without-spiffe"),
        ("req_digest", "md5:abc"),
        ("cnf", {"x5t#S256": "short"}),
        ("leg", {"basis": "LI"}),
        ("extra", "claim"),
    )
    for name, bad in bad_values:
        add(Case(f"bad {name} {bad!r}", lambda k, n=name, v=bad: good(k, **{n: v}), "invalid_claims"))
    for name, odd in (("exp", "9999999999"), ("nbf", True), ("iat", 1.5)):
        add(Case(f"{name} of type {type(odd).__name__}", lambda k, n=name, v=odd: good(k, **{n: v}), "invalid_token"))
    add(Case("signed payload that is not JSON", lambda k: _signed_raw(k, b"not json"), "invalid_token"))
    add(Case("signed payload that is a JSON list", lambda k: _signed_raw(k, b"[1,2]"), "invalid_token"))
    # 9. A good token, presented in the wrong place: binding to agent, certificate and exact action.
    other = "spiffe://atb.local/agent/other-bot"
    add(
        Case(
            "someone else's token",
            good,
            "sub_mismatch",
            lambda p: replace(p, agent_id=other, action=ACTION.model_copy(update={"agent_id": other})),
        )
    )
    add(
        Case(
            "token for another action",
            good,
            "action_mismatch",
            lambda p: replace(p, action=ACTION.model_copy(update={"action": "crm.lead.create"})),
        )
    )
    add(
        Case(
            "token for another resource",
            good,
            "resource_mismatch",
            lambda p: replace(p, action=ACTION.model_copy(update={"resource": "crm:contact/43"})),
        )
    )
    add(
        Case(
            "token with other parameters",
            good,
            "digest_mismatch",
            lambda p: replace(p, action=ACTION.model_copy(update={"params": {"email": "evil@example.com"}})),
        )
    )
    add(
        Case(
            "token for another tenant",
            good,
            "digest_mismatch",
            lambda p: replace(p, action=ACTION.model_copy(update={"tenant": "globex"})),
        )
    )
    add(
        Case(
            "token of another request",
            good,
            "request_mismatch",
            lambda p: replace(p, action=ACTION.model_copy(update={"request_id": "req-other"})),
        )
    )
    add(
        Case("presented with another certificate", good, "cnf_mismatch", lambda p: replace(p, cert_thumbprint="D" * 43))
    )
    add(Case("presented with no certificate", good, "cnf_unproven", lambda p: replace(p, cert_thumbprint=None)))
    add(Case("token without cnf", lambda k: good(k, cnf=None), "cnf_missing"))
    # 10. Revoked, and routed nowhere.
    add(Case("revoked jti", lambda k: good(k, jti="revoked-jti-000000000001"), "poa_revoked"))
    add(
        Case(
            "revoked request",
            lambda k: good(k, req_id=REVOKED_REQUEST, req_digest=digest_of(_revoked_request_action())),
            "poa_revoked",
            lambda p: replace(p, action=_revoked_request_action()),
        )
    )
    add(
        Case(
            "action no connector serves",
            good,
            "connector_unknown",
            lambda p: replace(p, action=ACTION.model_copy(update={"action": "weather.today.read"})),
        )
    )
    add(
        Case(
            "resource outside the egress allowlist",
            good,
            "egress_denied",
            lambda p: replace(p, action=ACTION.model_copy(update={"resource": "https://evil.example/x"})),
        )
    )
    add(Case("connector named wrongly", good, "connector_mismatch", lambda p: replace(p, connector="sap")))
    # 11. Not a JWT at all.
    add(Case("empty header object", lambda k: "e30.e30.", "alg_not_allowed"))
    garbage = ("", "a", "a.b", "a.b.c.d", "....", "not-a-jwt", "\u00e9.\u00e9.\u00e9", "eyJ" * 3000)
    for junk in garbage:
        add(Case(f"garbage {junk[:12]!r}", lambda k, v=junk: v, "malformed"))
    return cases


REVOKED_REQUEST = "req-revoked-1"


def _revoked_request_action() -> ActionRequested:
    return ACTION.model_copy(update={"request_id": REVOKED_REQUEST})


def _self_signed_with_embedded_jwk(key: SigningKey) -> str:
    attacker = Ed25519PrivateKey.generate()
    raw = attacker.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
    return by_hand(key, header(key, jwk=jwk), claims(), attacker)


def _header_of_length(key: SigningKey, tail: int) -> str:
    """A valid token whose header's base64url length is `tail` mod 4 (padded with an unread member)."""
    for pad in range(3):
        token = by_hand(key, header(key, x_pad="p" * pad), claims())
        if len(token.split(".")[0]) % 4 == tail:
            return token
    raise AssertionError("unreachable")


def _payload_of_length(key: SigningKey, tail: int) -> str:
    """A valid token whose payload's base64url length is `tail` mod 4 (the jti lengthened)."""
    for pad in range(3):
        token = good(
            key, jti="corpus-twin-" + "0" * pad + hashlib.sha256(str(time.perf_counter_ns()).encode()).hexdigest()[:24]
        )
        if len(token.split(".")[1]) % 4 == tail:
            return token
    raise AssertionError("unreachable")


def _signed_raw(key: SigningKey, payload: bytes) -> str:
    signing_input = b64json(header(key)) + "." + b64url(payload)
    return signing_input + "." + b64url(key.private.sign(signing_input.encode()))


def _spliced(key: SigningKey) -> str:
    a, b = good(key), good(key, res="crm:contact/1")
    return ".".join(a.split(".")[:2] + b.split(".")[2:])


def _header_swapped(key: SigningKey) -> str:
    token = good(key)
    _, body, sig = token.split(".")
    return ".".join((b64json(header(key, extra="x")), body, sig))


CASES = _cases()


class AllowPolicy:
    async def decide(self, items: Sequence[tuple[Presentation, PoaClaims | None]]) -> list[PolicyDecision]:
        return [PolicyDecision(True, (), Tier.MEDIUM, "test") for _ in items]


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return load_or_create_key(tmp_path_factory.mktemp("key") / "issuer.pem")


@pytest.fixture
def authorizer(key: SigningKey, tmp_path: Path) -> Authorizer:
    ring = KeyRing("localhost:1", "")  # never started: no Kafka
    ring.add(key.kid, key.jwk)
    revocations = RevocationList("localhost:1", "")
    now = datetime.now(UTC)
    revocations.add(
        PoaRevoked(
            request_id="req-x", jti="revoked-jti-000000000001", reason="stolen", revoked_by="ops", revoked_at=now
        )
    )
    revocations.add(
        PoaRevoked(request_id=REVOKED_REQUEST, jti="*", reason="withdrawn", revoked_by="ops", revoked_at=now)
    )
    registry = ConnectorRegistry(
        (
            Connector("salesforce", ("crm.*",), frozenset({"acme.my.salesforce.com"})),
            Connector("sap", ("sap.*",), frozenset()),
        )
    )
    return Authorizer(
        verifier=PoaVerifier(ring, audience=AUDIENCE, issuer=ISSUER, leeway_s=LEEWAY),
        keys=ring,
        revocations=revocations,
        policy=AllowPolicy(),
        spent=SpentStore(f"sqlite:///{tmp_path / 'spent.db'}"),
        registry=registry,
        # Two tenants: "token for another tenant" is the digest's refusal, not the registry's.
        agents=AgentRegistry(
            (
                RegisteredAgent(AGENT, frozenset({"acme", "globex"})),
                RegisteredAgent("spiffe://atb.local/agent/other-bot", frozenset({"acme"})),  # "someone else's token"
            )
        ),
    )


def _present(action: ActionRequested, token: str | None, presentation_id: str = "http:1") -> Presentation:
    return Presentation(action.model_copy(update={"poa": token}), AGENT, THUMB, presentation_id, "http")


def _decide(authorizer: Authorizer, presentation: Presentation) -> Outcome:
    return asyncio.run(authorizer.decide_many([presentation])).outcomes[0]


def test_the_corpus_is_large_and_names_are_unique() -> None:
    assert len(CASES) >= 100
    assert len({c.id for c in CASES}) == len(CASES)


def test_the_untouched_token_is_allowed(key: SigningKey, authorizer: Authorizer) -> None:
    outcome = _decide(authorizer, _present(ACTION, good(key)))
    assert outcome.allowed, outcome.verdict.reasons


@pytest.mark.parametrize("make", [lambda k: _header_of_length(k, 2), lambda k: _payload_of_length(k, 3)])
def test_the_tokens_the_twins_are_made_from_are_allowed(
    key: SigningKey, authorizer: Authorizer, make: Callable[[SigningKey], str]
) -> None:
    outcome = _decide(authorizer, _present(ACTION, make(key)))
    assert outcome.allowed, outcome.verdict.reasons


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_crafted_token_is_denied_with_its_reason(key: SigningKey, authorizer: Authorizer, case: Case) -> None:
    token = case.token(key)
    presentation = case.presentation(_present(ACTION, token))
    # The token is carried by the action the modifier may have replaced.
    presentation = replace(presentation, action=presentation.action.model_copy(update={"poa": token}))
    outcome = _decide(authorizer, presentation)
    assert not outcome.allowed
    assert outcome.verdict.codes[0] == case.code, outcome.verdict.reasons


def test_a_spent_token_is_a_replay(key: SigningKey, authorizer: Authorizer) -> None:
    token = good(key)
    first = _decide(authorizer, _present(ACTION, token, "http:a"))
    again = _decide(authorizer, _present(ACTION, token, "http:b"))
    redelivered = _decide(authorizer, _present(ACTION, token, "http:a"))
    assert first.allowed
    assert again.verdict.codes[0] is ReasonCode.POA_SINGLE_USE_REPLAY_BLOCKED
    assert again.audit_type == "poa_single_use_replay_blocked"
    assert redelivered.allowed  # the same presentation (a redelivered record) gets the same answer


def test_one_batch_with_the_same_token_twice_allows_one(key: SigningKey, authorizer: Authorizer) -> None:
    token = good(key)
    outcomes = asyncio.run(authorizer.decide_many([_present(ACTION, token, f"http:{i}") for i in range(5)])).outcomes
    assert [o.allowed for o in outcomes].count(True) == 1


def test_a_tenant_the_agent_is_not_registered_for_is_denied(key: SigningKey, authorizer: Authorizer) -> None:
    # The fixture's agent acts for acme and globex (config-like registry); initech is not its tenant.
    action = ACTION.model_copy(update={"tenant": "initech"})
    outcome = _decide(authorizer, _present(action, good(key)))
    assert not outcome.allowed
    assert outcome.verdict.codes == (ReasonCode.TENANT_NOT_ALLOWED,)
    assert outcome.audit_type == "broker_action_denied"


def test_an_unregistered_agent_is_denied_for_every_tenant(key: SigningKey, authorizer: Authorizer) -> None:
    stranger = replace(_present(ACTION, good(key)), agent_id="spiffe://atb.local/agent/stranger")
    outcome = _decide(authorizer, stranger)
    assert not outcome.allowed
    assert outcome.verdict.codes == (ReasonCode.TENANT_NOT_ALLOWED,)
    assert "not in the agent registry" in outcome.verdict.reasons[0].detail


class _VersionPerCall:
    """Answers each batch with the next policy revision: v1, v2, ..."""

    def __init__(self) -> None:
        self.calls = 0

    async def decide(self, items: Sequence[tuple[Presentation, PoaClaims | None]]) -> list[PolicyDecision]:
        self.calls += 1
        return [PolicyDecision(True, (), Tier.MEDIUM, f"v{self.calls}") for _ in items]


class _FirstSpendWaits(SpentStore):
    """The first batch's spend waits until released: another batch is answered by the policy meanwhile."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.release = asyncio.Event()
        self.first_waiting = asyncio.Event()
        self._first = True

    async def spend_many(self, spends: Sequence[Any]) -> Any:
        if self._first:
            self._first = False
            self.first_waiting.set()
            await self.release.wait()
        return await super().spend_many(spends)


def test_each_decision_records_the_policy_version_that_answered_its_batch(
    key: SigningKey, authorizer: Authorizer, tmp_path: Path
) -> None:
    spent = _FirstSpendWaits(f"sqlite:///{tmp_path / 'slow.db'}")
    concurrent = Authorizer(
        verifier=authorizer._verifier,
        keys=authorizer._keys,
        revocations=authorizer._revocations,
        policy=_VersionPerCall(),
        spent=spent,
        registry=authorizer._registry,
        agents=authorizer._agents,
    )

    other = ACTION.model_copy(update={"request_id": "req-corpus-2"})
    other_token = good(key, req_id=other.request_id, req_digest=digest_of(other, claims(req_id=other.request_id)))

    async def run() -> tuple[Outcome, Outcome]:
        first = asyncio.create_task(concurrent.decide_many([_present(ACTION, good(key), "http:a")]))
        await spent.first_waiting.wait()  # batch 1 was answered by v1 and is spending
        second = await concurrent.decide_many([_present(other, other_token, "http:b")])  # answered by v2
        spent.release.set()
        return (await first).outcomes[0], second.outcomes[0]

    one, two = asyncio.run(run())
    assert one.allowed
    assert two.allowed
    assert (one.policy_version, two.policy_version) == ("v1", "v2")


class _DenyHigh:
    """The policy says the action is high and the PoA's evidence falls short."""

    async def decide(self, items: Sequence[tuple[Presentation, PoaClaims | None]]) -> list[PolicyDecision]:
        too_low = Reason(ReasonCode.TIER_TOO_LOW, "PoA was issued for medium, the action is high")
        return [PolicyDecision(False, (too_low,), Tier.HIGH, "v9") for _ in items]


def _with_policy(authorizer: Authorizer, policy: Any) -> Authorizer:
    return Authorizer(
        verifier=authorizer._verifier,
        keys=authorizer._keys,
        revocations=authorizer._revocations,
        policy=policy,
        spent=authorizer._spent,
        registry=authorizer._registry,
        agents=authorizer._agents,
    )


def _published(outcome: Outcome) -> tuple[BrokerDecision, AuditEvent]:
    decision, audit = (payload_of(decode_envelope(o.value)) for o in outcome_events(outcome, source=SRC, namespace=""))
    assert isinstance(decision, BrokerDecision)
    assert isinstance(audit, AuditEvent)
    return decision, audit


SRC = "spiffe://atb.local/service/broker"


def test_an_allow_is_published_with_its_code_and_the_policys_tier(key: SigningKey, authorizer: Authorizer) -> None:
    outcome = _decide(authorizer, _present(ACTION, good(key)))
    decision, audit = _published(outcome)
    assert decision.reasons == (Reason(ReasonCode.POA_VALID),)
    assert decision.action_tier is Tier.MEDIUM  # AllowPolicy's tier for the action
    assert audit.audit_type == "broker_action_allowed"
    assert audit.details["reason_codes"] == ["poa_valid"]


def test_a_policy_deny_is_published_as_data_with_the_policys_tier(key: SigningKey, authorizer: Authorizer) -> None:
    outcome = _decide(_with_policy(authorizer, _DenyHigh()), _present(ACTION, good(key)))
    decision, audit = _published(outcome)
    assert decision.codes == (ReasonCode.TIER_TOO_LOW,)
    assert decision.reasons[0].detail == "PoA was issued for medium, the action is high"
    assert (decision.action_tier, decision.policy_version) == (Tier.HIGH, "v9")
    assert audit.details["reason_codes"] == ["tier_too_low"]
    assert audit.reason == "tier_too_low: PoA was issued for medium, the action is high"


def test_a_deny_before_the_policy_records_no_action_tier(key: SigningKey, authorizer: Authorizer) -> None:
    outcome = _decide(authorizer, _present(ACTION.model_copy(update={"resource": "crm:contact/other"}), good(key)))
    decision, audit = _published(outcome)
    assert ReasonCode.RESOURCE_MISMATCH in decision.codes
    assert decision.action_tier is None
    assert audit.details["reason_codes"] == [c.value for c in decision.codes]
