"""Generate the OpenAPI 3.1 document of every ATB HTTP API from the pydantic models the handlers use.

`python tools/gen_openapi.py` rewrites `docs/openapi/<api>.json`;
`python tools/gen_openapi.py --check` writes nothing and exits 1 naming each
stale file (tests/unit/test_openapi_docs.py runs the check, and also checks that
every route the aiohttp apps register is documented and nothing else).

| document | served on | operations |
|---|---|---|
| gateway | the gateway's mTLS port | `POST /issue`, `GET /requests/{request_id}`, `GET /healthz`, `GET /metrics` |
| broker | the broker's mTLS port | `POST /v1/authorize` |
| chat | chat's interactions port | `POST /slack/interactions` (Slack-signed) |
| issuer | the issuer's ops port | `GET /.well-known/jwks.json`, `GET /healthz`, `GET /metrics` |
| console | the console's port | pages (HTML), WebAuthn calls, vote and CSRF forms, live updates, compliance view |
| ops | every service's ops port | `GET /healthz`, `GET /metrics` |

Request and response bodies are the JSON Schemas pydantic generates for the
models (`contracts.http`, `atb_runtime.ops.Health`, `gateway.adapters.http`,
`chat.adapters.http`, `issuer.adapters.http`, `console.adapters.api`): validation mode for what a
client sends, serialization mode for what a server answers. Every error is an
`HttpError` (chat: an `InteractionAnswer` with `ok: false`; the console: a
`ConsoleFailure`, or the same refusal as an HTML page when the client did not
ask for JSON). Serialised with
sorted keys and a final newline, so the bytes depend on the code alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from atb_runtime.ops import Health
from atb_runtime.web import MAX_FIELD_SIZE, MAX_HEADERS, MAX_LINE_SIZE, HttpLimits
from chat.adapters.http import INTERACTIONS_PATH, InteractionAnswer, InteractionForm
from console.adapters.api import (
    CeremonyFinish,
    CeremonyOptions,
    ConsoleFailure,
    CsrfForm,
    DelegationAsk,
    DelegationForm,
    Enrolled,
    SignedInAnswer,
    VoteAsk,
    VoteForm,
)
from contracts.http import (
    AuthorizeRequest,
    AuthorizeResponse,
    HttpError,
    IssueAccepted,
    IssueRequest,
    RequestStatus,
)
from contracts.limits import HTTP_MAX_BODY_BYTES
from gateway.adapters.http import Liveness
from issuer.adapters.http import JWKS_PATH, Jwks

__all__ = ["DOCS_DIR", "DOCUMENTS", "Operation", "render", "render_all", "stale_docs", "write_docs"]

REPO = Path(__file__).resolve().parents[1]
DOCS_DIR = REPO / "docs" / "openapi"
OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.0.0"

JSON = "application/json"
HTML = "text/html"
FORM = "application/x-www-form-urlencoded"
METRICS_MEDIA = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Answer:
    description: str
    model: type[BaseModel] | None = None
    media: str = JSON
    html: bool = False
    """Also answered as an HTML page (the console's refusals to a browser that did not ask for JSON)."""


@dataclass(frozen=True)
class Operation:
    method: Literal["get", "post"]
    path: str
    operation_id: str
    summary: str
    description: str = ""
    request: type[BaseModel] | None = None
    request_media: str = JSON
    parameters: tuple[Mapping[str, Any], ...] = ()
    responses: Mapping[int, Answer] = field(default_factory=dict)
    mtls: bool = False
    cookie: bool = False
    """Needs the console's session cookie (without one: the sign-in page, or 401 for a JSON call)."""


def _error(text: str) -> Answer:
    return Answer(text, HttpError)


def _refused(text: str) -> Answer:
    return Answer(text, InteractionAnswer)


_DEFAULTS = {name: f.default for name, f in HttpLimits.model_fields.items()}  # not this process's environment
_LIMITS_TEXT = (
    f"Bodies are limited to {HTTP_MAX_BODY_BYTES} bytes (413 above) and must arrive within "
    f"{_DEFAULTS['body_timeout_s']:g} s of their headers (408); the request line to {MAX_LINE_SIZE} bytes "
    f"and each header line to {MAX_FIELD_SIZE} bytes, at most {MAX_HEADERS} header lines (400 above); "
    f"a connection without a complete request for {_DEFAULTS['idle_timeout_s']:g} s is closed. "
    "Every error has a JSON body. See docs/hostile-input.md."
)
_MTLS_ERRORS: dict[int, Answer] = {
    401: _error("no client certificate (`no_client_certificate`): present an agent X.509-SVID"),
    403: _error("the certificate is not an acceptable agent SVID (the identity rule), or the call is refused"),
}
_BODY_ERRORS: dict[int, Answer] = {
    400: _error("the body is not JSON (`invalid_json`)"),
    408: _error("the body did not arrive within the body timeout (`body_timeout`)"),
    413: _error("the body is larger than the limit (`body_too_large`)"),
    422: _error("a field is missing, extra or invalid (`invalid_body`, `field` names it), or not canonical JSON"),
}
_HEALTHZ = Operation(
    "get",
    "/healthz",
    "healthz",
    "Readiness of this process",
    "200 when the processing loop is alive, 503 (same body, `status: failing`) otherwise.",
    responses={200: Answer("alive", Health), 503: Answer("not alive", Health)},
)
_METRICS = Operation(
    "get",
    "/metrics",
    "metrics",
    "Prometheus metrics",
    "prometheus-client's default registry, text exposition format 0.0.4.",
    responses={200: Answer("the metrics", None, METRICS_MEDIA)},
)
_SLACK_HEADERS: tuple[Mapping[str, Any], ...] = (
    {
        "name": "X-Slack-Request-Timestamp",
        "in": "header",
        "required": True,
        "description": "Unix time in seconds; refused more than 300 s from the server's clock",
        "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"},
    },
    {
        "name": "X-Slack-Signature",
        "in": "header",
        "required": True,
        "description": "`v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{raw body}` keyed with the signing secret",
        "schema": {"type": "string", "pattern": "^v0=[0-9a-f]{64}$"},
    },
)


def _refusal(text: str) -> Answer:
    return Answer(text, ConsoleFailure, html=True)


def _page(text: str = "the page") -> Answer:
    return Answer(text, None, HTML)


def _path(name: str, text: str) -> Mapping[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": text, "schema": {"type": "string"}}


def _query(*names: str) -> tuple[Mapping[str, Any], ...]:
    return tuple({"name": n, "in": "query", "required": False, "schema": {"type": "string"}} for n in names)


_TO_SIGNIN = Answer("not signed in (or the session ended): to /signin", None, "")
_CROSS_ORIGIN = _refusal("cross-origin, or without this session's CSRF token (`cross_origin`, `csrf`)")
_FORM_ERRORS = {
    400: _refusal("the body is not a well-formed form (`bad_request`)"),
    408: _refusal("the form did not arrive in time (`bad_request`)"),
    413: _refusal("the body is larger than the limit"),
}
_CONSOLE_BODY = {
    400: _refusal("the body is not the JSON object asked for (`bad_request`), or the ceremony failed"),
    403: _CROSS_ORIGIN,
    413: _refusal("the body is larger than the limit"),
}
_COMPLIANCE = {
    303: _TO_SIGNIN,
    403: _refusal("not in the compliance group (`not_compliance`)"),
    404: _refusal("the compliance view is not configured (`no_audit_store`)"),
    503: _refusal("the audit store cannot be read now (`audit_store_unavailable`)"),
}
_REQUEST_ID = _path("request_id", "the request")
_TOKEN = _path("token", "the one-time enrollment link's token")
_CONSOLE_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "get", "/", "console_root", "To the inbox, or to sign-in", responses={303: Answer("a redirect", None, "")}
    ),
    Operation("get", "/signin", "signin_page", "The sign-in page", responses={200: _page()}),
    Operation(
        "post",
        "/signin/options",
        "signin_options",
        "WebAuthn request options for signing in (a discoverable passkey, user verification required)",
        responses={200: Answer("the options", CeremonyOptions), 403: _CROSS_ORIGIN},
    ),
    Operation(
        "post",
        "/signin/finish",
        "signin_finish",
        "Sign in with the passkey's assertion: sets the `__Host-` session cookie",
        request=CeremonyFinish,
        responses={200: Answer("signed in", SignedInAnswer)}
        | _CONSOLE_BODY
        | {403: _refusal("cross-origin, an unknown or revoked passkey, or an assertion that does not verify")},
    ),
    Operation(
        "post",
        "/signout",
        "signout",
        "End the session",
        request=CsrfForm,
        request_media=FORM,
        responses={303: Answer("to /signin", None, ""), 403: _CROSS_ORIGIN} | _FORM_ERRORS,
    ),
    Operation(
        "get",
        "/enroll/{token}",
        "enroll_page",
        "The enrollment page of a one-time link (`atb console enroll`)",
        parameters=(_TOKEN,),
        responses={200: _page(), 404: _refusal("unknown, used or expired link (`link_invalid`)")},
    ),
    Operation(
        "post",
        "/enroll/{token}/options",
        "enroll_options",
        "WebAuthn creation options for the link's principal",
        parameters=(_TOKEN,),
        responses={
            200: Answer("the options", CeremonyOptions),
            403: _CROSS_ORIGIN,
            404: _refusal("unknown, used or expired link (`link_invalid`)"),
        },
    ),
    Operation(
        "post",
        "/enroll/{token}/finish",
        "enroll_finish",
        "Register the new passkey (the link is then used up)",
        parameters=(_TOKEN,),
        request=CeremonyFinish,
        responses={200: Answer("enrolled", Enrolled), 404: _refusal("unknown, used or expired link")} | _CONSOLE_BODY,
    ),
    Operation(
        "get",
        "/inbox",
        "inbox",
        "The requests the signed-in person may approve",
        responses={200: _page(), 303: _TO_SIGNIN, 403: _refusal("not in the approver directory")},
        cookie=True,
    ),
    Operation(
        "get",
        "/requests/{request_id}",
        "request_page",
        "A request: its details when they hash to the digest votes bind to, the votes, the vote forms",
        parameters=(_REQUEST_ID, *_query("result")),
        responses={
            200: _page(),
            303: _TO_SIGNIN,
            403: _refusal("not in the approver directory"),
            404: _refusal("no such request awaits approval (`unknown_request`)"),
        },
        cookie=True,
    ),
    Operation(
        "post",
        "/requests/{request_id}/options",
        "vote_options",
        "WebAuthn request options of a vote: the challenge binds the request digest, the decision and a nonce",
        parameters=(_REQUEST_ID,),
        request=VoteAsk,
        responses={
            200: Answer("the options", CeremonyOptions),
            401: _refusal("not signed in (`signed_out`)"),
            409: _refusal("this person may not vote on it now (`self_approval`, `closed`, `duplicate`, ...)"),
        }
        | _CONSOLE_BODY,
        cookie=True,
    ),
    Operation(
        "post",
        "/requests/{request_id}/vote",
        "vote",
        "Cast a vote (approve on a step-up tier carries the passkey's assertion); the result is on the page",
        parameters=(_REQUEST_ID,),
        request=VoteForm,
        request_media=FORM,
        responses={
            303: Answer("to the request page, `?result=<code>`, or to /signin", None, ""),
            403: _CROSS_ORIGIN,
            404: _refusal("no such request"),
        }
        | _FORM_ERRORS
        | {400: _refusal("no choice, or not a well-formed form (`bad_request`)")},
        cookie=True,
    ),
    Operation(
        "get",
        "/updates",
        "updates",
        "Server-sent events: `changed` whenever the views change",
        parameters=_query("since"),
        responses={200: Answer("the event stream", None, "text/event-stream"), 401: _refusal("not signed in")},
        cookie=True,
    ),
    Operation(
        "get",
        "/delegations",
        "delegations_page",
        "Out of office: grant a delegation with the passkey, the delegations made here, revoke",
        parameters=_query("result"),
        responses={200: _page(), 303: _TO_SIGNIN, 403: _refusal("not in the approver directory")},
        cookie=True,
    ),
    Operation(
        "post",
        "/delegations/options",
        "delegation_options",
        "WebAuthn request options of a delegation grant: the challenge binds every term of it and a nonce",
        request=DelegationAsk,
        responses={
            200: Answer("the options", CeremonyOptions),
            401: _refusal("not signed in (`signed_out`)"),
        }
        | _CONSOLE_BODY
        | {400: _refusal("an unknown delegate, oneself, a past or too distant end (`delegation_invalid`, ...)")},
        cookie=True,
    ),
    Operation(
        "post",
        "/delegations",
        "delegation_grant",
        "Grant the delegation the assertion's nonce names, with the delegator's passkey assertion",
        request=DelegationForm,
        request_media=FORM,
        responses={
            200: _page(),
            303: Answer("to the delegations page, `?result=delegation_granted`, or to /signin", None, ""),
        }
        | _FORM_ERRORS
        | {
            400: _refusal("no assertion (`assertion_required`), or not a well-formed form"),
            403: _refusal("cross-origin, no CSRF token, or an assertion that does not verify (`assertion_invalid`)"),
        },
        cookie=True,
    ),
    Operation(
        "post",
        "/delegations/{delegation_id}/revoke",
        "delegation_revoke",
        "Revoke a delegation the signed-in person granted here",
        parameters=(_path("delegation_id", "the delegation"),),
        request=CsrfForm,
        request_media=FORM,
        responses={
            303: Answer("to the delegations page, `?result=delegation_revoked`, or to /signin", None, ""),
            403: _CROSS_ORIGIN,
            404: _refusal("no such delegation of this person (`unknown_delegation`)"),
            409: _refusal("already revoked (`already_revoked`)"),
        }
        | _FORM_ERRORS,
        cookie=True,
    ),
    Operation(
        "get",
        "/compliance",
        "compliance_search",
        "Audit search, newest first, 50 a page (`before`: the previous page's last seq), and archived rows",
        parameters=_query("request_id", "event_type", "audit_type", "producer", "since", "until", "before"),
        responses={200: _page(), 400: _refusal("a time that is not ISO 8601 (`bad_query`)")} | _COMPLIANCE,
        cookie=True,
    ),
    Operation(
        "get",
        "/compliance/requests/{request_id}",
        "compliance_timeline",
        "A request's timeline, from the store and the archive",
        parameters=(_REQUEST_ID,),
        responses={200: _page()} | _COMPLIANCE,
        cookie=True,
    ),
    Operation(
        "get",
        "/compliance/status",
        "compliance_status",
        "Latest signed checkpoint and its age, the last verification, legal holds",
        responses={200: _page()} | _COMPLIANCE,
        cookie=True,
    ),
    Operation(
        "post",
        "/compliance/verify",
        "compliance_verify",
        "Verify the whole audit store now",
        request=CsrfForm,
        request_media=FORM,
        responses={
            303: Answer("to /compliance/status, or to /signin", None, ""),
            403: _refusal("cross-origin, without the CSRF token, or not in the compliance group"),
            404: _refusal("the compliance view is not configured (`no_audit_store`)"),
            503: _refusal("the audit store cannot be read now (`audit_store_unavailable`)"),
        }
        | _FORM_ERRORS,
        cookie=True,
    ),
    Operation(
        "get",
        "/compliance/export",
        "compliance_export",
        "An evidence bundle (the `atb audit export` folder, zipped) of a request or a range",
        parameters=_query("request_id", "since", "until", "format"),
        responses={
            200: Answer("the bundle", None, "application/zip"),
            400: _refusal("no request id nor a whole range, a bad time or format (`bad_query`)"),
            409: _refusal("the store does not verify, or no verifier key (`evidence_unavailable`)"),
        }
        | {k: v for k, v in _COMPLIANCE.items() if k != 400},
        cookie=True,
    ),
    Operation(
        "get",
        "/static/console.js",
        "script",
        "The console's one script",
        responses={200: Answer("the script", None, "text/javascript")},
    ),
    Operation(
        "get",
        "/static/console.css",
        "style",
        "The console's style sheet",
        responses={200: Answer("", None, "text/css")},
    ),
)


@dataclass(frozen=True)
class Document:
    title: str
    description: str
    server: str
    operations: tuple[Operation, ...]


DOCUMENTS: Mapping[str, Document] = {
    "gateway": Document(
        "ATB AgentAuth gateway",
        "An agent asks for a Power of Attorney and fetches it. The agent is the SPIFFE ID of its client "
        "certificate (mutual TLS), never a field of the body.",
        "https://127.0.0.1:8443",
        (
            Operation(
                "post",
                "/issue",
                "issue",
                "Ask for a PoA for one exact action",
                "Accepted requests are published as IssuanceRequested, attested by the gateway. The body must "
                "be canonical JSON (no floats). A tenant the agent is not registered for: 403 "
                "`tenant_not_allowed`, audited.",
                request=IssueRequest,
                responses={202: Answer("accepted: poll GET /requests/{request_id}", IssueAccepted)}
                | _BODY_ERRORS
                | _MTLS_ERRORS,
                mtls=True,
            ),
            Operation(
                "get",
                "/requests/{request_id}",
                "request_status",
                "Where a request stands; its PoA once issued (to its agent only)",
                parameters=(
                    {
                        "name": "request_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                    },
                ),
                responses={
                    200: Answer("the request's status", RequestStatus),
                    404: _error("no such request is known to this gateway (`unknown_request`)"),
                }
                | _MTLS_ERRORS,
                mtls=True,
            ),
            Operation(
                "get",
                "/healthz",
                "liveness",
                "The HTTPS server answers",
                "Readiness is on the ops port (ops.json).",
                responses={200: Answer("alive", Liveness)},
            ),
            _METRICS,
        ),
    ),
    "broker": Document(
        "ATB broker",
        "An agent runs one action with a PoA bound to its certificate (mutual TLS). Every well-formed call "
        "gets one decision (published as BrokerDecision before the answer leaves).",
        "https://127.0.0.1:8444",
        (
            Operation(
                "post",
                "/v1/authorize",
                "authorize",
                "Decide (and on allow run) one action with a PoA",
                "200 with allow (and, with `execute`, what the connector returned), 403 with deny and its "
                "reasons. 502: allowed, but the connector failed. 503: the decision could not be recorded, "
                "nothing was executed.",
                request=AuthorizeRequest,
                responses={
                    200: Answer("allowed", AuthorizeResponse),
                    403: Answer("denied (the decision), or a refused client certificate (an HttpError)", None),
                    502: Answer("allowed, but the connector call failed", AuthorizeResponse),
                    503: _error("the decision could not be recorded (`decision_unavailable`)"),
                }
                | {k: v for k, v in (_BODY_ERRORS | _MTLS_ERRORS).items() if k != 403},
                mtls=True,
            ),
        ),
    ),
    "chat": Document(
        "ATB chat (Slack interactions)",
        "Slack posts a click on an approval card; the chat service verifies Slack's signature over the exact "
        "bytes received and turns an approver's click into a signed vote.",
        "http://127.0.0.1:8090",
        (
            Operation(
                "post",
                INTERACTIONS_PATH,
                "slack_interactions",
                "A click on an ATB approve/deny button",
                "200 with `ok: true` for a counted vote, `ok: false` for a click refused by the rules "
                "(the approver is told why in Slack).",
                request=InteractionForm,
                request_media="application/x-www-form-urlencoded",
                parameters=_SLACK_HEADERS,
                responses={
                    200: Answer(
                        "a vote was cast (`ok: true`), or the click was refused (`ok: false`)", InteractionAnswer
                    ),
                    400: _refused("a malformed interaction (`bad_body`, `unsupported_type`, ...)"),
                    401: _refused("the signature or timestamp does not verify"),
                    408: _refused("the body did not arrive within the body timeout (`body_timeout`)"),
                    409: _refused("this interaction (trigger_id) was already received (`replay`)"),
                    413: _refused("the body is larger than the limit (`too_large`)"),
                    503: _refused("the vote could not be published (`publish_failed`)"),
                },
            ),
        ),
    ),
    "issuer": Document(
        "ATB issuer (ops port)",
        "The issuer's PoA verification keys, beside the ops endpoints every service has.",
        "http://127.0.0.1:18080",
        (
            Operation(
                "get",
                JWKS_PATH,
                "jwks",
                "The PoA verification keys (RFC 8037 OKP JWKs)",
                "Every published key not yet retired; `Cache-Control: max-age=30`.",
                responses={200: Answer("the key set", Jwks)},
            ),
            _HEALTHZ,
            _METRICS,
        ),
    ),
    "ops": Document(
        "ATB ops port (every service)",
        "Every service (gateway, approvals, issuer, broker, audit-sink, chat) serves these on its plain-HTTP "
        "ops port (`ATB_OPS_PORT`). A supervisor calls a service ready only when the pid it started answers.",
        "http://127.0.0.1:18080",
        (_HEALTHZ, _METRICS),
    ),
    "console": Document(
        "ATB console",
        "The web console for approvers and compliance: server-rendered pages, the WebAuthn calls of enrollment, "
        "sign-in and device-bound votes, live updates, and the compliance view (docs/console.md). A "
        "state-changing request is a POST from the console's own origin (`Origin`, `Sec-Fetch-Site`) and, once "
        "signed in, carries the session's CSRF token (form field `csrf` or header `X-CSRF-Token`); else 403.",
        "http://localhost:18445",
        _CONSOLE_OPERATIONS,
    ),
}
"""Document name (docs/openapi/<name>.json) → what it describes."""


def _schemas(document: Document) -> tuple[dict[tuple[type[BaseModel], JsonSchemaMode], Any], dict[str, Any]]:
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for op in document.operations:
        if op.request is not None:
            wanted.append((op.request, "validation"))
        wanted += [(a.model, "serialization") for a in op.responses.values() if a.model is not None]
    unique = list(dict.fromkeys(wanted))
    refs, definitions = models_json_schema(unique, ref_template="#/components/schemas/{model}")
    return {(cast("type[BaseModel]", model), mode): schema for (model, mode), schema in refs.items()}, definitions.get(
        "$defs", {}
    )


def _operation(op: Operation, refs: Mapping[tuple[type[BaseModel], JsonSchemaMode], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary}
    if op.description:
        out["description"] = op.description
    if op.parameters:
        out["parameters"] = [dict(p) for p in op.parameters]
    if op.request is not None:
        schema = refs[(op.request, "validation")]
        out["requestBody"] = {"required": True, "content": {op.request_media: {"schema": schema}}}
    responses: dict[str, Any] = {}
    for status, answer in sorted(op.responses.items()):
        entry: dict[str, Any] = {"description": answer.description}
        if answer.model is not None:
            entry["content"] = {answer.media: {"schema": refs[(answer.model, "serialization")]}}
            if answer.html:
                entry["content"][HTML] = {"schema": {"type": "string"}}
        elif not answer.media:
            pass  # a redirect: no body worth describing
        elif answer.media != JSON:
            entry["content"] = {answer.media: {"schema": {"type": "string"}}}
        else:  # a decision or an identity refusal (broker 403)
            decision = refs[(AuthorizeResponse, "serialization")]
            error = refs[(HttpError, "serialization")]
            entry["content"] = {JSON: {"schema": {"oneOf": [decision, error]}}}
        if status == 200 and op.path == JWKS_PATH:
            entry["headers"] = {"Cache-Control": {"schema": {"type": "string", "const": "max-age=30"}}}
        responses[str(status)] = entry
    out["responses"] = responses
    if op.mtls:
        out["security"] = [{"agentSvid": []}]
    if op.cookie:
        out["security"] = [{"consoleSession": []}]
    return out


def render(name: str) -> str:
    """The OpenAPI document `name`, as the text committed under docs/openapi/."""
    document = DOCUMENTS[name]
    refs, definitions = _schemas(document)
    paths: dict[str, dict[str, Any]] = {}
    for op in document.operations:
        paths.setdefault(op.path, {})[op.method] = _operation(op, refs)
    components: dict[str, Any] = {"schemas": definitions}
    if any(op.mtls for op in document.operations):
        components["securitySchemes"] = {
            "agentSvid": {
                "type": "mutualTLS",
                "description": "The client presents an X.509-SVID of an agent (spiffe://<trust domain>/agent/...).",
            }
        }
    if any(op.cookie for op in document.operations):
        components["securitySchemes"] = {
            "consoleSession": {
                "type": "apiKey",
                "in": "cookie",
                "name": "__Host-atb-console",
                "description": "The server-side session a passkey sign-in opens (HttpOnly, Secure, SameSite=Strict).",
            }
        }
    spec = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": document.title,
            "version": API_VERSION,
            "description": f"{document.description}\n\n{_LIMITS_TEXT}",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": document.server, "description": "the development default; any host and port"}],
        "paths": paths,
        "components": components,
    }
    return json.dumps(spec, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_all(names: Sequence[str] = tuple(DOCUMENTS)) -> dict[str, str]:
    return {f"{name}.json": render(name) for name in names}


def write_docs(directory: Path = DOCS_DIR) -> list[Path]:
    """Write every document and remove the ones no longer described. Returns the files written."""
    rendered = render_all()
    directory.mkdir(parents=True, exist_ok=True)
    for leftover in directory.glob("*.json"):
        if leftover.name not in rendered:
            leftover.unlink()
    written = []
    for name, text in sorted(rendered.items()):
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale_docs(directory: Path = DOCS_DIR) -> list[Path]:
    """Committed documents that are missing, differ from the models, or describe nothing. Empty when fresh."""
    rendered = render_all()
    stale = [
        directory / name
        for name, text in sorted(rendered.items())
        if not (directory / name).is_file() or (directory / name).read_text(encoding="utf-8") != text
    ]
    stale += sorted(path for path in directory.glob("*.json") if path.name not in rendered)
    return stale


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a committed document is stale")
    parser.add_argument("--out", type=Path, default=DOCS_DIR, help="directory of the documents (default: %(default)s)")
    args = parser.parse_args(argv)
    if not args.check:
        for path in write_docs(args.out):
            sys.stdout.write(f"wrote {_shown(path)}\n")
        return 0
    stale = stale_docs(args.out)
    for path in stale:
        sys.stderr.write(f"stale: {_shown(path)} (regenerate with `python tools/gen_openapi.py`)\n")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
