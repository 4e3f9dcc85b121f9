"""The request/response kit the three clients share: build names the field, parse reports a malformed
body, an error table maps status and code. Fast: no server."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

import providers
from providers import (
    AuthenticationError,
    ContentRefused,
    ErrorMap,
    ErrorRule,
    InsufficientCredits,
    Kit,
    MalformedResponse,
    NotFound,
    PermanentError,
    QuotaExhausted,
    RateLimited,
    RequestValidationError,
    ServerError,
)
from providers.listingrva.client import KIT as LISTINGRVA
from providers.pixii.client import KIT as PIXII
from providers.prodvisual.client import KIT as PRODVISUAL


class Req(BaseModel):
    title: str = Field(min_length=1)
    size: int = 1000


KIT = Kit(
    "demo",
    ErrorMap.of(
        {"NO_MONEY": InsufficientCredits}, {404: NotFound}, ErrorRule(ContentRefused, pattern="policy")
    ),
)


def test_build_validates_and_names_the_field_under_where() -> None:
    assert KIT.build(Req, {"title": "Mug"}, size=1500) == Req(title="Mug", size=1500)
    with pytest.raises(RequestValidationError) as info:
        KIT.build(Req, {"title": ""}, where="products[US/B0X]")
    assert info.value.field == "products[US/B0X].title" and info.value.provider == "demo"
    assert str(info.value).startswith("[demo] products[US/B0X]: invalid Req request: title")


def test_build_returns_a_built_request_as_is_and_reads_another_model_by_its_fields() -> None:
    req = Req(title="Mug")
    assert KIT.build(Req, req) is req

    class Other(BaseModel):
        title: str

    assert KIT.build(Req, Other(title="Cup")) == Req(title="Cup")


def test_parse_reports_a_malformed_body_naming_the_field() -> None:
    with pytest.raises(MalformedResponse, match=r"GET /x returned an unexpected body \(problem at: title\)"):
        KIT.parse(Req, {"size": 1}, what="GET /x")


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (402, "NO_MONEY", InsufficientCredits),  # code first
        (400, "NO_MONEY", InsufficientCredits),
        (400, "content_policy", ContentRefused),  # then rules
        (404, None, NotFound),  # then statuses
        (429, None, RateLimited),  # then the defaults
        (503, "whatever", ServerError),
        (418, None, PermanentError),
    ],
)
def test_an_error_table_is_read_codes_rules_statuses_then_defaults(
    status: int, code: str | None, error: type
) -> None:
    assert KIT.errors.classify(status, code) is error


def test_error_passes_retry_after_and_field_only_where_they_belong() -> None:
    limited = KIT.error(429, None, "slow down", retry_after=7.0, field="x")
    assert isinstance(limited, RateLimited) and limited.retry_after == 7.0 and limited.status == 429
    invalid = KIT.error(400, None, "bad", retry_after=7.0, field="title", error=RequestValidationError)
    assert invalid.field == "title" and not hasattr(invalid, "retry_after")


@pytest.mark.parametrize(
    ("kit", "status", "code", "error"),
    [
        (
            PIXII,
            400,
            "INSUFFICIENT_CREDITS",
            InsufficientCredits,
        ),  # Pixii maps by code (its statuses disagree)
        (PIXII, 422, "NO_ACTIVE_BRAND", AuthenticationError),
        (PIXII, 400, "UNSAFE_IMAGE", ContentRefused),
        (PIXII, 429, "RATE_LIMIT_DAY_EXCEEDED", QuotaExhausted),
        (LISTINGRVA, 429, "daily_quota_exceeded", QuotaExhausted),  # ListingRVA by status, code informational
        (LISTINGRVA, 400, "unsupported_image", ContentRefused),
        (LISTINGRVA, 400, "bad_request", RequestValidationError),
        (LISTINGRVA, 502, None, ServerError),
        (PRODVISUAL, 400, "invalid_image", ContentRefused),
        (PRODVISUAL, 403, None, AuthenticationError),
    ],
)
def test_each_providers_table(kit: Kit, status: int, code: str, error: type) -> None:
    assert kit.errors.classify(status, code) is error


def test_the_public_face_exports_what_it_lists() -> None:
    assert all(hasattr(providers, name) for name in providers.__all__)
    assert {"Provider", "JobRef", "Kit", "ErrorMap", "ProviderError", "load_providers"} <= set(
        providers.__all__
    )
