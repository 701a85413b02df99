"""The Slack signing secret: from the environment, from a file, or (dev) generated once.

Never in the repository. Production: `ATB_SLACK_SIGNING_SECRET` or
`ATB_SLACK_SIGNING_SECRET_FILE` (a mounted secret). Development: without either,
a random secret is created on first use in `<state>/chat/slack_signing_secret`
(0600, inside the git-ignored `.state/`), which the local Slack stand-in reads.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from atb_runtime.files import create_once

__all__ = ["dev_secret_path", "ensure_signing_secret", "read_secret", "signing_secret"]


def dev_secret_path(state_dir: Path) -> Path:
    return state_dir / "chat" / "slack_signing_secret"


def ensure_signing_secret(path: Path) -> bytes:
    """The secret in `path`, created (atomically, 0600) if the file does not exist yet."""
    create_once(path, lambda: secrets.token_hex(32).encode(), dir_mode=0o755)
    return read_secret(path)


def read_secret(path: Path) -> bytes:
    secret = path.read_text(encoding="utf-8").strip().encode()
    if len(secret) < 16:
        raise ValueError(f"{path}: a Slack signing secret must have at least 16 characters")
    return secret


def signing_secret(inline: str | None, file: Path | None, state_dir: Path) -> bytes:
    """The configured secret (`ATB_SLACK_SIGNING_SECRET`, else `..._FILE`), else the dev one in the state folder."""
    if inline is not None:
        return inline.encode()
    if file is not None:
        return read_secret(file)
    return ensure_signing_secret(dev_secret_path(state_dir))
