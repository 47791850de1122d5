"""Packaging: everything installs under the eventray namespace, and dependencies point inward."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


FOLDERS = {"actors": "actors", "pipeline": "pipeline", "config": "config", "cluster": "cluster",
           "testing": "tests/kit"}  # fmt: skip


@pytest.mark.parametrize(("name", "folder"), FOLDERS.items())
def test_packages_install_under_the_eventray_namespace(name: str, folder: str) -> None:
    module = importlib.import_module(f"eventray.{name}")
    assert module.__file__ is not None
    assert Path(module.__file__).resolve().parent == (REPO / folder).resolve(), module.__file__


def test_no_module_imports_a_bare_top_level_name() -> None:
    # `import pipeline` would resolve to whatever distribution owns that generic name.
    bare = re.compile(r"^\s*(from|import) (actors|pipeline|config|cluster)[\s.]", re.MULTILINE)
    for top in (*FOLDERS.values(), "benchmarks", "tests"):
        for path in (REPO / top).rglob("*.py"):
            found = bare.search(path.read_text())
            assert found is None, f"{path}: {found.group(0).strip() if found else ''}"


def test_pipeline_does_not_import_ray_or_drivers() -> None:
    # Dependencies point inward: the domain runs without Ray and without drivers.
    for path in (REPO / "pipeline").rglob("*.py"):
        if "adapters" in path.parts:
            continue
        text = path.read_text()
        for driver in ("import ray", "from ray", "import nats", "import redis", "import clickhouse_connect",
                       "import pymongo", "import minio", "import aiohttp", "from aiohttp"):  # fmt: skip
            assert driver not in text, f"{path} imports a driver: {driver}"


def test_settings_read_environment_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from eventray.config.settings import load_settings
    from eventray.pipeline.errors import SettingsError

    monkeypatch.setenv("EVENTRAY_SCRIPTS__TIME_LIMIT_S", "0.25")
    monkeypatch.setenv("EVENTRAY_SCRIPTS__MEMORY_LIMIT_MB", "16")
    settings = load_settings()
    assert settings.scripts.limits().time_s == 0.25
    assert settings.scripts.limits().memory_bytes == 16 * 1024 * 1024
    monkeypatch.setenv("EVENTRAY_SCRIPTS__TIME_LIMIT_S", "-1")
    with pytest.raises(SettingsError, match=r"EVENTRAY_SCRIPTS__TIME_LIMIT_S: .*greater than 0"):
        load_settings()


def test_every_package_is_listed_in_pyproject() -> None:
    import tomllib

    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        "eventray." + ".".join((name, *init.parent.relative_to(REPO / folder).parts))
        for name, folder in FOLDERS.items()
        for init in (REPO / folder).rglob("__init__.py")
    }
    # The rest are folders of data files (see pyproject.toml): no code in them.
    data = listed - found
    assert found <= listed, sorted(found - listed)
    for package in data:
        name, *rest = package.removeprefix("eventray.").split(".")
        folder = REPO / FOLDERS[name] / "/".join(rest)
        assert folder.is_dir() and not list(folder.glob("*.py")), package


def test_actors_are_hosts_that_build_nothing() -> None:
    # cluster/wiring.py is the only place that builds adapters: actors are handed an Adapters
    # object and import neither the composition root nor a concrete adapter.
    for path in (REPO / "actors").rglob("*.py"):
        text = path.read_text()
        for forbidden in ("eventray.cluster", "eventray.pipeline.adapters"):
            assert forbidden not in text, f"{path} imports {forbidden}"


def test_the_domain_uses_no_adapter_but_the_in_memory_twins() -> None:
    twins = {"memory_state", "memory_stream"}
    found = re.compile(r"eventray\.pipeline\.adapters\.(\w+)")
    for path in (REPO / "pipeline").rglob("*.py"):
        if "adapters" in path.parts:
            continue
        used = set(found.findall(path.read_text())) - twins
        assert not used, f"{path} uses adapters {sorted(used)}"
