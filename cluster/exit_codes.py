"""The ``eventray`` command's exit codes, decided in one place from the error hierarchy.

Scripts and CI jobs branch on these, so they must not depend on which command failed or on
the wording of a message:

- ``0`` success;
- ``1`` invalid input: a file that does not parse or validate, an unknown id, an argument value
  a command refuses, a wrong token. Running the same command again cannot succeed;
- ``2`` usage: argparse refused the command line (unknown flag, missing argument, a count that
  is not a positive integer);
- ``3`` runtime failure: no stack runs, a server or the API does not answer, a timeout, a port
  taken. The same command may succeed once the environment is fixed;
- ``130`` interrupted (Ctrl-C).
"""

from __future__ import annotations

import errno

from eventray.pipeline.errors import EventrayError, RetryableError

__all__ = ["INTERRUPTED", "INVALID_INPUT", "OK", "RUNTIME_FAILURE", "USAGE", "exit_code"]

OK = 0
INVALID_INPUT = 1
USAGE = 2
RUNTIME_FAILURE = 3
INTERRUPTED = 130

_INPUT_ERRNOS = frozenset(
    {errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG}
)
"""An OSError with one of these is about a path the user named (an input file), not about the
environment."""


def exit_code(exc: BaseException) -> int:
    """The exit code for an error that ended a command."""
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(exc, RetryableError):
        return RUNTIME_FAILURE
    if isinstance(exc, EventrayError):
        return INVALID_INPUT
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return RUNTIME_FAILURE
    if isinstance(exc, OSError):
        return INVALID_INPUT if exc.errno in _INPUT_ERRNOS else RUNTIME_FAILURE
    if isinstance(exc, UnicodeDecodeError):
        return INVALID_INPUT  # an input file that is not text
    # Anything else (a Ray error, a bug) is a failure of the run, not of what was given.
    return RUNTIME_FAILURE
