"""Redrive and replay results as JSON-ready dictionaries (camelCase), the same for the CLI's
JSON lines and the management API's answers, so a script reading one reads the other."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from eventray.pipeline.replay.model import (
    DeadLetter,
    RedriveItem,
    RedriveReport,
    ReplayReport,
)

__all__ = ["dead_letter_out", "iso_ms", "redrive_item_out", "redrive_summary", "replay_summary"]


def iso_ms(ms: int | None) -> str | None:
    """Epoch milliseconds as ISO-8601 UTC with milliseconds (None stays None)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def dead_letter_out(entry: DeadLetter) -> dict[str, Any]:
    """One DLQ entry (or ``bind`` refusal) with its redrive record, if any; never its body."""
    line: dict[str, Any] = {
        "eventTrackerId": entry.event_tracker_id,
        "source": entry.source,
        "stage": entry.stage,
        "orgId": entry.org_id,
        "assetId": entry.asset_id,
        "created": iso_ms(entry.created_ms),
        "streamSeq": entry.stream_seq,
        "error": entry.error,
    }
    if entry.redrive is not None:
        r = entry.redrive
        line["redriven"] = {
            "redriveId": r.redrive_id, "at": iso_ms(r.redriven_ms), "by": r.requested_by,
            "partition": r.partition, "streamSeq": r.stream_seq,
        }  # fmt: skip
    return line


def redrive_item_out(item: RedriveItem) -> dict[str, Any]:
    """What became of one entry in a redrive."""
    entry = item.entry
    line: dict[str, Any] = {
        "eventTrackerId": entry.event_tracker_id,
        "source": entry.source,
        "stage": entry.stage,
        "orgId": entry.org_id,
        "created": iso_ms(entry.created_ms),
        "outcome": item.outcome,
    }
    if item.reason:
        line["reason"] = item.reason
    if item.outcome == "redriven":
        line.update(partition=item.partition, streamSeq=item.stream_seq)
        if item.duplicate:
            line["duplicate"] = True
    elif item.outcome == "would-redrive":
        line["partition"] = item.partition
    return line


def redrive_summary(report: RedriveReport, processed: bool | None = None) -> dict[str, Any]:
    """A redrive's counts (``processed``: whether the lanes acknowledged the copies in time,
    when the caller waited)."""
    summary: dict[str, Any] = {
        "redriveId": report.redrive_id,
        "dryRun": report.dry_run,
        "redriven": report.count("redriven"),
        "wouldRedrive": report.count("would-redrive"),
        "skipped": report.count("skipped"),
        "failed": report.count("failed"),
    }
    if processed is not None:
        summary["processed"] = processed
    return summary


def replay_summary(report: ReplayReport, processed: bool | None = None) -> dict[str, Any]:
    """A replay's summary: events per partition, their sequences, the copies', a sample."""
    request = report.request
    summary: dict[str, Any] = {
        "replayId": report.replay_id,
        "dryRun": report.dry_run,
        "orgId": request.org_id,
        "state": request.state,
        "triggers": request.triggers,
        "events": report.events,
        "partitions": [
            {
                "partition": p.partition, "orgs": list(p.orgs), "events": p.events,
                "firstSeq": p.first_seq, "lastSeq": p.last_seq, "resetSeq": p.reset_seq,
                "copies": [p.copies_first, p.copies_last], "sample": p.sample,
            }
            for p in report.partitions
        ],
    }  # fmt: skip
    if report.stream_starts_ms is not None:
        summary["streamStartsAt"] = iso_ms(report.stream_starts_ms)
        summary["warning"] = (
            "the range starts before the oldest event the stream still holds: older events "
            "were dropped by its retention and are not replayed"
        )
    if processed is not None:
        summary["processed"] = processed
    return summary
