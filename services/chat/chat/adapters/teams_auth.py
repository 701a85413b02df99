"""The Bot Framework bearer token of an inbound Teams activity, checked completely (PyJWT).

Rules (learn.microsoft.com, "Authenticate requests from the Bot Connector service"):

1. `Authorization: Bearer <JWT>`; anything else is refused.
2. The header's `alg` is RS256, before any key is looked at: `none`, HS256
   (an HMAC "signed" with the public key) and every other algorithm are refused.
3. The key is the one named by `kid` in the JWKS that the OpenID metadata
   document (`ATB_TEAMS_OPENID_METADATA_URL`) points to (`jwks_uri`); an unknown
   `kid` refetches the set once (PyJWKClient), then is refused.
4. That key's `endorsements` include the activity's `channelId`, which must be
   `msteams`: a key Microsoft endorses for another channel does not sign Teams.
5. The signature, `iss` (`https://api.botframework.com`), `aud` (the bot's app
   id) and `exp` / `nbf` with a small leeway (`ATB_TEAMS_TOKEN_LEEWAY_SECONDS`).
6. The token's `serviceUrl` claim equals the activity's `serviceUrl`: a token
   lifted from another conversation's traffic cannot redirect our answers.

The activity body itself is not signed by the protocol: it is bound to the
token only through rule 6, and its id is refused once seen (the chat store).
Keys and metadata are fetched with the standard library (PyJWKClient) in a
worker thread and cached (`lifespan`), so an activity normally costs no fetch.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import PyJWKClient

from chat.errors import TokenError

__all__ = ["BOT_FRAMEWORK_ISSUER", "TEAMS_CHANNEL", "EndorsedKeys", "TokenClaims", "TokenValidator"]

BOT_FRAMEWORK_ISSUER = "https://api.botframework.com"
TEAMS_CHANNEL = "msteams"
_MAX_TOKEN = 8192


@dataclass(frozen=True)
class TokenClaims:
    issuer: str
    audience: str
    service_url: str
    expires_at: int


class EndorsedKeys(PyJWKClient):
    """A PyJWKClient that also keeps each key's `endorsements` (the channels it may sign for)."""

    def __init__(self, uri: str, *, lifespan: float, timeout: float) -> None:
        super().__init__(uri, cache_keys=False, cache_jwk_set=True, lifespan=lifespan, timeout=timeout)
        self._endorsements: dict[str, frozenset[str]] = {}

    def fetch_data(self) -> Any:
        data = super().fetch_data()
        keys = data.get("keys") if isinstance(data, dict) else None
        endorsements: dict[str, frozenset[str]] = {}
        for key in keys if isinstance(keys, list) else []:
            if isinstance(key, dict) and isinstance(key.get("kid"), str):
                found = key.get("endorsements")
                names = [e for e in found if isinstance(e, str)] if isinstance(found, list) else []
                endorsements[key["kid"]] = frozenset(names)
        self._endorsements = endorsements
        return data

    def endorsements(self, kid: str) -> frozenset[str]:
        return self._endorsements.get(kid, frozenset())


class TokenValidator:
    """`await validate(headers, activity)` returns the token's claims or raises `TokenError` naming the rule."""

    def __init__(
        self,
        app_id: str,
        metadata_url: str,
        *,
        issuer: str = BOT_FRAMEWORK_ISSUER,
        leeway_seconds: int = 60,
        lifespan_seconds: float = 3600,
        timeout_seconds: float = 5,
    ) -> None:
        if not app_id:
            raise ValueError("the bot's app id (ATB_TEAMS_APP_ID) is required to check a token's audience")
        self._app_id = app_id
        self._metadata_url = metadata_url
        self._issuer = issuer
        self._leeway = leeway_seconds
        self._lifespan = lifespan_seconds
        self._timeout = timeout_seconds
        self._keys: EndorsedKeys | None = None
        self._keys_at = 0.0
        self._lock = asyncio.Lock()

    async def validate(self, headers: Mapping[str, str], activity: Mapping[str, Any]) -> TokenClaims:
        token = _bearer(headers)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError("malformed_token", f"the bearer token is not a JWT: {exc}") from exc
        if header.get("alg") != "RS256":
            raise TokenError("bad_algorithm", f"alg {header.get('alg')!r} is refused: only RS256")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenError("missing_kid", "the token names no key (kid)")
        channel = activity.get("channelId")
        if channel != TEAMS_CHANNEL:
            raise TokenError("wrong_channel", f"channelId {channel!r}: only {TEAMS_CHANNEL} is served")
        keys = await self._key_client()
        try:
            key = await asyncio.to_thread(keys.get_signing_key, kid)
        except jwt.PyJWKClientError as exc:
            raise TokenError("unknown_kid", f"no key {kid!r} in the Bot Framework key set: {exc}") from exc
        if TEAMS_CHANNEL not in keys.endorsements(kid):
            raise TokenError("missing_endorsement", f"key {kid!r} is not endorsed for {TEAMS_CHANNEL}")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                audience=self._app_id,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud"], "verify_signature": True},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("expired", f"the token expired (leeway {self._leeway} s)") from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenError("wrong_audience", f"the token is not for this bot: {exc}") from exc
        except jwt.InvalidIssuerError as exc:
            raise TokenError("wrong_issuer", f"the token's issuer is not {self._issuer}") from exc
        except jwt.ImmatureSignatureError as exc:
            raise TokenError("not_yet_valid", str(exc)) from exc
        except jwt.MissingRequiredClaimError as exc:
            code = {"aud": "wrong_audience", "iss": "wrong_issuer"}.get(exc.claim, "invalid_token")
            raise TokenError(code, f"the token lacks a required claim: {exc.claim}") from exc
        except jwt.InvalidSignatureError as exc:
            raise TokenError("bad_signature", "the token's signature does not verify") from exc
        except jwt.PyJWTError as exc:
            raise TokenError("invalid_token", f"the token is refused: {exc}") from exc
        service_url = claims.get("serviceUrl") or claims.get("serviceurl")
        if not isinstance(service_url, str) or service_url != activity.get("serviceUrl"):
            raise TokenError("service_url_mismatch", "the token's serviceUrl is not the activity's")
        return TokenClaims(self._issuer, self._app_id, service_url, int(claims["exp"]))

    async def _key_client(self) -> EndorsedKeys:
        async with self._lock:
            if self._keys is None or time.monotonic() - self._keys_at > self._lifespan:
                jwks_uri = await asyncio.to_thread(self._jwks_uri)
                self._keys = EndorsedKeys(jwks_uri, lifespan=self._lifespan, timeout=self._timeout)
                self._keys_at = time.monotonic()
            return self._keys

    def _jwks_uri(self) -> str:
        """The `jwks_uri` of the OpenID metadata document (whose issuer, when given, must be ours)."""
        try:
            with urllib.request.urlopen(self._metadata_url, timeout=self._timeout) as response:  # noqa: S310
                metadata = json.loads(response.read(1 << 20))
        except (OSError, ValueError) as exc:
            raise TokenError("metadata_unavailable", f"the OpenID metadata could not be read: {exc}") from exc
        if not isinstance(metadata, dict) or not isinstance(metadata.get("jwks_uri"), str):
            raise TokenError("metadata_unavailable", "the OpenID metadata names no jwks_uri")
        if metadata.get("issuer", self._issuer) != self._issuer:
            raise TokenError("metadata_unavailable", f"the OpenID metadata's issuer is not {self._issuer}")
        algs = metadata.get("id_token_signing_alg_values_supported", ["RS256"])
        if not isinstance(algs, list) or "RS256" not in algs:
            raise TokenError("metadata_unavailable", "the OpenID metadata does not offer RS256")
        return str(metadata["jwks_uri"])


def _bearer(headers: Mapping[str, str]) -> str:
    lowered = {k.lower(): v for k, v in headers.items()}
    value = lowered.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError("missing_token", "no Authorization: Bearer token")
    token = token.strip()
    if len(token) > _MAX_TOKEN:
        raise TokenError("malformed_token", f"the bearer token is longer than {_MAX_TOKEN} characters")
    return token
