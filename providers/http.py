"""The HTTP seam shared by all provider clients.

Each client is built on an injected ``httpx.AsyncClient`` (tests pass one bound to a sandbox or a
``MockTransport``). This module turns transport failures and non-2xx responses into the shared error
taxonomy, applies the throttle before every attempt, retries transient failures with the provider's
``HttpRetry`` policy (``providers.retries``: the only retry of a provider request), and keeps
credentials out of every message.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import random
from collections.abc import Generator
from typing import Any

import httpx
from pydantic import SecretStr

from .contract import Throttle, no_throttle
from .errors import (
    MalformedResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    RetryableError,
    redact,
)
from .retries import NO_RETRY, HttpRetry, in_force, may_resend

logger = logging.getLogger("listingflow.providers.http")


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer`` from a ``SecretStr``; its repr never shows the key."""

    def __init__(self, secret: SecretStr | None) -> None:
        self._secret = secret

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._secret is not None:
            request.headers["Authorization"] = f"Bearer {self._secret.get_secret_value()}"
        yield request

    def __repr__(self) -> str:
        return "BearerAuth(***)"


class ProviderClient(abc.ABC):
    """Base of the three API clients: one request path, one error mapping."""

    provider: str = ""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        auth: httpx.Auth | None = None,
        throttle: Throttle = no_throttle,
        secrets: list[str] | None = None,
        timeout: float = 60.0,
        retry: HttpRetry | None = None,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.throttle = throttle
        self._secrets = secrets or []
        self.timeout = timeout
        self.retry = retry or NO_RETRY
        self.sleep = asyncio.sleep  # the backoff's pause (a seam for tests)
        self._rng = random.Random()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base_url}>"

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    async def request(
        self,
        method: str,
        path: str,
        *,
        groups: list[str],
        json_body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        authenticated: bool = True,
        paid: bool = False,
    ) -> Any:
        """Send one request and return its parsed JSON body, or raise a ``ProviderError``.

        Transient failures are sent again here, as ``self.retry`` allows (``retries.may_resend``);
        a ``paid`` submission never is: whether it may be resent is the host's decision."""
        policy, attempt, waited = in_force(self.retry), 1, 0.0
        while True:
            try:
                return await self._attempt(
                    method,
                    path,
                    groups=groups,
                    json_body=json_body,
                    params=params,
                    authenticated=authenticated,
                )
            except RetryableError as exc:
                delay = policy.next_delay(exc, attempt, waited, self._rng)
                if delay is None or not may_resend(method, exc, paid=paid):
                    raise
                logger.info("%s %s: %s; attempt %d in %.1fs", method, path, exc, attempt + 1, delay)
                await self.sleep(delay)
                waited += delay
                attempt += 1

    async def _attempt(
        self,
        method: str,
        path: str,
        *,
        groups: list[str],
        json_body: dict[str, Any] | None,
        params: dict[str, Any] | None,
        authenticated: bool,
    ) -> Any:
        """One attempt: the throttle's turn, the request, its body or the mapped error."""
        answered = await self.throttle(groups)
        try:
            response = await self._send(
                method, path, json_body=json_body, params=params, authenticated=authenticated
            )
        finally:
            if answered is not None:
                answered()  # the request's rate window counts from its answer
        if not response.is_success:
            raise self.error_from_response(response)
        return self.parse_json(response)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json_body: dict[str, Any] | None,
        params: dict[str, Any] | None,
        authenticated: bool,
    ) -> httpx.Response:
        try:
            return await self.http.request(
                method,
                self.url(path),
                json=json_body,
                params=params,
                auth=self.auth if authenticated else None,
                timeout=self.timeout,
            )
        except httpx.TimeoutException as exc:
            raise ProviderTimeout(
                f"{method} {path} timed out ({type(exc).__name__})",
                provider=self.provider,
                request_sent=not isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout),
            ) from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise ProviderConnectionError(
                f"{method} {path} failed: {type(exc).__name__}: {self._clean(str(exc))}",
                provider=self.provider,
                request_sent=not isinstance(exc, httpx.ConnectError),
            ) from None

    def parse_json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise MalformedResponse(
                f"{response.request.method} {response.request.url.path} returned a body that is "
                f"not JSON ({len(response.content)} bytes)",
                provider=self.provider,
                status=response.status_code,
            ) from None

    def error_body(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    @abc.abstractmethod
    def error_from_response(self, response: httpx.Response) -> ProviderError:
        """Map a non-2xx response to the taxonomy, from the provider's own error body."""

    def _clean(self, text: str | None) -> str | None:
        return None if text is None else redact(text, self._secrets)
