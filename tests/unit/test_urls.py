"""What error messages and logs may show of a server URL: never its password."""

from __future__ import annotations

import pytest

from eventray.pipeline.adapters.urls import redacted


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://eventray:s3cr3t@127.0.0.1:4222", "nats://eventray:***@127.0.0.1:4222"),
        ("redis://:s3cr3t@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("nats://u:a@h1:1,nats://u:b@h2:2", "nats://u:***@h1:1,nats://u:***@h2:2"),
        ("redis://:p@[::1]:6379", "redis://:***@[::1]:6379"),
        ("nats://u:p@host:notaport", "<url>"),
    ],
)
def test_redacted(url: str, shown: str) -> None:
    assert redacted(url) == shown
