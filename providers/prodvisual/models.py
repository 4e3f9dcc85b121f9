"""ProdVisual API v1 wire models (contract docs/providers/prodvisual.md).

Request models enforce every documented rule *before* a request leaves, so a bad catalog row costs
no request and no credit. Response models are tolerant: every field the contract does not promise is
optional, unknown fields are kept, and the undocumented batch-results shape is read under any of the
names the contract lists (§6).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlparse

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    field_validator,
    model_validator,
)

PROVIDER = "prodvisual"
MAX_BATCH_ITEMS = 50  # contract §4/§6 (raised from 20 in v1.2.0)
OUTPUT_TTL_SECONDS = 7 * 24 * 3600  # contract §10

# contract §5: five presets documented; ASSUMPTION (contract §5): the v1.1.0 WooCommerce and
# Mercado Libre presets use the ids `woocommerce` and `mercadolibre` (unverified).
Platform = Literal["amazon", "ebay", "etsy", "shopify", "generic", "woocommerce", "mercadolibre"]
PLATFORMS: tuple[Platform, ...] = get_args(Platform)
ImageFormat = Literal["png", "jpeg", "webp"]
TERMINAL = frozenset({"completed", "failed"})

# The 8 publicly documented style ids of the 22 (contract §7). Never used as an enum: the live list
# comes from GET /v1/styles.
DOCUMENTED_STYLES: tuple[str, ...] = (
    "lifestyle",
    "white_bg",
    "mockup",
    "infographic",
    "social_square",
    "social_story",
    "hero_banner",
    "comparison",
)

_HEX = frozenset("0123456789abcdefABCDEF")


def check_http_url(value: str) -> str:
    """An absolute http(s) URL without whitespace (the contract types these fields as URLs)."""
    if not value or any(c.isspace() for c in value):
        raise ValueError("must be a non-empty URL without whitespace")
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("must be an absolute http(s) URL")
    return value


def check_background(value: str) -> str:
    """``#rrggbb`` (or ``#rgb``) or ``transparent`` (contract §5)."""
    if value == "transparent":
        return value
    digits = value[1:]
    if value.startswith("#") and len(digits) in (3, 6) and set(digits) <= _HEX:
        return value
    raise ValueError("must be a hex colour like #ffffff or 'transparent'")


Url = Annotated[str, Field(min_length=1, max_length=2048)]


# --- requests ----------------------------------------------------------------------------------


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def body(self) -> dict[str, Any]:
        """The JSON body: omitted optional fields are not sent; local-only fields never are."""
        return self.model_dump(mode="json", exclude_none=True)


class GenerateItem(_Request):
    """One generation: the body of POST /v1/generate and one element of a batch's ``items``."""

    image_url: Url = Field(description="source image, JPEG/PNG/WebP, max 10 MB, publicly fetchable")
    style: str = Field(min_length=1, max_length=100, pattern=r"^\S+$", description="id from GET /v1/styles")
    platform: Platform | None = None
    dimensions: str | None = Field(None, pattern=r"^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$")
    background: str | None = None
    format: ImageFormat | None = None
    quality: Annotated[StrictInt, Field(ge=1, le=100)] | None = None

    @field_validator("image_url")
    @classmethod
    def _image_url(cls, v: str) -> str:
        return check_http_url(v)

    @field_validator("background")
    @classmethod
    def _background(cls, v: str | None) -> str | None:
        return None if v is None else check_background(v)


class GenerateRequest(GenerateItem):
    """POST /v1/generate. ``label`` is local bookkeeping (which output is which), never sent."""

    webhook_url: Url | None = None
    label: str | None = Field(None, min_length=1, exclude=True)

    @field_validator("webhook_url")
    @classmethod
    def _webhook(cls, v: str | None) -> str | None:
        return None if v is None else check_http_url(v)

    def item(self) -> GenerateItem:
        return GenerateItem.model_validate(self.model_dump(include=set(GenerateItem.model_fields)))


class BatchRequest(_Request):
    """POST /v1/generate/batch: 1-50 items (contract §6). ``labels`` (one per item, unique) name the
    outputs locally, so results matched by position map back to products; they are never sent."""

    items: list[GenerateItem] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)
    webhook_url: Url | None = None
    labels: list[str] | None = Field(None, exclude=True)

    @field_validator("webhook_url")
    @classmethod
    def _webhook(cls, v: str | None) -> str | None:
        return None if v is None else check_http_url(v)

    @field_validator("items", mode="before")
    @classmethod
    def _plain_items(cls, v: Any) -> Any:
        # ASSUMPTION (contract §6): a per-item webhook_url is ignored by ProdVisual; we refuse to send
        # one by converting GenerateRequest instances to plain items (their webhook_url is dropped).
        if isinstance(v, list):
            return [i.item() if isinstance(i, GenerateRequest) else i for i in v]
        return v

    @model_validator(mode="after")
    def _labels_match(self) -> BatchRequest:
        if self.labels is not None:
            if len(self.labels) != len(self.items):
                raise ValueError(f"labels: {len(self.labels)} labels for {len(self.items)} items")
            if any(not lbl for lbl in self.labels) or len(set(self.labels)) != len(self.labels):
                raise ValueError("labels must be non-empty and unique")
        return self

    def item_labels(self) -> list[str]:
        return list(self.labels) if self.labels is not None else default_labels([i.style for i in self.items])


def default_labels(styles: list[str]) -> list[str]:
    """``<style>-<n>``: n counts repeats of the same style, so labels are stable and unique."""
    seen: dict[str, int] = {}
    out = []
    for s in styles:
        seen[s] = seen.get(s, 0) + 1
        out.append(f"{s}-{seen[s]}")
    return out


# --- responses ---------------------------------------------------------------------------------


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ErrorInfo(_Response):
    code: str | None = None
    message: str | None = None
    status: int | None = None


_STATUS_ALIASES = {
    "queued": "pending", "created": "pending", "running": "processing", "in_progress": "processing",
    "succeeded": "completed", "success": "completed", "complete": "completed", "done": "completed",
    "error": "failed", "errored": "failed", "cancelled": "failed", "canceled": "failed",
}  # fmt: skip


def _status(v: Any) -> Any:
    if isinstance(v, str):
        v = v.strip().lower()
        return _STATUS_ALIASES.get(v, v)
    return v


def _error(v: Any) -> Any:
    if isinstance(v, str):
        return {"message": v}
    return v


def iso_to_epoch(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class _JobState(_Response):
    """What a generation and a batch share: a normalized ``status`` and ``error``."""

    @field_validator("status", mode="before", check_fields=False)
    @classmethod
    def _norm_status(cls, v: Any) -> Any:
        return _status(v)

    @field_validator("error", mode="before", check_fields=False)
    @classmethod
    def _norm_error(cls, v: Any) -> Any:
        return _error(v)


class Generation(_JobState):
    """A generation, as returned by POST /v1/generate, GET /v1/generations/{id} or inside a batch."""

    id: str | None = Field(None, validation_alias=AliasChoices("id", "generation_id"))
    status: str = "pending"
    output_url: str | None = None
    style: str | None = None
    platform: str | None = None
    dimensions: str | None = None
    format: str | None = None
    file_size: int | None = None
    credits_used: int | None = None
    credits_remaining: int | None = None
    generation_time_ms: int | None = None
    created_at: str | None = None
    expires_at: str | None = None
    error: ErrorInfo | None = None

    @model_validator(mode="before")
    @classmethod
    def _infer_status(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("status") and data.get("output_url"):
            return {**data, "status": "completed"}
        return data

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def expires_epoch(self) -> float | None:
        """``expires_at``, else creation + 7 days (contract §10)."""
        exp = iso_to_epoch(self.expires_at)
        if exp is None and (created := iso_to_epoch(self.created_at)) is not None:
            exp = created + OUTPUT_TTL_SECONDS
        return exp


class BatchSubmission(_Response):
    """Response of POST /v1/generate/batch (contract §6)."""

    batch_id: str = Field(validation_alias=AliasChoices("batch_id", "id"))
    status: str = "processing"
    total_items: int | None = None
    credits_used: int | None = None
    credits_remaining: int | None = None
    estimated_time_ms: int | None = None
    results_url: str | None = None

    @field_validator("status", mode="before")
    @classmethod
    def _norm_status(cls, v: Any) -> Any:
        return _status(v)


class BatchStatus(_JobState):
    """GET /v1/generations/{batch_id}. ASSUMPTION (contract §6): per-item generations arrive under
    ``results``, ``items`` or ``generations`` and match the submitted items by position."""

    id: str | None = Field(None, validation_alias=AliasChoices("id", "batch_id"))
    status: str = "processing"
    total_items: int | None = None
    credits_used: int | None = None
    credits_refunded: int | None = None
    results: list[Generation] = Field(
        default_factory=list, validation_alias=AliasChoices("results", "items", "generations")
    )
    error: ErrorInfo | None = None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


class Style(_Response):
    id: str
    name: str | None = None
    description: str | None = None


class StyleList(_Response):
    styles: list[Style] = Field(default_factory=list)
    total: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, data: Any) -> Any:
        return {"styles": data} if isinstance(data, list) else data

    def ids(self) -> frozenset[str]:
        return frozenset(s.id for s in self.styles)


class Purchase(_Response):
    amount: int | None = None
    date: str | None = None


class Credits(_Response):
    """GET /v1/account/credits. ASSUMPTION (contract §8): last_purchase may be null; 'today' is UTC."""

    credits_remaining: int
    credits_used_total: int | None = None
    credits_used_today: int | None = None
    last_purchase: Purchase | None = None


class WebhookEvent(_Response):
    """A webhook POST (contract §11). ASSUMPTION: unknown ``event`` names are accepted (only
    ``generation.completed`` is documented); confirm state with GET /v1/generations/{id}."""

    event: str
    data: dict[str, Any] = Field(default_factory=dict)
    timestamp: str | None = None


def unwrap(body: Any) -> Any:
    """Accept ``{"data": {...}}`` envelopes defensively; the documented bodies are bare."""
    if isinstance(body, dict) and isinstance(body.get("data"), dict) and "id" not in body:
        keys = set(body) - {"data", "meta", "success", "object"}
        if not keys:
            return body["data"]
    return body


def is_batch_body(body: dict[str, Any]) -> bool:
    ident = str(body.get("id") or body.get("batch_id") or "")
    return ident.startswith("batch_") or any(
        k in body for k in ("results", "items", "generations", "batch_id")
    )
