"""StartOnce: a failed start is retried by the next call; concurrent calls start once."""

from __future__ import annotations

import asyncio

import pytest

from eventray.actors.lifecycle import StartOnce


def test_a_failed_start_is_tried_again_and_concurrent_calls_start_once() -> None:
    calls: list[int] = []

    async def flaky() -> None:
        calls.append(len(calls))
        await asyncio.sleep(0.01)
        if len(calls) == 1:
            raise ConnectionError("NATS is not up yet")

    async def scenario() -> None:
        once = StartOnce()
        with pytest.raises(ConnectionError):
            await once.run(flaky)
        assert not once.done
        await asyncio.gather(*(once.run(flaky) for _ in range(5)))
        assert once.done
        assert calls == [0, 1]  # one failed attempt, then exactly one successful start

    asyncio.run(scenario())
