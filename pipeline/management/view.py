"""One revision of the configuration, indexed for the management API's reads.

Lists must stay fast with tens of thousands of entities (10,000 assets and 1,000 rules answer
in a few milliseconds), so a view is built once per store revision and shared by every
request until the revision changes: per kind, the entities sorted by id (the list order, and
what a cursor points into), each with its owner's pathKey for the scope test. Building one
parses no entity but the organizations (their pathKeys); the typed entities that writes
validate against are parsed when first needed and reused across revisions for every document
that did not change.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from eventray.pipeline.catalog import place_organizations
from eventray.pipeline.errors import ConfigIssue
from eventray.pipeline.loader import entity_from_dict
from eventray.pipeline.management.kinds import SLUGS, owner_org
from eventray.pipeline.management.scope import Scope
from eventray.pipeline.models import Entity, Organization

__all__ = ["ConfigView", "EntityCache", "Item"]

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Item:
    """One entity as lists see it."""

    kind: str
    id: str
    doc: dict[str, Any]
    org_id: str | None
    path: str | None
    """The owner organization's pathKey; None for a system rule; "" for an unknown owner
    (visible to the local admin only)."""
    name: str
    enabled: bool


class EntityCache:
    """Typed entities by (kind, id), kept while their document is unchanged (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entities: dict[Key, tuple[dict[str, Any], Entity | None]] = {}

    def entity(self, key: Key, doc: dict[str, Any]) -> Entity | None:
        """The entity of ``doc`` (None if the stored document does not validate)."""
        with self._lock:
            cached = self._entities.get(key)
            if cached is not None and cached[0] is doc:
                return cached[1]
        if cached is not None and cached[0] == doc:
            entity = cached[1]
        else:
            entity = entity_from_dict("stored", doc, [])
        with self._lock:
            self._entities[key] = (doc, entity)
        return entity

    def forget_missing(self, keys: Mapping[Key, Any]) -> None:
        with self._lock:
            for key in [k for k in self._entities if k not in keys]:
                del self._entities[key]


@dataclass
class ConfigView:
    """The configuration at one store revision (never changed once built)."""

    revision: int
    docs: dict[Key, dict[str, Any]]
    orgs: dict[str, Organization]
    entity_revisions: dict[Key, int]
    cache: EntityCache = field(repr=False)
    _items: dict[str, list[Item]] = field(default_factory=dict, repr=False)
    _ids: dict[str, list[str]] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        revision: int,
        documents: list[dict[str, Any]],
        entity_revisions: dict[Key, int],
        cache: EntityCache,
    ) -> ConfigView:
        docs = {(str(d.get("kind")), str(d.get("id"))): d for d in documents}
        org_entities = []
        for key, doc in docs.items():
            if key[0] == "Organization":
                parsed = cache.entity(key, doc)
                if isinstance(parsed, Organization):
                    org_entities.append(parsed)
        orgs = place_organizations(org_entities)
        paths = {org_id: org.path_key for org_id, org in orgs.items()}
        items: dict[str, list[Item]] = {kind: [] for kind in SLUGS}
        for (kind, entity_id), doc in docs.items():
            if kind not in items:
                continue
            org = owner_org(kind, doc)
            path = None if org is None else paths.get(org, "")
            name = doc.get("name")
            items[kind].append(
                Item(
                    kind,
                    entity_id,
                    doc,
                    org,
                    path,
                    name if isinstance(name, str) else "",
                    doc.get("enabled", True) is not False,
                )
            )
        for bucket in items.values():
            bucket.sort(key=lambda item: item.id)
        cache.forget_missing(docs)
        return cls(
            revision, docs, orgs, entity_revisions, cache, items,
            {kind: [i.id for i in bucket] for kind, bucket in items.items()},
        )  # fmt: skip

    @property
    def org_paths(self) -> dict[str, str]:
        return {org_id: org.path_key for org_id, org in self.orgs.items()}

    def item(self, kind: str, entity_id: str) -> Item | None:
        ids = self._ids.get(kind, [])
        index = bisect.bisect_left(ids, entity_id)
        if index < len(ids) and ids[index] == entity_id:
            return self._items[kind][index]
        return None

    def after(self, kind: str, entity_id: str | None) -> Iterator[Item]:
        """The kind's items in id order, from the first id greater than ``entity_id``."""
        ids = self._ids.get(kind, [])
        start = 0 if entity_id is None else bisect.bisect_right(ids, entity_id)
        return iter(self._items.get(kind, [])[start:])

    def visible(self, scope: Scope, item: Item) -> bool:
        """Whether ``scope`` may see ``item`` (an entity of an unknown organization only the
        local admin)."""
        if scope.path_key is None:
            return True
        if item.path == "":
            return False
        return scope.covers_path(item.path)

    def entity(self, key: Key) -> Entity | None:
        doc = self.docs.get(key)
        return None if doc is None else self.cache.entity(key, doc)

    def entities(self, skip: set[Key] | None = None) -> list[tuple[str, Entity]]:
        """Every stored entity that validates, with source ``stored``; problems of stored
        documents that do not validate are left to :meth:`stored_issues`."""
        out: list[tuple[str, Entity]] = []
        for key, doc in self.docs.items():
            if skip and key in skip:
                continue
            entity = self.cache.entity(key, doc)
            if entity is not None:
                out.append(("stored", entity))
        return out

    def stored_issues(self, skip: set[Key]) -> list[ConfigIssue]:
        """What stored documents (other than ``skip``) fail validation with."""
        issues: list[ConfigIssue] = []
        for key, doc in self.docs.items():
            if key not in skip and self.cache.entity(key, doc) is None:
                entity_from_dict("stored", doc, issues)
        return issues
