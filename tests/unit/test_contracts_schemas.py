"""contracts.schemas: the committed JSON Schemas are exactly what the models generate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts.events import EVENT_TYPES
from contracts.schemas import SCHEMA_DIR, render_schemas, write_schemas

REGENERATE = "run `python -m contracts.schemas` and commit contracts/schemas/"


def schema_drift(directory: Path, rendered: dict[str, str]) -> list[str]:
    """Every difference between the files in `directory` and `rendered`, in words."""
    committed = {path.name: path.read_text(encoding="utf-8") for path in directory.glob("*.json")}
    problems = [f"missing {name}" for name in sorted(rendered.keys() - committed.keys())]
    problems += [f"stale {name}" for name in sorted(committed.keys() - rendered.keys())]
    problems += [
        f"changed {name}" for name in sorted(rendered.keys() & committed.keys()) if rendered[name] != committed[name]
    ]
    return problems


def test_committed_schemas_match_the_models() -> None:
    problems = schema_drift(SCHEMA_DIR, render_schemas())
    assert not problems, f"JSON Schemas drifted from the models ({', '.join(problems)}): {REGENERATE}"


def test_there_is_one_schema_per_event_type_plus_envelope_and_claims() -> None:
    names = set(render_schemas())
    assert names == {f"{t}.json" for t in EVENT_TYPES} | {"envelope.cloudevents.v1.json", "poa.claims.v1.json"}


@pytest.mark.parametrize("name", sorted(render_schemas()))
def test_each_schema_is_json_with_its_id_and_forbids_extras(name: str) -> None:
    schema = json.loads(render_schemas()[name])
    assert schema["$id"] == "urn:atb:schema:" + name.removesuffix(".json")
    assert schema["additionalProperties"] is False


def _drop(directory: Path) -> None:
    (directory / "poa.claims.v1.json").unlink()


def _add(directory: Path) -> None:
    (directory / "atb.old.thing.v1.json").write_text("{}", encoding="utf-8")


def _edit(directory: Path) -> None:
    path = directory / "envelope.cloudevents.v1.json"
    path.write_text(path.read_text(encoding="utf-8").replace('"1.0"', '"0.3"'), encoding="utf-8")


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_drop, ["missing poa.claims.v1.json"]),
        (_add, ["stale atb.old.thing.v1.json"]),
        (_edit, ["changed envelope.cloudevents.v1.json"]),
    ],
)
def test_drift_check_detects_drift(tmp_path: Path, damage: object, expected: list[str]) -> None:
    assert callable(damage)
    write_schemas(tmp_path)
    assert schema_drift(tmp_path, render_schemas()) == []
    damage(tmp_path)
    assert schema_drift(tmp_path, render_schemas()) == expected


def test_write_schemas_removes_stale_files(tmp_path: Path) -> None:
    _add(tmp_path)
    written = write_schemas(tmp_path)
    assert sorted(p.name for p in written) == sorted(render_schemas())
    assert not (tmp_path / "atb.old.thing.v1.json").exists()
