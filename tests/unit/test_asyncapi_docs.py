"""The committed AsyncAPI documents (docs/asyncapi/) match what the FastStream apps generate.

Regenerate with `python tools/gen_asyncapi.py` after changing a service's channels or an event model.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import cast

_TOOL = Path(__file__).resolve().parents[2] / "tools" / "gen_asyncapi.py"


def _generator() -> ModuleType:
    """tools/ is not a package on sys.path, so load the generator from its file."""
    name = "_atb_tools_gen_asyncapi"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _TOOL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _stale_docs(directory: Path | None = None) -> list[Path]:
    tool = _generator()
    stale_docs = cast("Callable[[Path], list[Path]]", tool.stale_docs)
    return stale_docs(directory if directory is not None else cast("Path", tool.DOCS_DIR))


def test_committed_asyncapi_documents_are_fresh() -> None:
    stale = _stale_docs()
    assert not stale, f"stale AsyncAPI documents, run `python tools/gen_asyncapi.py`: {[p.name for p in stale]}"


def test_check_detects_an_edited_document(tmp_path: Path) -> None:
    # The drift check must be able to fail: copy the committed documents, alter one, expect exactly it.
    committed = cast("Path", _generator().DOCS_DIR)
    for path in committed.glob("*.json"):
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    edited = tmp_path / "broker.json"
    edited.write_text(edited.read_text(encoding="utf-8").replace("BrokerDecision", "BrokerVerdict"), encoding="utf-8")
    (tmp_path / "retired-service.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "issuer.json").unlink()

    assert sorted(p.name for p in _stale_docs(tmp_path)) == ["broker.json", "issuer.json", "retired-service.json"]
