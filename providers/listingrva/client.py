"""Async client for the ListingRVA AI REST API v1: one method per documented endpoint.

Why a token provider instead of a key: the credential is a dashboard-session JWT that expires and has
no refresh endpoint (contract §1), so ``TokenAuth`` asks a callable for a token, and on a 401 asks it
once more and retries once. Every request passes the route groups it counts against (``ai`` /
``products`` plus ``global``) to the throttle, because the workspace budget is shared (contract §4).

Contract: docs/providers/listingrva.md (cited below as "contract §N").
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from providers import (
    SERVER_ERRORS,
    AuthenticationError,
    ContentRefused,
    ErrorMap,
    ErrorRule,
    HttpRetry,
    InsufficientCredits,
    Kit,
    NotFound,
    ProviderClient,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    RequestValidationError,
    ServerError,
    Throttle,
    no_throttle,
    parse_retry_after,
    redact,
)

from .models import (
    PROVIDER,
    Credits,
    ImageRequest,
    JobStatus,
    JobSubmitted,
    ListingRequest,
    Product,
    ProductCreate,
    ProductPage,
    ProductQuery,
    Webhook,
    WebhookCreate,
    unwrap,
)

KIT = Kit(
    PROVIDER,
    ErrorMap(
        (
            # Branch on HTTP status (contract §3); the ``error`` string code is informational.
            ErrorRule(
                QuotaExhausted, statuses=frozenset({429}), pattern="daily|quota"
            ),  # no daily cap is documented; be safe
            ErrorRule(RateLimited, statuses=frozenset({429})),
            ErrorRule(InsufficientCredits, statuses=frozenset({402})),
            ErrorRule(InsufficientCredits, pattern="^insufficient_credits$"),
            ErrorRule(AuthenticationError, statuses=frozenset({401, 403})),
            ErrorRule(NotFound, statuses=frozenset({404})),
            ErrorRule(ContentRefused, statuses=frozenset({422})),
            ErrorRule(ContentRefused, pattern="content|policy|unsupported_image"),
            ErrorRule(RequestValidationError, statuses=frozenset({400})),
            ErrorRule(
                ServerError, statuses=SERVER_ERRORS
            ),  # ASSUMPTION (contract §3): 502/503/504 retryable like 500
        )
    ),
)
"""ListingRVA's request/response kit (``providers.kit``): validation, parsing and its error table."""

AI = ["ai", "global"]
PRODUCTS = ["products", "global"]
GLOBAL = ["global"]

Token = str | SecretStr | None
TokenProvider = Callable[[], Token | Awaitable[Token]]


def verify_webhook_signature(raw_body: bytes, signature: str, secret: str) -> bool:
    """``X-Webhook-Signature`` is the hex HMAC-SHA256 of the exact raw body (contract §9)."""
    if not signature or not secret:
        return False
    expected = hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()
    # as bytes: compare_digest refuses non-ASCII str (a garbled header must be a 401, not a 500)
    return hmac.compare_digest(expected.encode(), signature.strip().lower().encode("utf-8", "replace"))


class TokenAuth(httpx.Auth):
    """``Authorization: Bearer <JWT>`` from a token provider; one refresh-and-retry on 401.

    ASSUMPTION (contract §1): JWTs expire and no refresh endpoint exists, so "refresh" means asking
    the provider callable again. A second 401 is returned to the caller (-> AuthenticationError).
    """

    def __init__(self, token_provider: TokenProvider) -> None:
        self._provider = token_provider
        self._token: str | None = None
        self.seen: list[str] = []  # every token handed out, so messages can be redacted

    def __repr__(self) -> str:
        return "TokenAuth(***)"

    def _remember(self, token: Token) -> str | None:
        value = token.get_secret_value() if isinstance(token, SecretStr) else token
        if value and value not in self.seen:
            self.seen.append(value)
        return value or None

    async def _fetch(self) -> str | None:
        token = self._provider()
        if inspect.isawaitable(token):
            token = await token
        return self._remember(token)

    def _apply(self, request: httpx.Request) -> None:
        request.headers.pop("Authorization", None)
        if self._token:
            request.headers["Authorization"] = f"Bearer {self._token}"

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self._token is None:
            self._token = await self._fetch()
        used = self._token
        self._apply(request)
        response = yield request
        if response.status_code == 401:
            if self._token == used:  # another request may already have refreshed it
                self._token = await self._fetch()
            self._apply(request)
            yield request


class ListingRVAClient(ProviderClient):
    """Typed methods for every endpoint of contract §2."""

    provider = PROVIDER

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        token_provider: TokenProvider,
        throttle: Throttle = no_throttle,
        secrets: list[str] | None = None,
        timeout: float = 60.0,
        retry: HttpRetry | None = None,
    ) -> None:
        self.token_auth = TokenAuth(token_provider)
        super().__init__(
            http,
            base_url=base_url,
            auth=self.token_auth,
            throttle=throttle,
            secrets=secrets,
            timeout=timeout,
            retry=retry,
        )

    def _clean(self, text: str | None) -> str | None:
        return None if text is None else redact(text, [*self._secrets, *self.token_auth.seen])

    def parse_json(self, response: httpx.Response) -> Any:
        if not response.content.strip():  # e.g. 204 on DELETE
            return None
        return super().parse_json(response)

    # ---- errors ----

    def error_from_response(self, response: httpx.Response) -> ProviderError:
        """The code and message read from ListingRVA's body; the class from its table (``KIT``)."""
        status = response.status_code
        body = self.error_body(response)
        code: str | None = None
        message = ""
        if isinstance(body, dict):
            raw_code = body.get("error")
            code = raw_code if isinstance(raw_code, str) else None
            if isinstance(raw_code, dict):  # not documented, but tolerate {"error": {"code", "message"}}
                code = raw_code.get("code") if isinstance(raw_code.get("code"), str) else None
                message = str(raw_code.get("message") or "")
            message = str(body.get("message") or message)
        elif response.content:
            message = response.text[:200]
        where = f"{response.request.method} {response.request.url.path}"
        text = self._clean(f"{where}: {message or response.reason_phrase or 'error'}") or where
        retry_after = parse_retry_after(response.headers)
        if status == 429 and retry_after is None:
            retry_after = _body_retry_after(body)
        return KIT.error(status, self._clean(code), text, retry_after=retry_after)

    # ---- AI jobs (route group ai + global) ----

    async def generate_image(self, request: ImageRequest | Mapping[str, Any]) -> JobSubmitted:
        """``POST /ai/image``; debits credits at enqueue. Do not blindly retry (contract §3)."""
        req = KIT.build(ImageRequest, request)
        data = await self.request("POST", "/ai/image", groups=AI, json_body=req.body(), paid=True)
        return KIT.parse(JobSubmitted, data, what="POST /ai/image")

    async def generate_listing(self, request: ListingRequest | Mapping[str, Any]) -> JobSubmitted:
        """``POST /ai/listing``; debits credits at enqueue. Do not blindly retry (contract §3)."""
        req = KIT.build(ListingRequest, request)
        data = await self.request("POST", "/ai/listing", groups=AI, json_body=req.body(), paid=True)
        return KIT.parse(JobSubmitted, data, what="POST /ai/listing")

    async def get_job(self, job_id: str) -> JobStatus:
        """``GET /ai/jobs/:jobId``. ASSUMPTION (contract §4): counts against the ai bucket."""
        data = await self.request("GET", f"/ai/jobs/{_seg(job_id, 'jobId')}", groups=AI)
        return KIT.parse(JobStatus, unwrap(data, "job"), what="GET /ai/jobs")

    # ---- products (route group products + global) ----

    async def list_products(self, page: int = 1, limit: int = 20) -> ProductPage:
        query = KIT.build(ProductQuery, {"page": page, "limit": limit})
        data = await self.request("GET", "/products", groups=PRODUCTS, params=query.body())
        return KIT.parse(ProductPage, data, what="GET /products")

    async def create_product(self, request: ProductCreate | Mapping[str, Any]) -> Product:
        req = KIT.build(ProductCreate, request)
        data = await self.request("POST", "/products", groups=PRODUCTS, json_body=req.body())
        return KIT.parse(Product, unwrap(data, "product"), what="POST /products")

    # ---- billing (global only) ----

    async def credits(self) -> Credits:
        data = await self.request("GET", "/billing/credits", groups=GLOBAL)
        return KIT.parse(Credits, data, what="GET /billing/credits")

    # ---- webhooks (global only; ASSUMPTION contract §9 on every path but POST /webhooks) ----

    async def create_webhook(self, request: WebhookCreate | Mapping[str, Any]) -> Webhook:
        """The returned ``secret`` is shown only once: store it."""
        req = KIT.build(WebhookCreate, request)
        data = await self.request("POST", "/webhooks", groups=GLOBAL, json_body=req.body())
        return KIT.parse(Webhook, unwrap(data, "webhook"), what="POST /webhooks")

    async def delete_webhook(self, webhook_id: str) -> None:
        await self.request("DELETE", f"/webhooks/{_seg(webhook_id, 'webhookId')}", groups=GLOBAL)

    verify_webhook_signature = staticmethod(verify_webhook_signature)


def _seg(value: object, field: str) -> str:
    """An id as one path segment; empty ids (or not a string, from an untyped caller) are a local
    validation error."""
    if not isinstance(value, str) or not value.strip():
        raise RequestValidationError(
            f"{field} is required", provider=PROVIDER, code="LOCAL_VALIDATION", field=field
        )
    return quote(value.strip(), safe="")


def _body_retry_after(body: Any) -> float | None:
    """Not documented (contract §4), but honour a retry hint in the body if one appears."""
    if isinstance(body, dict):
        for key in ("retryAfter", "retry_after"):
            try:
                return max(0.0, float(body[key]))
            except (KeyError, TypeError, ValueError):
                continue
    return None
