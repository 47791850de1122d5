"""``eventray apply`` needs the data directory's admin token: a wrong one stops it before it
reads or writes anything; the right one (given, from the environment, or read from the file by
its owner) applies. No stack runs here: apply then writes the embedded config store directly,
the same store a running stack reads."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from eventray.cluster.admin_token import TOKEN_FILE, TOKEN_VARIABLE, ensure_admin_token
from eventray.cluster.cli import main

ORG = "- {kind: Organization, id: acme, name: ACME, type: customer}\n"


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    (tmp_path / "data").mkdir(mode=0o700)
    return tmp_path / "data"


def apply(data: Path, tmp_path: Path, *extra: str) -> tuple[int, dict[str, object]]:
    entities = tmp_path / "org.yaml"
    entities.write_text(ORG)
    out = io.StringIO()
    code = main(["apply", "-f", str(entities), "--data-dir", str(data), *extra], out=out)
    return code, json.loads(out.getvalue()) if out.getvalue() else {}


def stored(data: Path) -> list[str]:
    path = data / "config" / "entities.json"
    return [d["id"] for d in json.loads(path.read_text())["documents"]] if path.exists() else []


def test_a_wrong_token_applies_nothing_and_exits_1(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ensure_admin_token(data)
    code, _ = apply(data, tmp_path, "--token", "not-the-token")
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("eventray: wrong admin token") and err.count("\n") == 1
    assert "not-the-token" not in err
    assert stored(data) == []


def test_a_wrong_token_in_the_environment_is_refused_too(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_admin_token(data)
    monkeypatch.setenv(TOKEN_VARIABLE, "guess")
    assert apply(data, tmp_path)[0] == 1
    assert stored(data) == []


def test_the_right_token_applies(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = ensure_admin_token(data)
    code, report = apply(data, tmp_path, "--token", token)
    assert (code, report["applied"], stored(data)) == (0, 1, ["acme"])
    monkeypatch.setenv(TOKEN_VARIABLE, token)
    assert apply(data, tmp_path)[0] == 0


def test_the_owner_applies_with_the_token_file(data: Path, tmp_path: Path) -> None:
    """Reading the token file is what the token stands for: its owner need not copy it; a
    data directory no stack has used yet gets its token at the first apply."""
    code, _ = apply(data, tmp_path)
    assert code == 0 and stored(data) == ["acme"]
    assert (data / TOKEN_FILE).stat().st_mode & 0o777 == 0o600


def test_the_token_is_kept_and_replaced_when_others_could_read_it(tmp_path: Path) -> None:
    token = ensure_admin_token(tmp_path)
    assert len(token) >= 40 and ensure_admin_token(tmp_path) == token
    os.chmod(tmp_path / TOKEN_FILE, 0o644)
    fresh = ensure_admin_token(tmp_path)
    assert fresh != token and (tmp_path / TOKEN_FILE).stat().st_mode & 0o777 == 0o600
