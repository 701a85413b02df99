"""A local stand-in for Microsoft Teams and the Bot Framework: signed activities, bot tokens, card updates.

`TeamsStandIn` serves, on 127.0.0.1:

- `GET /openid/.well-known/openidconfiguration`: OpenID metadata naming the issuer
  (`https://api.botframework.com`), RS256 and the `jwks_uri`;
- `GET /openid/keys`: the JWKS: its RS256 signing key endorsed for `msteams`, and a
  second key endorsed only for another channel (so a forgery can be signed by a
  key the set holds but that does not sign Teams);
- `POST /oauth2/v2.0/token`: bot tokens for the client credentials of the app;
- the Bot Connector at `service_url`: `POST /v3/conversations/{id}/activities`
  and `PUT /v3/conversations/{id}/activities/{activityId}`, which need one of the
  bot tokens it issued, record each call and keep each card's current content;
  and `POST /v3/conversations` (a proactive one-to-one conversation with the
  member's Entra object id): the text messages posted into it are kept per user
  (`direct_messages`).

`TeamsClicker` plays Teams' side of Universal Actions: an `adaptiveCard/action`
invoke for a click on a card (`from.aadObjectId` is the user), with the bearer
token the Bot Connector would send (`sign_token`), posted to `/api/messages`.
Nothing here talks to Microsoft.
"""

from __future__ import annotations

import itertools
import json
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

__all__ = [
    "ENDORSED_KID",
    "ISSUER",
    "OTHER_KID",
    "RecordedUpdate",
    "TeamsClicker",
    "TeamsStandIn",
    "invoke_activity",
]

ISSUER = "https://api.botframework.com"
ENDORSED_KID = "atb-dev-teams"
OTHER_KID = "atb-dev-webchat"
"""A key of the set endorsed only for `webchat`: it must never sign a Teams activity."""
DEV_APP_ID = "00000000-0000-4000-8000-00000000a7b0"
DEV_APP_PASSWORD = "atb-dev-teams-secret"  # noqa: S105 - the stand-in's own dev credential
DEV_TENANT = "00000000-0000-4000-8000-0000000ten1"
DEV_CONVERSATION = "19:atb-approvals@thread.tacv2"


@dataclass(frozen=True)
class RecordedUpdate:
    method: str
    conversation_id: str
    activity_id: str
    body: dict[str, Any]
    token: str


def _private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class TeamsStandIn:
    """Start with `await standin.start()`; the URLs below are what the chat service's ATB_TEAMS_* should be."""

    app_id: str = DEV_APP_ID
    app_password: str = DEV_APP_PASSWORD
    host: str = "127.0.0.1"
    port: int = 0
    calls: list[RecordedUpdate] = field(default_factory=list)
    cards: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Current card content by activity id."""
    conversations: dict[str, str] = field(default_factory=dict)
    """Conversation of each posted activity id."""
    token_requests: int = 0
    dm_users: dict[str, str] = field(default_factory=dict)
    """Entra object id of the user of each one-to-one conversation created."""
    texts: list[tuple[str, str]] = field(default_factory=list)
    """(conversation id, text) of each text message posted, in order."""
    key: rsa.RSAPrivateKey = field(default_factory=_private_key)
    other_key: rsa.RSAPrivateKey = field(default_factory=_private_key)
    _issued: set[str] = field(default_factory=set)
    _runner: web.AppRunner | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/openid/.well-known/openidconfiguration", self._metadata)
        app.router.add_get("/openid/keys", self._keys)
        app.router.add_post("/oauth2/v2.0/token", self._token)
        app.router.add_post("/teams/v3/conversations", self._create)
        app.router.add_post("/teams/v3/conversations/{conversation}/activities", self._post)
        app.router.add_put("/teams/v3/conversations/{conversation}/activities/{activity}", self._put)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        if self.port == 0:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind((self.host, 0))
                self.port = int(probe.getsockname()[1])
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def metadata_url(self) -> str:
        return f"{self.base_url}/openid/.well-known/openidconfiguration"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/oauth2/v2.0/token"

    @property
    def service_url(self) -> str:
        return f"{self.base_url}/teams/"

    def env(self, conversation_id: str = DEV_CONVERSATION, tenant_id: str = DEV_TENANT) -> dict[str, str]:
        """The chat service's environment for this stand-in."""
        return {
            "ATB_TEAMS_APP_ID": self.app_id,
            "ATB_TEAMS_APP_PASSWORD": self.app_password,
            "ATB_TEAMS_TENANT_ID": tenant_id,
            "ATB_TEAMS_OPENID_METADATA_URL": self.metadata_url,
            "ATB_TEAMS_TOKEN_URL": self.token_url,
            "ATB_TEAMS_SERVICE_URL": self.service_url,
            "ATB_TEAMS_CONVERSATION_ID": conversation_id,
        }

    def direct_messages(self, user_id: str) -> list[str]:
        """The texts posted to the user (an Entra object id) in one-to-one conversations, in order."""
        return [text for conversation, text in self.texts if self.dm_users.get(conversation) == user_id]

    def cards_for(self, request_id: str) -> list[tuple[str, dict[str, Any]]]:
        """(activity id, card) of every card whose fallback text names the request."""
        return [(a, c) for a, c in self.cards.items() if request_id in str(c.get("fallbackText", ""))]

    def sign_token(
        self,
        service_url: str | None = None,
        *,
        audience: str | None = None,
        issuer: str = ISSUER,
        expires_in: int = 300,
        kid: str = ENDORSED_KID,
        key: rsa.RSAPrivateKey | None = None,
        algorithm: str = "RS256",
        extra: dict[str, Any] | None = None,
    ) -> str:
        """The Bot Connector's bearer token for an activity (each argument can be made wrong for a forgery)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": issuer,
            "aud": self.app_id if audience is None else audience,
            "serviceUrl": self.service_url if service_url is None else service_url,
            "nbf": now - 5,
            "iat": now - 5,
            "exp": now + expires_in,
            **(extra or {}),
        }
        signer = key or (self.other_key if kid == OTHER_KID else self.key)
        return jwt.encode(claims, signer, algorithm=algorithm, headers={"kid": kid})

    async def _metadata(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": ISSUER,
                "authorization_endpoint": "https://invalid.botframework.com",
                "jwks_uri": f"{self.base_url}/openid/keys",
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            }
        )

    async def _keys(self, _request: web.Request) -> web.Response:
        keys = []
        for kid, key, endorsements in (
            (ENDORSED_KID, self.key, ["msteams", "webchat"]),
            (OTHER_KID, self.other_key, ["webchat"]),
        ):
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "endorsements": endorsements})
        return web.json_response({"keys": keys})

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.token_requests += 1
        if (
            form.get("grant_type") != "client_credentials"
            or form.get("client_id") != self.app_id
            or form.get("client_secret") != self.app_password
        ):
            return web.json_response({"error": "invalid_client"}, status=401)
        token = secrets.token_urlsafe(32)
        self._issued.add(token)
        return web.json_response({"token_type": "Bearer", "expires_in": 3599, "access_token": token})

    def _authorised(self, request: web.Request) -> str | None:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return token if token in self._issued else None

    async def _create(self, request: web.Request) -> web.Response:
        if self._authorised(request) is None:
            return web.json_response({"error": {"code": "Unauthorized"}}, status=401)
        body = await request.json()
        members = body.get("members") if isinstance(body, dict) else None
        if body.get("isGroup") or not isinstance(members, list) or len(members) != 1:
            return web.json_response({"error": {"code": "BadArgument"}}, status=400)
        user = str(members[0].get("aadObjectId") or members[0].get("id") or "")
        conversation = f"a:dm-{user}"
        self.dm_users[conversation] = user
        return web.json_response({"id": conversation}, status=201)

    async def _post(self, request: web.Request) -> web.Response:
        token = self._authorised(request)
        if token is None:
            return web.json_response({"error": {"code": "Unauthorized"}}, status=401)
        body = await request.json()
        conversation = request.match_info["conversation"]
        if isinstance(body.get("text"), str) and not body.get("attachments"):
            self.texts.append((conversation, body["text"]))
        activity_id = f"1{int(time.time() * 1000)}{next(self._ids):04d}"
        self.calls.append(RecordedUpdate("POST", conversation, activity_id, body, token))
        self.cards[activity_id] = _card_of(body)
        self.conversations[activity_id] = conversation
        return web.json_response({"id": activity_id}, status=201)

    async def _put(self, request: web.Request) -> web.Response:
        token = self._authorised(request)
        if token is None:
            return web.json_response({"error": {"code": "Unauthorized"}}, status=401)
        body = await request.json()
        conversation, activity_id = request.match_info["conversation"], request.match_info["activity"]
        self.calls.append(RecordedUpdate("PUT", conversation, activity_id, body, token))
        if self.conversations.get(activity_id) != conversation:
            return web.json_response({"error": {"code": "ActivityNotFoundInConversation"}}, status=404)
        self.cards[activity_id] = _card_of(body)
        return web.json_response({"id": activity_id})


def _card_of(body: dict[str, Any]) -> dict[str, Any]:
    attachments = body.get("attachments") or [{}]
    content = attachments[0].get("content")
    return content if isinstance(content, dict) else {}


def invoke_activity(
    *,
    aad_object_id: str,
    request_id: str,
    verb: str,
    service_url: str,
    reason: str = "",
    name: str = "A. User",
    activity_id: str | None = None,
    reply_to_id: str = "",
    conversation_id: str = DEV_CONVERSATION,
    tenant_id: str = DEV_TENANT,
    app_id: str = DEV_APP_ID,
) -> dict[str, Any]:
    """The `adaptiveCard/action` invoke Teams sends when a user clicks a card's Action.Execute."""
    data: dict[str, Any] = {"request_id": request_id}
    if reason:
        data["reason"] = reason
    sender: dict[str, Any] = {"id": f"29:{secrets.token_hex(8)}", "name": name}
    if aad_object_id:
        sender["aadObjectId"] = aad_object_id
    return {
        "type": "invoke",
        "name": "adaptiveCard/action",
        "id": activity_id or f"f:{secrets.token_hex(12)}",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "channelId": "msteams",
        "serviceUrl": service_url,
        "from": sender,
        "conversation": {"id": conversation_id, "conversationType": "channel", "tenantId": tenant_id},
        "recipient": {"id": f"28:{app_id}", "name": "ATB"},
        "replyToId": reply_to_id,
        "channelData": {"tenant": {"id": tenant_id}},
        "value": {"action": {"type": "Action.Execute", "verb": verb, "data": data}, "trigger": "manual"},
    }


@dataclass
class TeamsClicker:
    """Posts signed (or deliberately forged) activities to the chat service's `/api/messages`."""

    messages_url: str
    standin: TeamsStandIn

    async def post(self, activity: dict[str, Any] | bytes, token: str | None) -> tuple[int, dict[str, Any]]:
        body = activity if isinstance(activity, bytes) else json.dumps(activity).encode()
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.messages_url, data=body, headers=headers) as response,
        ):
            answer = await response.json(content_type=None)
            return response.status, answer if isinstance(answer, dict) else {}

    async def click(
        self, aad_object_id: str, request_id: str, verb: str, *, reason: str = "", **extra: Any
    ) -> tuple[int, dict[str, Any]]:
        activity = invoke_activity(
            aad_object_id=aad_object_id,
            request_id=request_id,
            verb=verb,
            service_url=self.standin.service_url,
            reason=reason,
            app_id=self.standin.app_id,
            **extra,
        )
        return await self.post(activity, self.standin.sign_token())
