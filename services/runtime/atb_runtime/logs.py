"""One logging setup for every ATB process: JSON lines with a stable schema, or text for a terminal.

`configure_logging(service, instance)` is called once per process by the app
lifespan (`atb_runtime/app.py`) before anything else logs. `ATB_LOG_FORMAT`
picks the format:

- `json` (the default, and what docker-compose and the Helm chart run): one
  JSON object per line on stderr, the schema below;
- `text`: `time level logger: message`, for a developer's terminal (`atb dev`
  and `ServiceStack` set it for the processes they start).

The JSON schema (docs/observability.md, "Logs") uses ECS field names, flat and
dotted; every line has the first six, the others when they apply:

| field | value |
|---|---|
| `@timestamp` | UTC, RFC 3339 with milliseconds (`2026-12-05T02:44:54.123Z`) |
| `log.level` | `debug`, `info`, `warning`, `error`, `critical` |
| `log.logger` | the Python logger's name |
| `message` | the formatted message |
| `service.name` | `gateway`, `approvals`, `issuer`, `broker`, `chat`, `console`, `audit-sink` |
| `service.instance` | `ATB_INSTANCE` (the host name with `auto`) |
| `ecs.version` | the ECS version the names follow |
| `trace.id`, `span.id` | the current OpenTelemetry span's, when the line is written inside one |
| `error.type`, `error.message`, `error.stack_trace` | when the line carries an exception |

An HTTP access line (`EcsAccessLogger`, logger `atb.access`) adds the ECS HTTP
fields (`http.request.method`, `url.path`, `http.response.status_code`,
`event.duration` in nanoseconds, `client.address`, `user_agent.original`,
`tls.client.subject` and `tls.client.x509.alternative_names` over mutual TLS).
No field ever holds a request body, a query string or a header other than the
user agent: tokens travel in bodies and must never reach a log.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from collections.abc import Mapping
from typing import Any, Literal, TextIO

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse
from opentelemetry import trace

__all__ = [
    "ACCESS_LOGGER",
    "ECS_VERSION",
    "LOG_FORMAT_ENV",
    "REQUIRED_FIELDS",
    "TRACE_ID_KEY",
    "EcsAccessLogger",
    "JsonFormatter",
    "LogFormat",
    "access_fields",
    "configure_logging",
    "log_format",
]

LogFormat = Literal["json", "text"]

LOG_FORMAT_ENV = "ATB_LOG_FORMAT"
ECS_VERSION = "8.11.0"
ACCESS_LOGGER = "atb.access"
"""The logger of every HTTP access line."""
ECS_FIELDS = "ecs_fields"
"""The `extra` key under which a record carries ECS fields of its own (flat, dotted names)."""

TRACE_ID_KEY = web.RequestKey("atb_trace_id", str)
"""Where the tracing middleware (`atb_runtime.tracing`) leaves a request's trace id for its access line."""

REQUIRED_FIELDS = ("@timestamp", "log.level", "log.logger", "message", "service.name", "service.instance")
"""The fields every JSON line has."""

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_QUIET = ("aiokafka", "kafka")
"""Libraries whose INFO lines are noise at the service's level: WARNING and above only."""


def log_format(environ: Mapping[str, str] | None = None) -> LogFormat:
    """`ATB_LOG_FORMAT` (`json` or `text`, json when unset); anything else is refused."""
    value = (environ if environ is not None else os.environ).get(LOG_FORMAT_ENV, "json").strip().lower() or "json"
    if value not in ("json", "text"):
        raise ValueError(f"{LOG_FORMAT_ENV} must be json or text, not {value!r}")
    return "json" if value == "json" else "text"


class JsonFormatter(logging.Formatter):
    """A record as one JSON line with the schema of this module's docstring."""

    def __init__(self, service: str, instance: str) -> None:
        super().__init__()
        self._service = service
        self._instance = instance

    def format(self, record: logging.LogRecord) -> str:
        # Plain arithmetic on the time: a line may be written while the interpreter shuts down, when
        # datetime's formatting can no longer import what it needs.
        at = time.gmtime(record.created)
        millis = int(record.created * 1000) % 1000
        line: dict[str, Any] = {
            "@timestamp": f"{at.tm_year:04d}-{at.tm_mon:02d}-{at.tm_mday:02d}T"
            f"{at.tm_hour:02d}:{at.tm_min:02d}:{at.tm_sec:02d}.{millis:03d}Z",
            "log.level": record.levelname.lower(),
            "log.logger": record.name,
            "message": record.getMessage(),
            "service.name": self._service,
            "service.instance": self._instance,
            "ecs.version": ECS_VERSION,
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            line["trace.id"] = f"{context.trace_id:032x}"
            line["span.id"] = f"{context.span_id:016x}"
        own = getattr(record, ECS_FIELDS, None)
        if isinstance(own, dict):
            line.update(own)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line["error.type"] = type(exc).__qualname__
            line["error.message"] = str(exc)
            line["error.stack_trace"] = "".join(traceback.format_exception(exc)).rstrip()
        elif record.stack_info:
            line["error.stack_trace"] = record.stack_info
        return orjson.dumps(line, default=str).decode()


def configure_logging(
    service: str,
    instance: str,
    *,
    fmt: LogFormat | None = None,
    level: str | None = None,
    stream: TextIO | None = None,
) -> None:
    """Send every logger's records to one handler on `stream` (stderr) in the chosen format.

    Replaces whatever handlers the root logger had, and routes the loggers of
    libraries that install their own (FastStream's) to it, so every line of the
    process has the same format.
    """
    chosen = fmt or log_format()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(service, instance) if chosen == "json" else logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel((level or os.environ.get("ATB_LOG_LEVEL", "INFO")).upper())
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in list(logging.Logger.manager.loggerDict):
        if name.split(".", 1)[0] == "faststream":
            logger = logging.getLogger(name)
            for old in list(logger.handlers):
                logger.removeHandler(old)
            logger.propagate = True
    logging.captureWarnings(True)


def access_fields(request: BaseRequest, response: StreamResponse, seconds: float) -> dict[str, Any]:
    """The ECS fields of one answered request (never its body, query string or credentials)."""
    fields: dict[str, Any] = {
        "event.kind": "event",
        "event.category": ["web"],
        "event.dataset": "atb.access",
        "event.duration": int(seconds * 1_000_000_000),
        "http.request.method": request.method,
        "http.version": f"{request.version.major}.{request.version.minor}",
        "url.path": request.path,
        "http.response.status_code": response.status,
        "client.address": request.remote or "",
    }
    if response.body_length:
        fields["http.response.body.bytes"] = response.body_length
    agent = request.headers.get("User-Agent")
    if agent:
        fields["user_agent.original"] = agent[:512]
    transport = request.transport
    peer = transport.get_extra_info("peercert") if transport is not None else None
    if isinstance(peer, dict):
        subject = ",".join(
            f"{name}={value}" for rdn in peer.get("subject", ()) for name, value in rdn if isinstance(value, str)
        )
        if subject:
            fields["tls.client.subject"] = subject
        names = [value for kind, value in peer.get("subjectAltName", ()) if kind == "URI"]
        if names:
            fields["tls.client.x509.alternative_names"] = names
    trace_id = request.get(TRACE_ID_KEY) if isinstance(request, web.Request) else None
    if trace_id:
        fields["trace.id"] = trace_id
    return fields


class EcsAccessLogger(AbstractAccessLogger):
    """aiohttp's access-log hook: one `atb.access` line per answered request, with ECS HTTP fields."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        fields = access_fields(request, response, time)
        self.logger.info(
            '%s %s %d %.1fms "%s"',
            request.method,
            request.path,
            response.status,
            time * 1000,
            fields.get("user_agent.original", "-"),
            extra={ECS_FIELDS: fields},
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
