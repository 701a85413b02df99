"""The issuer's signing keys over time: rotation without a verification gap.

Keys live in `<state>/issuer/keys/`: one `<kid>.pem` (0600) per key and an
`index.json` saying when each key starts signing (`activate_at`) and until when
its public key must stay published (`retire_after`). Rotation (`atb keys
rotate`) adds a key that activates a little later — after its public key has
been published on `atb.keys` and in the JWKS — and schedules the previous key's
retirement for when every token it may still sign has expired:

    retire_after(old) = activate_at(new) + max PoA lifetime + leeway

The issuer signs with the newest active key and re-reads the index when it
changes, so a rotation needs no restart. A key given as a mounted secret
(`ATB_SIGNING_KEY_PATH`, production) is used alone; rotate it with the secret.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from atb_runtime.files import exclusively, sync_folder, write_atomically
from contracts import MAX_LIFETIME_SECONDS
from issuer.adapters.keys import SigningKey, load_key, load_or_create_key

__all__ = ["RETIRE_LEEWAY", "KeyEntry", "MountedKey", "SigningKeyRing", "open_keys"]

RETIRE_LEEWAY = timedelta(seconds=60)
"""Verifier leeway plus cache age (RFC 8725 practice: keep old keys TTL + leeway + cache age)."""


@dataclass(frozen=True)
class KeyEntry:
    key: SigningKey
    activate_at: datetime
    retire_after: datetime | None


class SigningKeyRing:
    """The issuer's Ed25519 signing keys on disk (index.json + one PEM per key): which signs now, which retire."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._index = directory / "index.json"
        self._loaded: tuple[int, int] | None = None
        self._entries: list[KeyEntry] = []

    @classmethod
    def ensure(cls, directory: Path, now: datetime | None = None) -> SigningKeyRing:
        """The keyring in `directory`, with a first key (active at once) if it has none."""
        ring = cls(directory)
        if ring._index.exists():
            return ring
        with exclusively(directory):  # replicas starting together: one makes the first key, the others read it
            if not ring._index.exists():
                key = load_or_create_key(directory / "first.pem")
                (directory / "first.pem").rename(directory / f"{key.kid}.pem")
                sync_folder(directory)
                ring._write([KeyEntry(_reload(directory, key.kid), now or datetime.now(UTC), None)])
        return ring

    def entries(self) -> list[KeyEntry]:
        """All keys, re-read when index.json changed (a rotation by `atb keys rotate`)."""
        stat = self._index.stat()
        # index.json is replaced atomically, so a new inode means a new index even
        # when the file-system clock is too coarse to change the mtime.
        version = (stat.st_ino, stat.st_mtime_ns)
        if version != self._loaded:
            raw = json.loads(self._index.read_text(encoding="utf-8"))
            self._entries = [
                KeyEntry(
                    _reload(self._dir, item["kid"]),
                    datetime.fromisoformat(item["activate_at"]),
                    datetime.fromisoformat(item["retire_after"]) if item["retire_after"] else None,
                )
                for item in raw["keys"]
            ]
            self._loaded = version
        return list(self._entries)

    def current(self, now: datetime) -> SigningKey:
        """The newest key already active at `now`."""
        active = [e for e in self.entries() if e.activate_at <= now]
        if not active:
            raise LookupError("no signing key is active yet")
        # The latest activation wins; on a tie, the key added last.
        return max(enumerate(active), key=lambda pair: (pair[1].activate_at, pair[0]))[1].key

    def published(self, now: datetime) -> list[KeyEntry]:
        """Keys whose public part must be published: not yet retired."""
        return [e for e in self.entries() if e.retire_after is None or e.retire_after > now]

    def rotate(self, now: datetime, *, activation_delay: timedelta = timedelta(seconds=10)) -> KeyEntry:
        """Add a key that activates after `activation_delay`; schedule the retirement of the others."""
        with exclusively(self._dir):  # two rotations at once add two keys, neither lost
            entries = self.entries()
            fresh_path = self._dir / "incoming.pem"
            key = load_or_create_key(fresh_path)
            fresh_path.rename(self._dir / f"{key.kid}.pem")
            sync_folder(self._dir)
            activate_at = now + activation_delay
            retire = activate_at + timedelta(seconds=MAX_LIFETIME_SECONDS) + RETIRE_LEEWAY
            updated = [e if e.retire_after is not None else KeyEntry(e.key, e.activate_at, retire) for e in entries]
            entry = KeyEntry(_reload(self._dir, key.kid), activate_at, None)
            self._write([*updated, entry])
            return entry

    def _write(self, entries: list[KeyEntry]) -> None:
        body = {
            "keys": [
                {
                    "kid": e.key.kid,
                    "activate_at": e.activate_at.isoformat(),
                    "retire_after": e.retire_after.isoformat() if e.retire_after else None,
                }
                for e in entries
            ]
        }
        write_atomically(self._index, json.dumps(body, indent=2).encode(), mode=0o600)


class MountedKey:
    """A key given as a mounted secret (`ATB_SIGNING_KEY_PATH`, production): it alone signs and is published."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():  # a secret that did not mount: never sign with a key made up here instead
            raise FileNotFoundError(f"ATB_SIGNING_KEY_PATH={path} is not a file: mount the issuer's signing key there")
        self._entry = KeyEntry(load_key(path), datetime(1970, 1, 1, tzinfo=UTC), None)

    def current(self, now: datetime) -> SigningKey:
        return self._entry.key

    def published(self, now: datetime) -> list[KeyEntry]:
        return [self._entry]


def open_keys(signing_key_path: Path | None, keyring_dir: Path) -> MountedKey | SigningKeyRing:
    """A mounted key (production) is used alone; otherwise the rotating keyring in the state folder."""
    if signing_key_path is not None:
        return MountedKey(signing_key_path)
    return SigningKeyRing.ensure(keyring_dir)


def _reload(directory: Path, kid: str) -> SigningKey:
    key = load_key(directory / f"{kid}.pem")
    if key.kid != kid:
        raise ValueError(f"{directory / kid}.pem holds key {key.kid}")
    return key
