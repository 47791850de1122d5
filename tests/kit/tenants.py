"""Many tenants from one: the sample tenant's customer, copied ``n`` times.

Events are partitioned by organization (one partition owns an organization, so its events keep
their order and its rule state has one writer). The sample tenant has three organizations that
own devices, so it can never keep more than three partitions, and so more than one or two lanes,
busy. A multi-tenant platform serves many: the end-to-end benchmark copies the customer
(``acme-foods`` and everything below it: sites, data sources, templates, devices, route groups,
rules, business rules, triggers) under the same vendor, each copy with its own ids, device ids
and rule state.
"""

from __future__ import annotations

import copy
import re
from typing import Any

__all__ = ["copy_tenants", "original_id"]

# Fields that name another entity (all ids are renamed by the same suffix).
_REFERENCES = ("orgId", "parentId", "templateId", "ruleId", "triggerId", "fixedAssetId")
_REFERENCE_LISTS = ("routeGroupIds", "templateIds", "assetIds")


def _rename(value: Any, suffix: str, keep: set[str]) -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key in _REFERENCES and isinstance(item, str) and item not in keep:
                out[key] = item + suffix
            elif key in _REFERENCE_LISTS and isinstance(item, list):
                out[key] = [v + suffix if isinstance(v, str) else v for v in item]
            else:
                out[key] = _rename(item, suffix, keep)
        return out
    if isinstance(value, list):
        return [_rename(item, suffix, keep) for item in value]
    return value


def original_id(entity_id: str) -> str:
    """The sample's id an entity was copied from (``em300-th-t3`` -> ``em300-th``)."""
    return _SUFFIX.sub("", entity_id)


_SUFFIX = re.compile(r"-t[0-9]+$")


def copy_tenants(documents: list[dict[str, Any]], copies: int) -> list[dict[str, Any]]:
    """The documents with everything below the vendor organization copied ``copies`` times
    (``copies`` = 1 returns them unchanged). Vendor-level documents stay single."""
    if copies <= 1:
        return documents
    vendors = {
        d["id"] for d in documents if d.get("kind") == "Organization" and not d.get("parentId")
    }
    shared = [d for d in documents if d.get("kind") == "Organization" and d["id"] in vendors]
    out = list(shared)
    for n in range(1, copies + 1):
        suffix = f"-t{n}"
        for document in documents:
            if document in shared:
                continue
            renamed = _rename(copy.deepcopy(document), suffix, vendors)
            renamed["id"] = document["id"] + suffix
            if "assetUUID" in renamed:
                renamed["assetUUID"] = f"{document['assetUUID']}{suffix.upper()}"
            if "code" in renamed:
                renamed.pop("code")
            protocol = renamed.get("protocol")
            credentials = protocol.get("mqtt") if isinstance(protocol, dict) else None
            if isinstance(credentials, dict) and "username" in credentials:
                credentials["username"] += suffix  # a broker user is unique across tenants
            out.append(renamed)
    return out
