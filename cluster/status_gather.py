"""One status snapshot of a running stack, which a stuck actor cannot hold up.

``Stack.status``, the ``/metrics`` scrape and ``eventray status`` all ask every lane, the
ingress and the store for their counters. An actor that does not answer (its event loop blocked,
its worker stopped, a long GC) used to hold the whole call for ever, and with it every scrape.
Here each actor gets ``timeout_s`` (all are asked at once, so the whole call takes at most
that), and an actor that did not answer in time is named under ``unanswered`` instead of
appearing with invented zeros (a counter that drops to 0 reads as a restart to Prometheus).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

__all__ = ["gather_status", "lane_triggers"]


def gather_status(
    lanes: Mapping[str, Any], ingress: Any | None, store: Any | None, *, timeout_s: float
) -> dict[str, Any]:
    """The stack's status: ``lanes`` (the answers of those that answered, each with its
    ``name``), ``triggers`` (summed over them), ``ingress``, ``store`` ({} when they did not
    answer), ``answered`` (the names of those that did) and ``unanswered`` (name -> why)."""
    import ray

    calls: dict[str, Any] = {name: lane.status.remote() for name, lane in lanes.items()}
    if ingress is not None:
        calls["ingress"] = ingress.health.remote()
    if store is not None:
        calls["store"] = store.stats.remote()
    refs = list(calls.values())
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s) if refs else ([], [])
    done = set(ready)
    answers: dict[str, Any] = {}
    unanswered: dict[str, str] = {}
    for name, ref in calls.items():
        if ref not in done:
            unanswered[name] = f"no answer within {timeout_s:g} s (stuck or restarting)"
            with contextlib.suppress(Exception):  # cancelled if still queued or awaiting
                ray.cancel(ref)
            continue
        try:
            answers[name] = ray.get(ref, timeout=0)
        except Exception as exc:  # the actor died or raised: say so, keep the others
            first = str(exc).strip().splitlines()
            unanswered[name] = first[0] if first else type(exc).__name__
    lane_answers = [{"name": name, **answers[name]} for name in lanes if name in answers]
    return {
        "lanes": lane_answers,
        "triggers": lane_triggers(lane_answers),
        "ingress": answers.get("ingress", {}),
        "store": answers.get("store", {}),
        "answered": sorted(answers),
        "unanswered": unanswered,
    }


def lane_triggers(lanes: list[dict[str, Any]]) -> dict[str, Any]:
    """The trigger dispatchers' counters, summed over the lanes that run them."""
    out: dict[str, Any] = {"delivered": 0, "failed": 0, "attempts": 0, "last_error": ""}
    for lane in lanes:
        triggers = lane.get("triggers") or {}
        for key in ("delivered", "failed", "attempts"):
            out[key] += int(triggers.get(key, 0))
        out["last_error"] = triggers.get("last_error") or out["last_error"]
    return out
