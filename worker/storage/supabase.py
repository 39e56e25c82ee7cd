"""Supabase Storage through the official client (storage3): upserted uploads, public or signed URLs."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import httpx
from storage3 import AsyncStorageClient
from storage3.exceptions import StorageApiError
from storage3.types import CreateOrUpdateBucketOptions, FileOptions
from storage3.utils import StorageException
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from worker.core.errors import ErrorCode, GenerationError
from worker.storage.base import check_key

log = logging.getLogger(__name__)

T = TypeVar("T")

# Signed URLs are reused for at most this long (or a tenth of their lifetime, if shorter), so a
# page of reads signs each file once, and every URL handed out lives nearly its full TTL.
SIGNED_URL_CACHE_S = 300.0
SIGNED_URL_CACHE_MAX = 10_000

# What a failed call to Storage can raise: API errors, transport errors, unparsable answers.
_FAILURES = (StorageException, httpx.HTTPError, ValueError, KeyError)


def _status(exc: BaseException) -> int | None:
    """The HTTP status an API error reports (Storage puts the real one in the body's statusCode)."""
    if not isinstance(exc, StorageApiError):
        return None
    try:
        return int(str(exc.status))
    except ValueError:
        return None


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    status = _status(exc)
    return status is not None and (status >= 500 or status in (408, 429))


class SupabaseStorage:
    def __init__(
        self,
        url: str,
        service_role_key: str,
        bucket: str = "images",
        *,
        signed_urls: bool = False,
        signed_url_ttl_s: int = 604800,
        cache_control: str = "31536000",
        attempts: int = 3,
        backoff_s: float = 0.5,
        timeout_s: float = 30.0,
    ) -> None:
        self.bucket = bucket
        self.signed_urls = signed_urls
        self.signed_url_ttl_s = signed_url_ttl_s
        self.cache_control = cache_control
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self._key = service_role_key
        self._signed: dict[str, tuple[float, str]] = {}  # key → (reuse until, monotonic; URL)
        headers = {"apikey": service_role_key, "Authorization": f"Bearer {service_role_key}"}
        self._endpoint = f"{url.rstrip('/')}/storage/v1"
        self._http = httpx.AsyncClient(timeout=timeout_s, follow_redirects=True)
        self._client = AsyncStorageClient(
            f"{self._endpoint}/", headers=headers, http_client=self._http
        )

    def __repr__(self) -> str:
        return f"SupabaseStorage(bucket={self.bucket!r}, signed_urls={self.signed_urls})"

    async def aclose(self) -> None:
        await self._http.aclose()

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, StorageApiError):
            text = f"HTTP {exc.status} {exc.code}: {exc.message}"
        else:
            text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self._key:
            text = text.replace(self._key, "***")
        return text if len(text) <= 200 else text[:199] + "…"

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        reason = self._reason(exc) if exc else "?"
        log.warning(
            "supabase storage attempt %d failed (%s); retrying", state.attempt_number, reason
        )

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.backoff_s, max=30),
            retry=retry_if_exception(_transient),
            before_sleep=self._log_retry,
            reraise=True,
        ):
            with attempt:
                return await call()
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def prepare(self) -> None:
        await self.ensure_bucket()

    async def ensure_bucket(self) -> None:
        """Creates the bucket when it is missing (public unless URLs are signed); run at start-up."""
        try:
            try:
                bucket = await self._retrying(lambda: self._client.get_bucket(self.bucket))
            except StorageApiError as exc:
                if _status(exc) != 404:
                    raise
            else:
                if not bucket.public and not self.signed_urls:
                    log.warning("bucket %r is private: its public URLs will not serve", self.bucket)
                return
            options: CreateOrUpdateBucketOptions = {"public": not self.signed_urls}
            try:
                await self._retrying(
                    lambda: self._client.create_bucket(self.bucket, options=options)
                )
                log.info("created Supabase Storage bucket %r", self.bucket)
            except StorageApiError as exc:
                if _status(exc) != 409:  # 409: another worker created it first
                    raise
        except _FAILURES as exc:
            reason = self._reason(exc)
            raise RuntimeError(f"Supabase Storage bucket {self.bucket!r}: {reason}") from exc

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        check_key(key)
        bucket = self._client.from_(self.bucket)
        options: FileOptions = {
            "content-type": content_type,
            "cache-control": self.cache_control,
            "upsert": "true",  # a retried job overwrites the same key
        }
        try:
            await self._retrying(lambda: bucket.upload(path=key, file=data, file_options=options))
            if not self.signed_urls:
                return await bucket.get_public_url(key)
            signed = await self._retrying(
                lambda: bucket.create_signed_url(key, self.signed_url_ttl_s)
            )
        except _FAILURES as exc:
            raise GenerationError(ErrorCode.STORAGE_ERROR, self._reason(exc)) from exc
        url = self._absolute(signed.get("signedURL") or signed.get("signedUrl"))
        if not url:
            raise GenerationError(ErrorCode.STORAGE_ERROR, "no signed URL in Storage's answer")
        self._remember(key, url)
        return url

    @property
    def signs_urls(self) -> bool:
        return self.signed_urls

    def _absolute(self, url: str | None) -> str | None:
        if url and url.startswith("/"):
            return f"{self._endpoint}{url}"
        return url or None

    def _remember(self, key: str, url: str) -> None:
        if len(self._signed) >= SIGNED_URL_CACHE_MAX:
            self._signed.clear()
        reuse_s = min(SIGNED_URL_CACHE_S, self.signed_url_ttl_s / 10)
        self._signed[key] = (time.monotonic() + reuse_s, url)

    async def urls(self, keys: Sequence[str]) -> dict[str, str]:
        bucket = self._client.from_(self.bucket)
        wanted = [check_key(key) for key in dict.fromkeys(keys)]
        if not self.signed_urls:
            return {key: await bucket.get_public_url(key) for key in wanted}
        now = time.monotonic()
        found: dict[str, str] = {}
        missing: list[str] = []
        for key in wanted:
            hit = self._signed.get(key)
            if hit and hit[0] > now:
                found[key] = hit[1]
            else:
                missing.append(key)
        if not missing:
            return found
        try:
            answers = await self._retrying(
                lambda: bucket.create_signed_urls(missing, self.signed_url_ttl_s)
            )
        except _FAILURES as exc:
            # A read still answers: without a fresh URL the file's stored one is the best left.
            log.warning("could not sign %d storage URLs: %s", len(missing), self._reason(exc))
            return found
        for answer in answers:
            url = self._absolute(answer.get("signedURL") or answer.get("signedUrl"))
            path = answer.get("path")
            if url and path in missing and not answer.get("error"):
                self._remember(path, url)
                found[path] = url
        return found

    async def delete(self, keys: Sequence[str]) -> None:
        wanted = [check_key(key) for key in dict.fromkeys(keys)]
        if not wanted:
            return
        bucket = self._client.from_(self.bucket)
        try:
            # Storage answers 200 with the objects it removed; keys already gone are no error.
            await self._retrying(lambda: bucket.remove(wanted))
        except _FAILURES as exc:
            raise OSError(f"Supabase Storage delete: {self._reason(exc)}") from exc
        for key in wanted:
            self._signed.pop(key, None)
