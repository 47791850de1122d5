"""CLI commands over the management API: ``get``, ``delete``, ``history [--rollback REV]``,
``tokens create|list|revoke``, and ``apply`` when it goes through the API.

Where they go:

- **A running stack and an API token** (``--token ert_...`` or ``EVENTRAY_API_TOKEN``): the
  stack's management API (its URL is in ``stack.json``), with the token's role and scope.
- **Otherwise**, the same services run in this process on the data directory's stores, as the
  local admin, guarded by the data directory's admin token like ``apply`` (``--token``,
  ``EVENTRAY_ADMIN_TOKEN``, or the token file when the caller can read it); a running stack is
  told of writes as ``apply`` tells it. ``tokens`` always works this way: it is how the first
  API token is made (the bootstrap), with or without a running stack.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import orjson

from eventray.cluster.arg_types import DATA_DIR_HELP, bounded_int, positive_float, positive_int
from eventray.cluster.table import add_format_flag, wants_table, write_table
from eventray.config.settings import Settings, load_settings
from eventray.pipeline.errors import InvalidInput, Unavailable, UnknownId
from eventray.pipeline.management import LOCAL, SLUGS, EntityService, TokenService, kind_named
from eventray.pipeline.management.secrets import SecretHolders
from eventray.pipeline.management.tokens import PREFIX as TOKEN_PREFIX
from eventray.pipeline.management.tokens import token_view

__all__ = [
    "API_TOKEN_VARIABLE",
    "ApiClient",
    "api_apply",
    "api_client",
    "api_token",
    "cmd_delete",
    "cmd_get",
    "cmd_history",
    "cmd_tokens",
]

API_TOKEN_VARIABLE = "EVENTRAY_API_TOKEN"
_API = "/api/v1/manage"


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir)
    return load_settings(**overrides)


def _emit(out: TextIO, value: Any) -> None:
    out.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def api_token(args: argparse.Namespace) -> str | None:
    """The API token given: ``--token`` when it is one (they start with ``ert_``; anything
    else given there is the data directory's admin token), else ``EVENTRAY_API_TOKEN``."""
    given = getattr(args, "token", None)
    if given and given.startswith(TOKEN_PREFIX):
        return str(given)
    return os.environ.get(API_TOKEN_VARIABLE) or None


def _admin_token(args: argparse.Namespace) -> str | None:
    from eventray.cluster.admin_token import TOKEN_VARIABLE

    given = getattr(args, "token", None)
    if given and not given.startswith(TOKEN_PREFIX):
        return str(given)
    return os.environ.get(TOKEN_VARIABLE)


class ApiClient:
    """The management API of a running stack, over HTTP (standard library only)."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url.rstrip("/"), token

    def _request(self, method: str, path: str, body: Any, query: Any) -> urllib.request.Request:
        pairs = query.items() if isinstance(query, dict) else query
        shown = [(k, str(v).lower() if isinstance(v, bool) else v) for k, v in pairs
                 if v is not None]  # fmt: skip
        url = f"{self.url}{_API}{path}" + (f"?{urllib.parse.urlencode(shown)}" if shown else "")
        data = None if body is None else orjson.dumps(body)
        return urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})  # fmt: skip

    def call(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        """The decoded answer.

        Raises:
            InvalidInput: the API refused (4xx: its error, each problem on a line of its own).
            Unavailable: the API does not answer, or answered 5xx.
        """
        with self._open(self._request(method, path, body, query)) as answer:
            return json.loads(answer.read() or b"null")

    def stream(
        self, method: str, path: str, query: list[tuple[str, Any]], body: Any = None
    ) -> Iterator[tuple[bytes, dict[str, str]]]:
        """The answer's body as it arrives (chunks, each with the answer's headers): a whole
        export is never held here.

        Raises:
            InvalidInput, Unavailable: as :meth:`call`.
        """
        with self._open(self._request(method, path, body, query)) as answer:
            headers = dict(answer.headers.items())
            while chunk := answer.read1(64 * 1024):
                yield chunk, headers

    @contextlib.contextmanager
    def _open(self, request: urllib.request.Request) -> Iterator[Any]:
        try:
            answer = urllib.request.urlopen(request, timeout=300)
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                detail = json.loads(raw)
            except ValueError:
                detail = {"error": raw.decode(errors="replace")}
            lines = [f"{exc.code}: {detail.get('error', '')}"]
            lines += [f"  - [{i.get('kind', '')} {i.get('id', '')}] at {i.get('path', '')}: "
                      f"{i.get('reason', '')}" for i in detail.get("issues") or []]  # fmt: skip
            lines += [f"  - used by {r['kind']} {r['id']!r} ({r['path']})"
                      for r in detail.get("referrers") or []]  # fmt: skip
            # 5xx: the API is down or overloaded (may pass); 4xx: what was asked is refused.
            refused = Unavailable if exc.code >= 500 else InvalidInput
            raise refused("\n".join(lines)) from None
        except (urllib.error.URLError, TimeoutError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else "timed out"
            raise Unavailable(f"the management API at {self.url} does not answer: "
                              f"{reason}") from None  # fmt: skip
        with answer:
            yield answer


@contextlib.contextmanager
def _local(args: argparse.Namespace) -> Iterator[tuple[EntityService, TokenService]]:
    """The services on the data directory's stores, as the local admin (admin token checked
    first: a wrong one learns nothing)."""
    from eventray.cluster.admin_token import check_admin_token
    from eventray.cluster.mqtt_accounts import hash_documents
    from eventray.cluster.stack import read_stack_info
    from eventray.cluster.wiring import Endpoints, Wiring

    settings = _settings(args)
    check_admin_token(settings.data_dir, _admin_token(args))
    info = read_stack_info(settings.data_dir)
    local = Endpoints("", "", None, None, settings.data_dir / "config", settings.mongodb_url, None)
    endpoints = info.endpoints_obj() if info is not None else local
    wiring = Wiring(settings, endpoints)
    config, tokens = wiring.config_store(), wiring.token_store()
    secrets = wiring.secret_store()

    def notify() -> None:
        if info is not None:
            _tell(wiring)

    try:
        cost = settings.mqtt.bcrypt_cost
        yield (
            EntityService(config, prepare=lambda d: hash_documents(d, cost), notify=notify,
                          holders=SecretHolders(secrets)),
            TokenService(tokens),
        )  # fmt: skip
    finally:
        config.close()
        tokens.close()
        secrets.close()


def _tell(wiring: Any) -> None:
    import asyncio

    async def tell() -> None:
        stream = wiring.stream()
        await stream.connect(timeout_s=3)
        try:
            await stream.config_changed()
        finally:
            await stream.close()

    asyncio.run(tell())


def api_client(args: argparse.Namespace) -> ApiClient | None:
    """The running stack's API when a stack runs and an API token was given."""
    from eventray.cluster.stack import read_stack_info

    token = api_token(args)
    if token is None:
        return None
    info = read_stack_info(_settings(args).data_dir)
    if info is None or not info.api_url:
        raise Unavailable(
            "an API token was given but no stack with a management API runs on this data "
            "directory; without a stack, the admin token works on the data directory"
        )
    return ApiClient(info.api_url, token)


def _written(result: Any) -> dict[str, Any]:
    return {"storeRevision": result.store_revision, "changes": result.changes,
            "dryRun": result.dry_run}  # fmt: skip


def api_apply(args: argparse.Namespace, documents: list[dict[str, Any]], out: TextIO) -> bool:
    """``apply`` through the running stack's API, when an API token was given; False when it
    should take the local path."""
    client = api_client(args)
    if client is None:
        return False
    answer = client.call("POST", "/apply", {"documents": documents})
    out.write(orjson.dumps({"applied": len(documents), "revision": answer["storeRevision"],
                            "runningStackNotified": True, "via": "api",
                            "changes": answer["changes"]}).decode() + "\n")  # fmt: skip
    return True


def cmd_get(args: argparse.Namespace, out: TextIO) -> int:
    """One entity, or a page of a kind."""
    kind = kind_named(args.kind)
    slug = SLUGS[kind]
    query = {"orgId": args.org_id, "includeChildren": args.include_children or None,
             "name": args.name, "limit": args.limit, "cursor": args.cursor}  # fmt: skip
    client = api_client(args)
    if client is not None:
        path = f"/{slug}/{urllib.parse.quote(args.id, safe='')}" if args.id else f"/{slug}"
        _emit(out, client.call("GET", path, **({} if args.id else query)))
        return 0
    with _local(args) as (entities, _):
        if args.id:
            doc, _revision = entities.get(LOCAL, kind, args.id)
            _emit(out, doc)
        else:
            page = entities.page(LOCAL, kind, org_id=args.org_id,
                                 include_children=args.include_children, name=args.name,
                                 limit=args.limit, cursor=args.cursor)  # fmt: skip
            _emit(out, {"items": page.items, "nextCursor": page.next_cursor})
    return 0


def cmd_delete(args: argparse.Namespace, out: TextIO) -> int:
    kind = kind_named(args.kind)
    client = api_client(args)
    if client is not None:
        path = f"/{SLUGS[kind]}/{urllib.parse.quote(args.id, safe='')}"
        _emit(out, client.call("DELETE", path))
        return 0
    with _local(args) as (entities, _):
        _emit(out, _written(entities.delete(LOCAL, kind, args.id)))
    return 0


def cmd_history(args: argparse.Namespace, out: TextIO) -> int:
    """An entity's history, or (``--rollback REV``) a rollback to a revision."""
    kind = kind_named(args.kind)
    client = api_client(args)
    path = f"/{SLUGS[kind]}/{urllib.parse.quote(args.id, safe='')}"
    if client is not None:
        if args.rollback is not None:
            _emit(out, client.call("POST", f"{path}/rollback", {"revision": args.rollback}))
        else:
            _emit(out, client.call("GET", f"{path}/history"))
        return 0
    with _local(args) as (entities, _):
        if args.rollback is not None:
            _emit(out, _written(entities.rollback(LOCAL, kind, args.id, args.rollback)))
        elif wants_table(args.output_format, out):
            write_table(out, ("revision", "at", "author", "op", "changed"),
                        [_history_row(change) for change in
                         entities.history(LOCAL, kind, args.id)])  # fmt: skip
        else:
            _emit(out, {"items": entities.history(LOCAL, kind, args.id)})
    return 0


def _history_row(change: dict[str, Any]) -> tuple[object, ...]:
    paths = [str(d.get("path", "")) for d in change.get("diff") or []]
    changed = ", ".join(paths[:4]) + (f" (+{len(paths) - 4})" if len(paths) > 4 else "")
    return (change["revision"], change["at"][:19], change["author"]["name"], change["op"],
            changed or "-")  # fmt: skip


def cmd_tokens(args: argparse.Namespace, out: TextIO) -> int:
    """``tokens create|list|revoke`` on the data directory (the bootstrap of the first token),
    as the local admin."""
    with _local(args) as (entities, tokens):
        scope = entities.scope(LOCAL)
        now = tokens.clock.now()
        if args.action == "create":
            if args.org not in scope.org_paths:
                raise UnknownId("organization", args.org, list(scope.org_paths),
                                where="(apply it first: eventray apply -f ...)")  # fmt: skip
            issued = tokens.create(scope, org_id=args.org, role=args.role, name=args.name or "",
                                   expires_days=args.expires_days)  # fmt: skip
            _emit(out, {**token_view(issued.record, now), "token": issued.token})
            out.write("# the token is shown this once: keep it (EVENTRAY_API_TOKEN=...)\n")
        elif args.action == "list":
            items = [token_view(r, now) for r in tokens.list_tokens(scope)]
            if wants_table(args.output_format, out):
                write_table(out, ("id", "name", "org", "role", "active", "expires"),
                            [(t["id"], t["name"], t["orgId"], t["role"], t["active"],
                              (t["expires"] or "never")[:19]) for t in items])  # fmt: skip
            else:
                _emit(out, {"items": items})
        else:
            _emit(out, token_view(tokens.revoke(scope, args.id), now))
    return 0


def add_commands(commands: Any) -> None:
    """The subcommands, added to the ``eventray`` parser."""

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data-dir", help=DATA_DIR_HELP)
        parser.add_argument(
            "--token",
            help=f"an API token (ert_..., default ${API_TOKEN_VARIABLE}) to go through the "
            "running stack's API; else the data directory's admin token (default "
            "$EVENTRAY_ADMIN_TOKEN, else the token file)",
        )

    get = commands.add_parser("get", help="read entities (a kind, or one entity)")
    get.add_argument("kind", help="organizations, assets, route-groups, Asset, asset, ...")
    get.add_argument("id", nargs="?", help="one entity's id (default: a page of the kind)")
    get.add_argument("--org", dest="org_id", help="only this organization's")
    get.add_argument("--children", dest="include_children", action="store_true",
                     help="with --org: its descendant organizations' too")  # fmt: skip
    get.add_argument("--name", help="name contains (any case)")
    get.add_argument("--limit", type=bounded_int(1, 1000), default=100,
                     help="entities per page (1..1000)")  # fmt: skip
    get.add_argument("--cursor", help="continue after the page that printed it")
    common(get)
    get.set_defaults(handler=cmd_get)

    delete = commands.add_parser("delete", help="delete one entity (refused while it is used)")
    delete.add_argument("kind", help="the entity's kind (assets, Asset, route-groups, ...)")
    delete.add_argument("id", help="the entity's id")
    common(delete)
    delete.set_defaults(handler=cmd_delete)

    history = commands.add_parser("history", help="an entity's changes, or roll it back")
    history.add_argument("kind", help="the entity's kind (assets, Asset, route-groups, ...)")
    history.add_argument("id", help="the entity's id")
    history.add_argument("--rollback", type=positive_int, metavar="REV",
                         help="bring it back to its state right after revision REV")  # fmt: skip
    common(history)
    add_format_flag(history)
    history.set_defaults(handler=cmd_history)

    tokens = commands.add_parser("tokens", help="management API tokens (on the data directory)")
    actions = tokens.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="make a token; printed once")
    create.add_argument("--org", required=True, help="the organization whose subtree it sees")
    create.add_argument("--role", required=True, choices=("admin", "editor", "viewer", "ingest"),
                        help="what it may do in that subtree")  # fmt: skip
    create.add_argument("--name", help="a label to recognize it by in tokens list")
    create.add_argument("--expires-days", type=positive_float,
                        help="it stops working after this many days (default: never)")  # fmt: skip
    listing = actions.add_parser("list", help="every token (never the secrets)")
    add_format_flag(listing)
    revoke = actions.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("id", help="the token's id (tokens list shows them)")
    for parser in (create, listing, revoke):
        parser.add_argument("--data-dir", help=DATA_DIR_HELP)
        parser.add_argument("--token", help="the data directory's admin token")
        parser.set_defaults(handler=cmd_tokens)
