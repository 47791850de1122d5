"""``ray.namespace``: the Ray namespace of a stack's named actors, so two stacks share one Ray
cluster; refused at load when it is not something Ray, Kubernetes labels and file names all
take; recorded in ``stack.json`` for the commands that attach."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from eventray.cluster.stack import read_stack_info
from eventray.config.settings import load_settings
from eventray.pipeline.errors import SettingsError


def test_the_default_namespace_is_eventray() -> None:
    assert load_settings().ray.namespace == "eventray"


@pytest.mark.parametrize("name", ["a", "b", "team-a", "prod.eu_1", "x" * 63])
def test_usable_namespaces_load(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv("EVENTRAY_RAY__NAMESPACE", name)
    assert load_settings().ray.namespace == name


@pytest.mark.parametrize(
    "name", ["", "-a", "a-", "_ray_internal_dashboard", "a b", "a/b", "ä", "x" * 64, "a\n"]
)
def test_unusable_namespaces_are_refused_at_load(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv("EVENTRAY_RAY__NAMESPACE", name)
    with pytest.raises(
        SettingsError, match=r"EVENTRAY_RAY__NAMESPACE: .*not a usable Ray namespace"
    ):
        load_settings()


def _stack_json(data_dir: Path, **extra: object) -> None:
    info = {"endpoints": {}, "ingress_url": "", "ray_address": "x:1", "pid": os.getpid()}
    (data_dir / "stack.json").write_text(json.dumps({**info, **extra}))


def test_stack_json_records_the_namespace(tmp_path: Path) -> None:
    _stack_json(tmp_path, namespace="b")
    info = read_stack_info(tmp_path)
    assert info is not None and info.namespace == "b"


def test_a_stack_json_from_before_the_setting_means_the_old_fixed_namespace(
    tmp_path: Path,
) -> None:
    _stack_json(tmp_path)
    info = read_stack_info(tmp_path)
    assert info is not None and info.namespace == "eventray"
