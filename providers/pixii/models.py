"""Pixii request and response models (contract: docs/providers/pixii.md).

Request models enforce every documented rule locally so a bad request never leaves the process (and
never counts against the 10/min submission limit). Response models are tolerant: Pixii's docs leave
the envelope nesting open (bare or ``data``-wrapped bodies, ``preview`` vs ``preview_url``), so the
parsers accept every documented alternative and ignore unknown fields.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from providers.contract import (
    SCALE_ALLOWED,
    APlusType,
    Marketplace,
    ScaleAssetType,
    ScaleMode,
    ScalePlatform,
)

PROVIDER = "pixii"

ListingType = Literal[
    "amazon_listing", "amazon_main_images", "amazon_mobile_listing", "shopify_listing", "tiktok_listing"
]
LISTING_TYPES: tuple[str, ...] = get_args(ListingType)

APLUS_CREDITS: dict[str, int] = {"A+ Basic": 20, "A+ Premium": 20, "A+ Premium Mobile": 30}
"""Documented A+ prices (contract §5); Listing Builder and Scale prices are unpublished (§12)."""

JOB_TYPE_LISTING_BUILDER = "Listing Builder"
JOB_TYPE_SCALE = "Scale"
TERMINAL_STATUSES = frozenset({"completed", "failed"})


def _public_url(value: str) -> str:
    """Pixii fetches image inputs itself, so only absolute http(s) URLs can work."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http(s) URL of a publicly reachable image")
    return value


def _non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must be non-empty if provided (omit the field instead)")
    return value


# ASSUMPTION (contract §3): the 5-15 character rule documented for List jobs applies everywhere;
# the 10-character Amazon format is not enforced.
Asin = Annotated[str, Field(min_length=5, max_length=15)]
ImageUrl = Annotated[str, AfterValidator(_public_url)]
Prompt = Annotated[str, Field(min_length=1), AfterValidator(_non_blank)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def body(self) -> dict[str, Any]:
        """JSON body: omitted optional fields are not sent (Pixii rejects ``[]`` and ``""``)."""
        return self.model_dump(mode="json", exclude_none=True)


class ListingBuilderRequest(_Request):
    """POST /v1/api/listing_builder (contract §4)."""

    asin: Asin
    country_code: Marketplace
    listing_type: ListingType
    main_image_url: ImageUrl | None = None
    other_image_urls: list[ImageUrl] | None = Field(None, min_length=1)


class APlusRequest(_Request):
    """POST /v1/api/a_plus (contract §5)."""

    asin: Asin
    country_code: Marketplace
    types: list[APlusType] = Field(min_length=1, max_length=3)
    main_image_url: ImageUrl | None = None
    other_image_urls: list[ImageUrl] | None = Field(None, min_length=1)
    user_prompt: Prompt | None = None

    @field_validator("types")
    @classmethod
    def _unique_types(cls, types: list[str]) -> list[str]:
        if len(set(types)) != len(types):
            raise ValueError("values must be unique")
        return types


class ScaleItem(_Request):
    """One reference asset; asset_type is restricted by platform (contract §6 table)."""

    preview_url: ImageUrl
    platform: ScalePlatform
    asset_type: ScaleAssetType

    @model_validator(mode="after")
    def _allowed_combination(self) -> ScaleItem:
        if self.asset_type not in SCALE_ALLOWED[self.platform]:
            allowed = ", ".join(sorted(SCALE_ALLOWED[self.platform]))
            raise ValueError(
                f"asset_type {self.asset_type!r} is not allowed for platform "
                f"{self.platform!r} (allowed: {allowed})"
            )
        return self


class ScaleRequest(_Request):
    """POST /v1/api/scale (contract §6). Note ``main_image_input`` / ``other_images_input``."""

    asin: Asin
    country_code: Marketplace
    scale_mode: ScaleMode
    main_image_input: ImageUrl | None = None
    other_images_input: list[ImageUrl] | None = Field(None, min_length=1)
    user_prompt: Prompt | None = Field(None, validate_default=True)
    # ASSUMPTION (contract §6): no documented maximum number of items; none imposed.
    items: list[ScaleItem] = Field(min_length=1)

    @field_validator("user_prompt")
    @classmethod
    def _language_needs_prompt(cls, prompt: str | None, info: ValidationInfo) -> str | None:
        # ASSUMPTION (contract §6): language mode without user_prompt is a VALIDATION_ERROR.
        if prompt is None and info.data.get("scale_mode") == "language":
            raise ValueError("required for scale_mode 'language' (state the target language)")
        return prompt


class ListJobsQuery(_Request):
    """GET /v1/api/jobs query (contract §8)."""

    asin: Asin
    # ASSUMPTION (contract §8): page/limit are accepted as query parameters; keep limit 20.
    page: int = Field(1, ge=1)
    limit: int = Field(20, ge=1, le=100)


SubmitRequest = ListingBuilderRequest | APlusRequest | ScaleRequest
# --- responses ---------------------------------------------------------------------------------


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class SubmitResponse(_Response):
    """Submission answer; A+ is ASSUMED to share the Listing Builder shape (contract §5)."""

    job_id: str = Field(min_length=1)
    job_type: str | None = None
    status: str = "pending"
    created_at: str | None = None
    remaining_credits: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _id_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "job_id" not in data and "id" in data:
            return {**data, "job_id": data["id"]}
        return data


class AdError(_Response):
    code: str | None = None
    message: str = ""


class Ad(_Response):
    """One entry of ``output.ads``: an image (``preview_url``) or an A+ variant (``preview`` + modules)."""

    type: str | None = None
    preview_url: str | None = None
    preview: str | None = None
    modules: list[str] | None = None
    error: AdError | None = None

    @property
    def url(self) -> str | None:
        return self.preview_url or self.preview

    @property
    def is_aplus(self) -> bool:
        return self.modules is not None or "preview" in self.model_fields_set


class JobOutput(_Response):
    ads: list[Ad] = Field(default_factory=list)


class Job(_Response):
    """GET /v1/api/jobs/{id} envelope (contract §7)."""

    id: str
    job_type: str | None = None
    status: str
    created_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    credit_cost: float | None = None
    credits_refunded: float = 0
    output: JobOutput | None = None
    error_code: str | None = None
    error_message: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _tolerate(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if "id" not in data and "job_id" in data:
                data["id"] = data["job_id"]
            if data.get("credits_refunded") is None:
                data["credits_refunded"] = 0
            err = data.get("error")  # the async-jobs page mentions an "error field" on failure
            if isinstance(err, dict):
                data.setdefault("error_code", err.get("code"))
                data.setdefault("error_message", err.get("message"))
            elif isinstance(err, str) and err:
                data.setdefault("error_message", err)
        return data

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES


class JobSummary(_Response):
    id: str
    job_type: str | None = None
    status: str | None = None
    created_at: str | None = None


class JobList(_Response):
    """GET /v1/api/jobs page (contract §8). Here ``data`` is the list itself, never a wrapper."""

    data: list[JobSummary] = Field(default_factory=list)
    total: int = 0
    page: int = 1
    limit: int = 20

    @property
    def has_more(self) -> bool:
        return bool(self.data) and self.page * self.limit < self.total


def unwrap(body: Any) -> Any:
    """ASSUMPTION (contract §9): success bodies may be wrapped in ``data`` when it is an object."""
    if isinstance(body, dict) and isinstance(body.get("data"), dict):
        return body["data"]
    return body


def parse_time(value: str | None) -> float | None:
    """ISO 8601 -> Unix seconds; naive timestamps are taken as UTC; junk gives None."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
