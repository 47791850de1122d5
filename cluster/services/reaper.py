"""Ends what a process started when that process dies, even by ``kill -9``.

The kernel ties a child to its parent's life (``PR_SET_PDEATHSIG``, see
:func:`~eventray.cluster.services.procs.bound_to_owner`) only for children the owner spawns itself.
Ray's raylet starts its own agents, and when the raylet dies with the owner they spend about a
minute trying to report to the GCS (dead too) before they exit. So a local Ray head gets this
small process beside it: while the owner lives it notes the owner's descendants every second,
and when the pipe from the owner closes without a goodbye (the owner died), it ends every
process it noted that still runs, and their children.

Linux only: it reads ``/proc``. Run as ``python -m eventray.cluster.services.reaper OWNER_PID``
with a pipe from the owner on stdin (see :func:`start_reaper`).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time

__all__ = ["Reaper", "start_reaper"]

_NOTE_EVERY_S = 1.0
_GOODBYE = b"goodbye\n"

# pid -> (parent pid, start time): the start time tells a process from a later one that
# reuses its pid.
Table = dict[int, tuple[int, int]]


class Reaper:
    """The reaper of this process; :meth:`dismiss` it after a clean stop."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    def dismiss(self) -> None:
        """Tell it the owner stopped what it started (nothing to end), and wait for it."""
        self._close(_GOODBYE)

    def reap(self) -> None:
        """End the owner's descendants now, as if the owner had died (a start that failed
        half-way), and wait for it."""
        self._close(b"")

    def _close(self, last_words: bytes) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):
            self.process.stdin.write(last_words)
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_reaper() -> Reaper | None:
    """Start the reaper of this process (None where ``/proc`` is missing)."""
    if not os.path.exists("/proc/self/stat"):
        return None
    process = subprocess.Popen(
        [sys.executable, "-m", __name__, str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C meant for the owner must not end it first
    )
    return Reaper(process)


def _table() -> Table:
    table: Table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                raw = handle.read()
        except OSError:
            continue
        fields = raw[raw.rindex(b")") + 2 :].split()  # after "pid (name) "; the name has spaces
        table[int(entry)] = (int(fields[1]), int(fields[19]))
    return table


def _descendants(roots: set[int], table: Table) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found and child != os.getpid():
                found.add(child)
                todo.append(child)
    return found


def _alive(noted: dict[int, int], table: Table) -> dict[int, int]:
    return {pid: start for pid, start in noted.items() if table.get(pid, (0, -1))[1] == start}


def _note(owner: dict[int, int], noted: dict[int, int]) -> dict[int, int]:
    """The owner's descendants now, plus those noted before that still run (an orphan's
    parent is no longer the owner)."""
    table = _table()
    found = _descendants(set(_alive(owner, table)), table)
    return _alive(noted, table) | {pid: table[pid][1] for pid in found}


def _reap(owner: dict[int, int], noted: dict[int, int]) -> None:
    """Freeze every process to end (SIGSTOP) until no new child appears, then kill them all:
    a process that is still running could start a child, or die and orphan its children,
    between a look at the tree and the kill."""
    frozen: dict[int, int] = {}
    while True:
        time.sleep(0.02)  # a SIGSTOP just sent may not have landed yet
        found = {**_note(owner, noted), **frozen}
        table = _table()
        found |= {pid: table[pid][1] for pid in _descendants(set(_alive(found, table)), table)}
        new = _alive(found, table).keys() - frozen.keys()
        if not new:
            break
        for pid in new:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGSTOP)
            frozen[pid] = found[pid]
    for pid in _alive(frozen, _table()):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _owner_gone(timeout_s: float) -> bool | None:
    """True: the pipe closed unsaid (the owner died); False: it said goodbye; None: it lives."""
    ready, _, _ = select.select([0], [], [], timeout_s)
    if not ready:
        return None
    return not os.read(0, len(_GOODBYE))


def main(argv: list[str]) -> int:
    pid = int(argv[1])
    owner = {pid: _table().get(pid, (0, -1))[1]}  # a later process with its pid is not it
    noted: dict[int, int] = {}
    while True:
        gone = _owner_gone(_NOTE_EVERY_S)
        if gone is False:
            return 0
        if gone:
            _reap(owner, noted)
            return 0
        noted = _note(owner, noted)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
