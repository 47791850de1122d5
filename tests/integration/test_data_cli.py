"""``eventray events|logs|dlq|replay`` with an API token go through the running stack's
management API, with the token's scope: the CLI in this process, the API on a free port over
real data (``datakit``), found through ``stack.json`` as a running stack's is."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from eventray.cluster.cli import main
from eventray.cluster.stack import StackInfo
from tests.integration.apikit import RunningApi, running_api, sample_documents
from tests.integration.datakit import StoredData, data_routers, stored_data

pytestmark = pytest.mark.services

A, B = "alpha-cold-room-1", "alpha-cold-room-2"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoredData]:
    with stored_data(sample_documents(), tmp_path_factory.mktemp("chdb")) as found:
        yield found


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, data: StoredData) -> Iterator[RunningApi]:
    yield from running_api(tmp_path_factory.mktemp("api"), routers=data_routers(),
                           state=data.state)  # fmt: skip


@pytest.fixture
def cli(api: RunningApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``eventray ARGS`` as room 1's editor; (exit code, standard output)."""
    info = StackInfo(endpoints={}, ingress_url="", ray_address="", pid=os.getpid(),
                     api_url=api.url)  # fmt: skip
    (tmp_path / "stack.json").write_text(json.dumps(asdict(info)))
    monkeypatch.setenv("EVENTRAY_API_TOKEN", api.token(A, "editor", name="cli"))

    def run(*args: str) -> tuple[int, str]:
        out = io.StringIO()
        code = main([*args, "--data-dir", str(tmp_path)], out=out)
        return code, out.getvalue()

    return run


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_reads_go_through_the_api_with_the_token_s_scope(cli: Any, data: StoredData) -> None:
    code, text = cli("events", "query", "--where", "temperature < -18", "--format", "csv",
                     "--all", "--limit", "3")  # fmt: skip
    assert code == 0
    found = list(csv.DictReader(io.StringIO(text)))
    assert found and {r["org_id"] for r in found} == {A}
    assert len(found) == len({r["event_tracker_id"] for r in found})
    code, text = cli("events", "query", "--limit", "2")
    assert code == 0 and len(lines(text)) == 3 and "nextCursor" in lines(text)[-1]
    code, text = cli("events", "story", "fail-a")
    assert code == 0 and json.loads(text)["eventTrackerId"] == "fail-a"
    code, text = cli("logs", "dlq", "--stage", "validate", "--format", "json")
    assert code == 0 and [r["event_tracker_id"] for r in json.loads(text)["rows"]] == ["fail-a"]
    assert cli("events", "query", "--org", B)[0] == 1  # 404: as unknown
    assert cli("events", "story", "fail-b")[0] == 1


def test_dlq_and_replay_go_through_the_api(cli: Any, data: StoredData) -> None:
    code, text = cli("dlq", "list")
    assert code == 0 and [e["eventTrackerId"] for e in lines(text)] == ["fail-a"]
    before = len(data.stream.log(0))
    code, text = cli("dlq", "redrive", "--tracker", "fail-a", "--dry-run")
    assert code == 0, text
    *items, summary = lines(text)
    assert [i["outcome"] for i in items] == ["would-redrive"] and summary["dryRun"] is True
    code, text = cli("dlq", "redrive", "--stage", "validate")
    assert code == 0 and lines(text)[-1]["redriven"] == 1  # room 1's only
    assert len(data.stream.log(0)) == before + 1
    code, text = cli("replay", "--org", A, "--from-seq", "1", "--dry-run")
    assert code == 0 and lines(text)[0]["dryRun"] is True and lines(text)[0]["events"] > 0
    assert cli("replay", "--org", B, "--from-seq", "1", "--dry-run")[0] == 1
    assert cli("dlq", "list", "--org", B)[0] == 1
