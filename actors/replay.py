"""The replay actor: runs the :class:`~eventray.pipeline.replay.ReplayService` (DLQ redrive,
stream replay) for the management API.

Why an actor of its own: redrive and replay append copies to the partitions, which only the
ingress and the stack's admin may do (no client can forge a copy's headers). The API process
faces the network and holds the ``api`` NATS user, which may only announce a config change; it
is not widened. This actor faces no network, holds the ``replay`` NATS user (append to the
partitions and the trigger queue, read the stream with a consumer of its own, read the lanes'
progress: the composition root's roles module), and is reached over Ray only. The API hands
it each caller's scope, which the service enforces on everything it reads, copies or records.

The service is opened on the first call and kept; a call that finds the stream gone closes it,
so the next one opens it again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import ray

from eventray.actors.host import log_as_actor
from eventray.pipeline.errors import RetryableError
from eventray.pipeline.replay import (
    DeadLetter,
    DeadLetterPosition,
    RedriveReport,
    RedriveRequest,
    ReplayReport,
    ReplayRequest,
    ReplayService,
    Scope,
)

__all__ = ["ReplayActor"]

OpenService = Callable[[], contextlib.AbstractAsyncContextManager[ReplayService]]


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class ReplayActor:
    """Args:
    open_service: opens the service over the stack (the composition root's
        ``stack_replay_service`` with the ``replay`` role's wiring).
    """

    def __init__(self, open_service: OpenService) -> None:
        log_as_actor(None, "replay")
        self._open = open_service
        self._stack: contextlib.AsyncExitStack | None = None
        self._service: ReplayService | None = None
        self.calls = 0

    async def _get(self) -> ReplayService:
        if self._service is None:
            stack = contextlib.AsyncExitStack()
            try:
                self._service = await stack.enter_async_context(self._open())
            except Exception as exc:
                await stack.aclose()
                raise RetryableError(f"cannot open the replay service: {exc}") from exc
            self._stack = stack
        self.calls += 1
        return self._service

    async def _reset_on_failure(self, exc: BaseException) -> None:
        if isinstance(exc, RetryableError):
            await self.close()

    async def dead_letters(
        self, scope: Scope, request: RedriveRequest, *, redriven: bool | None = None,
        limit: int = 100, after: Mapping[str, DeadLetterPosition] | None = None,
    ) -> list[DeadLetter]:  # fmt: skip
        service = await self._get()
        try:
            return await service.dead_letters(
                scope, request, redriven=redriven, limit=limit, after=after
            )
        except Exception as exc:
            await self._reset_on_failure(exc)
            raise

    async def redrive(
        self, scope: Scope, request: RedriveRequest, *, dry_run: bool = False,
        requested_by: str = "", redrive_id: str | None = None,
    ) -> RedriveReport:  # fmt: skip
        service = await self._get()
        try:
            return await service.redrive(scope, request, dry_run=dry_run,
                                         requested_by=requested_by, redrive_id=redrive_id)  # fmt: skip
        except Exception as exc:
            await self._reset_on_failure(exc)
            raise

    async def replay(
        self, scope: Scope, request: ReplayRequest, *, dry_run: bool = False,
        replay_id: str | None = None,
    ) -> ReplayReport:  # fmt: skip
        service = await self._get()
        try:
            return await service.replay(scope, request, dry_run=dry_run, replay_id=replay_id)
        except Exception as exc:
            await self._reset_on_failure(exc)
            raise

    async def wait(self, copies: Mapping[int, int], *, timeout_s: float) -> bool:
        service = await self._get()
        try:
            return await service.wait(copies, timeout_s=timeout_s)
        except Exception as exc:
            await self._reset_on_failure(exc)
            raise

    async def close(self) -> None:
        stack, self._stack, self._service = self._stack, None, None
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.aclose()

    async def status(self) -> dict[str, Any]:
        return {"open": self._service is not None, "calls": self.calls}
