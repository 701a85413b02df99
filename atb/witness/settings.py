"""Witness settings (`ATB_WITNESS_*` environment variables, and the shared `ATB_STATE_DIR`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from atb_runtime.settings import CommonSettings

__all__ = ["WitnessSettings"]


class WitnessSettings(CommonSettings):
    witness_name: str = "atb.local/witness"
    """The witness's key name (C2SP: a schema-less URL naming the cosigner)."""
    witness_state_dir: Path | None = None
    """Its key and state; default `<state>/witness`."""
    witness_host: str = "127.0.0.1"
    witness_port: int = 18190
    witness_logs: dict[str, list[str]] = Field(default_factory=dict)
    """Per log origin, the log's verifier keys (or files holding one). Default: the local audit sink's
    `<state>/audit/checkpoint.key.pub` for its origin (`ATB_CHECKPOINT_ORIGIN`)."""
    checkpoint_origin: str = "atb.local/audit"
    checkpoint_key_path: Path | None = None

    def folder(self) -> Path:
        return self.witness_state_dir or self.state_dir / "witness"

    def key_path(self) -> Path:
        return self.folder() / "witness.key"

    def logs(self) -> dict[str, list[str]]:
        if self.witness_logs:
            return self.witness_logs
        local = self.checkpoint_key_path or self.state_dir / "audit" / "checkpoint.key"
        return {self.checkpoint_origin: [str(local) + ".pub"]}
