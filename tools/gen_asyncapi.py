"""Generate the AsyncAPI document of every service from its FastStream app.

`python tools/gen_asyncapi.py` rewrites `docs/asyncapi/<service>.json`;
`python tools/gen_asyncapi.py --check` writes nothing and exits 1 naming each
stale file (docs/architecture.md §4.6: the AsyncAPI document is generated from the apps, and
a test fails when the committed copy drifts).

The documents come from FastStream's own generator, called in-process: an app's
`schema` is the `AsyncAPI(...)` factory it was built with, and
`schema.to_specification().to_jsonable()` is exactly what
`faststream docs gen <pkg>.main:app` writes. We serialise with sorted keys and a
final newline so the bytes depend on the code alone. Importing a service's
`main` does no I/O; this tool reads and writes `docs/asyncapi/` and nothing else.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from faststream import FastStream

__all__ = ["APPS", "DOCS_DIR", "AsyncApiError", "load_app", "render", "render_all", "stale_docs", "write_docs"]

REPO = Path(__file__).resolve().parents[1]
DOCS_DIR = REPO / "docs" / "asyncapi"

APPS: Mapping[str, str] = {
    "approvals": "approvals.main:app",
    "issuer": "issuer.main:app",
    "audit-sink": "audit_sink.main:app",
    "broker": "broker.main:app",
    "gateway": "gateway.main:app",
    "chat": "chat.main:app",
}
"""Service name (the document's file name) → `module:attribute` of its FastStream app."""


class AsyncApiError(Exception):
    """An app could not be loaded, or FastStream could not describe it."""


def load_app(target: str) -> FastStream:
    """Import `module:attribute` and return the FastStream app it names."""
    module_name, _, attribute = target.partition(":")
    app = getattr(importlib.import_module(module_name), attribute or "app", None)
    if not isinstance(app, FastStream):
        raise AsyncApiError(f"{target} is not a FastStream app (got {type(app).__name__})")
    return app


def render(target: str) -> str:
    """The AsyncAPI document of one app, as the text committed under docs/asyncapi/."""
    app = load_app(target)
    try:
        document = app.schema.to_specification().to_jsonable()
    except Exception as exc:  # FastStream and pydantic raise many types; name the app that failed
        raise AsyncApiError(f"FastStream could not generate the AsyncAPI document of {target}: {exc}") from exc
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def render_all(apps: Mapping[str, str] = APPS) -> dict[str, str]:
    """File name → document text, for every app."""
    return {f"{service}.json": render(target) for service, target in apps.items()}


def write_docs(directory: Path = DOCS_DIR, apps: Mapping[str, str] = APPS) -> list[Path]:
    """Write every document and remove the ones no app produces. Returns the files written."""
    rendered = render_all(apps)
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


def stale_docs(directory: Path = DOCS_DIR, apps: Mapping[str, str] = APPS) -> list[Path]:
    """Committed documents that are missing, differ from the apps, or belong to no app. Empty when all is fresh."""
    rendered = render_all(apps)
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
    try:
        if not args.check:
            for path in write_docs(args.out):
                sys.stdout.write(f"wrote {_shown(path)}\n")
            return 0
        stale = stale_docs(args.out)
    except AsyncApiError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    for path in stale:
        sys.stderr.write(f"stale: {_shown(path)} (regenerate with `python tools/gen_asyncapi.py`)\n")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
