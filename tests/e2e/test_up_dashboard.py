"""`eventray up` with its default of starting the Ray dashboard: it prints the URL, the
dashboard answers there, the driver logs JSON, and Ctrl-C stops the dashboard's processes too.
(The other tests turn the dashboard off: see tests/conftest.py.)"""

from __future__ import annotations

import json
import re
import signal
import urllib.request
from collections.abc import Callable

import pytest

from eventray.cluster.raylocal import free_port
from tests.e2e.conftest import Up

pytestmark = pytest.mark.ray


def test_up_starts_the_dashboard_prints_its_url_and_stops_it(
    start_up: Callable[..., Up],
) -> None:
    port = free_port()
    up = start_up(
        env={
            "EVENTRAY_RAY__INCLUDE_DASHBOARD": "true",
            "EVENTRAY_RAY__DASHBOARD_PORT": str(port),
        }
    )
    up.wait_until_up()
    [line] = [x for x in up.stdout.read_text().splitlines() if "eventray is up" in x]
    url = re.search(r"ray dashboard (\S+)", line)
    assert url is not None and url.group(1) == f"http://127.0.0.1:{port}", line
    with urllib.request.urlopen(url.group(1), timeout=10) as answer:
        assert "<html" in answer.read().decode().lower()
    assert any("dashboard/dashboard.py" in cmd for cmd in up.look())
    up.process.send_signal(signal.SIGINT)
    assert up.wait_exit(timeout_s=60) == 0
    assert up.survivors(timeout_s=10) == []
    # The driver's own lines (here: the stop) are JSON on stderr, as the actors' are.
    driver = [json.loads(x) for x in up.stderr.read_text().splitlines() if x.startswith('{"ts"')]
    assert {x["component"] for x in driver} == {"driver"}
    messages = [x["msg"] for x in driver]
    assert any(m.startswith("stack started") for m in messages), messages
    assert any(m.startswith("stack stopped") for m in messages), messages
