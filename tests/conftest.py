"""Shared fixtures. Unit tests need no server and no Ray; see tests/unit/conftest.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# `up` and `demo` start the Ray dashboard by default, on 8265: tests (and the `eventray up`
# processes they start, which inherit this) run without it, to stay lean and off fixed ports.
# tests/e2e/test_observability.py turns it on, on a free port.
os.environ.setdefault("EVENTRAY_RAY__INCLUDE_DASHBOARD", "false")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return REPO / "config" / "samples"
