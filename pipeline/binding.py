"""Binding an ingested body to its asset, per its data source's ``assetBind``.

Used twice: by the ingress, to partition by the asset's organization, and by the lane, which
binds again from the catalog it has (so a stale ingress cannot route into the wrong tenant).
"""

from __future__ import annotations

from typing import Any

from eventray.pipeline.catalog import Catalog
from eventray.pipeline.models import Asset, DataSource
from eventray.pipeline.paths import MISSING, compile_path

__all__ = ["AssetBinder"]


class AssetBinder:
    """Finds the asset an ingested body belongs to, per its data source's ``assetBind``."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.by_uuid = {a.asset_uuid: a for a in catalog.assets.values()}
        self.getters = {
            ds.id: [compile_path(p) for p in ds.asset_bind.uuid_fields]
            for ds in catalog.data_sources.values()
        }

    def bind(self, source: DataSource, body: Any) -> Asset | str:
        """The asset, or the reason there is none."""
        asset = self._find(source, body)
        if isinstance(asset, str):
            return asset
        if not self.catalog.is_ancestor_or_self(source.org_id, asset.org_id):
            # Tenant isolation: a data source only ever feeds assets of its own subtree.
            return f"asset {asset.id!r} is outside data source {source.id!r}'s organization"
        return asset

    def _find(self, source: DataSource, body: Any) -> Asset | str:
        if source.asset_bind.fixed_asset_id is not None:
            asset = self.catalog.assets.get(source.asset_bind.fixed_asset_id)
            return asset or f"fixed asset {source.asset_bind.fixed_asset_id!r} does not exist"
        for get in self.getters.get(source.id, ()):
            value = get(body)
            if value is not MISSING and value is not None:
                asset = self.by_uuid.get(str(value))
                return asset or f"no asset with assetUUID {value!r}"
        fields = ", ".join(source.asset_bind.uuid_fields)
        return f"body has none of the asset fields ({fields})"
