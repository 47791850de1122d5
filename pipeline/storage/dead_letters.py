"""The DLQ, the ingress's refusals and the redrive records, read and written through SQL.

:class:`SqlDeadLetters` is the :class:`~eventray.pipeline.replay.ports.DeadLetterStore` over
any :class:`~eventray.pipeline.ports.EventStore`'s SQL (chDB embedded, ClickHouse): reads go
through a ``select`` callable (the store actor's, from another process), records through a
:class:`~eventray.pipeline.ports.RowSink`. As everywhere, user values travel as server-side
parameters and tables are read ``FINAL`` (each entry once, see :mod:`.schema`).

An entry's redrive record is joined on the entry's key (organization, eventTrackerId, stage and
stream sequence for the DLQ; organization and eventTrackerId for ``events_raw``): an entry
without one is pending. ``events_raw`` offers only ``bind`` refusals whose event has no DLQ
row: a lane that refuses at ``bind`` writes both, and the DLQ row is the one to redrive.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from eventray.pipeline.ports import RowSink
from eventray.pipeline.replay.model import DeadLetter, DeadLetterQuery, RedriveRecord
from eventray.pipeline.replay.ports import DeadLetterStore
from eventray.pipeline.storage.conditions import DATE, subtree, time_range
from eventray.pipeline.storage.retention import RetentionPolicy
from eventray.pipeline.storage.rows import Row, format_ts, ms_from_iso
from eventray.pipeline.storage.schema import DEFAULT_DATABASE, check_identifier

__all__ = ["SqlDeadLetters", "dead_letter_sql", "decode_body", "epoch_ms_of", "redrive_row"]

Select = Callable[[str, Mapping[str, Any]], Awaitable[list[dict[str, Any]]]]
_DATE = DATE

_RECORD = (
    "r.redrive_id AS r_redrive_id, r.created AS r_created, r.requested_by AS r_requested_by, "
    "r.msg_id AS r_msg_id, r.partition AS r_partition, r.stream_seq AS r_stream_seq"
)


def redrive_row(record: RedriveRecord, retention: RetentionPolicy) -> Row:
    """``record`` as a ``dlq_redrive`` row (DDL column order, dates as epoch ms)."""
    return (
        record.redriven_ms, record.org_id, record.path_key, record.event_tracker_id,
        retention.days(record.org_id, "dlq_redrive"), record.source, record.stage,
        record.entry_seq, record.entry_created_ms, record.error, record.redrive_id,
        record.requested_by, record.msg_id, record.partition, record.stream_seq,
    )  # fmt: skip


def decode_body(text: str, encoding: str) -> bytes:
    """A stored body back to its bytes (see :func:`~.rows.encode_body`)."""
    return base64.b64decode(text) if encoding == "base64" else text.encode()


def epoch_ms_of(value: Any) -> int:
    """A date column as read back (UTC text, or epoch ms) as epoch milliseconds."""
    if isinstance(value, int):
        return value
    ms = ms_from_iso(str(value).replace(" ", "T") + "+00:00")
    return ms or 0


class SqlDeadLetters(DeadLetterStore):
    """Args:
    select: runs a read-only query with ``{name:Type}`` parameters (the store actor's
        ``select``, or an :class:`EventStore`'s wrapped).
    sink: where redrive records are written (the store actor's client, or a store's).
    retention: the days a record is kept (``dlq_redrive``, per organization).
    database: the store's database.
    """

    def __init__(
        self,
        *,
        select: Select,
        sink: RowSink,
        retention: RetentionPolicy | None = None,
        database: str = DEFAULT_DATABASE,
    ) -> None:
        self._select = select
        self._sink = sink
        self._retention = retention or RetentionPolicy()
        self._db = check_identifier(database)

    async def record(self, records: Sequence[RedriveRecord]) -> None:
        if records:
            await self._sink.write(
                {"dlq_redrive": [redrive_row(r, self._retention) for r in records]}
            )

    async def find(self, query: DeadLetterQuery) -> list[DeadLetter]:
        if query.source == "events_raw" and query.stage not in (None, "bind"):
            return []  # refusals are redrivable at ``bind`` only
        sql, params = self.build(query)
        rows = await self._select(sql, params)
        return [_entry(query, row) for row in rows]

    def build(self, query: DeadLetterQuery) -> tuple[str, dict[str, Any]]:
        """``(sql, parameters)`` of ``query``."""
        return dead_letter_sql(query, database=self._db)


def dead_letter_sql(
    query: DeadLetterQuery, *, database: str = DEFAULT_DATABASE
) -> tuple[str, dict[str, Any]]:
    """``(sql, parameters)`` reading the entries ``query`` asks for, each with its redrive
    record's columns (``r_*``); also the inner query of the Overview's count of pending
    entries (:mod:`.activity`), so "pending" means one thing."""
    db = check_identifier(database)
    where: list[str] = []
    params: dict[str, Any] = {"limit": query.limit, "source": query.source}
    scoped: list[str] = []
    if query.scope:
        subtree(where, params, query.scope, name="scope")
        scoped.append(where[-1])
    if query.path_key:
        subtree(where, params, query.path_key, name="org_path")
    if query.event_tracker_id is not None:
        where.append("event_tracker_id = {tracker:String}")
        params["tracker"] = query.event_tracker_id
    if query.asset_id is not None:
        where.append("asset_id = {asset:String}")
        params["asset"] = query.asset_id
    time_range(where, params, query.since_ms, query.until_ms)
    if query.source == "dlq":
        if query.stage is not None:
            where.append("stage = {stage:String}")
            params["stage"] = query.stage
        entries = (
            "SELECT created, org_id, path_key, event_tracker_id, asset_id, data_source_id, "
            "stage, error, message AS body, message_encoding AS encoding, deliveries, "
            f"stream_seq FROM {db}.dlq FINAL"
        )
        on = "d.stage = r.stage AND d.stream_seq = r.entry_seq"
    else:
        where.append("stage = 'bind'")
        where.append(
            f"event_tracker_id NOT IN (SELECT event_tracker_id FROM {db}.dlq"
            + (f" WHERE {scoped[0]})" if scoped else ")")
        )
        entries = (
            "SELECT created, org_id, path_key, event_tracker_id, asset_id, data_source_id, "
            "stage, reason AS error, body, body_encoding AS encoding, 1 AS deliveries, "
            f"toUInt64(0) AS stream_seq FROM {db}.events_raw FINAL"
        )
        on = "1 = 1"
    records = f"SELECT * FROM {db}.dlq_redrive FINAL WHERE source = {{source:String}}" + (
        f" AND {scoped[0]}" if scoped else ""
    )
    outer: list[str] = []
    if query.redriven is False:
        outer.append("r.redrive_id = ''")
    elif query.redriven is True:
        outer.append("r.redrive_id != ''")
    if query.after is not None:
        created, tracker, stage, seq = query.after
        outer.append(
            "(d.created, d.event_tracker_id, d.stage, d.stream_seq) > "
            f"({{a_created:{_DATE}}}, {{a_tracker:String}}, {{a_stage:String}}, "
            "{a_seq:UInt64})"
        )
        params.update(a_created=format_ts(created), a_tracker=tracker, a_stage=stage, a_seq=seq)
    sql = (
        "SELECT d.created AS created, d.org_id AS org_id, d.path_key AS path_key, "
        "d.event_tracker_id AS event_tracker_id, d.asset_id AS asset_id, "
        "d.data_source_id AS data_source_id, d.stage AS stage, d.error AS error, "
        "d.body AS body, d.encoding AS encoding, d.deliveries AS deliveries, "
        f"d.stream_seq AS stream_seq, {_RECORD}\n"
        f"FROM ({entries}{' WHERE ' + ' AND '.join(where) if where else ''}) AS d\n"
        f"LEFT JOIN ({records}) AS r\n"
        f"ON d.org_id = r.org_id AND d.event_tracker_id = r.event_tracker_id AND {on}\n"
        + (f"WHERE {' AND '.join(outer)}\n" if outer else "")
        + "ORDER BY d.created, d.event_tracker_id, d.stage, d.stream_seq\n"
        "LIMIT {limit:UInt32}"
    )
    return sql, params


def _entry(query: DeadLetterQuery, row: Mapping[str, Any]) -> DeadLetter:
    created = epoch_ms_of(row["created"])
    seq = int(row["stream_seq"])
    record = None
    if row["r_redrive_id"]:
        record = RedriveRecord(
            query.source, row["event_tracker_id"], row["org_id"], row["path_key"], row["stage"],
            seq, created, row["error"], row["r_redrive_id"], row["r_requested_by"],
            row["r_msg_id"], int(row["r_partition"]), int(row["r_stream_seq"]),
            epoch_ms_of(row["r_created"]),
        )  # fmt: skip
    return DeadLetter(
        query.source, row["event_tracker_id"], row["org_id"], row["path_key"], row["stage"],
        row["error"], created, row["asset_id"], row["data_source_id"],
        decode_body(row["body"], row["encoding"]), seq, int(row["deliveries"]), record,
    )  # fmt: skip
