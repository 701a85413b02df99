"""Parse an (already authenticated) Slack interaction body into a `Click`.

Slack posts `application/x-www-form-urlencoded` with one field, `payload`, a
JSON document. We accept only `block_actions` on our own buttons
(`atb_approve` / `atb_deny`, value = request id) and take the user from
`user.id`, Slack's immutable user id: never the name, never an email.
Anything else is a `MalformedInteractionError` with a code.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import orjson

from chat.domain import APPROVE_ACTION, DENY_ACTION, STEP_UP_ACTION, Click
from chat.errors import MalformedInteractionError
from contracts import VoteChoice

__all__ = ["parse_interaction"]

# The console link is read as an approve: refused as step_up_required (chat.domain.step_up), never a vote.
_CHOICES = {APPROVE_ACTION: VoteChoice.APPROVE, DENY_ACTION: VoteChoice.DENY, STEP_UP_ACTION: VoteChoice.APPROVE}
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def parse_interaction(body: bytes) -> Click:
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True, max_num_fields=4)
        # orjson bounds nesting (1024 levels) and raises a ValueError; json.loads recursed until RecursionError.
        payload: Any = orjson.loads(form["payload"][0])
    except (UnicodeDecodeError, ValueError, KeyError, IndexError) as exc:
        raise MalformedInteractionError("bad_body", f"expected a form field 'payload' holding JSON: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        raise MalformedInteractionError("unsupported_type", "only block_actions interactions are handled")
    actions = payload.get("actions")
    if not isinstance(actions, list) or len(actions) != 1 or not isinstance(actions[0], dict):
        raise MalformedInteractionError("bad_actions", "expected exactly one action")
    action = actions[0]
    choice = _CHOICES.get(str(action.get("action_id")))
    if choice is None:
        raise MalformedInteractionError("unknown_action", "not an ATB approve/deny button")
    return Click(
        user_id=_slack_id(payload, "user", "id"),
        team_id=_slack_id(payload, "team", "id") if isinstance(payload.get("team"), dict) else "",
        request_id=_text(action.get("value"), "actions[0].value", 128),
        choice=choice,
        trigger_id=_text(payload.get("trigger_id"), "trigger_id", 128),
        channel_id=_text(_get(payload, "container", "channel_id"), "container.channel_id", 64),
        message_ts=_text(_get(payload, "container", "message_ts"), "container.message_ts", 64),
    )


def _get(payload: dict[str, Any], outer: str, inner: str) -> object:
    value = payload.get(outer)
    return value.get(inner) if isinstance(value, dict) else None


def _slack_id(payload: dict[str, Any], outer: str, inner: str) -> str:
    value = _text(_get(payload, outer, inner), f"{outer}.{inner}", 32)
    if not set(value) <= _ID_CHARS:
        raise MalformedInteractionError("bad_id", f"{outer}.{inner} is not a Slack id")
    return value


def _text(value: object, where: str, limit: int) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise MalformedInteractionError("missing_field", f"{where}: expected a string of 1 to {limit} characters")
    return value
