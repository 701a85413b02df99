"""The console's web edge (aiohttp, Jinja2 with autoescape): pages, the WebAuthn JSON calls, live updates.

Every answer carries a strict CSP (`default-src 'self'`, no inline script: the
only script is /static/console.js), `X-Content-Type-Options: nosniff`,
`Referrer-Policy: same-origin` (so that a form's POST carries its `Origin`),
`frame-ancestors 'none'` and `Cache-Control: no-store`; HSTS when the request
came over TLS.

Sessions: the cookie `__Host-atb-console` (HttpOnly, Secure, SameSite=Strict,
Path=/) names a server-side session (console.adapters.store) that ends after
`console_session_idle_s` without use. Every state-changing request is a POST
that must come from the console's own origin (`Origin`, `Sec-Fetch-Site`); once
signed in, it must also carry the session's CSRF token (form field `csrf` or
header `X-CSRF-Token`), else 403.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from atb_runtime.web import BodyTimeoutError, read_body_within
from audit_sink.domain.facets import OUTCOMES
from console.adapters.api import CeremonyFinish, ConsoleFailure, DelegationAsk, Enrolled, SignedInAnswer, VoteAsk
from console.adapters.audit import AuditQuery, AuditReader
from console.adapters.evidence import EvidenceDesk, EvidenceUnavailable, merge_timeline
from console.adapters.store import ConsoleStore, Session
from console.domain import ApprovalView, explain
from console.domain.view import RESULT_CODES as RESULTS
from console.service import ConsoleError, ConsoleService
from contracts import Tier, VoteChoice
from contracts.limits import HTTP_MAX_BODY_BYTES

__all__ = ["COOKIE", "CSP", "build_app"]

log = logging.getLogger(__name__)

COOKIE = "__Host-atb-console"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HSTS = "max-age=31536000; includeSubDomains"
DELEGATION_RESULTS = {
    "delegation_granted": "Delegation granted with your passkey.",
    "delegation_revoked": "Delegation revoked.",
}
HERE = Path(__file__).resolve().parent.parent
_SESSION = web.AppKey("session", object)


def _templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return env


def build_app(
    service: ConsoleService,
    store: ConsoleStore,
    *,
    idle_s: float,
    tls: bool,
    trust_forwarded_proto: bool = False,
    audit: AuditReader | None = None,
    evidence: EvidenceDesk | None = None,
    compliance_group: str = "compliance",
) -> web.Application:
    env = _templates()
    origin = service.origin

    def secure(request: web.Request) -> bool:
        if request.secure:
            return True
        return trust_forwarded_proto and request.headers.get("X-Forwarded-Proto", "") == "https"

    @web.middleware
    async def headers(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            response = exc
        if not response.prepared:
            response.headers["Content-Security-Policy"] = CSP
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers["Referrer-Policy"] = "same-origin"
            response.headers["X-Frame-Options"] = "DENY"
            response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
            response.headers.setdefault("Cache-Control", "no-store")
            if tls or secure(request):
                response.headers["Strict-Transport-Security"] = HSTS
        if isinstance(response, web.HTTPException):
            raise response
        return response

    def page(name: str, status: int = 200, **context: Any) -> web.Response:
        text = env.get_template(name).render(**context)
        return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")

    def current(request: web.Request) -> tuple[str, Session] | None:
        sid = request.cookies.get(COOKIE)
        if not sid:
            return None
        session = store.session(sid, now=_now(), idle_s=idle_s)
        return None if session is None else (sid, session)

    def same_origin(request: web.Request) -> bool:
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in {"same-origin", "none"}:
            return False
        sent = request.headers.get("Origin")
        return sent is None or sent == origin

    def refuse(request: web.Request, code: str, message: str, status: int = 403) -> web.Response:
        if (
            request.headers.get("Accept", "").startswith("application/json")
            or request.content_type == "application/json"
        ):
            return failure(code, message, status)
        return page("message.html", status, title="Refused", message=message, code=code, session=None)

    def csrf_ok(request: web.Request, session: Session, form: dict[str, str]) -> bool:
        token = request.headers.get("X-CSRF-Token") or form.get("csrf", "")
        return bool(token) and hmac.compare_digest(token.encode(), session.csrf.encode())

    def failure(code: str, message: str, status: int) -> web.Response:
        return web.json_response(ConsoleFailure(error=code, message=message).model_dump(), status=status)

    async def signed_in_form(request: web.Request) -> tuple[Session, dict[str, str]] | web.Response:
        """A form POST of the signed-in session from the console's origin with its CSRF token: (session, form);
        else the refusal to answer (without a session: to /signin)."""
        found = current(request)
        form = await body_form(request)
        if found is None:
            raise web.HTTPSeeOther("/signin")
        _, session = found
        if not same_origin(request) or not csrf_ok(request, session, form):
            return refuse(request, "csrf", "The request did not carry this session's token.")
        return session, form

    def signed_in_call(request: web.Request) -> Session | web.Response:
        """A JSON call of the signed-in session from the console's origin with its CSRF header; else the refusal."""
        found = current(request)
        if found is None:
            return failure("signed_out", "Sign in again.", 401)
        _, session = found
        if not same_origin(request) or not csrf_ok(request, session, {}):
            return refuse(request, "csrf", "The request did not carry this session's token.")
        return session

    async def body_json(request: web.Request) -> dict[str, Any]:
        try:
            raw = await read_body_within(request)
            data = json.loads(raw or b"{}")
        except (BodyTimeoutError, ValueError, RecursionError) as exc:  # nested past the parser's recursion
            raise ConsoleError("bad_request", "the body is not JSON", 400) from exc
        if not isinstance(data, dict):
            raise ConsoleError("bad_request", "the body is not a JSON object", 400)
        return data

    async def body_form(request: web.Request) -> dict[str, str]:
        if request.content_type not in {"application/x-www-form-urlencoded", "multipart/form-data", ""}:
            raise ConsoleError("bad_request", "the body is not a form", 400)
        try:
            async with asyncio.timeout(10):
                form = await request.post()
        except TimeoutError as exc:
            raise ConsoleError("bad_request", "the form did not arrive in time", 408) from exc
        except web.HTTPException:
            raise  # 413 and the like: already an answer
        except (ValueError, AssertionError, LookupError, UnicodeError) as exc:  # a malformed form or encoding
            raise ConsoleError("bad_request", "the form is malformed", 400) from exc
        return {k: v for k, v in form.items() if isinstance(v, str)}

    def cookie(response: web.StreamResponse, sid: str) -> None:
        response.set_cookie(COOKIE, sid, path="/", secure=True, httponly=True, samesite="Strict")

    # -- pages ---------------------------------------------------------------------------

    async def root(request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther("/inbox" if current(request) else "/signin")

    async def signin_page(request: web.Request) -> web.StreamResponse:
        return page("signin.html", session=None)

    async def enroll_page(request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        try:
            principal = service.enrollment_principal(token)
        except ConsoleError as exc:
            return page("message.html", exc.status, title="Enrollment", message=str(exc), code=exc.code, session=None)
        return page("enroll.html", principal=principal, token=token, session=None)

    async def inbox(request: web.Request) -> web.StreamResponse:
        found = current(request)
        if found is None:
            raise web.HTTPSeeOther("/signin")
        _, session = found
        approver = service.approver(session.principal)
        rows = [_row(v, service) for v in service.inbox(approver)]
        return page("inbox.html", session=session, rows=rows, version=service.version, now=_utc())

    async def request_page(
        request: web.Request, *, message: str = "", code: str = "", status: int = 200
    ) -> web.Response:
        found = current(request)
        if found is None:
            raise web.HTTPSeeOther("/signin")
        _, session = found
        view = service.view(request.match_info["request_id"])
        if view is None or view.required is None:
            return page(
                "message.html",
                404,
                title="Not found",
                message="No such request awaits approval.",
                code="unknown_request",
                session=session,
            )
        approver = service.approver(session.principal)
        rules = view.rules(_utc())
        refusal = rules.refusal(approver) if rules else None
        return page(
            "request.html",
            status,
            session=session,
            view=view,
            row=_row(view, service),
            verified=view.verified_request,
            refusal=refusal.value if refusal else None,
            step_up=view.required.tier in service_step_up,
            open=view.open_at(_utc()),
            voted=service.console_votes(view.request_id).get(approver.principal),
            offers=service.on_behalf_offers(approver.principal, view.request_id) if view.open_at(_utc()) else [],
            message=message,
            code=code,
            version=service.version,
        )

    service_step_up = frozenset(service._step_up)

    async def request_get(request: web.Request) -> web.StreamResponse:
        code = request.query.get("result", "")
        if code and code in RESULTS:
            return await request_page(
                request, message=explain(code) if code != "vote_cast" else "Your vote was recorded.", code=code
            )
        return await request_page(request)

    # -- WebAuthn calls ------------------------------------------------------------------

    async def enroll_options(request: web.Request) -> web.StreamResponse:
        if not same_origin(request):
            return refuse(request, "cross_origin", "cross-origin requests are refused")
        try:
            return web.Response(
                text=service.enrollment_options(request.match_info["token"]), content_type="application/json"
            )
        except ConsoleError as exc:
            return failure(exc.code, str(exc), exc.status)

    async def enroll_finish(request: web.Request) -> web.StreamResponse:
        if not same_origin(request):
            return refuse(request, "cross_origin", "cross-origin requests are refused")
        try:
            finish = _finish(await body_json(request))
            record = await service.enroll(request.match_info["token"], finish.nonce, finish.credential)
        except ConsoleError as exc:
            return failure(exc.code, str(exc), exc.status)
        return web.json_response(Enrolled(principal=record.principal, credential_id=record.credential_id).model_dump())

    async def signin_options(request: web.Request) -> web.StreamResponse:
        if not same_origin(request):
            return refuse(request, "cross_origin", "cross-origin requests are refused")
        return web.Response(text=service.signin_options(), content_type="application/json")

    async def signin_finish(request: web.Request) -> web.StreamResponse:
        if not same_origin(request):
            return refuse(request, "cross_origin", "cross-origin requests are refused")
        try:
            finish = _finish(await body_json(request))
            signed = await service.sign_in(finish.nonce, finish.credential)
        except ConsoleError as exc:
            return failure(exc.code, str(exc), exc.status)
        response = web.json_response(SignedInAnswer(principal=signed.principal, next="/inbox").model_dump())
        cookie(response, signed.session_id)
        return response

    async def signout(request: web.Request) -> web.StreamResponse:
        found = current(request)
        form = await body_form(request)
        if found is None:
            raise web.HTTPSeeOther("/signin")
        sid, session = found
        if not same_origin(request) or not csrf_ok(request, session, form):
            return refuse(request, "csrf", "The request did not carry this session's token.")
        store.end_session(sid, now=_now())
        response = web.HTTPSeeOther("/signin")
        response.del_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="Strict")
        raise response

    async def vote_options(request: web.Request) -> web.StreamResponse:
        session = signed_in_call(request)
        if isinstance(session, web.Response):
            return session
        try:
            ask = VoteAsk.model_validate(await body_json(request))
            text = service.vote_options(
                session.principal, request.match_info["request_id"], VoteChoice(ask.choice), ask.on_behalf
            )
        except ValidationError:
            return failure("bad_request", "choice must be approve or deny", 400)
        except ConsoleError as exc:
            return failure(exc.code, str(exc), exc.status)
        return web.Response(text=text, content_type="application/json")

    async def vote(request: web.Request) -> web.StreamResponse:
        checked = await signed_in_form(request)
        if isinstance(checked, web.Response):
            return checked
        session, form = checked
        try:
            choice = VoteChoice(form.get("choice", ""))
        except ValueError:
            return await request_page(request, message="Choose approve or deny.", code="bad_request", status=400)
        credential: dict[str, Any] | None = None
        if form.get("assertion"):
            try:
                parsed = json.loads(form["assertion"])
            except (ValueError, RecursionError):
                parsed = None
            credential = parsed if isinstance(parsed, dict) else {"malformed": True}
        request_id = request.match_info["request_id"]
        outcome = await service.vote(
            session.principal, request_id, choice, form.get("reason", ""), credential, form.get("on_behalf") or None
        )
        raise web.HTTPSeeOther(f"/requests/{quote(request_id, safe='')}?result={outcome.code}")

    # -- delegations (out of office) --------------------------------------------------------

    async def delegations_page(
        request: web.Request, *, message: str = "", code: str = "", status: int = 200
    ) -> web.Response:
        found = current(request)
        if found is None:
            raise web.HTTPSeeOther("/signin")
        _, session = found
        me = service.approver(session.principal)
        result = request.query.get("result", "")
        if not message and result in DELEGATION_RESULTS:
            message, code = DELEGATION_RESULTS[result], result
        people = sorted(a.principal for a in service.directory.approvers if a is not me)
        rows = [
            {
                "id": d.delegation_id,
                "delegator": d.delegator,
                "delegate": d.delegate,
                "tiers": d.tiers.replace(",", ", ") or "every tier",
                "until": _shown(d.until),
                "state": "revoked" if d.revoked_at is not None else ("ended" if d.until < _now() else "in force"),
                "mine": d.delegator == me.principal,
            }
            for d in service.delegations(me.principal)
        ]
        return page(
            "delegations.html",
            status,
            session=session,
            people=people,
            tiers=[t.value for t in Tier],
            rows=rows,
            message=message,
            code=code,
        )

    async def delegations_get(request: web.Request) -> web.StreamResponse:
        return await delegations_page(request)

    async def delegation_options(request: web.Request) -> web.StreamResponse:
        session = signed_in_call(request)
        if isinstance(session, web.Response):
            return session
        try:
            ask = DelegationAsk.model_validate(await body_json(request))
            until = ask.until if ask.until.tzinfo is not None else ask.until.replace(tzinfo=UTC)
            text = service.delegation_options(
                session.principal, ask.delegate, until, [Tier(t) for t in ask.tiers], ask.reason
            )
        except ValidationError:
            return failure("bad_request", "delegate, until (ISO 8601) and tiers (low ... critical) are required", 400)
        except ConsoleError as exc:
            return failure(exc.code, str(exc), exc.status)
        return web.Response(text=text, content_type="application/json")

    async def delegation_grant(request: web.Request) -> web.StreamResponse:
        checked = await signed_in_form(request)
        if isinstance(checked, web.Response):
            return checked
        session, form = checked
        try:
            parsed = json.loads(form.get("assertion") or "null")
        except (ValueError, RecursionError):
            parsed = None
        if not isinstance(parsed, dict):
            return await delegations_page(
                request, message="Confirm the delegation with your passkey.", code="assertion_required", status=400
            )
        try:
            await service.delegate(session.principal, parsed)
        except ConsoleError as exc:
            return await delegations_page(request, message=str(exc), code=exc.code, status=exc.status)
        raise web.HTTPSeeOther("/delegations?result=delegation_granted")

    async def delegation_revoke(request: web.Request) -> web.StreamResponse:
        checked = await signed_in_form(request)
        if isinstance(checked, web.Response):
            return checked
        session, _ = checked
        try:
            await service.revoke_delegation(session.principal, request.match_info["delegation_id"])
        except ConsoleError as exc:
            return await delegations_page(request, message=str(exc), code=exc.code, status=exc.status)
        raise web.HTTPSeeOther("/delegations?result=delegation_revoked")

    async def updates(request: web.Request) -> web.StreamResponse:
        """Server-sent events: `changed` whenever the views change (the page then reloads what it shows)."""
        if current(request) is None:
            return failure("signed_out", "Sign in again.", 401)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await response.prepare(request)
        since = int(request.query.get("since", "0") or 0) if request.query.get("since", "0").isdigit() else 0
        try:
            while True:
                version = await service.changed(since, 15.0)
                if version != since:
                    await response.write(f"event: changed\ndata: {version}\n\n".encode())
                    since = version
                else:
                    await response.write(b": keep-alive\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    async def script(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(
            HERE / "static" / "console.js", headers={"Content-Type": "text/javascript", "Cache-Control": "no-cache"}
        )

    async def style(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(
            HERE / "static" / "console.css", headers={"Content-Type": "text/css", "Cache-Control": "no-cache"}
        )

    def compliance_session(request: web.Request) -> Session:
        found = current(request)
        if found is None:
            raise web.HTTPSeeOther("/signin")
        _, session = found
        if compliance_group not in service.approver(session.principal).groups:
            raise ConsoleError("not_compliance", f"The compliance view is for the {compliance_group} group.", 403)
        if audit is None:
            raise ConsoleError(
                "no_audit_store", "The compliance view is not configured (ATB_CONSOLE_AUDIT_DB_URL).", 404
            )
        return session

    def audit_query(request: web.Request) -> AuditQuery:
        q = request.query
        try:
            return AuditQuery(
                request_id=q.get("request_id", "").strip()[:255],
                event_type=q.get("event_type", "").strip()[:128],
                audit_type=q.get("audit_type", "").strip()[:64],
                producer=q.get("producer", "").strip()[:2048],
                agent_id=q.get("agent_id", "").strip()[:255],
                action=q.get("action", "").strip()[:128],
                tier=q.get("tier", "").strip()[:16],
                outcome=q.get("outcome", "").strip()[:32],
                since=_when(q.get("since", "")),
                until=_when(q.get("until", "")),
                before=int(q["before"]) if q.get("before", "").isdigit() else None,
            )
        except ValueError:
            raise ConsoleError("bad_query", "Times are ISO 8601 (2026-12-05T10:00:00+00:00).", 400) from None

    async def compliance(request: web.Request) -> web.StreamResponse:
        session = compliance_session(request)
        assert audit is not None
        q = request.query
        query = audit_query(request)
        rows = await asyncio.to_thread(audit.search, query)
        following = {k: v for k, v in q.items() if k != "before" and v}
        next_page = urlencode({**following, "before": rows[-1].seq}) if len(rows) == 50 else ""
        archived = await evidence.archived_async(query) if evidence is not None and query.before is None else None
        selection = urlencode({k: v for k, v in q.items() if k in {"request_id", "since", "until"} and v.strip()})
        return page(
            "compliance.html",
            session=session,
            rows=rows,
            query=query,
            next_page=next_page,
            archived=archived,
            selection=selection,
            tiers=[tier.value for tier in Tier],
            outcomes=sorted(OUTCOMES),
        )

    async def compliance_timeline(request: web.Request) -> web.StreamResponse:
        session = compliance_session(request)
        assert audit is not None
        request_id = request.match_info["request_id"]
        rows = await asyncio.to_thread(audit.timeline, request_id)
        archived = await evidence.archived_async(AuditQuery(request_id=request_id)) if evidence is not None else None
        if archived is not None:
            rows = merge_timeline(rows, archived.rows)
        return page(
            "timeline.html",
            session=session,
            rows=rows,
            request_id=request_id,
            archived=archived,
            selection=urlencode({"request_id": request_id}),
        )

    def evidence_desk() -> EvidenceDesk:
        if evidence is None:
            raise ConsoleError(
                "no_audit_store", "The compliance view is not configured (ATB_CONSOLE_AUDIT_DB_URL).", 404
            )
        return evidence

    async def compliance_status(request: web.Request) -> web.StreamResponse:
        session = compliance_session(request)
        desk = evidence_desk()
        checkpoint = await asyncio.to_thread(desk.checkpoint_status)
        holds = await asyncio.to_thread(desk.holds)
        now = _utc()
        return page(
            "status.html",
            session=session,
            checkpoint=checkpoint,
            age=checkpoint.age_s(now) if checkpoint else None,
            verify=desk.last_verify,
            verify_age=int((now - desk.last_verify.at).total_seconds()) if desk.last_verify else None,
            holds=holds,
            archive=desk.archive_location,
        )

    async def compliance_verify(request: web.Request) -> web.StreamResponse:
        session = compliance_session(request)
        form = await body_form(request)
        if not same_origin(request) or not csrf_ok(request, session, form):
            return refuse(request, "csrf", "The request did not carry this session's token.")
        await evidence_desk().verify_now()
        raise web.HTTPSeeOther("/compliance/status")

    async def compliance_export(request: web.Request) -> web.StreamResponse:
        session = compliance_session(request)
        desk = evidence_desk()
        query = audit_query(request)
        fmt = request.query.get("format", "jsonl")
        if fmt not in {"jsonl", "csv"}:
            raise ConsoleError("bad_query", "The bundle format is jsonl or csv.", 400)
        if not query.request_id and not (query.since and query.until):
            raise ConsoleError("bad_query", "A bundle is for one request id, or a time range with both ends.", 400)
        if query.since and query.until and query.since >= query.until:
            raise ConsoleError("bad_query", "The range must end after it starts.", 400)
        try:
            data, count = await asyncio.to_thread(
                desk.bundle, request_id=query.request_id or None, since=query.since, until=query.until, fmt=fmt
            )
        except EvidenceUnavailable as exc:
            raise ConsoleError("evidence_unavailable", str(exc), 409) from exc
        try:  # every download is audited first; one that cannot be is not given
            await service.evidence_exported(
                session.principal,
                request_id=query.request_id or None,
                since=query.since,
                until=query.until,
                fmt=fmt,
                events=count,
                bundle=data,
            )
        except Exception as exc:
            log.error("evidence export not audited, refused: %r", exc)
            raise ConsoleError("export_unaudited", "The download could not be audited now; try again.", 503) from exc
        name = _bundle_name(query)
        return web.Response(
            body=data,
            content_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            result: web.StreamResponse = await handler(request)
            return result
        except ConsoleError as exc:
            return refuse(request, exc.code, str(exc), exc.status)
        except SQLAlchemyError as exc:  # the audit store (read only, another service's) cannot be read now
            log.error("audit store unreadable: %r", exc)
            return refuse(request, "audit_store_unavailable", "The audit store cannot be read now.", 503)

    app = web.Application(client_max_size=HTTP_MAX_BODY_BYTES, middlewares=[headers, web.middleware(errors)])
    app.router.add_get("/", root)
    app.router.add_get("/signin", signin_page)
    app.router.add_post("/signin/options", signin_options)
    app.router.add_post("/signin/finish", signin_finish)
    app.router.add_post("/signout", signout)
    app.router.add_get("/enroll/{token}", enroll_page)
    app.router.add_post("/enroll/{token}/options", enroll_options)
    app.router.add_post("/enroll/{token}/finish", enroll_finish)
    app.router.add_get("/inbox", inbox)
    app.router.add_get("/requests/{request_id}", request_get)
    app.router.add_post("/requests/{request_id}/options", vote_options)
    app.router.add_post("/requests/{request_id}/vote", vote)
    app.router.add_get("/updates", updates)
    app.router.add_get("/delegations", delegations_get)
    app.router.add_post("/delegations/options", delegation_options)
    app.router.add_post("/delegations", delegation_grant)
    app.router.add_post("/delegations/{delegation_id}/revoke", delegation_revoke)
    app.router.add_get("/compliance", compliance)
    app.router.add_get("/compliance/requests/{request_id}", compliance_timeline)
    app.router.add_get("/compliance/status", compliance_status)
    app.router.add_post("/compliance/verify", compliance_verify)
    app.router.add_get("/compliance/export", compliance_export)
    app.router.add_get("/static/console.js", script)
    app.router.add_get("/static/console.css", style)
    return app


def _when(text: str) -> datetime | None:
    if not text.strip():
        return None
    when = datetime.fromisoformat(text.strip())
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _finish(data: dict[str, Any]) -> CeremonyFinish:
    try:
        return CeremonyFinish.model_validate(data)
    except ValidationError as exc:
        raise ConsoleError("bad_request", "credential and nonce are required", 400) from exc


def _bundle_name(query: AuditQuery) -> str:
    """The download's file name: only letters, digits, '-' and '_' from the selection."""
    if query.request_id:
        label = query.request_id
    else:
        assert query.since is not None
        assert query.until is not None
        label = f"{query.since:%Y%m%dT%H%M%S}-{query.until:%Y%m%dT%H%M%S}"
    safe = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_") else "_" for ch in label)[:80]
    return f"atb-evidence-{safe}.zip"


def _now() -> float:
    import time

    return time.time()


def _utc() -> datetime:
    return datetime.now(UTC)


def _person(service: ConsoleService, identity: str) -> str:
    approver = service.directory.resolve(identity)
    return identity if approver is None else approver.principal


def _row(view: ApprovalView, service: ConsoleService) -> dict[str, Any]:
    required = view.required
    assert required is not None
    approvals = [b for b in view.ballots if b.choice is VoteChoice.APPROVE]
    people = {_person(service, b.identity) for b in approvals}
    remaining = int((required.deadline - _utc()).total_seconds())
    return {
        "request_id": view.request_id,
        "tier": required.tier.value,
        "action": required.action,
        "resource": required.resource,
        "agent": required.agent_id,
        "accountable": required.accountable_party_id,
        "deadline": required.deadline.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "deadline_iso": required.deadline.isoformat(),
        "remaining": max(0, remaining),
        "required": required.required_approvals,
        "approvals": len(people),
        "ballots": [
            {
                "identity": b.identity,
                "choice": b.choice.value,
                "channel": b.channel,
                "at": b.received_at.strftime("%H:%M:%S"),
            }
            for b in view.ballots
        ],
        "console_votes": service.console_votes(view.request_id),
        "digest": required.request_digest,
        "resolution": view.resolution,
        "ticket_required": required.ticket_required,
        "reminded": (view.reminder.reminder, view.reminder.of) if view.reminder else None,
        "escalated_to": list(view.escalation.escalate_to) if view.escalation else [],
    }


def _shown(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M UTC")
