"""The top-level package names are generic: make sure ours are the ones imported."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["actors", "pipeline", "config", "cluster"])
def test_packages_resolve_inside_this_repository(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__file__ is not None
    assert Path(module.__file__).resolve().is_relative_to(REPO), module.__file__


def test_pipeline_does_not_import_ray_or_drivers() -> None:
    # Dependencies point inward: the domain runs without Ray and without drivers.
    for path in (REPO / "pipeline").rglob("*.py"):
        if "adapters" in path.parts:
            continue
        text = path.read_text()
        for driver in ("import ray", "from ray", "import nats", "import redis", "import clickhouse_connect",
                       "import pymongo", "import minio"):  # fmt: skip
            assert driver not in text, f"{path} imports a driver: {driver}"


def test_settings_read_environment_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from config.settings import load_settings

    monkeypatch.setenv("EVENTRAY_SCRIPTS__TIME_LIMIT_S", "0.25")
    monkeypatch.setenv("EVENTRAY_SCRIPTS__MEMORY_LIMIT_MB", "16")
    settings = load_settings()
    assert settings.scripts.limits().time_s == 0.25
    assert settings.scripts.limits().memory_bytes == 16 * 1024 * 1024
    monkeypatch.setenv("EVENTRAY_SCRIPTS__TIME_LIMIT_S", "-1")
    with pytest.raises(ValueError, match="greater than 0"):
        load_settings()


def test_every_package_is_listed_in_pyproject() -> None:
    import tomllib

    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for top in ("actors", "pipeline", "config", "cluster")
        for init in (REPO / top).rglob("__init__.py")
    }
    assert found == listed
