"""Async client for the ProdVisual API v1: one method per endpoint, typed in and out.

Every request counts against the single documented limit (60 requests/minute, 10,000/day, contract
§4), status polls and the unauthenticated GET /v1/styles included, so all of them pass the one route
group ``api`` to the throttle. Style ids other than the documented ones are validated against a 24 h
cache of GET /v1/styles; when that list cannot be fetched the server's own validation is the fallback
(contract §7).

No idempotency key exists (contract §3): a POST that failed after reaching the server may still have
been billed. This client only raises the right error types; deciding to retry a POST is the caller's
job (only on connection errors that happened before the request was sent).

Contract: docs/providers/prodvisual.md (cited below as "contract §N").
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, SecretStr

from providers import (
    AuthenticationError,
    BearerAuth,
    ContentRefused,
    ErrorMap,
    HttpRetry,
    InsufficientCredits,
    Kit,
    MalformedResponse,
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
)

from .models import (
    DOCUMENTED_STYLES,
    PROVIDER,
    BatchRequest,
    BatchStatus,
    BatchSubmission,
    Credits,
    GenerateRequest,
    Generation,
    StyleList,
    is_batch_body,
    unwrap,
)

M = TypeVar("M", bound=BaseModel)
logger = logging.getLogger("listingflow.providers.prodvisual")

API_GROUP = "api"
"""The one route group: every request counts against 60/min and 10,000/day (contract §4)."""
STYLES_TTL_SECONDS = 24 * 3600  # contract §7: "cache it (e.g. 24 h)"
STYLES_RETRY_SECONDS = 300.0  # after a failed styles fetch, rely on the server for this long
DAILY_RESET_THRESHOLD_SECONDS = 3600.0

KIT = Kit(
    PROVIDER,
    ErrorMap.of(
        {
            "invalid_request": RequestValidationError,
            "unauthorized": AuthenticationError,
            "forbidden": AuthenticationError,
            "insufficient_credits": InsufficientCredits,
            "not_found": NotFound,
            "file_too_large": ContentRefused,
            "invalid_image": ContentRefused,
            "server_error": ServerError,
        },
        {
            400: RequestValidationError,
            401: AuthenticationError,
            # ASSUMPTION (contract §3): 403 is undocumented; treated as a non-retryable auth problem.
            403: AuthenticationError,
            402: InsufficientCredits,
            404: NotFound,
            413: ContentRefused,
            422: ContentRefused,
        },
    ),
)
"""ProdVisual's request/response kit (``providers.kit``): validation, parsing and its error table; 429
and 5xx are decided before it (``error_from_response``)."""


def verify_webhook_signature(raw_body: bytes, header: str | None, api_key: str | SecretStr) -> bool:
    """Check ``X-ProdVisual-Signature``: lower-case hex HMAC-SHA256 of the raw body keyed with the API
    key that created the job (contract §11); an optional ``sha256=`` prefix is tolerated."""
    if not header:
        return False
    key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
    expected = hmac.new(key.encode(), raw_body, hashlib.sha256).hexdigest()
    received = header.strip()
    if received.lower().startswith("sha256="):
        received = received[len("sha256=") :]
    return hmac.compare_digest(expected.encode(), received.lower().encode("utf-8", "replace"))


class ProdVisualClient(ProviderClient):
    provider = PROVIDER

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        api_key: SecretStr | None,
        throttle: Throttle = no_throttle,
        timeout: float = 60.0,
        retry: HttpRetry | None = None,
    ) -> None:
        # ASSUMPTION (contract §5): /v1/generate blocks until done; callers should allow >= 60 s
        # (the settings default).
        super().__init__(
            http,
            base_url=base_url,
            auth=BearerAuth(api_key),
            throttle=throttle,
            secrets=[api_key.get_secret_value()] if api_key else [],
            timeout=timeout,
            retry=retry,
        )
        self._styles: StyleList | None = None
        self._styles_at = 0.0
        self._styles_failed_at: float | None = None

    # ---- endpoints ----

    async def generate(self, request: GenerateRequest | dict[str, Any]) -> Generation:
        """POST /v1/generate (1 credit on success). Usually ``completed`` in the response; with a
        ``webhook_url`` (or under load) ``pending``/``processing`` and must be polled."""
        req = KIT.build(GenerateRequest, request)
        await self.check_styles([req.style], ["style"])
        body = await self.request("POST", "/v1/generate", groups=[API_GROUP], json_body=req.body(), paid=True)
        gen = KIT.parse(Generation, unwrap(body), what="POST /v1/generate")
        if not gen.id:
            raise MalformedResponse("POST /v1/generate returned no generation id", provider=PROVIDER)
        return gen

    async def generate_batch(self, request: BatchRequest | dict[str, Any]) -> BatchSubmission:
        """POST /v1/generate/batch: 1-50 items, all charged at submission (contract §6)."""
        req = KIT.build(BatchRequest, request)
        await self.check_styles(
            [i.style for i in req.items], [f"items.{n}.style" for n in range(len(req.items))]
        )
        body = await self.request(
            "POST", "/v1/generate/batch", groups=[API_GROUP], json_body=req.body(), paid=True
        )
        return KIT.parse(BatchSubmission, unwrap(body), what="POST /v1/generate/batch")

    async def styles(self, *, refresh: bool = False) -> StyleList:
        """GET /v1/styles (no auth), cached on this client for 24 h."""
        if (
            not refresh
            and self._styles is not None
            and time.monotonic() - self._styles_at < STYLES_TTL_SECONDS
        ):
            return self._styles
        body = await self.request("GET", "/v1/styles", groups=[API_GROUP], authenticated=False)
        styles = KIT.parse(StyleList, unwrap(body), what="GET /v1/styles")
        self._styles, self._styles_at, self._styles_failed_at = styles, time.monotonic(), None
        return styles

    async def credits(self) -> Credits:
        """GET /v1/account/credits."""
        body = await self.request("GET", "/v1/account/credits", groups=[API_GROUP])
        return KIT.parse(Credits, unwrap(body), what="GET /v1/account/credits")

    async def generation(self, generation_id: str) -> Generation | BatchStatus:
        """GET /v1/generations/{id}: a single generation (``gen_…``) or a batch (``batch_…``)."""
        if not generation_id or "/" in generation_id or any(c.isspace() for c in generation_id):
            raise RequestValidationError(
                f"invalid generation id {generation_id!r}",
                provider=PROVIDER,
                code="LOCAL_VALIDATION",
                field="id",
            )
        path = f"/v1/generations/{quote(generation_id, safe='')}"
        body = unwrap(await self.request("GET", path, groups=[API_GROUP]))
        if isinstance(body, dict) and (generation_id.startswith("batch_") or is_batch_body(body)):
            return KIT.parse(BatchStatus, body, what=f"GET {path}")
        return KIT.parse(Generation, body, what=f"GET {path}")

    verify_webhook_signature = staticmethod(verify_webhook_signature)

    # ---- style cache ----

    @property
    def cached_style_ids(self) -> frozenset[str] | None:
        """Known style ids if a fresh list is cached (no I/O), else None."""
        if self._styles is None or time.monotonic() - self._styles_at >= STYLES_TTL_SECONDS:
            return None
        return self._styles.ids() or None  # an empty list validates nothing

    async def check_styles(self, styles: list[str], fields: list[str]) -> None:
        """Reject unknown style ids locally when the style list is available; when it cannot be
        fetched, leave validation to the server (contract §7). Publicly documented ids are known
        without the list: the request that fetches it counts against the 60 a minute like any other."""
        if set(styles) <= set(DOCUMENTED_STYLES):
            return
        failed = self._styles_failed_at
        if (
            self.cached_style_ids is None
            and failed is not None
            and time.monotonic() - failed < STYLES_RETRY_SECONDS
        ):
            return
        try:
            known = (await self.styles()).ids()
        except ProviderError as exc:
            self._styles_failed_at = time.monotonic()
            logger.warning("prodvisual: style list unavailable, relying on server validation: %s", exc)
            return
        if known:  # an empty list is no evidence: let the server decide
            check_style_ids(styles, fields, known)

    # ---- errors ----

    def error_from_response(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        body = self.error_body(response)
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, str):
            err = {"code": err, "message": body.get("message")}
        if not isinstance(err, dict):
            err = body if isinstance(body, dict) else {}
        code = str(err.get("code")) if err.get("code") is not None else None
        message = self._clean(str(err.get("message") or response.reason_phrase or "request failed"))
        where = f"{response.request.method} {response.request.url.path}"
        if status == 429 or code == "rate_limited":
            return self._rate_limited(response, body, f"{where}: {message}", code)
        if status >= 500:
            # X-RateLimit-Reset (sent on every response) says nothing about a 5xx: only Retry-After does.
            hint = response.headers.get("retry-after")
            retry_after = parse_retry_after({"retry-after": hint}) if hint else None
            return KIT.error(status, code, f"{where}: {message}", retry_after=retry_after, error=ServerError)
        field = err.get("param") or err.get("field")
        return KIT.error(status, code, f"{where}: {message}", field=str(field) if field else None)

    def _rate_limited(
        self, response: httpx.Response, body: Any, message: str, code: str | None
    ) -> ProviderError:
        retry_after = parse_retry_after(response.headers)
        if retry_after is None and isinstance(body, dict):
            error = body.get("error")
            err: dict[str, Any] = error if isinstance(error, dict) else {}
            raw = body.get("retry_after", err.get("retry_after"))
            retry_after = max(0.0, float(raw)) if isinstance(raw, int | float) else None
        # ASSUMPTION (contract §4): the daily cap also answers 429 with X-RateLimit-Reset pointing at
        # the daily reset; a reset more than an hour away can only be the daily cap -> QuotaExhausted.
        daily = retry_after is not None and retry_after > DAILY_RESET_THRESHOLD_SECONDS
        return KIT.error(
            response.status_code,
            code,
            message,
            retry_after=retry_after,
            error=QuotaExhausted if daily else RateLimited,
        )


def check_style_ids(styles: list[str], fields: list[str], known: frozenset[str]) -> None:
    """Raise ``RequestValidationError`` naming the first unknown style."""
    for style, field in zip(styles, fields, strict=True):
        if style not in known:
            sample = ", ".join(sorted(known)[:8])
            raise RequestValidationError(
                f"unknown ProdVisual style {style!r} (known: {sample}, ...)",
                provider=PROVIDER,
                code="LOCAL_VALIDATION",
                field=field,
            )
