"""A running management API for tests: the real FastAPI app on uvicorn on a free port, over
the file config store and the file token store in a temporary directory, with the sample
tenant stored; requests go over real HTTP (httpx). ``routers`` and ``state`` (given the entity
service) plug in other parts of the API (``datakit``: stored data, DLQ and replay)."""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from eventray.actors.api_app import PREFIX, ApiApp
from eventray.cluster.mqtt_accounts import hash_documents
from eventray.config.settings import ApiSettings
from eventray.pipeline.adapters.file_config import FileConfigStore
from eventray.pipeline.adapters.file_tokens import FileTokenStore
from eventray.pipeline.errors import ConfigIssue
from eventray.pipeline.loader import read_documents
from eventray.pipeline.management import LOCAL, EntityService, TokenService

TENANT = Path(__file__).resolve().parents[2] / "config" / "samples" / "tenant"


def sample_documents() -> list[dict[str, Any]]:
    issues: list[ConfigIssue] = []
    docs = [doc for _, doc in read_documents([TENANT], issues)]
    assert issues == []
    return docs


class RunningApi:
    """The app on its own event loop in a thread (uvicorn listens on 127.0.0.1:<free>)."""

    def __init__(
        self,
        root: Path,
        *,
        max_body_bytes: int = 1024 * 1024,
        routers: Sequence[Any] = (),
        state: Callable[[EntityService], Mapping[str, Any]] | None = None,
    ) -> None:
        self.store = FileConfigStore(root=root / "config")
        self.store.put(copy.deepcopy(sample_documents()))
        self.tokens = TokenService(FileTokenStore(path=root / "tokens.json"))
        self.notices: list[int] = []
        self.entities = EntityService(
            self.store,
            prepare=lambda docs: hash_documents(docs, 4),
            notify=lambda: self.notices.append(self.store.revision()),
        )
        self.app = ApiApp(
            entities=self.entities,
            tokens=self.tokens,
            settings=ApiSettings(port=0, max_body_bytes=max_body_bytes),
            routers=routers,
            state={"greeting": "hello", **(state(self.entities) if state else {})},
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.app.start(), self._loop).result(10)
        self.url = self.app.url
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def token(self, org: str, role: str = "admin", **kw: Any) -> str:
        """A new token of ``org`` with ``role`` (made as the local admin)."""
        return self.tokens.create(self.entities.scope(LOCAL), org_id=org, role=role, **kw).token

    def call(self, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        url = path if path.startswith("/") and not path.startswith(PREFIX) and path in (
            "/openapi.json", "/docs") else f"{PREFIX}{path}"  # fmt: skip
        return self.client.request(method, url, headers=headers, **kw)

    def close(self) -> None:
        self.client.close()
        asyncio.run_coroutine_threadsafe(self.app.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


def running_api(root: Path, **kw: Any) -> Iterator[RunningApi]:
    api = RunningApi(root, **kw)
    try:
        yield api
    finally:
        api.close()


def asset(entity_id: str, org: str, **fields: Any) -> dict[str, Any]:
    return {"id": entity_id, "orgId": org, "assetUUID": f"U-{entity_id}",
            "name": f"Asset {entity_id}", "templateId": "freezer-json",
            "routeGroupIds": ["rg-cold-chain"], **fields}  # fmt: skip
