"""``stack.json``: what ``eventray status``/``apply``/``events query`` attach to. A file left by
an ``up`` that was killed with -9 must read as no stack, so they say "start one with eventray
up" instead of trying to reach a Ray head that is gone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from eventray.cluster.stack import StackInfo, read_stack_info


def _write(data_dir: Path, pid: int) -> StackInfo:
    info = StackInfo(endpoints={}, ingress_url="http://127.0.0.1:1", ray_address="x:1", pid=pid)
    (data_dir / "stack.json").write_text(json.dumps(asdict(info)))
    return info


def test_a_running_owner_s_stack_is_read(tmp_path: Path) -> None:
    info = _write(tmp_path, os.getpid())
    assert read_stack_info(tmp_path) == info


def test_a_stack_whose_owner_is_gone_reads_as_none(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _write(tmp_path, gone.pid)
    assert read_stack_info(tmp_path) is None


def test_no_file_is_no_stack(tmp_path: Path) -> None:
    assert read_stack_info(tmp_path) is None
