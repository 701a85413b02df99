"""`GET /.well-known/jwks.json` on the issuer's ops port: the PoA verification keys.

Every key published on `atb.keys` that is not yet retired, as RFC 8037 OKP
JWKs (docs/openapi/issuer.json is generated from `Jwks`, tools/gen_openapi.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from atb_runtime.ops import Handler

__all__ = ["JWKS_PATH", "Jwk", "Jwks", "jwks_handler"]

JWKS_PATH = "/.well-known/jwks.json"


class Jwk(BaseModel):
    """An Ed25519 public key (RFC 8037): its `kid` is the RFC 7638 thumbprint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    x: str
    kid: str | None = None
    alg: Literal["EdDSA"] | None = None
    use: Literal["sig"] | None = None


class Jwks(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    keys: list[Jwk]


def jwks_handler(keys: Callable[[], list[dict[str, str]]]) -> Handler:
    """The route's handler: `keys()` are the JWKs published now."""

    async def jwks(_request: web.Request) -> web.Response:
        body = Jwks(keys=[Jwk.model_validate(jwk) for jwk in keys()])
        return web.Response(
            body=body.model_dump_json(exclude_none=True),
            content_type="application/json",
            headers={"Cache-Control": "max-age=30"},
        )

    return jwks
