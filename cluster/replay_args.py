"""The ``eventray dlq`` and ``eventray replay`` command lines (the commands themselves are in
:mod:`eventray.cluster.replaying`, imported only when one runs: they attach to Ray and NATS)."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from eventray.cluster.arg_types import DATA_DIR_HELP, positive_float, positive_int

__all__ = ["add_replay_commands"]


def _handler(name: str) -> Any:
    def handler(args: argparse.Namespace, out: TextIO) -> int:
        from eventray.cluster import replaying

        return int(getattr(replaying, name)(args, out))

    return handler


def add_replay_commands(commands: Any) -> None:
    """Add ``dlq list``, ``dlq redrive`` and ``replay`` to the ``eventray`` parser."""
    token_help = (
        "an API token (ert_..., default $EVENTRAY_API_TOKEN): through the running stack's "
        "management API with the token's role and scope; else the stack's admin token "
        "(default: $EVENTRAY_ADMIN_TOKEN, else the token file)"
    )

    def selection(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--tracker", help="one event's entries (its eventTrackerId)")
        parser.add_argument("--stage", help="entries of one failing stage (script, bind, ...)")
        parser.add_argument("--org", dest="org_id", help="an organization and those below it")
        parser.add_argument("--asset", dest="asset_id", help="one asset's entries")
        parser.add_argument("--since", help="entries made at or after this ISO time")
        parser.add_argument("--until", help="entries made before this ISO time")
        parser.add_argument(
            "--source", choices=("dlq", "raw", "all"), default="all",
            help="the DLQ, ingress refusals at bind (events_raw), or both",
        )  # fmt: skip
        parser.add_argument("--limit", type=positive_int, help="at most this many entries")
        parser.add_argument("--data-dir", help=DATA_DIR_HELP)
        parser.add_argument("--token", help=token_help)

    dlq = commands.add_parser("dlq", help="the dead-letter queue").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    listing = dlq.add_parser("list", help="entries, with their redrive records")
    selection(listing)
    listing.add_argument("--redriven", choices=("yes", "no", "all"), default="all",
                         help="only entries redriven already (yes), or not yet (no)")  # fmt: skip
    listing.set_defaults(handler=_handler("cmd_dlq_list"))
    redrive = dlq.add_parser("redrive", help="put entries back into the pipeline, once each")
    selection(redrive)
    redrive.add_argument("--all", dest="everything", action="store_true",
                         help="every entry (in combination with no filter)")  # fmt: skip
    redrive.add_argument("--dry-run", action="store_true", help="print what would be redriven")
    redrive.add_argument("--wait", type=positive_float, metavar="SECONDS",
                         help="wait until the lanes processed the copies")  # fmt: skip
    redrive.set_defaults(handler=_handler("cmd_dlq_redrive"))

    replay = commands.add_parser("replay", help="process a range of the stream again")
    replay.add_argument("--org", dest="org_id", required=True,
                        help="the organization whose events are processed again")  # fmt: skip
    replay.add_argument("--children", dest="include_children", action="store_true",
                        help="its descendant organizations' events too")  # fmt: skip
    replay.add_argument("--since", help="events received at or after this ISO time")
    replay.add_argument("--until", help="events received before this ISO time (default: now)")
    replay.add_argument("--from-seq", type=positive_int, help="or from this stream sequence")
    replay.add_argument("--to-seq", type=positive_int, help="to before this stream sequence")
    replay.add_argument("--state", choices=("keep", "fresh"), default="keep",
                        help="keep: rules not evaluated again; fresh: the organizations' rule "
                        "state reset and rebuilt from the range")  # fmt: skip
    replay.add_argument("--triggers", action="store_true", help="send deliveries again")
    replay.add_argument("--dry-run", action="store_true", help="print what would be replayed")
    replay.add_argument("--wait", type=positive_float, metavar="SECONDS",
                        help="wait until the lanes processed the copies")  # fmt: skip
    replay.add_argument("--id", dest="replay_id", help="the replay's id (to finish one cut short)")
    replay.add_argument("--data-dir", help=DATA_DIR_HELP)
    replay.add_argument("--token", help=token_help)
    replay.set_defaults(handler=_handler("cmd_replay"))
