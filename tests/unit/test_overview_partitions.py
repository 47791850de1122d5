"""The Overview's partitions per card (``actors/api_overview._partitions_of``), found in one pass
over the organizations, equal the plain definition (every organization in the card's subtree,
hashed) for the sample tenant's tree, with the cards the route makes: the roots, and an
organization with its children."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventray.actors.api_overview import _partitions_of
from eventray.pipeline.catalog import Catalog, build_catalog
from eventray.pipeline.errors import ConfigIssue
from eventray.pipeline.loader import entity_from_dict, read_documents
from eventray.pipeline.models import Organization
from eventray.pipeline.partitioning import partition_of

TENANT = Path(__file__).resolve().parents[2] / "config" / "samples" / "tenant"


def _catalog() -> Catalog:
    issues: list[ConfigIssue] = []
    documents = [doc for _, doc in read_documents([TENANT], issues)]
    entities = [entity_from_dict("test", doc, issues) for doc in documents]
    assert not issues, issues
    return build_catalog([("test", e) for e in entities if e is not None])


def _plain(catalog: Catalog, card: Organization, partitions: int) -> list[int]:
    inside = [o for o in catalog.orgs.values()
              if o.path_key == card.path_key or o.path_key.startswith(card.path_key + "/")]  # fmt: skip
    return sorted({partition_of(o.id, partitions) for o in inside})


@pytest.mark.parametrize("partitions", [1, 3, 8, 64])
def test_each_card_gets_the_partitions_of_its_subtree(partitions: int) -> None:
    catalog = _catalog()
    orgs = list(catalog.orgs.values())
    assert len(orgs) > 5 and max(o.depth for o in orgs) >= 3
    card_sets = [[o for o in orgs if o.parent_id is None]]
    for top in orgs:  # every organization with its children, as GET /overview?orgId= makes
        card_sets.append([top, *(o for o in orgs if o.parent_id == top.id)])
    for cards in card_sets:
        found = _partitions_of(catalog, cards, partitions)
        assert found == {c.id: _plain(catalog, c, partitions) for c in cards}, cards
