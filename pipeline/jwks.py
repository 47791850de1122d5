"""The signing keys of OAuth2 data sources: JSON Web Key Sets, fetched and cached per URL.

Pure logic over a fetch port (:class:`JwksFetch`; the aiohttp adapter is
``pipeline.adapters.jwks_fetch``, the in-memory twin ``pipeline.adapters.memory_jwks``):

- A set is kept for its response's ``Cache-Control: max-age``, bounded to
  ``[min_ttl_s, max_ttl_s]`` (``ttl_s`` without one; ``no-store``/``no-cache`` count as 0, so
  the lower bound).
- **One fetch per URL per** ``refetch_interval_s``, whatever asks for it: a token whose ``kid``
  is not in the set makes the set be fetched again (key rotation works without a restart), but
  a flood of random kids costs the identity provider one request per interval; a token with an
  unknown kid in between is refused (401). Requests that need the same URL while it is being
  fetched wait for that one fetch.
- A set that cannot be had (connection refused, timeout, an answer other than 200, a body that
  is not a JWKS or is too large) is an outage, not a bad token: the caller answers 503 with
  ``Retry-After`` (the time until the next fetch is allowed). Until then, and for up to
  ``stale_s`` past its expiry, the last good set still serves the kids it holds (stale-if-error):
  an outage of the provider does not refuse every device, at the price that a key the provider
  withdrew during its outage is honoured until it is back or ``stale_s`` runs out. A URL the
  egress policy refuses (:class:`JwksRefused`) is a configuration error: 401, no stale keys.

Only asymmetric signing keys are taken from a set (RSA of 2048 bits or more, EC, OKP); ``oct``
keys, keys for encryption (``use: enc``) and keys that do not parse are skipped, so a JWKS can
never make an HMAC algorithm acceptable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import orjson
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey

from eventray.pipeline.errors import PermanentError, RetryableError

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "JwksCache",
    "JwksDocument",
    "JwksFetch",
    "JwksRefused",
    "JwksUnavailable",
    "KeysUnavailable",
    "NoKey",
    "SigningKey",
    "parse_jwks",
    "ttl_of",
]

_log = logging.getLogger(__name__)

_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGORITHMS = {
    "P-256": frozenset({"ES256"}),
    "P-384": frozenset({"ES384"}),
    "P-521": frozenset({"ES512"}),
    "secp256k1": frozenset({"ES256K"}),
}
_OKP_ALGORITHMS = {
    "Ed25519": frozenset({"Ed25519", "EdDSA"}),
    "Ed448": frozenset({"Ed448", "EdDSA"}),
}
ASYMMETRIC_ALGORITHMS = frozenset(
    _RSA_ALGORITHMS.union(*_EC_ALGORITHMS.values(), *_OKP_ALGORITHMS.values())
)
"""Every JWS algorithm a key of a JWKS can verify; never ``none``, never ``HS*``."""

_MIN_RSA_BITS = 2048
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)
_NO_STORE = re.compile(r"(?:^|,)\s*no-(?:store|cache)\s*(?:,|$|=)", re.IGNORECASE)


class JwksUnavailable(RetryableError):
    """The key set could not be had this time (network, timeout, HTTP status, bad body)."""


class JwksRefused(PermanentError):
    """The key set may not be fetched from that URL at all (the egress policy, its scheme)."""


@dataclass(frozen=True, slots=True)
class JwksDocument:
    """A fetched key set: the response body and its ``Cache-Control`` header, if any."""

    body: bytes
    cache_control: str | None = None


class JwksFetch(Protocol):
    """Fetches the key set at a URL.

    Raises:
        JwksUnavailable: it could not be had now (the caller answers 503 and tries later).
        JwksRefused: it may not be fetched from there (the caller answers 401).
    """

    async def __call__(self, url: str) -> JwksDocument: ...

    async def close(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One usable key of a set: its id, type and the JWS algorithms it verifies."""

    kid: str | None
    kty: str
    algorithms: frozenset[str]
    key: Key = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class NoKey:
    """No key verifies this token (an unknown kid, a kid of another type, a refused URL): 401."""

    reason: str


@dataclass(frozen=True, slots=True)
class KeysUnavailable:
    """The key set cannot be had now: 503, retry after ``retry_after_s``."""

    reason: str
    retry_after_s: float


def _algorithms(key: Key, declared: object) -> frozenset[str]:
    if isinstance(key, RSAKey):
        size = int(getattr(key.raw_value, "key_size", 0))
        possible = _RSA_ALGORITHMS if size >= _MIN_RSA_BITS else frozenset()
    elif isinstance(key, ECKey):
        possible = _EC_ALGORITHMS.get(key.curve_name, frozenset())
    elif isinstance(key, OKPKey):
        possible = _OKP_ALGORITHMS.get(key.curve_name, frozenset())
    else:  # oct: never from a JWKS
        return frozenset()
    if declared is None:
        return possible
    return possible & {declared} if isinstance(declared, str) else frozenset()


def _signing_key(entry: object) -> SigningKey | None:
    if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC", "OKP"):
        return None
    if entry.get("use", "sig") != "sig":
        return None
    ops = entry.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None
    kid = entry.get("kid")
    if kid is not None and not isinstance(kid, str):
        return None
    public = {k: v for k, v in entry.items() if k in ("kty", "kid", "n", "e", "crv", "x", "y")}
    try:
        key: Key
        with warnings.catch_warnings():  # a weak RSA key warns; it is skipped below
            warnings.simplefilter("ignore", SecurityWarning)
            if entry["kty"] == "RSA":
                key = RSAKey.import_key(public)
            elif entry["kty"] == "EC":
                key = ECKey.import_key(public)
            else:
                key = OKPKey.import_key(public)
    except (JoseError, ValueError, TypeError, KeyError):
        return None
    algorithms = _algorithms(key, entry.get("alg"))
    if not algorithms:
        return None
    return SigningKey(kid, str(entry["kty"]), algorithms, key)


def parse_jwks(body: bytes) -> tuple[SigningKey, ...]:
    """The usable signing keys of a JWKS document (the others are skipped).

    Raises:
        ValueError: the body is not JSON, or not an object with a ``keys`` array.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('not a JWKS (an object with a "keys" array)')
    keys = (_signing_key(entry) for entry in document["keys"])
    return tuple(key for key in keys if key is not None)


def ttl_of(cache_control: str | None, *, default_s: float, min_s: float, max_s: float) -> float:
    """How long a set is kept: its ``max-age`` (``no-store``/``no-cache``: 0) or ``default_s``,
    bounded to ``[min_s, max_s]``."""
    ttl = default_s
    if cache_control:
        if _NO_STORE.search(cache_control):
            ttl = 0.0
        else:
            match = _MAX_AGE.search(cache_control)
            if match:
                ttl = float(match.group(1))
    return min(max(ttl, min_s), max_s)


@dataclass(slots=True)
class _KeySet:
    keys: tuple[SigningKey, ...]
    expires_at: float

    def find(self, kid: str | None, alg: str) -> SigningKey | NoKey | None:
        """The key for a token's ``kid`` and ``alg``; ``None`` when the set does not know it
        (fetching again may help); :class:`NoKey` when it never will."""
        if kid is not None:
            named = [k for k in self.keys if k.kid == kid]
            if not named:
                return None
            for key in named:
                if alg in key.algorithms:
                    return key
            kinds = ", ".join(sorted({f"{k.kty}: {'/'.join(sorted(k.algorithms))}" for k in named}))
            return NoKey(f"JWT algorithm {alg!r} does not fit key {kid!r} ({kinds})")
        fitting = [k for k in self.keys if alg in k.algorithms]
        if len(fitting) == 1:
            return fitting[0]
        if not fitting:
            return None
        return NoKey(f"JWT has no kid and {len(fitting)} keys of the set take {alg}")


@dataclass(slots=True)
class _Url:
    keys: _KeySet | None = None
    attempted_at: float | None = None
    failure: str | None = None  # why the last fetch failed; None when it succeeded
    refused: bool = False  # the last failure was a refusal (configuration), not an outage
    pending: asyncio.Future[None] | None = None


class JwksCache:
    """The key sets of every OAuth2 data source, one entry per JWKS URL.

    Args:
        fetch: where sets come from.
        ttl_s: how long a set is kept when its response has no ``max-age``.
        min_ttl_s, max_ttl_s: bounds on any set's lifetime.
        refetch_interval_s: at most one fetch per URL in this time, for any reason.
        stale_s: how long past its expiry a set still serves known kids while fetching it
            fails (0: never).
        clock: monotonic seconds.
    """

    def __init__(
        self,
        fetch: JwksFetch,
        *,
        ttl_s: float = 300.0,
        min_ttl_s: float = 30.0,
        max_ttl_s: float = 3600.0,
        refetch_interval_s: float = 10.0,
        stale_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fetch = fetch
        self.ttl_s = ttl_s
        self.min_ttl_s = min_ttl_s
        self.max_ttl_s = max_ttl_s
        self.refetch_interval_s = refetch_interval_s
        self.stale_s = stale_s
        self._clock = clock
        self._urls: dict[str, _Url] = {}
        self.fetches = 0
        self.failures = 0
        self.stale_answers = 0

    async def key(
        self, url: str, kid: str | None, alg: str
    ) -> SigningKey | NoKey | KeysUnavailable:
        """The key that verifies a token of ``alg`` naming ``kid`` (``None``: no ``kid``) from
        the set at ``url``, fetching the set when it is missing, expired or does not know
        ``kid`` (at most once per ``refetch_interval_s``)."""
        state = self._urls.get(url)
        if state is None:
            state = self._urls[url] = _Url()
        if state.pending is not None:
            await asyncio.shield(state.pending)
        now = self._clock()
        held = state.keys
        if held is not None and now < held.expires_at:
            found = held.find(kid, alg)
            if found is not None:
                return found
        if state.attempted_at is None or now - state.attempted_at >= self.refetch_interval_s:
            await self._refresh(url, state)
            now, held = self._clock(), state.keys
        if state.failure is None and held is not None:  # the last fetch succeeded
            return held.find(kid, alg) or NoKey(_unknown(url, kid, alg))
        if state.refused or state.failure is None:
            return NoKey(state.failure or f"key set at {url} was never fetched")
        if held is not None and now < held.expires_at + self.stale_s:
            found = held.find(kid, alg)
            if found is not None:
                if now >= held.expires_at:
                    self.stale_answers += 1
                return found
        assert state.attempted_at is not None
        wait = max(1.0, state.attempted_at + self.refetch_interval_s - now)
        return KeysUnavailable(f"key set at {url} unavailable: {state.failure}", wait)

    def retain(self, urls: Iterable[str]) -> None:
        """Forget the sets of URLs no data source names any more."""
        keep = set(urls)
        for url in [u for u in self._urls if u not in keep]:
            if self._urls[url].pending is None:
                del self._urls[url]

    async def close(self) -> None:
        for state in self._urls.values():
            if state.pending is not None:
                state.pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await state.pending
        await self.fetch.close()

    async def _refresh(self, url: str, state: _Url) -> None:
        """Fetch ``url`` once for every caller that needs it now."""
        if state.pending is None:
            state.attempted_at = self._clock()
            state.pending = asyncio.ensure_future(self._fetch(url, state))
        await asyncio.shield(state.pending)

    async def _fetch(self, url: str, state: _Url) -> None:
        self.fetches += 1
        try:
            document = await self.fetch(url)
            keys = parse_jwks(document.body)
        except JwksRefused as exc:
            self._failed(url, state, str(exc), refused=True)
        except (JwksUnavailable, ValueError) as exc:
            self._failed(url, state, str(exc), refused=False)
        except Exception as exc:  # a driver error the adapter did not translate: still an outage
            _log.exception("JWKS %s: unexpected error while fetching", url)
            self._failed(url, state, f"{type(exc).__name__}: {exc}", refused=False)
        else:
            ttl = ttl_of(
                document.cache_control,
                default_s=self.ttl_s,
                min_s=self.min_ttl_s,
                max_s=self.max_ttl_s,
            )
            state.keys = _KeySet(keys, self._clock() + ttl)
            state.failure, state.refused = None, False
        finally:
            state.pending = None

    def _failed(self, url: str, state: _Url, reason: str, *, refused: bool) -> None:
        self.failures += 1
        state.failure, state.refused = reason, refused
        _log.warning("JWKS %s could not be fetched: %s", url, reason)


def _unknown(url: str, kid: str | None, alg: str) -> str:
    if kid is None:
        return f"JWT has no kid and no key of the set at {url} takes {alg}"
    return f"no key {kid!r} in the key set at {url}"
