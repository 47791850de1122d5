"""``eventray secrets set|list|delete|changes|rotate-key|generate-key``.

Where they go, as ``get``/``apply`` (``eventray.cluster.manage_cli``): with an API token and a
running stack, its management API (the token's role and scope; the stack's key seals); else the
data directory's store as the local admin, guarded by the admin token, sealed with the key of
this process's settings (``EVENTRAY_SECRETS__KEY`` or ``__KEY_FILE``). A running stack's lanes
pick a change up within ``secrets.check_interval_s`` either way.

A value is never taken from the command line (every local user can read command lines): it
is read from standard input (one trailing newline dropped; a terminal prompts without echo),
from ``--value-file``, or from the variable ``--from-env`` names.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from eventray.cluster.arg_types import DATA_DIR_HELP
from eventray.cluster.manage_cli import _admin_token, _emit, _settings
from eventray.cluster.manage_cli import api_client as _client
from eventray.pipeline.errors import InvalidInput
from eventray.pipeline.management import LOCAL, EntityService, Scope
from eventray.pipeline.management.secrets import SecretService, secret_view
from eventray.pipeline.secret_crypto import generate_key

__all__ = ["add_secrets_commands", "cmd_secrets"]


@contextlib.contextmanager
def _local(args: argparse.Namespace) -> Iterator[tuple[SecretService, Scope]]:
    """The service on the data directory's stores, as the local admin (admin token first)."""
    from eventray.cluster.admin_token import check_admin_token
    from eventray.cluster.secrets_wiring import load_cipher, secret_store
    from eventray.cluster.stack import read_stack_info
    from eventray.cluster.wiring import Endpoints, Wiring

    settings = _settings(args)
    check_admin_token(settings.data_dir, _admin_token(args))
    info = read_stack_info(settings.data_dir)
    local = Endpoints("", "", None, None, settings.data_dir / "config", settings.mongodb_url, None)
    endpoints = info.endpoints_obj() if info is not None else local
    config = Wiring(settings, endpoints).config_store()
    store = secret_store(settings, endpoints.mongodb_url)
    try:
        scope = EntityService(config).scope(LOCAL)
        yield SecretService(store, load_cipher(settings.secrets)), scope
    finally:
        config.close()
        store.close()


def _value(args: argparse.Namespace) -> str:
    if args.value_file:
        text = Path(args.value_file).read_text(encoding="utf-8")
    elif args.from_env:
        text = os.environ.get(args.from_env, "")
        if not text:
            raise InvalidInput(f"the variable {args.from_env} is not set or empty")
    elif sys.stdin.isatty():
        text = getpass.getpass(f"value of {args.name} (not shown): ")
    else:
        text = sys.stdin.read()
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise InvalidInput("no value: give it on standard input, --value-file or --from-env")
    return text


def _path(org_id: str, name: str) -> str:
    return f"/secrets/{urllib.parse.quote(org_id, safe='')}/{urllib.parse.quote(name, safe='')}"


def cmd_secrets(args: argparse.Namespace, out: TextIO) -> int:
    action = args.action
    if action == "generate-key":
        out.write(generate_key() + "\n")
        return 0
    if action == "rotate-key":
        with _local(args) as (service, scope):
            _emit(out, service.rotate_key(scope))
        return 0
    value = _value(args) if action == "set" else None
    client = _client(args)
    if client is not None:
        if action == "set":
            _emit(out, client.call("PUT", _path(args.org, args.name),
                                   {"value": value, "shared": args.shared}))  # fmt: skip
        elif action == "delete":
            _emit(out, client.call("DELETE", _path(args.org, args.name)))
        else:
            where = "/secrets/changes" if action == "changes" else "/secrets"
            _emit(out, client.call("GET", where, orgId=args.org,
                                   includeChildren=args.include_children or None))  # fmt: skip
        return 0
    with _local(args) as (service, scope):
        result: Any
        if action == "set":
            assert value is not None
            written = service.put(scope, args.org, args.name, value, shared=args.shared)
            result = {**secret_view(written.record), "created": written.created}
        elif action == "delete":
            result = service.delete(scope, args.org, args.name)
        elif action == "changes":
            result = {"items": service.changes(scope, org_id=args.org,
                                               include_children=args.include_children)}  # fmt: skip
        else:
            result = {"items": service.list_secrets(scope, org_id=args.org,
                                                    include_children=args.include_children)}  # fmt: skip
        _emit(out, result)
    return 0


def add_secrets_commands(commands: Any) -> None:
    """``eventray secrets ...``, added to the ``eventray`` parser."""
    secrets = commands.add_parser(
        "secrets", help="per-organization secrets of {{secrets.NAME}} (write-only)"
    )
    actions = secrets.add_subparsers(dest="action", required=True, metavar="ACTION")

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data-dir", help=DATA_DIR_HELP)
        parser.add_argument(
            "--token",
            help="an API token (ert_..., default $EVENTRAY_API_TOKEN) to go through the running "
            "stack's API; else the data directory's admin token (default "
            "$EVENTRAY_ADMIN_TOKEN, else the token file)",
        )
        parser.set_defaults(handler=cmd_secrets)

    put = actions.add_parser(
        "set", help="set or rotate a secret; the value from stdin, --value-file or --from-env"
    )
    put.add_argument("org", help="the organization's id")
    put.add_argument("name", help="what {{secrets.NAME}} names")
    put.add_argument("--shared", action="store_true", help="its descendants may render it too")
    source = put.add_mutually_exclusive_group()
    source.add_argument("--value-file", help="read the value from this file")
    source.add_argument("--from-env", metavar="VARIABLE", help="read it from this variable")
    common(put)

    delete = actions.add_parser("delete", help="delete a secret")
    delete.add_argument("org", help="the organization's id")
    delete.add_argument("name", help="the secret's name")
    common(delete)

    for name, what in (("list", "the secrets (names, flags, times; never values)"),
                       ("changes", "who changed which secret when (never values)")):  # fmt: skip
        listing = actions.add_parser(name, help=what)
        listing.add_argument("--org", help="this organization's")
        listing.add_argument("--children", dest="include_children", action="store_true",
                             help="with --org: its descendant organizations' too")  # fmt: skip
        common(listing)

    rotate = actions.add_parser(
        "rotate-key",
        help="re-seal every secret with EVENTRAY_SECRETS__KEY, opening the older ones with "
        "EVENTRAY_SECRETS__PREVIOUS_KEY (on the data directory, as the local admin)",
    )
    rotate.add_argument("--data-dir", help=DATA_DIR_HELP)
    rotate.add_argument("--token", help="the data directory's admin token")
    rotate.set_defaults(handler=cmd_secrets)

    generate = actions.add_parser("generate-key", help="print a new random key (base64)")
    generate.set_defaults(handler=cmd_secrets)
