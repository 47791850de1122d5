"""The one error hierarchy of eventray.

Every failure the platform reports derives from :class:`EventrayError`. The retry decision
travels with the error (``retryable``), so a stage never has to guess from a message whether to
try again: scripts and invalid entities are permanent, an unreachable sink is retryable.
Adapters translate driver errors into these classes with ``raise ... from exc``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "EventrayError",
    "InvalidInput",
    "InvalidQuery",
    "PermanentError",
    "RetryableError",
    "RevisionConflictError",
    "RuleError",
    "ScriptError",
    "SettingsError",
    "StateStoreError",
    "TemplateRenderError",
    "Unavailable",
    "UnknownId",
    "UnknownOrganization",
    "suggestion",
]


class EventrayError(Exception):
    """Base of every error eventray raises on purpose."""

    retryable: bool = False


class PermanentError(EventrayError):
    """Retrying the same input can never succeed (bad script, bad payload, bad config)."""

    retryable = False


class RetryableError(EventrayError):
    """A transient failure: the same input may succeed later.

    Args:
        message: what failed.
        retry_after_s: a hint from the failing side (e.g. a ``Retry-After`` header), if any.
    """

    retryable = True

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InvalidInput(PermanentError):
    """What a user gave cannot be used as it is: an argument value, an input file's content,
    a token. The command line exits 1 for these (and every other permanent error), 2 for what
    argparse refuses, 3 for a :class:`RetryableError`."""


class UnknownId(InvalidInput):
    """An id names nothing: the answer lists the valid ids (the nearest first), so the user
    can pick one instead of guessing.

    Args:
        what: what the id should name (``template``, ``Asset``).
        given: the id given.
        valid: the ids that exist in the caller's scope.
        where: where they were looked up (a file, ``in organization x``), if it helps.
        shown: at most this many are listed (a tenant may have thousands).
    """

    def __init__(
        self, what: str, given: str, valid: list[str], *, where: str = "", shown: int = 10
    ) -> None:
        self.what, self.given, self.valid = what, given, sorted(valid)
        super().__init__(f"unknown {what} {given!r}{' ' + where if where else ''}; "
                         + suggestion(given, self.valid, shown=shown))  # fmt: skip


def suggestion(given: str, valid: list[str], *, shown: int = 10) -> str:
    """``did you mean a, b? valid: a, b, c (and 7 more)``: the nearest ids first, the list
    bounded by ``shown`` (a tenant may have thousands of assets)."""
    import difflib

    valid = sorted(valid)
    if not valid:
        return "there are none"
    near = [v for v in valid if given and given.casefold() in v.casefold()][:3]  # a prefix, a part
    near += [v for v in difflib.get_close_matches(given, valid, n=3, cutoff=0.6) if v not in near]
    near = near[:3]
    head = f"did you mean {', '.join(near)}? " if near else ""
    listed = ", ".join(valid[:shown])
    more = f" (and {len(valid) - shown} more)" if len(valid) > shown else ""
    return f"{head}valid: {listed}{more}"


class Unavailable(RetryableError):
    """A server, the running stack or its API cannot be reached, or did not answer in time.
    The same command may succeed once it is up; the command line exits 3."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in one entity: where it is, which field, and why. ``line`` and ``column``
    (1-based, 0 when unknown) point into the source file, at the field when the file is YAML,
    so the message reads ``file:line:column`` as compilers print it and editors jump to it."""

    source: str
    path: str
    reason: str
    kind: str = ""
    entity_id: str = ""
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}:{self.column}" if self.line else self.source
        if self.kind or self.entity_id:
            where += f" [{self.kind} {self.entity_id}]".replace(" ]", "]")
        field_path = f" at {self.path}" if self.path else ""
        return f"{where}{field_path}: {self.reason}"


@dataclass(eq=False)
class ConfigError(PermanentError):
    """Entities were refused. Carries every issue found, not only the first."""

    issues: list[ConfigIssue] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        head = f"{len(self.issues)} configuration problem(s)"
        return head + "".join(f"\n  - {issue}" for issue in self.issues)


class SettingsError(PermanentError):
    """A setting (environment variable or flag) has a value eventray refuses."""


class ScriptError(PermanentError):
    """A template or codec script failed for one event.

    Args:
        stage: ``decode``, ``validate``, ``transform`` or ``compile``.
        message: the JavaScript error message (first line) or the limit that was hit.
        line: the line in the user's script, when QuickJS reported one.
    """

    def __init__(self, stage: str, message: str, *, line: int | None = None) -> None:
        where = f" (line {line})" if line is not None else ""
        super().__init__(f"{stage}: {message}{where}")
        self.stage = stage
        self.message = message
        self.line = line

    def to_dict(self) -> dict[str, object]:
        """The ``{stage, message, line?}`` shape CONTRACTS.md gives for a failed event."""
        out: dict[str, object] = {"stage": self.stage, "message": self.message}
        if self.line is not None:
            out["line"] = self.line
        return out


class RuleError(PermanentError):
    """A rule could not be compiled or evaluated (unknown operator, bad value type).

    Args:
        message: what is wrong.
        path: where, for a business rule refused at load (``parameters.threshold``).
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class TemplateRenderError(PermanentError):
    """A ``{{placeholder}}`` could not be rendered (unknown secret, malformed braces)."""


class InvalidQuery(PermanentError, ValueError):
    """A read of the stored tables was refused before it ran: a malformed filter expression,
    an unknown field or operator, a value of the wrong type, an organization that is unknown
    or outside the caller's scope, an invalid cursor. An HTTP API answers 422.

    Args:
        message: what is wrong, in words a user can act on.
        param: which input it is about (``where[0]``, ``org``, ``cursor``), when known.
    """

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def __reduce__(self) -> tuple[object, ...]:
        return type(self), (self.message,), {"param": self.param}


class UnknownOrganization(InvalidQuery):
    """An organization filter names an organization that is unknown or outside the caller's
    scope; both read the same, so the answer never tells whether another tenant exists."""

    def __init__(self, org_id: str) -> None:
        super().__init__(f"unknown organization {org_id!r}", param="org")
        self.org_id = org_id

    def __reduce__(self) -> tuple[object, ...]:
        return type(self), (self.org_id,)  # pickled across processes without double wrapping


class StateStoreError(RetryableError):
    """The rule state store failed; the batch must be retried, nothing was applied."""


class RevisionConflictError(PermanentError):
    """A conditional write found the entity at another revision than the caller expected
    (an ``If-Match`` that no longer holds, or a create of an entity that exists): nothing was
    written. Retrying the same write cannot succeed; the caller must read the entity again.

    Args:
        kind: the entity's kind.
        entity_id: its id.
        expected: the revision the caller expected (0: that it does not exist).
        actual: the revision it is at (0: it does not exist).
    """

    def __init__(self, kind: str, entity_id: str, *, expected: int, actual: int) -> None:
        super().__init__(
            f"{kind} {entity_id!r} is at revision {actual}, not {expected}"
            if actual
            else f"{kind} {entity_id!r} does not exist (expected revision {expected})"
        )
        self.kind = kind
        self.entity_id = entity_id
        self.expected = expected
        self.actual = actual
