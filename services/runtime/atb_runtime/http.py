"""What the mTLS HTTP APIs (gateway, broker) share: the agent behind a connection, JSON bodies, errors.

Every refusal is an `HttpError` JSON body naming a stable code (and the field,
for bad bodies); identity refusals come back as a `Refusal` so that the caller
can audit them with its own event before answering.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TypeVar

import orjson
from aiohttp import web
from cryptography import x509
from pydantic import BaseModel, ValidationError

from atb_identity import IdentityError, SpiffeId, TrustBundle
from atb_identity.tls import peer_certificate, peer_identity
from atb_runtime.web import MAX_JSON_DEPTH, BodyTimeoutError, json_depth, read_body_within
from contracts import CanonicalJsonError, canonical_json
from contracts.http import MAX_BODY_BYTES, HttpError

__all__ = ["Refusal", "agent_of", "error_response", "read_body"]

M = TypeVar("M", bound=BaseModel)


def error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    body = HttpError(error=code, message=message, field=field).model_dump_json(exclude_none=True)
    return web.Response(status=status, body=body, content_type="application/json")


@dataclass(frozen=True)
class Refusal:
    """Why a connection's client is not an agent we accept."""

    status: int
    rule: str
    message: str
    """For the client."""
    reason: str
    """For the audit trail."""
    presented: tuple[str, ...] | None = None

    def response(self) -> web.Response:
        return error_response(self.status, self.rule, self.message)


def _uri_sans(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    return tuple(str(n.value) for n in extension.value if isinstance(n, x509.UniformResourceIdentifier))


def agent_of(request: web.Request, bundle: TrustBundle) -> tuple[SpiffeId, x509.Certificate] | Refusal:
    """The agent SPIFFE ID (and certificate) the client proved in the TLS handshake, or why not."""
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    cert = peer_certificate(ssl_object if isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket) else None)
    if cert is None:
        message = "this endpoint requires mutual TLS with an X.509-SVID"
        return Refusal(401, "no_client_certificate", message, "present your X.509-SVID (mTLS)")
    try:
        spiffe_id = peer_identity(cert, bundle)
    except IdentityError as exc:
        return Refusal(403, exc.code, f"client certificate refused: {exc}", str(exc), _uri_sans(cert))
    if not spiffe_id.path.startswith("/agent/"):
        message = f"{spiffe_id} is not an agent identity (spiffe://<td>/agent/...)"
        return Refusal(403, "not_an_agent", message, "only agent identities may use this endpoint", (str(spiffe_id),))
    return spiffe_id, cert


def _closing(response: web.Response) -> web.Response:
    """Close the connection after this answer: the rest of the body is not read (aiohttp would linger on it)."""
    response.force_close()
    return response


async def read_body(request: web.Request, model: type[M], *, canonical: bool = False) -> M | web.Response:
    """The JSON body as `model`, or the 4xx answer naming what is wrong (size, time, JSON, canonical form, field)."""
    try:
        raw = await read_body_within(request)
    except web.HTTPRequestEntityTooLarge:
        return _closing(error_response(413, "body_too_large", f"bodies are limited to {MAX_BODY_BYTES} bytes"))
    except BodyTimeoutError as exc:
        return _closing(error_response(408, "body_timeout", str(exc)))
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return error_response(400, "invalid_json", f"body is not JSON: {exc}")
    if json_depth(document) > MAX_JSON_DEPTH:
        # Before anything walks the document: a deep one would exhaust the recursion limit there.
        return error_response(422, "too_deep", f"the body nests deeper than {MAX_JSON_DEPTH} levels")
    if canonical:
        try:
            canonical_json(document)
        except CanonicalJsonError as exc:
            return error_response(422, "not_canonical", str(exc))
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first.get("loc", ())) or None
        return error_response(422, "invalid_body", f"{field}: {first.get('msg', 'invalid')}", field)
