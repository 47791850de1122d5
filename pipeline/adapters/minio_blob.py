"""MinIO/S3 BlobStore: the shared L2 of the compiled-script cache in production.

Why it is shaped this way:

- **Bounded waits.** The minio client's default pool waits up to five minutes per request and
  retries five times; a cache lookup on the hot path must instead fail within seconds and let
  the pipeline decide. The pool here has ``timeout_s`` and two quick retries.
- **A missing key is not an error.** ``get`` answers None on ``NoSuchKey``: a cache miss is the
  normal case, and the caller compiles instead.
- **Errors carry the retry decision.** Connection failures, timeouts and 5xx answers are
  :class:`BlobStoreUnavailableError` (retryable); what S3 refuses (access denied, a bucket
  owned by someone else) is :class:`BlobStoreRefusedError` (permanent).

This is the only module that imports the minio package.
"""

from __future__ import annotations

import io
from typing import Final

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from urllib3.exceptions import HTTPError as Urllib3Error

from eventray.pipeline.errors import PermanentError, RetryableError
from eventray.pipeline.ports import BlobStore

__all__ = ["BlobStoreRefusedError", "BlobStoreUnavailableError", "MinioBlobStore"]

# S3 error codes that describe the server's state, not the request: retrying may succeed.
_RETRYABLE_CODES: Final = frozenset(
    {"InternalError", "RequestTimeout", "ServiceUnavailable", "SlowDown"}
)


class BlobStoreUnavailableError(RetryableError):
    """The blob store could not be reached, timed out or answered 5xx."""


class BlobStoreRefusedError(PermanentError):
    """The blob store refused the request (access denied, bucket owned by someone else)."""


class MinioBlobStore(BlobStore):
    """Blobs as objects ``prefix + key`` in one bucket, created on first use.

    Args:
        endpoint: ``host:port`` of the MinIO (or any S3-compatible) server.
        access_key: the access key id.
        secret_key: the secret key.
        bucket: the bucket; created if it does not exist.
        secure: use HTTPS.
        prefix: prepended to every key, so several deployments can share a bucket.
        timeout_s: connect and read timeout of one request.

    Raises:
        BlobStoreUnavailableError: the server cannot be reached to check the bucket.
        BlobStoreRefusedError: the bucket cannot be created or used with these credentials.
    """

    def __init__(
        self,
        *,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = False,
        prefix: str = "",
        timeout_s: float = 5.0,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._where = f"{'https' if secure else 'http'}://{endpoint}/{bucket}"
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
            retries=urllib3.Retry(
                total=2, backoff_factor=0.1, status_forcelist=(500, 502, 503, 504)
            ),
        )
        self._client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            http_client=self._http,
        )
        try:
            if not self._client.bucket_exists(bucket):
                self._make_bucket()
        except (MinioException, Urllib3Error, OSError) as exc:
            raise self._error("bucket check", bucket, exc) from exc

    def get(self, key: str) -> bytes | None:
        """The bytes under ``key``, or None if there is no such object.

        Raises:
            BlobStoreUnavailableError: the server is unreachable, timed out or answered 5xx.
            BlobStoreRefusedError: the server refused the request.
        """
        name = self._name(key)
        try:
            response = self._client.get_object(self.bucket, name)
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                return None
            raise self._error("get", name, exc) from exc
        except (MinioException, Urllib3Error, OSError) as exc:
            raise self._error("get", name, exc) from exc

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing what was there (one request).

        Raises:
            BlobStoreUnavailableError: the server is unreachable, timed out or answered 5xx.
            BlobStoreRefusedError: the server refused the request.
        """
        name = self._name(key)
        try:
            self._client.put_object(self.bucket, name, io.BytesIO(data), length=len(data))
        except (MinioException, Urllib3Error, OSError) as exc:
            raise self._error("put", name, exc) from exc

    def close(self) -> None:
        """Drop pooled connections (idempotent)."""
        self._http.clear()

    def _make_bucket(self) -> None:
        try:
            self._client.make_bucket(self.bucket)
        except S3Error as exc:
            # Another process created it between our check and our create: that is success.
            if exc.code != "BucketAlreadyOwnedByYou":
                raise

    def _name(self, key: str) -> str:
        if not key:
            raise ValueError("blob key must not be empty")
        return self.prefix + key

    def _error(
        self, operation: str, name: str, exc: Exception
    ) -> BlobStoreUnavailableError | BlobStoreRefusedError:
        if isinstance(exc, S3Error):
            retryable = exc.code in _RETRYABLE_CODES
            detail = f"S3 error {exc.code}: {exc.message}"
        else:
            retryable = isinstance(exc, ServerError | InvalidResponseError | Urllib3Error | OSError)
            detail = f"{type(exc).__name__}: {exc}"
        what = "is unreachable or failed" if retryable else "refused it"
        message = f"blob {operation} of {name!r} failed: {self._where} {what}: {detail}"
        if retryable:
            return BlobStoreUnavailableError(message)
        return BlobStoreRefusedError(message)
