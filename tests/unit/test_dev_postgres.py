"""atb.dev.postgres: a machine without PostgreSQL gets a clear error naming what to install."""

from __future__ import annotations

from pathlib import Path

import pytest

from atb.dev.postgres import PostgresMissingError, find_pg_bin


def test_missing_binaries_say_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATB_PG_BIN", raising=False)
    with pytest.raises(PostgresMissingError, match="apt-get install postgresql"):
        find_pg_bin(search=(str(tmp_path / "nothing-here"),))


def test_an_explicit_folder_without_initdb_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATB_PG_BIN", str(tmp_path))
    with pytest.raises(PostgresMissingError, match="has no initdb"):
        find_pg_bin()


def test_a_folder_with_initdb_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATB_PG_BIN", raising=False)
    (tmp_path / "15" / "bin").mkdir(parents=True)
    (tmp_path / "15" / "bin" / "initdb").touch()
    assert find_pg_bin(search=(str(tmp_path),)) == tmp_path / "15" / "bin"
