"""The chat service's errors.

    ChatError
    ├── InteractionRejectedError      a request to /slack/interactions is not authentic or not usable
    │   ├── SignatureError            missing headers, stale timestamp, bad signature (HTTP 401)
    │   ├── MalformedInteractionError the body is not a Slack block_actions payload we understand (HTTP 400)
    │   ├── InteractionReplayError    a Slack trigger_id or a Teams activity id seen before (HTTP 409)
    │   └── TokenError                a Teams activity's Bot Framework bearer token is refused (HTTP 401)
    ├── SlackCallError                a Slack Web API call failed (chat/adapters/slack.py)
    └── TeamsCallError                a Bot Connector or token call failed (chat/adapters/teams_connector.py)

Each carries a stable snake_case `code` for the audit event and the HTTP answer.
"""

from __future__ import annotations

__all__ = [
    "ChatError",
    "InteractionRejectedError",
    "InteractionReplayError",
    "MalformedInteractionError",
    "SignatureError",
    "TeamsCallError",
    "TokenError",
]


class ChatError(Exception):
    """Base of every chat service error."""


class InteractionRejectedError(ChatError):
    status = 400

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class SignatureError(InteractionRejectedError):
    status = 401


class MalformedInteractionError(InteractionRejectedError):
    status = 400


class InteractionReplayError(InteractionRejectedError):
    status = 409


class TokenError(InteractionRejectedError):
    status = 401


class TeamsCallError(ChatError):
    """A Bot Connector REST call or the bot token request failed (HTTP error, unreachable)."""
