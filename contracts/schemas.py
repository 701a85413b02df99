"""Generate the JSON Schemas of every event, the envelope and the PoA claims.

`python -m contracts.schemas` rewrites `contracts/schemas/`; a test fails when the
committed files drift from the models. Reads models, writes files, nothing else.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from contracts.envelope import Envelope
from contracts.events import EVENT_TYPES
from contracts.poa import PoaClaims

__all__ = ["SCHEMA_DIR", "render_schemas", "write_schemas"]

SCHEMA_DIR = Path(__file__).parent / "schemas"


def _render(model: type[BaseModel], title: str) -> str:
    schema = model.model_json_schema(mode="validation")
    schema["$id"] = f"urn:atb:schema:{title}"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def render_schemas() -> dict[str, str]:
    """File name → schema text, for every published model."""
    out = {f"{event_type}.json": _render(model, event_type) for event_type, model in EVENT_TYPES.items()}
    out["envelope.cloudevents.v1.json"] = _render(Envelope, "envelope.cloudevents.v1")
    out["poa.claims.v1.json"] = _render(PoaClaims, "poa.claims.v1")
    return out


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema; remove stale ones. Returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    rendered = render_schemas()
    for stale in directory.glob("*.json"):
        if stale.name not in rendered:
            stale.unlink()
    written = []
    for name, text in sorted(rendered.items()):
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_schemas():
        sys.stdout.write(f"wrote {path}\n")
