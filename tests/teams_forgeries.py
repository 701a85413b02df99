"""A corpus of forged Teams activities: every one must be refused by the Bot Framework token rules.

Built from the stand-in (its signing key, app id and serviceUrl) and one valid
`adaptiveCard/action` invoke; each forgery changes one thing and names the rule
(`TokenError.code`) that must refuse it: no or malformed token, alg none, HS256
keyed with the public key, other algorithms, wrong issuer or audience, expired
(beyond the leeway), not yet valid, unknown `kid`, a key of the set not endorsed
for msteams, a key of the wrong signer, tampered signature or claims, the
serviceUrl of the token not the activity's, the activity's channel not Teams.
Shared by the unit test (the validator alone) and the end-to-end test (the chat
service over HTTP, where each is also audited). Replays, unknown users and
display-name spoofing need the service's store and directory: the tests add them.
"""

from __future__ import annotations

import base64
import hmac
import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from atb.dev.teams_standin import ENDORSED_KID, ISSUER, OTHER_KID, TeamsStandIn, invoke_activity

__all__ = ["TeamsForgery", "teams_forgeries"]


@dataclass(frozen=True)
class TeamsForgery:
    name: str
    activity: dict[str, Any]
    token: str | None
    """The bearer token (None: no Authorization header)."""
    code: str
    """The rule that must refuse it."""
    authorization: str | None = None
    """A raw Authorization header instead of `Bearer <token>`."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_token(header: dict[str, Any], claims: dict[str, Any], sign: bytes | None, alg: str = "sha256") -> str:
    head = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    signature = hmac.new(sign, head.encode(), alg).digest() if sign is not None else b""
    return head + "." + _b64(signature)


def teams_forgeries(standin: TeamsStandIn, request_id: str, aad_object_id: str) -> list[TeamsForgery]:
    def activity(**extra: Any) -> dict[str, Any]:
        return invoke_activity(
            aad_object_id=aad_object_id,
            request_id=request_id,
            verb="atb_approve",
            service_url=standin.service_url,
            app_id=standin.app_id,
            **extra,
        )

    out: list[TeamsForgery] = []
    good = standin.sign_token()
    claims = json.loads(base64.urlsafe_b64decode(good.split(".")[1] + "=="))
    public_pem = standin.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # No usable token.
    for name, header in (
        ("no_authorization", None),
        ("basic_scheme", f"Basic {good}"),
        ("bearer_empty", "Bearer "),
        ("bearer_only", "Bearer"),
        ("token_without_scheme", good),
    ):
        out.append(TeamsForgery(name, activity(), None, "missing_token", header))
    for i, garbage in enumerate(("x", "a.b", "a.b.c", "....", "e30.e30", "%%%.%%%.%%%", "e30" * 50)):
        out.append(TeamsForgery(f"garbage_{i}", activity(), garbage, "malformed_token"))
    # Algorithms other than RS256: refused before any key is consulted.
    out.append(
        TeamsForgery(
            "alg_none", activity(), _raw_token({"alg": "none", "kid": ENDORSED_KID}, claims, None), "bad_algorithm"
        )
    )
    out.append(
        TeamsForgery(
            "alg_none_no_kid", activity(), _raw_token({"alg": "none", "typ": "JWT"}, claims, None), "bad_algorithm"
        )
    )
    for alg, digest in (("HS256", "sha256"), ("HS384", "sha384"), ("HS512", "sha512")):
        for kid in (ENDORSED_KID, OTHER_KID, "unknown"):
            token = _raw_token({"alg": alg, "kid": kid, "typ": "JWT"}, claims, public_pem, digest)
            out.append(TeamsForgery(f"{alg}_public_key_{kid}", activity(), token, "bad_algorithm"))
    for alg in ("RS384", "RS512", "PS256", "PS512"):
        out.append(TeamsForgery(f"alg_{alg}", activity(), standin.sign_token(algorithm=alg), "bad_algorithm"))
    for alg in ("rs256", "RS256 ", "none ", "None", ""):
        token = _raw_token({"alg": alg, "kid": ENDORSED_KID}, claims, b"k")
        out.append(
            TeamsForgery(f"alg_spelling_{alg.strip() or 'empty'}_{len(out)}", activity(), token, "bad_algorithm")
        )
    # Keys: not named, unknown, not endorsed for msteams, not the signer's.
    no_kid = _raw_token({"alg": "RS256"}, claims, b"k")
    out.append(TeamsForgery("no_kid", activity(), no_kid, "missing_kid"))
    for i in range(5):
        out.append(TeamsForgery(f"unknown_kid_{i}", activity(), standin.sign_token(kid=f"rotated-{i}"), "unknown_kid"))
    for i in range(5):
        out.append(
            TeamsForgery(f"unendorsed_key_{i}", activity(), standin.sign_token(kid=OTHER_KID), "missing_endorsement")
        )
    strangers = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]
    for i in range(10):
        token = standin.sign_token(key=strangers[i % 2], extra={"jti": f"stranger-{i}"})
        out.append(TeamsForgery(f"stranger_key_{i}", activity(), token, "bad_signature"))
    out.append(
        TeamsForgery(
            "other_key_under_endorsed_kid", activity(), standin.sign_token(key=standin.other_key), "bad_signature"
        )
    )
    # Tampering: a flipped signature character, claims changed under the old signature.
    head, payload, signature = good.split(".")
    for i in range(min(len(signature) - 2, 50)):
        flipped = signature[:i] + ("A" if signature[i] != "A" else "B") + signature[i + 1 :]
        out.append(TeamsForgery(f"signature_char_{i}", activity(), f"{head}.{payload}.{flipped}", "bad_signature"))
    for name, change in (
        ("aud", {"aud": "someone-else"}),
        ("exp", {"exp": claims["exp"] + 86_400}),
        ("serviceUrl", {"serviceUrl": "https://attacker.example/"}),
        ("iss", {"iss": ISSUER + "/"}),
        ("extra_claim", {"admin": True}),
    ):
        forged = _b64(json.dumps({**claims, **change}).encode())
        out.append(TeamsForgery(f"tampered_{name}", activity(), f"{head}.{forged}.{signature}", "bad_signature"))
    # Issuer and audience.
    for i, issuer in enumerate(
        (
            "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/",
            "https://login.microsoftonline.com/common/v2.0",
            ISSUER + "/",
            ISSUER.upper(),
            "http://api.botframework.com",
            "https://api.botframework.com.attacker.example",
            "https://api.botframework.co",
            "",
        )
    ):
        out.append(TeamsForgery(f"wrong_issuer_{i}", activity(), standin.sign_token(issuer=issuer), "wrong_issuer"))
    for i, audience in enumerate(
        (
            "00000000-0000-4000-8000-000000000bad",
            standin.app_id.upper() + "x",
            standin.app_id + " ",
            f"api://{standin.app_id}",
            "https://api.botframework.com",
            "",
            "*",
        )
    ):
        out.append(
            TeamsForgery(f"wrong_audience_{i}", activity(), standin.sign_token(audience=audience), "wrong_audience")
        )
    # Time: expired beyond the leeway (60 s), or not valid yet.
    for i, seconds in enumerate((-61, -90, -300, -301, -3600, -86_400, -(10**8))):
        out.append(TeamsForgery(f"expired_{i}", activity(), standin.sign_token(expires_in=seconds), "expired"))
    for i, ahead in enumerate((120, 3600)):
        token = standin.sign_token(extra={"nbf": int(claims["iat"]) + ahead, "exp": int(claims["exp"]) + ahead})
        out.append(TeamsForgery(f"not_yet_valid_{i}", activity(), token, "not_yet_valid"))
    # serviceUrl: the token's is not the activity's (either one changed).
    service = standin.service_url
    for i, url in enumerate(
        (
            "https://smba.trafficmanager.net/emea/",
            service.rstrip("/"),
            service + "/",
            service.replace("http://", "https://"),
            service.upper(),
            service + "?x=1",
            "",
        )
    ):
        out.append(
            TeamsForgery(
                f"token_service_url_{i}", activity(), standin.sign_token(service_url=url), "service_url_mismatch"
            )
        )
        if url:
            tampered = activity()
            tampered["serviceUrl"] = url
            out.append(TeamsForgery(f"activity_service_url_{i}", tampered, good, "service_url_mismatch"))
    no_service_url = standin.sign_token(extra={"serviceUrl": None})
    out.append(TeamsForgery("token_without_service_url", activity(), no_service_url, "service_url_mismatch"))
    # The activity claims another channel (a key endorsed for it would not sign Teams).
    for i, channel in enumerate(("webchat", "directline", "emulator", "MSTEAMS", "")):
        tampered = activity()
        tampered["channelId"] = channel
        out.append(TeamsForgery(f"channel_{i}", tampered, good, "wrong_channel"))
    return out
