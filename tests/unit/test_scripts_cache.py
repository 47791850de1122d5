"""The compiled-script cache: L0 warm contexts, L1 disk, L2 blob store, keyed by content."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventray.pipeline.adapters.localdir import LocalDirBlobStore
from eventray.pipeline.errors import ScriptError
from eventray.pipeline.models import AssetTemplate
from eventray.pipeline.scripts.cache import ScriptCache
from eventray.pipeline.scripts.executor import ScriptJob, TemplateExecutor


def tpl(tid: str, factor: int) -> AssetTemplate:
    return AssetTemplate(
        id=tid,
        orgId="acme",
        name=tid,
        scriptConversion=(
            f"result = {{ eventType: 'r', eventId: 'e', data: {{ v: payload.v * {factor} }},"
            " created: '2026-01-01T00:00:00Z' };"
        ),
    )


def test_levels_fill_and_hit(tmp_path: Path) -> None:
    l2 = LocalDirBlobStore(tmp_path / "l2")
    first = ScriptCache(l1=LocalDirBlobStore(tmp_path / "node-a"), l2=l2)
    first.runner_for(tpl("t1", 2))
    first.runner_for(tpl("t1", 2))
    assert (first.stats.compiles, first.stats.l0_hits) == (1, 1)

    same_node = ScriptCache(
        l1=LocalDirBlobStore(tmp_path / "node-a"), l2=l2
    )  # a restarted executor
    same_node.runner_for(tpl("t1", 2))
    assert (same_node.stats.l1_hits, same_node.stats.compiles) == (1, 0)

    other_node = ScriptCache(l1=LocalDirBlobStore(tmp_path / "node-b"), l2=l2)  # another machine
    other_node.runner_for(tpl("t1", 2))
    assert (other_node.stats.l2_hits, other_node.stats.compiles) == (1, 0)
    assert list((tmp_path / "node-b").rglob("*.json")), "an L2 hit is copied into L1"


def test_edited_template_never_runs_stale_code(tmp_path: Path) -> None:
    cache = ScriptCache(l1=LocalDirBlobStore(tmp_path / "l1"))
    executor = TemplateExecutor(cache)
    [before] = executor.run([ScriptJob(tpl("t1", 2), b'{"v": 5}')])
    [after] = executor.run([ScriptJob(tpl("t1", 3), b'{"v": 5}')])
    assert before["r"]["data"]["v"] == 10
    assert after["r"]["data"]["v"] == 15


def test_l0_is_bounded_lru() -> None:
    cache = ScriptCache(capacity=2)
    for name in ("a", "b", "a", "c"):
        cache.runner_for(tpl(name, 1))
    assert len(cache) == 2 and cache.stats.evictions == 1
    cache.runner_for(tpl("a", 1))  # "a" was used more recently than "b": still warm
    assert cache.stats.compiles == 3


def test_broken_template_fails_its_events_only_and_compiles_once() -> None:
    cache = ScriptCache()
    broken = AssetTemplate(id="bad", orgId="acme", name="bad", scriptConversion="result = {;")
    executor = TemplateExecutor(cache)
    jobs = [
        ScriptJob(tpl("good", 1), b'{"v": 1}'),
        ScriptJob(broken, b"{}"),
        ScriptJob(tpl("good", 1), b'{"v": 2}'),
        ScriptJob(broken, b"{}"),
    ]
    outs = executor.run(jobs)
    assert [o["r"]["data"]["v"] for o in (outs[0], outs[2])] == [1, 2]
    assert outs[1]["e"]["stage"] == "transform" and "SyntaxError" in outs[1]["e"]["message"]
    executor.run(jobs)
    assert cache.stats.compiles == 2
    with pytest.raises(ScriptError):
        cache.runner_for(broken)


def test_corrupt_cache_entry_is_rebuilt(tmp_path: Path) -> None:
    cache = ScriptCache(l1=LocalDirBlobStore(tmp_path))
    cache.runner_for(tpl("t1", 2))
    for path in tmp_path.rglob("*.json"):
        path.write_bytes(b"not json")
    fresh = ScriptCache(l1=LocalDirBlobStore(tmp_path))
    fresh.runner_for(tpl("t1", 2))
    assert fresh.stats.compiles == 1
