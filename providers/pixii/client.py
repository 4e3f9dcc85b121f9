"""Async client for the Pixii API: one method per endpoint, typed in and out.

Errors are mapped by Pixii's ``code``, never by HTTP status alone, because Pixii's own pages disagree
on the status of NO_ACTIVE_BRAND (400/422) and INSUFFICIENT_CREDITS (402/400) (contract §9).

Contract: docs/providers/pixii.md (cited below as "contract §N").
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx

from providers import (
    SERVER_ERRORS,
    AuthenticationError,
    ContentRefused,
    ErrorMap,
    ErrorRule,
    InsufficientCredits,
    Kit,
    NotFound,
    ProviderClient,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    RequestValidationError,
    ServerError,
    parse_retry_after,
)

from .models import (
    PROVIDER,
    APlusRequest,
    Job,
    JobList,
    JobSummary,
    ListingBuilderRequest,
    ListJobsQuery,
    ScaleRequest,
    SubmitResponse,
    unwrap,
)

SUBMIT_GROUP = "submit"
"""The one rate-limited route group: the three submission POSTs (contract §11)."""

KIT = Kit(
    PROVIDER,
    ErrorMap.of(
        {  # by Pixii's code first (contract §9)
            "VALIDATION_ERROR": RequestValidationError,
            # No brand means every submission fails until the dashboard is fixed: an account-level stop,
            # like a bad key, so it maps to AuthenticationError.
            "NO_ACTIVE_BRAND": AuthenticationError,
            "UNAUTHORIZED": AuthenticationError,
            "INSUFFICIENT_CREDITS": InsufficientCredits,
            "JOB_NOT_FOUND": NotFound,
            "RATE_LIMIT_MINUTE_EXCEEDED": RateLimited,
            "RATE_LIMIT_DAY_EXCEEDED": QuotaExhausted,
            "INTERNAL_ERROR": ServerError,
            "SERVICE_UNAVAILABLE": ServerError,
        },
        {
            400: RequestValidationError,
            401: AuthenticationError,
            403: AuthenticationError,
            402: InsufficientCredits,
            404: NotFound,
            422: RequestValidationError,
        },
        # unknown codes: 429 limited, 5xx retryable, content problems refused, then the status
        ErrorRule(RateLimited, statuses=frozenset({429})),
        ErrorRule(ServerError, statuses=SERVER_ERRORS),
        ErrorRule(ContentRefused, pattern=r"IMAGE|CONTENT|POLICY|NSFW|MEDIA|UNSAFE"),
        ErrorRule(ContentRefused, statuses=frozenset({413, 415})),
    ),
)
"""Pixii's request/response kit (``providers.kit``): validation, parsing and its error table."""


class PixiiClient(ProviderClient):
    provider = PROVIDER

    # ---- submissions (rate-limited, spend credits) ----

    async def listing_builder(self, request: ListingBuilderRequest | dict[str, Any]) -> SubmitResponse:
        req = KIT.build(ListingBuilderRequest, request)
        return await self._submit("/v1/api/listing_builder", req.body())

    async def a_plus(self, request: APlusRequest | dict[str, Any]) -> SubmitResponse:
        req = KIT.build(APlusRequest, request)
        return await self._submit("/v1/api/a_plus", req.body())

    async def scale(self, request: ScaleRequest | dict[str, Any]) -> SubmitResponse:
        req = KIT.build(ScaleRequest, request)
        return await self._submit("/v1/api/scale", req.body())

    async def _submit(self, path: str, body: dict[str, Any]) -> SubmitResponse:
        raw = await self.request("POST", path, groups=[SUBMIT_GROUP], json_body=body, paid=True)
        return KIT.parse(SubmitResponse, unwrap(raw), what=f"POST {path}")

    # ---- jobs (not rate-limited) ----

    async def get_job(self, job_id: str) -> Job:
        if not job_id:
            raise RequestValidationError("job_id is required", provider=PROVIDER, field="job_id")
        path = f"/v1/api/jobs/{quote(job_id, safe='')}"
        raw = await self.request("GET", path, groups=[])
        return KIT.parse(Job, unwrap(raw), what="GET /v1/api/jobs/{id}")

    async def list_jobs(self, asin: str, *, page: int = 1, limit: int = 20) -> JobList:
        """One page of the ASIN's jobs, most recent first."""
        query = KIT.build(ListJobsQuery, asin=asin, page=page, limit=limit)
        # ASSUMPTION (contract §2): the list endpoint is not rate-limited; a 429 still maps normally.
        raw = await self.request("GET", "/v1/api/jobs", groups=[], params=query.body())
        return KIT.parse(JobList, raw, what="GET /v1/api/jobs")

    async def iter_jobs(self, asin: str, *, limit: int = 20) -> AsyncIterator[JobSummary]:
        """Every job of the ASIN, paging until ``page * limit >= total`` (contract §8)."""
        page = 1
        while True:
            listing = await self.list_jobs(asin, page=page, limit=limit)
            for job in listing.data:
                yield job
            if not listing.has_more:
                return
            page += 1

    # ---- errors ----

    def error_from_response(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        body = self.error_body(response)
        err = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), dict) else body
        err = err if isinstance(err, dict) else {}
        code = err.get("code") if isinstance(err.get("code"), str) else None
        message = self._clean(str(err.get("message") or "")) or self._fallback_message(response, body)
        detail = self._clean(str(err["detail"])) if err.get("detail") not in (None, "") else None
        retry_after = parse_retry_after(response.headers)
        if retry_after is None and isinstance(err.get("retry_after"), int | float):
            retry_after = max(0.0, float(err["retry_after"]))
        return KIT.error(
            status, code, message, retry_after=retry_after, field=_field_from(detail), detail=detail
        )

    def _fallback_message(self, response: httpx.Response, body: Any) -> str:
        if body is None:
            snippet = response.text[:200].strip() if response.content else ""
            return self._clean(f"HTTP {response.status_code}" + (f": {snippet}" if snippet else "")) or ""
        return f"HTTP {response.status_code}"


def _field_from(detail: str | None) -> str | None:
    """Pixii's ``detail`` usually starts with the field name (``types: ...``); best effort."""
    if not detail:
        return None
    match = re.match(r"\s*([A-Za-z_][\w.\[\]]*)\s*[:\-]", detail)
    return match.group(1) if match else None
