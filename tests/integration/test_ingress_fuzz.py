"""A bounded, seeded fuzz of the HTTP ingress with an oracle: every generated request knows the
answer it must get (and, for a batch, each item's), so the test asserts exact statuses, not just
"no 500". Kinds: good events and batches, malformed JSON, bytes that are not UTF-8, nesting past
the limit, bodies and batches over their limits, wrong types, wrong content types and charsets,
mixed batches of good and bad items (including events no asset takes: 422, kept whole), bad/missing/non-UTF-8 keys, unknown/missing/duplicate data
sources and duplicate credential headers. Afterwards the stream holds exactly the events that
were answered 201, and nothing else: the good traffic beside the bad is kept, once.

The outcome counts for the seed are pinned (the README quotes them).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from eventray.cluster.services.nats_server import RunningNats
from tests.integration.test_ingress_http import (
    KEY,
    READING,
    bus_of,
    exchange,
    harness,
    nats_server,
)

pytestmark = pytest.mark.services

__all__ = ["nats_server"]  # the fixture, re-used

REQUESTS = 600
MAX_BODY = 4096
MAX_ITEMS = 20
Case = tuple[str, bytes, bytes, int, list[int] | None]  # kind, head, body, status, item statuses


def _nested(depth: int) -> bytes:
    """A reading with a value nested ``depth`` levels (as text: orjson refuses to write it)."""
    reading = orjson.dumps(READING)
    return reading[:-1] + b',"deep":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"


def _head(path: str, query: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    head = f"POST {path}?{query} HTTP/1.1\r\nHost: x\r\n".encode()
    return head + b"".join(name + b": " + value + b"\r\n" for name, value in headers)


class Generator:
    """Seeded requests with the answers they must get."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.n = 0

    def reading(self) -> dict[str, Any]:
        self.n += 1
        return {**READING, "n": self.n, "ts": f"2026-03-01T08:{self.n % 60:02d}:00Z"}

    def item(self) -> tuple[bytes, int]:
        """One batch item (its JSON text) and its status."""
        pick = self.rng.randrange(8)
        if pick <= 3:
            return orjson.dumps(self.reading()), 201
        if pick == 4:
            return orjson.dumps(self.rng.choice([7, "text", None, True, [1, 2]])), 400
        if pick == 5:
            return _nested(300), 400
        if pick == 6:
            return orjson.dumps({**self.reading(), "pad": "x" * MAX_BODY}), 413
        self.n += 1  # no asset: answered 422 and kept in events_raw
        return orjson.dumps({"unbound": self.n}), 422

    def case(self) -> Case:
        rng = self.rng
        json = [(b"Content-Type", b"application/json")]
        key = [(b"X-Api-Key", KEY["X-Api-Key"].encode())]
        ok = "ds=ds-gateway-http"
        one, many = "/api/v1/events", "/api/v1/events/batch"
        kind = rng.choice(
            ["good", "good", "batch", "mixed", "mixed", "malformed", "not-utf8", "deep", "huge",
             "too-many", "wrong-type-single", "wrong-type-batch", "text/plain", "latin-1",
             "no-content-type", "bad-key", "no-key", "key-bytes", "unknown-ds", "no-ds",
             "dup-ds", "dup-key"]
        )  # fmt: skip
        if kind == "good":
            return kind, _head(one, ok, json + key), orjson.dumps(self.reading()), 201, None
        if kind == "no-content-type":  # taken as JSON
            return kind, _head(one, ok, key), orjson.dumps(self.reading()), 201, None
        if kind == "batch":
            items = [self.reading() for _ in range(rng.randrange(1, 6))]
            return kind, _head(many, ok, json + key), orjson.dumps(items), 207, [201] * len(items)
        if kind == "mixed":
            pairs = [self.item() for _ in range(rng.randrange(2, 8))]
            body = b"[" + b",".join(p[0] for p in pairs) + b"]"
            return kind, _head(many, ok, json + key), body, 207, [p[1] for p in pairs]
        if kind == "malformed":
            body = orjson.dumps(self.reading())[: rng.randrange(1, 20)]
            return kind, _head(one, ok, json + key), body, 400, None
        if kind == "not-utf8":
            return kind, _head(one, ok, json + key), b'{"deviceId": "\xff\xfe"}', 400, None
        if kind == "deep":
            return kind, _head(one, ok, json + key), _nested(300), 400, None
        if kind == "huge":
            body = orjson.dumps({**self.reading(), "pad": "x" * MAX_BODY})
            return kind, _head(one, ok, json + key), body, 413, None
        if kind == "too-many":
            body = orjson.dumps([self.reading() for _ in range(MAX_ITEMS + 1)])
            return kind, _head(many, ok, json + key), body, 413, None
        if kind == "wrong-type-single":
            body = orjson.dumps(rng.choice([[self.reading()], 3, "x", None]))
            return kind, _head(one, ok, json + key), body, 400, None
        if kind == "wrong-type-batch":
            body = orjson.dumps(rng.choice([self.reading(), 3, "x"]))
            return kind, _head(many, ok, json + key), body, 400, None
        if kind == "text/plain":
            headers = [(b"Content-Type", b"text/plain"), *key]
            return kind, _head(one, ok, headers), orjson.dumps(self.reading()), 415, None
        if kind == "latin-1":
            headers = [(b"Content-Type", b"application/json; charset=latin-1"), *key]
            return kind, _head(one, ok, headers), orjson.dumps(self.reading()), 415, None
        if kind == "bad-key":
            headers = [*json, (b"X-Api-Key", b"wrong-key-wrong-key-000")]
            return kind, _head(one, ok, headers), orjson.dumps(self.reading()), 401, None
        if kind == "no-key":
            return kind, _head(one, ok, json), orjson.dumps(self.reading()), 401, None
        if kind == "key-bytes":
            headers = [*json, (b"X-Api-Key", b"sample-key-\xe9\xff-0001")]
            return kind, _head(one, ok, headers), orjson.dumps(self.reading()), 401, None
        if kind == "unknown-ds":
            return kind, _head(one, "ds=nope", json + key), orjson.dumps(self.reading()), 404, None
        if kind == "no-ds":
            return kind, _head(one, "x=1", json + key), orjson.dumps(self.reading()), 404, None
        if kind == "dup-ds":
            query = "ds=ds-gateway-http&ds=ds-ttn-webhook"
            return kind, _head(one, query, json + key), orjson.dumps(self.reading()), 400, None
        headers = json + key + [(b"X-Api-Key", b"another-key-another-00")]  # dup-key
        return kind, _head(one, ok, headers), orjson.dumps(self.reading()), 400, None


def test_every_fuzzed_request_gets_its_exact_answer_and_only_the_good_is_kept(
    nats_server: RunningNats, samples_dir: Path
) -> None:
    generator = Generator(seed=7)
    outcomes: Counter[str] = Counter()
    accepted: list[str] = []

    async def scenario() -> None:
        settings = {"max_body_bytes": MAX_BODY, "max_batch_items": MAX_ITEMS}
        async with harness(nats_server, samples_dir, **settings) as h:
            for _ in range(REQUESTS):
                kind, head, body, expected, items = generator.case()
                status, payload = await exchange(h.app.port, head, body)
                answer = orjson.loads(payload)
                assert status == expected, (kind, head, body[:200], answer)
                if items is None:
                    outcomes[f"{status}"] += 1
                    if status == 201:
                        accepted.append(answer["eventTrackerId"])
                    else:
                        assert answer["error"], (kind, answer)  # says what was wrong
                    continue
                got = [r["status"] for r in answer["results"]]
                assert got == items, (kind, body[:300], answer)
                for result in answer["results"]:
                    outcomes[f"item {result['status']}"] += 1
                    if result["status"] == 201:
                        accepted.append(result["eventTrackerId"])
                    else:
                        assert result["error"], (kind, result)
            assert h.app.internal_errors == 0
            # every event no asset takes is kept whole, to replay once the asset exists
            unbound = [row for row in h.kept if row["stage"] == "bind"]
            assert len(unbound) == outcomes["item 422"]
            assert {orjson.loads(row["body"])["unbound"] > 0 for row in unbound} == {True}
            bus = bus_of(h)
            info = await bus.js.stream_info(bus.stream)
            assert info.state.messages == len(accepted) == len(set(accepted))
            kept = [await bus.js.get_msg(bus.stream, seq) for seq in range(1, len(accepted) + 1)]
            assert [m.headers.get("Nats-Msg-Id") for m in kept if m.headers] == accepted

    asyncio.run(scenario())
    # The seed's outcomes, pinned: a change in any answer shows here first.
    assert dict(sorted(outcomes.items())) == EXPECTED, dict(sorted(outcomes.items()))


EXPECTED = {
    "201": 92, "400": 175, "401": 87, "404": 30, "413": 61, "415": 58,
    "item 201": 275, "item 400": 51, "item 413": 20, "item 422": 28,
}  # fmt: skip
