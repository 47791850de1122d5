"""``eventray tokens``, ``get``, ``delete`` and ``history`` without a running stack: the
services on the data directory, guarded by its admin token like ``apply``. This is the
bootstrap: the first API token for the root organization is made here and printed once."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from eventray.cluster.admin_token import TOKEN_VARIABLE, ensure_admin_token
from eventray.cluster.cli import main
from eventray.pipeline.management import hash_token

TENANT = Path(__file__).resolve().parents[2] / "config" / "samples" / "tenant"


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    monkeypatch.delenv("EVENTRAY_API_TOKEN", raising=False)
    (tmp_path / "data").mkdir(mode=0o700)
    return tmp_path / "data"


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def parsed(text: str) -> Any:
    return json.loads("".join(line for line in text.splitlines(keepends=True)
                              if not line.startswith("#")))  # fmt: skip


def test_bootstrap_the_first_token_then_list_and_revoke(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("apply", "-f", str(TENANT), "--data-dir", str(data))[0] == 0
    code, text = run("tokens", "create", "--org", "mapex", "--role", "admin", "--name", "root",
                     "--expires-days", "30", "--data-dir", str(data))  # fmt: skip
    assert code == 0, capsys.readouterr().err
    made = parsed(text)
    assert made["token"].startswith("ert_") and made["orgId"] == "mapex" and made["active"]
    stored = (data / "tokens.json").read_text()
    assert made["token"] not in stored and hash_token(made["token"]) in stored
    assert (data / "tokens.json").stat().st_mode & 0o777 == 0o600
    listed = parsed(run("tokens", "list", "--data-dir", str(data))[1])["items"]
    assert [t["name"] for t in listed] == ["root"] and "token" not in listed[0]
    revoked = parsed(run("tokens", "revoke", made["id"], "--data-dir", str(data))[1])
    assert revoked["revoked"] and not revoked["active"]
    assert run("tokens", "create", "--org", "nowhere", "--role", "viewer", "--data-dir",
               str(data))[0] == 1  # fmt: skip
    assert "unknown organization 'nowhere'" in capsys.readouterr().err


def test_a_wrong_admin_token_makes_no_token(
    data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ensure_admin_token(data)
    monkeypatch.setenv(TOKEN_VARIABLE, "guess")
    assert run("tokens", "create", "--org", "mapex", "--role", "admin", "--data-dir",
               str(data))[0] == 1  # fmt: skip
    assert capsys.readouterr().err.startswith("eventray: wrong admin token")
    assert not (data / "tokens.json").exists()


def test_get_delete_and_history_on_the_data_directory(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("apply", "-f", str(TENANT), "--data-dir", str(data))[0] == 0
    page = parsed(run("get", "assets", "--org", "factory-alpha", "--children", "--limit", "2",
                      "--data-dir", str(data))[1])  # fmt: skip
    assert [d["id"] for d in page["items"]] == ["freezer-01", "freezer-02"] and page["nextCursor"]
    one = parsed(run("get", "Asset", "freezer-01", "--data-dir", str(data))[1])
    assert one["assetUUID"] == "FRZ-0001"
    edited = tmp_path / "edit.yaml"
    edited.write_text(
        "kind: Asset\nid: freezer-01\norgId: alpha-cold-room-1\nassetUUID: FRZ-0001\n"
        "name: Freezer one\ntemplateId: freezer-json\nrouteGroupIds: [rg-cold-chain]\n"
    )
    assert run("apply", "-f", str(edited), "--data-dir", str(data))[0] == 0
    history = parsed(run("history", "asset", "freezer-01", "--data-dir", str(data))[1])["items"]
    assert [(h["revision"], h["op"], h["author"]["name"]) for h in history] == [
        (1, "create", "local admin"), (2, "update", "local admin")
    ]  # fmt: skip
    back = parsed(run("history", "asset", "freezer-01", "--rollback", "1", "--data-dir",
                      str(data))[1])  # fmt: skip
    assert back["changes"][0]["revision"] == 3
    assert parsed(run("get", "asset", "freezer-01", "--data-dir", str(data))[1])["name"] == (
        "Freezer 01"
    )
    assert run("delete", "route-groups", "rg-critical-webhook", "--data-dir", str(data))[0] == 1
    assert "still used by Asset 'freezer-03' (routeGroupIds[1])" in capsys.readouterr().err
    assert run("get", "widgets", "--data-dir", str(data))[0] == 1
    assert "unknown kind 'widgets'" in capsys.readouterr().err


def test_an_api_token_without_a_running_stack_says_so(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.environ["EVENTRAY_API_TOKEN"] = "ert_x"
    try:
        assert run("get", "assets", "--data-dir", str(data))[0] == 3
    finally:
        del os.environ["EVENTRAY_API_TOKEN"]
    assert "no stack with a management API runs" in capsys.readouterr().err
