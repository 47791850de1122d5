"""Replay and redrive: put events through the pipeline again, within a caller's scope.

- :class:`ReplayService` is what an API route or the CLI calls: ``dead_letters`` (read the DLQ
  with redrive history), ``redrive`` (DLQ entries and ingress refusals at ``bind``), ``replay``
  (a time range of the stream for an organization, rule state ``keep`` or ``fresh``, triggers
  only if asked), ``wait`` (until the lanes processed the copies).
- The semantics are in :mod:`eventray.pipeline.replay.redrive` and
  :mod:`eventray.pipeline.replay.reprocess`; the ports in :mod:`eventray.pipeline.replay.ports`;
  what the lanes do with a copy in :mod:`eventray.pipeline.replay_marks` and
  :mod:`eventray.pipeline.batch`.
"""

from eventray.pipeline.replay.model import (
    DeadLetter,
    DeadLetterPosition,
    DeadLetterQuery,
    DeadLetterSource,
    InvalidRequest,
    OutOfScope,
    PartitionReplay,
    RedriveItem,
    RedriveOutcome,
    RedriveRecord,
    RedriveReport,
    RedriveRequest,
    ReplayReport,
    ReplayRequest,
    Scope,
)
from eventray.pipeline.replay.ports import (
    Appended,
    DeadLetterStore,
    EventArchive,
    StoredMessage,
    SubjectBounds,
)
from eventray.pipeline.replay.redrive import Redriver, redrive_msg_id
from eventray.pipeline.replay.reprocess import Replayer, replay_msg_id
from eventray.pipeline.replay.service import ReplayService

__all__ = [
    "Appended",
    "DeadLetter",
    "DeadLetterPosition",
    "DeadLetterQuery",
    "DeadLetterSource",
    "DeadLetterStore",
    "EventArchive",
    "InvalidRequest",
    "OutOfScope",
    "PartitionReplay",
    "RedriveItem",
    "RedriveOutcome",
    "RedriveRecord",
    "RedriveReport",
    "RedriveRequest",
    "Redriver",
    "ReplayReport",
    "ReplayRequest",
    "ReplayService",
    "Replayer",
    "Scope",
    "StoredMessage",
    "SubjectBounds",
    "redrive_msg_id",
    "replay_msg_id",
]
