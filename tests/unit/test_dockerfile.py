"""deploy/docker/Dockerfile, checked statically (no Docker engine runs here, so it was never
built on this machine): every COPY source exists and carries the code the package needs, the
pip line installs the base install (no extra) under constraints.txt, the user is not root, and
the image's Python is the one every node of a cluster must share."""

from __future__ import annotations

import shlex
import sys
import tomllib
from pathlib import Path
from typing import Any

from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy/docker/Dockerfile"


def _instructions(name: str) -> list[dict[str, Any]]:
    parsed = DockerfileParser(path=str(DOCKERFILE))
    return [i for i in parsed.structure if i["instruction"] == name]


def _copies() -> list[tuple[list[str], str]]:
    out = []
    for copy in _instructions("COPY"):
        *sources, target = shlex.split(copy["value"])
        assert not any(s.startswith("--from") for s in sources), copy["value"]
        out.append((sources, target))
    return out


def test_the_base_image_is_python_3_11_slim_as_the_cluster_s_python() -> None:
    parsed = DockerfileParser(path=str(DOCKERFILE))
    assert parsed.baseimage == "python:3.11-slim"
    # A Ray cluster's nodes and the driver that submits jobs share one Python minor version.
    assert sys.version_info[:2] == (3, 11)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"


def test_every_copy_source_exists() -> None:
    for sources, _ in _copies():
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: no such file in the repository"


def test_the_copies_carry_every_package_folder_and_the_build_files() -> None:
    copied = {Path(s).as_posix().rstrip("/") for sources, _ in _copies() for s in sources}
    folders = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    assert set(folders.values()) <= copied, sorted(set(folders.values()) - copied)
    assert {"pyproject.toml", "README.md", "constraints.txt"} <= copied


def test_pip_installs_the_base_install_under_the_constraints() -> None:
    [install] = [r for r in _instructions("RUN") if "pip install" in r["value"]]
    words = shlex.split(install["value"].split("&&")[0])
    assert words[:4] == ["python", "-m", "pip", "install"]
    assert words[words.index("-c") + 1] == "constraints.txt"
    targets = [w for w in words[4:] if not w.startswith("-") and w != "constraints.txt"]
    assert targets == ["."]  # the base install: no [embedded], no [dev], not editable
    assert "-e" not in words and "--editable" not in words
    # constraints.txt is in the image before the line that reads it
    structure = DockerfileParser(path=str(DOCKERFILE)).structure
    copy_line = next(
        i["startline"]
        for i in structure
        if i["instruction"] == "COPY" and "constraints.txt" in i["value"]
    )
    assert copy_line < install["startline"]


def test_it_runs_as_a_user_it_creates_not_root() -> None:
    users = [u["value"].strip() for u in _instructions("USER")]
    assert users and users[-1] not in {"root", "0", "0:0"}
    name = users[-1].split(":")[0]
    created = [r["value"] for r in _instructions("RUN") if "useradd" in r["value"]]
    assert any(shlex.split(c)[-1] == name for c in created), created
    assert any("--uid 1000" in c for c in created)  # the uid Ray's images use


def test_no_entrypoint_so_kuberay_s_command_runs() -> None:
    assert _instructions("ENTRYPOINT") == []


def test_the_build_context_leaves_out_the_local_venv_and_caches() -> None:
    ignored = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".git", "**/__pycache__", ".eventray"} <= set(ignored)
