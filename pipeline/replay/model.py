"""What the redrive and replay services take and give back: scopes, requests, entries, reports.

Plain frozen dataclasses, so an API route can turn them into its own schemas (and the CLI
into JSON lines) without knowing how the services work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from eventray.pipeline.errors import PermanentError
from eventray.pipeline.replay_marks import StateMode

__all__ = [
    "DeadLetter",
    "DeadLetterPosition",
    "DeadLetterQuery",
    "DeadLetterSource",
    "InvalidRequest",
    "OutOfScope",
    "PartitionReplay",
    "RedriveItem",
    "RedriveOutcome",
    "RedriveRecord",
    "RedriveReport",
    "RedriveRequest",
    "ReplayReport",
    "ReplayRequest",
    "Scope",
]

DeadLetterSource = Literal["dlq", "events_raw"]
"""Where a redrivable entry is kept: the DLQ (failed in a lane or in delivery), or
``events_raw`` (refused at the ingress with stage ``bind``: no asset took it then)."""

DeadLetterPosition = tuple[int, str, str, int]
"""An entry's place in the order entries are read (:attr:`DeadLetter.position`: received ms,
eventTrackerId, stage, stream sequence): where the next page of a listing starts."""


class OutOfScope(PermanentError):
    """The request names an organization the caller cannot see (or one that does not exist:
    the two are not told apart, so a caller learns nothing of other tenants). An API answers
    404."""


class InvalidRequest(PermanentError):
    """The request cannot be run as given (no selection, an empty time range...). An API
    answers 422."""


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose events a call may touch: an organization's pathKey and everything below it.

    ``Scope.everything()`` (an empty pathKey) is the stack's admin: every organization, and the
    DLQ entries that belong to none (an event whose data source was unknown).
    """

    path_key: str

    @classmethod
    def everything(cls) -> Scope:
        return cls("")

    def covers(self, path_key: str) -> bool:
        """Whether an organization with this pathKey is in scope."""
        if not self.path_key:
            return True
        return path_key == self.path_key or path_key.startswith(self.path_key + "/")


@dataclass(frozen=True, slots=True)
class RedriveRecord:
    """One redriven entry: a row of ``dlq_redrive``.

    Attributes:
        source, event_tracker_id, stage, entry_seq: which entry (``entry_seq`` is the DLQ
            row's stream sequence, 0 for ``events_raw``); with the organization, the record's
            key: an entry with a record is not redriven again.
        entry_created_ms, error: the entry as it was (its failure stays readable after a new
            one of the same event replaced nothing).
        redrive_id, requested_by: which redrive, asked by whom.
        msg_id, partition, stream_seq: the copy appended to the stream (``partition`` -1 for
            a delivery put back on the trigger queue).
        redriven_ms: when.
    """

    source: DeadLetterSource
    event_tracker_id: str
    org_id: str
    path_key: str
    stage: str
    entry_seq: int
    entry_created_ms: int
    error: str
    redrive_id: str
    requested_by: str
    msg_id: str
    partition: int
    stream_seq: int
    redriven_ms: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A DLQ entry or an ``events_raw`` refusal, with its original body.

    ``redrive`` is the record of its redrive, if it had one.
    """

    source: DeadLetterSource
    event_tracker_id: str
    org_id: str
    path_key: str
    stage: str
    error: str
    created_ms: int
    asset_id: str
    data_source_id: str
    body: bytes
    stream_seq: int = 0
    deliveries: int = 1
    redrive: RedriveRecord | None = None

    @property
    def position(self) -> DeadLetterPosition:
        """Its place in the order entries are read and redriven (oldest first)."""
        return (self.created_ms, self.event_tracker_id, self.stage, self.stream_seq)


@dataclass(frozen=True, slots=True)
class DeadLetterQuery:
    """Which entries a :class:`~eventray.pipeline.replay.ports.DeadLetterStore` returns.

    The services build it: ``scope`` and ``path_key`` are pathKey prefixes (an organization
    and everything below it; "" for no restriction), already checked against the caller.

    Attributes:
        redriven: False for entries not redriven yet, True for redriven ones, None for both.
        after: keyset pagination: entries strictly after this :attr:`DeadLetter.position`.
    """

    source: DeadLetterSource
    scope: str = ""
    path_key: str = ""
    event_tracker_id: str | None = None
    stage: str | None = None
    asset_id: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    redriven: bool | None = False
    after: DeadLetterPosition | None = None
    limit: int = 500


@dataclass(frozen=True, slots=True)
class RedriveRequest:
    """What to redrive: one entry (``event_tracker_id``), or every entry matching the filters,
    or everything in scope (``everything``); the filters combine.

    Attributes:
        event_tracker_id: one event (its entries at every stage, or ``stage``'s).
        stage: a failing stage (``script``, ``transform``, ``rules``, ``bind``, ...).
        org_id: an organization and everything below it (within the caller's scope).
        since_ms, until_ms: when the entry was made (its event received), ``[since, until)``.
        asset_id: one asset's entries.
        sources: which kinds of entries (the DLQ, ingress refusals at ``bind``).
        everything: required to redrive with no filter at all.
        limit: the most entries one call redrives (None: all).
    """

    event_tracker_id: str | None = None
    stage: str | None = None
    org_id: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    asset_id: str | None = None
    sources: tuple[DeadLetterSource, ...] = ("dlq", "events_raw")
    everything: bool = False
    limit: int | None = None

    @property
    def filtered(self) -> bool:
        return any(
            value is not None
            for value in (
                self.event_tracker_id,
                self.stage,
                self.org_id,
                self.since_ms,
                self.until_ms,
                self.asset_id,
            )
        )


RedriveOutcome = Literal["redriven", "would-redrive", "skipped", "failed"]


@dataclass(frozen=True, slots=True)
class RedriveItem:
    """What became of one entry.

    Attributes:
        outcome: ``redriven`` (its copy is in the stream and the record written),
            ``would-redrive`` (a dry run), ``skipped`` (cannot be redriven: ``reason`` says
            why; it stays pending), ``failed`` (the stream refused the copy: ``reason``; it
            stays pending, a later redrive tries again).
        partition, stream_seq: where its copy went (-1 partition: the trigger queue).
        duplicate: the stream had the copy already (a redrive of the same entry a moment ago).
    """

    entry: DeadLetter
    outcome: RedriveOutcome
    reason: str = ""
    partition: int = -1
    stream_seq: int = 0
    duplicate: bool = False


@dataclass(slots=True)
class RedriveReport:
    """A redrive's result, entry by entry, oldest first."""

    redrive_id: str
    dry_run: bool
    items: list[RedriveItem] = field(default_factory=list)

    def count(self, outcome: RedriveOutcome) -> int:
        return sum(1 for item in self.items if item.outcome == outcome)

    @property
    def copies(self) -> dict[int, int]:
        """The last copy's stream sequence per partition (what :meth:`ReplayService.wait`
        waits for)."""
        last: dict[int, int] = {}
        for item in self.items:
            if item.outcome == "redriven" and item.partition >= 0:
                last[item.partition] = max(last.get(item.partition, 0), item.stream_seq)
        return last


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """A range of the stream to process again for an organization.

    Attributes:
        org_id: the organization (within the caller's scope).
        include_children: and every organization below it.
        since_ms, until_ms: when the ingress received the events, ``[since, until)``; until
            None: up to the replay's start.
        start_seq, end_seq: or a range of stream sequences ``[start, end)`` (with or instead
            of the times).
        state: ``keep`` (rules not evaluated again: state, rule logs and rule deliveries stay)
            or ``fresh`` (the organizations' rule state is reset to the defaults, then rebuilt
            by evaluating the range in order).
        triggers: send the replayed events' trigger deliveries and ``publish`` routes again.
    """

    org_id: str
    since_ms: int | None = None
    until_ms: int | None = None
    start_seq: int | None = None
    end_seq: int | None = None
    include_children: bool = False
    state: StateMode = "keep"
    triggers: bool = False


@dataclass(slots=True)
class PartitionReplay:
    """One partition's share of a replay.

    Attributes:
        orgs: the organizations of the replay in this partition (a fresh replay resets them).
        events: events selected (each once, whatever copies of it the stream holds).
        first_seq, last_seq: their stream sequences (0 when none).
        reset_seq: the reset marker's stream sequence (fresh; 0 otherwise or in a dry run).
        copies_first, copies_last: the copies' stream sequences (0 in a dry run).
        sample: the first selected eventTrackerIds (at most 20).
        superseded: DLQ entries of copied events a ``fresh`` replay marked as handled (their
            copies were evaluated in the rebuilt state; a redrive would count them again).
    """

    partition: int
    orgs: tuple[str, ...]
    events: int = 0
    first_seq: int = 0
    last_seq: int = 0
    reset_seq: int = 0
    copies_first: int = 0
    copies_last: int = 0
    sample: list[str] = field(default_factory=list)
    superseded: int = 0


@dataclass(slots=True)
class ReplayReport:
    """A replay's result.

    Attributes:
        stream_starts_ms: when the oldest message still in the stream was stored, if the
            requested range starts before it and the stream has dropped older messages (its
            retention: the events before it cannot be replayed); None otherwise.
    """

    replay_id: str
    dry_run: bool
    request: ReplayRequest
    partitions: list[PartitionReplay] = field(default_factory=list)
    stream_starts_ms: int | None = None

    @property
    def events(self) -> int:
        return sum(p.events for p in self.partitions)

    @property
    def copies(self) -> dict[int, int]:
        """The last stream sequence the lanes must pass per partition for the replay to be
        done (its last copy, or its reset marker)."""
        return {
            p.partition: max(p.copies_last, p.reset_seq)
            for p in self.partitions
            if p.copies_last or p.reset_seq
        }
