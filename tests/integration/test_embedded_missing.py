"""`eventray up` on an install without chDB (the base install, no `embedded` extra) stops at
once with the install command and the setting, and starts nothing.

chDB is hidden from the child process (``sys.modules["chdb"] = None``, what an absent package
looks like to an import); NATS and Valkey are named as real servers, so only the event store
would need an embedded part. The servers named are never contacted: the check comes first.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

WITHOUT_CHDB = (
    "import sys; sys.modules['chdb'] = None; "
    "from eventray.cluster.cli import main; raise SystemExit(main(sys.argv[1:]))"
)


def test_up_without_chdb_names_the_extra_and_the_setting(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_CHDB, "up", "--data-dir", str(data)],
        env={
            "PATH": "/usr/bin:/bin",
            "EVENTRAY_NATS__URL": "nats://127.0.0.1:1",
            "EVENTRAY_REDIS_URL": "redis://127.0.0.1:1/0",
        },
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    [line] = result.stderr.splitlines()
    assert line.startswith("eventray: the embedded event store (chDB and pyarrow) is not installed")
    assert "pip install 'eventray[embedded]'" in line
    assert "EVENTRAY_STORE__CLICKHOUSE_URL" in line
    assert not data.exists()  # nothing started, nothing written
