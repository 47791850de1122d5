"""What a redriven or replayed message carries besides an ingested event's headers.

A redrive or a replay appends a *copy* of an event to its partition of the stream; the lanes
process it like any message (in stream order, under the rule state's sequence fence), and read
these headers to tell it apart from a new event:

- ``Eventray-Tracker``: the event's eventTrackerId. A copy cannot use it as its ``Nats-Msg-Id``
  (the stream would drop it as a duplicate of the original inside the duplicate window), so
  the copy's message id is the redrive's or the replay's, and this header names the event.
- ``Eventray-Redrive``: the redrive that appended it (for the record; the event is then
  processed as a new one: it never got through before).
- ``Eventray-Replay`` (+ ``-State``, ``-Triggers``, ``-Of``): a replay's copy of an event that
  was processed before. ``keep``: its rules are not evaluated again (state, rule logs and
  rule deliveries stay as they were); ``fresh``: they are, on the state the replay's reset
  marker left. Its trigger deliveries and ``publish`` routes are sent only with ``-Triggers: 1``.
- ``Eventray-Replay-Reset``: a *control message*, not an event: the lane resets the rule state
  of these organizations (comma-separated ids), in stream order, under the fence.

No client can set them: only the ingress (which writes its own headers) and the stack's admin
may publish into a partition (see :mod:`eventray.cluster.roles`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "HEADER_REDRIVE",
    "HEADER_REPLAY",
    "HEADER_REPLAY_OF",
    "HEADER_REPLAY_RESET",
    "HEADER_REPLAY_STATE",
    "HEADER_REPLAY_TRIGGERS",
    "HEADER_TRACKER",
    "ReplayMark",
    "StateMode",
    "mark_headers",
    "parse_mark",
]

HEADER_TRACKER: Final = "Eventray-Tracker"
HEADER_REDRIVE: Final = "Eventray-Redrive"
HEADER_REPLAY: Final = "Eventray-Replay"
HEADER_REPLAY_STATE: Final = "Eventray-Replay-State"
HEADER_REPLAY_TRIGGERS: Final = "Eventray-Replay-Triggers"
HEADER_REPLAY_RESET: Final = "Eventray-Replay-Reset"
HEADER_REPLAY_OF: Final = "Eventray-Replay-Of"

StateMode = Literal["keep", "fresh"]


@dataclass(frozen=True, slots=True)
class ReplayMark:
    """How the lanes treat a replay's message.

    Attributes:
        replay_id: the replay that appended it.
        state: ``keep`` (rules not evaluated) or ``fresh`` (evaluated on the reset state).
        triggers: send its trigger deliveries and ``publish`` routes again.
        reset_orgs: non-empty for a control message: the organizations whose rule state the
            lane resets to the variables' defaults when it reaches this message.
    """

    replay_id: str
    state: StateMode = "keep"
    triggers: bool = False
    reset_orgs: tuple[str, ...] = ()

    @property
    def control(self) -> bool:
        """A reset marker, not an event."""
        return bool(self.reset_orgs)

    @property
    def evaluates_rules(self) -> bool:
        return self.state == "fresh"


def mark_headers(mark: ReplayMark) -> dict[str, str]:
    """The headers that carry ``mark``."""
    headers = {HEADER_REPLAY: mark.replay_id, HEADER_REPLAY_STATE: mark.state}
    if mark.triggers:
        headers[HEADER_REPLAY_TRIGGERS] = "1"
    if mark.reset_orgs:
        headers[HEADER_REPLAY_RESET] = ",".join(mark.reset_orgs)
    return headers


def parse_mark(header: Callable[[str], str] | Mapping[str, str]) -> ReplayMark | None:
    """The mark a message's headers carry, or None (``header`` returns "" when absent)."""
    get = header.get if isinstance(header, Mapping) else header
    replay_id = get(HEADER_REPLAY) or ""
    if not replay_id:
        return None
    state: StateMode = "fresh" if get(HEADER_REPLAY_STATE) == "fresh" else "keep"
    reset = get(HEADER_REPLAY_RESET) or ""
    return ReplayMark(
        replay_id,
        state,
        get(HEADER_REPLAY_TRIGGERS) == "1",
        tuple(org for org in reset.split(",") if org),
    )
