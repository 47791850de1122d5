"""The one object an API route or the CLI calls for redrives and replays."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from eventray.pipeline.catalog import Catalog
from eventray.pipeline.replay.model import (
    DeadLetter,
    DeadLetterPosition,
    RedriveReport,
    RedriveRequest,
    ReplayReport,
    ReplayRequest,
    Scope,
)
from eventray.pipeline.replay.ports import DeadLetterStore, EventArchive
from eventray.pipeline.replay.redrive import Redriver
from eventray.pipeline.replay.reprocess import Replayer

__all__ = ["ReplayService"]


class ReplayService:
    """DLQ redrive and stream replay over the ports, for callers with a scope.

    Every method takes the caller's :class:`Scope` (an organization's pathKey: it and the
    organizations below it; :meth:`Scope.everything` for the stack's admin) and never reads
    or appends another organization's events.

    Args:
        catalog: returns the configuration now (called once per operation).
        archive: the event stream.
        store: the DLQ, the ingress refusals and the redrive records.
        partitions: the stream's partition count.
        subject_prefix: partition subjects are ``{prefix}.p{n}``.
        trigger_subject: the trigger queue's subject (failed deliveries are redriven there).
        now_ms: the clock, epoch milliseconds.
    """

    def __init__(
        self,
        *,
        catalog: Callable[[], Catalog],
        archive: EventArchive,
        store: DeadLetterStore,
        partitions: int,
        subject_prefix: str,
        trigger_subject: str,
        now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.archive = archive
        self.redriver = Redriver(
            catalog=catalog,
            archive=archive,
            store=store,
            partitions=partitions,
            subject_prefix=subject_prefix,
            trigger_subject=trigger_subject,
            now_ms=now_ms,
        )
        self.replayer = Replayer(
            catalog=catalog,
            archive=archive,
            partitions=partitions,
            subject_prefix=subject_prefix,
            store=store,
            now_ms=now_ms,
        )

    async def dead_letters(
        self,
        scope: Scope,
        request: RedriveRequest,
        *,
        redriven: bool | None = None,
        limit: int = 100,
        after: Mapping[str, DeadLetterPosition] | None = None,
    ) -> list[DeadLetter]:
        """The entries ``request`` selects in ``scope`` (redriven or not: ``redriven``), each
        with its redrive record, oldest first per source, at most ``limit`` per source; with
        ``after``, the next page (per source, after that position; a source not named is done).

        Raises:
            OutOfScope: ``request.org_id`` is not in scope (or does not exist).
            InvalidRequest: no filter and not ``everything``.
        """
        return await self.redriver.entries(
            scope, request, redriven=redriven, limit=limit, after=after
        )

    async def redrive(
        self,
        scope: Scope,
        request: RedriveRequest,
        *,
        dry_run: bool = False,
        requested_by: str = "",
        redrive_id: str | None = None,
    ) -> RedriveReport:
        """Redrive what ``request`` selects in ``scope`` (see
        :meth:`eventray.pipeline.replay.redrive.Redriver.redrive`)."""
        return await self.redriver.redrive(
            scope, request, dry_run=dry_run, requested_by=requested_by, redrive_id=redrive_id
        )

    async def replay(
        self,
        scope: Scope,
        request: ReplayRequest,
        *,
        dry_run: bool = False,
        replay_id: str | None = None,
    ) -> ReplayReport:
        """Replay a range of the stream (see
        :meth:`eventray.pipeline.replay.reprocess.Replayer.replay`)."""
        return await self.replayer.replay(scope, request, dry_run=dry_run, replay_id=replay_id)

    async def wait(
        self, copies: Mapping[int, int], *, timeout_s: float, poll_s: float = 0.2
    ) -> bool:
        """Wait until each partition's lane has acknowledged through the given stream
        sequence (a report's ``copies``): the copies are processed, their rows stored.
        Returns False if ``timeout_s`` passed first."""
        deadline = time.monotonic() + timeout_s
        left = dict(copies)
        while left:
            for partition, seq in list(left.items()):
                if await self.archive.acknowledged(partition) >= seq:
                    del left[partition]
            if not left:
                break
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(poll_s)
        return True
