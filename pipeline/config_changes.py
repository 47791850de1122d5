"""What a config store write changes, entity by entity: the one place that decides it, so the
file store, MongoDB and the in-memory twin record the same history and refuse the same
conditional writes.

A store hands in what it holds (documents and entity revisions) and what it was asked to
write; it gets back the :class:`EntityChange` records to keep and the revisions to publish,
or a :class:`RevisionConflictError` before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventray.pipeline.errors import RevisionConflictError
from eventray.pipeline.ports import Author, EntityChange

__all__ = [
    "Planned",
    "change_from_json",
    "change_to_json",
    "check_expected",
    "plan_delete",
    "plan_put",
]

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Planned:
    """The records of one write and each touched entity's revision after it."""

    changes: list[EntityChange]
    revisions: dict[Key, int]


def check_expected(expected: Mapping[Key, int] | None, revisions: Mapping[Key, int],
                   present: set[Key]) -> None:  # fmt: skip
    """Raise on the first entity not at the revision the caller read (0: must not exist).

    Raises:
        RevisionConflictError: an expectation does not hold.
    """
    for (kind, entity_id), want in (expected or {}).items():
        actual = revisions.get((kind, entity_id), 0) if (kind, entity_id) in present else 0
        if want != actual:
            raise RevisionConflictError(kind, entity_id, expected=want, actual=actual)


def plan_put(
    current: Mapping[Key, dict[str, Any]],
    revisions: Mapping[Key, int],
    documents: Sequence[tuple[Key, dict[str, Any]]],
    *,
    author: Author,
    at: datetime,
    store_revision: int,
    expected: Mapping[Key, int] | None = None,
    note: str = "",
) -> Planned:
    """The changes of upserting ``documents`` (already checked, later duplicates winning)
    over ``current``; a document equal to the stored one records nothing.

    ``revisions`` holds every entity's last revision, deleted ones included (numbering goes on
    after a re-create).

    Raises:
        RevisionConflictError: ``expected`` does not hold; nothing may be written.
    """
    check_expected(expected, revisions, set(current))
    last: dict[Key, dict[str, Any]] = {}
    for key, doc in documents:
        last[key] = doc
    changes: list[EntityChange] = []
    out: dict[Key, int] = {}
    for key, doc in last.items():
        before = current.get(key)
        if before == doc:
            continue
        revision = revisions.get(key, 0) + 1
        out[key] = revision
        changes.append(
            EntityChange(
                kind=key[0],
                entity_id=key[1],
                revision=revision,
                store_revision=store_revision,
                at=at,
                author=author,
                op="create" if before is None else "update",
                before=before,
                after=doc,
                note=note,
            )
        )
    return Planned(changes, out)


def plan_delete(
    current: Mapping[Key, dict[str, Any]],
    revisions: Mapping[Key, int],
    key: Key,
    *,
    author: Author,
    at: datetime,
    store_revision: int,
    expected: int | None = None,
    note: str = "",
) -> Planned:
    """The change of deleting ``key`` (none when it is not stored).

    Raises:
        RevisionConflictError: ``expected`` does not hold.
    """
    if expected is not None:
        check_expected({key: expected}, revisions, set(current))
    before = current.get(key)
    if before is None:
        return Planned([], {})
    revision = revisions.get(key, 0) + 1
    change = EntityChange(
        kind=key[0], entity_id=key[1], revision=revision, store_revision=store_revision, at=at,
        author=author, op="delete", before=before, after=None, note=note,
    )  # fmt: skip
    return Planned([change], {key: revision})


def change_to_json(change: EntityChange) -> dict[str, Any]:
    """A change as a JSON object (how the file store and MongoDB keep it)."""
    return {
        "kind": change.kind,
        "id": change.entity_id,
        "revision": change.revision,
        "storeRevision": change.store_revision,
        "at": change.at.isoformat(),
        "author": {"name": change.author.name, "id": change.author.id},
        "op": change.op,
        "before": change.before,
        "after": change.after,
        "note": change.note,
    }


def change_from_json(data: Mapping[str, Any]) -> EntityChange:
    """The inverse of :func:`change_to_json`."""
    author = data.get("author") or {}
    return EntityChange(
        kind=str(data["kind"]),
        entity_id=str(data["id"]),
        revision=int(data["revision"]),
        store_revision=int(data["storeRevision"]),
        at=datetime.fromisoformat(str(data["at"])),
        author=Author(str(author.get("name", "")), str(author.get("id", ""))),
        op=str(data["op"]),
        before=data.get("before"),
        after=data.get("after"),
        note=str(data.get("note", "")),
    )
