"""ListingRVA request and response models (contract: docs/providers/listingrva.md).

Request models enforce every documented rule so a bad request never leaves the process (and never
spends credits); they serialize with ``model_dump(exclude_none=True, by_alias=True)`` so omitted
optional fields are not sent. Response models are tolerant: they accept the documented alternatives
(bare or wrapped bodies, keywords as a list or a comma string) and ignore unknown fields.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from ..contract import ListingCopy

PROVIDER = "listingrva"

# --- enums and prices (contract §5, §6) --------------------------------------------------------

IMAGE_STYLE_CREDITS: dict[str, int] = {
    "CLEAN_WHITE_BG": 4,
    "SHADOW_REFLECTION": 4,
    "DIMENSION_SPEC": 4,
    "INFOGRAPHIC_FEATURE": 5,
    "COMPARISON_CHART": 5,
    "FEATURE_CALLOUT_GRID": 5,
    "INGREDIENT_SPEC_LIST": 5,
    "BEFORE_AFTER": 5,
    "SEASONAL_VARIANT": 5,
    "LIFESTYLE_CONTEXTUAL": 6,
    "PREMIUM_BRAND_STYLE": 6,
    "MODEL_LIFESTYLE": 7,
    "MODEL_STUDIO": 7,
    "LIFESTYLE_INFOGRAPHIC": 7,
    "PACKAGING_DISPLAY": 8,
    "MODEL_LIFESTYLE_INFOGRAPHIC": 8,
}
SIZE_SURCHARGE: dict[int, int] = {1000: 0, 1200: 1, 1500: 2, 2000: 3}
DEFAULT_SIZE = 1000
AMAZON_SIZE = 2000  # contract §5: platform amazon automatically sets 2000 px
LISTING_CREDITS: dict[str, int] = {
    "amazon": 10,
    "flipkart": 9,
    "shopify": 8,
    "woocommerce": 8,
    "bigcommerce": 8,
    "etsy": 8,
    "general": 6,
}
PLATFORMS: tuple[str, ...] = tuple(LISTING_CREDITS)
COMPONENTS: tuple[str, ...] = ("title", "bullets", "description", "keywords")

ImageStyle = Literal[
    "CLEAN_WHITE_BG",
    "SHADOW_REFLECTION",
    "DIMENSION_SPEC",
    "INFOGRAPHIC_FEATURE",
    "COMPARISON_CHART",
    "FEATURE_CALLOUT_GRID",
    "INGREDIENT_SPEC_LIST",
    "BEFORE_AFTER",
    "SEASONAL_VARIANT",
    "LIFESTYLE_CONTEXTUAL",
    "PREMIUM_BRAND_STYLE",
    "MODEL_LIFESTYLE",
    "MODEL_STUDIO",
    "LIFESTYLE_INFOGRAPHIC",
    "PACKAGING_DISPLAY",
    "MODEL_LIFESTYLE_INFOGRAPHIC",
]
# ASSUMPTION (contract §5): the image endpoint accepts the same platform list as listing copy.
Platform = Literal["amazon", "flipkart", "shopify", "woocommerce", "etsy", "bigcommerce", "general"]
Size = Literal[1000, 1200, 1500, 2000]
Component = Literal["title", "bullets", "description", "keywords"]
Tone = Literal["professional", "casual", "luxury"]
AiModel = Literal["auto", "gemini", "openai"]
JobStatusValue = Literal["queued", "processing", "completed", "failed"]


def _url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError("must be an http(s) URL")
    return value


def _events(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    if any(not e.strip() for e in value):
        raise ValueError("event names must be non-empty")
    if len(set(value)) != len(value):
        raise ValueError("events must be unique")
    return value


# --- requests ----------------------------------------------------------------------------------


class _Request(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", str_strip_whitespace=True)

    def body(self) -> dict[str, Any]:
        """The JSON body: camelCase names, omitted optionals not sent."""
        return self.model_dump(exclude_none=True, by_alias=True)


class OutputSize(_Request):
    w: Size
    h: Size

    @model_validator(mode="after")
    def _square(self) -> OutputSize:
        # ASSUMPTION (contract §5): only square sizes (w == h) are valid.
        if self.w != self.h:
            raise ValueError("outputSize must be square (w == h)")
        return self


class ImageRequest(_Request):
    """``POST /ai/image``: one style, one variant (no ``variants`` field is documented)."""

    product_id: str = Field(alias="productId", min_length=1)
    style: ImageStyle
    platform: Platform | None = None
    output_size: OutputSize | None = Field(None, alias="outputSize")
    primary_image_url: str | None = Field(None, alias="primaryImageUrl", min_length=1)
    custom_prompt: str | None = Field(None, alias="customPrompt", min_length=1)
    context: str | None = Field(None, min_length=1)
    season: str | None = Field(None, min_length=1)  # ASSUMPTION (contract §5): free text
    ai_model: AiModel | None = Field(None, alias="aiModel")

    @field_validator("primary_image_url")
    @classmethod
    def _check_url(cls, v: str | None) -> str | None:
        return _url(v)

    @property
    def effective_size(self) -> int:
        """The px the provider renders (and prices): amazon forces 2000, default 1000."""
        if self.platform == "amazon":
            return AMAZON_SIZE
        return self.output_size.w if self.output_size else DEFAULT_SIZE

    @property
    def credits(self) -> int:
        return IMAGE_STYLE_CREDITS[self.style] + SIZE_SURCHARGE[self.effective_size]


class ListingRequest(_Request):
    """``POST /ai/listing``."""

    product_id: str = Field(alias="productId", min_length=1)
    platform: Platform | None = None  # ASSUMPTION (contract §6): server default is general
    components: list[Component] | None = Field(None, min_length=1)  # ASSUMPTION: default all four
    seed_keywords: str | None = Field(None, alias="seedKeywords", min_length=1)
    tone: Tone | None = None  # ASSUMPTION (contract §6): server default is professional
    target_audience: str | None = Field(None, alias="targetAudience", min_length=1)

    @field_validator("components")
    @classmethod
    def _unique(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError("components must be unique")
        return v

    @field_validator("seed_keywords")
    @classmethod
    def _keywords(cls, v: str | None) -> str | None:
        if v is not None and not any(k.strip() for k in v.split(",")):
            raise ValueError("seedKeywords must name at least one keyword")
        return v

    @property
    def credits(self) -> int:
        # ASSUMPTION (contract §6): the cost does not depend on the number of components.
        return LISTING_CREDITS[self.platform or "general"]


class ProductCreate(_Request):
    """``POST /products``."""

    title: str = Field(min_length=1)
    description: str | None = Field(None, min_length=1)
    category: str | None = Field(None, min_length=1)
    image_url: str | None = Field(None, alias="imageUrl", min_length=1)

    @field_validator("image_url")
    @classmethod
    def _check_url(cls, v: str | None) -> str | None:
        return _url(v)


class ProductQuery(_Request):
    page: int = Field(1, ge=1)  # ASSUMPTION (contract §8): pages start at 1
    limit: int = Field(20, ge=1, le=100)


class WebhookCreate(_Request):
    """``POST /webhooks``; unknown event names are allowed (contract §9: names mostly unpublished)."""

    url: str = Field(min_length=1)
    events: list[str] = Field(min_length=1)

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str | None) -> str | None:
        return _url(v)

    @field_validator("events")
    @classmethod
    def _check_events(cls, v: list[str] | None) -> list[str] | None:
        return _events(v)


# --- responses ---------------------------------------------------------------------------------


class _Response(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="allow")


class JobSubmitted(_Response):
    job_id: str = Field(alias="jobId", min_length=1)
    status: str = "queued"
    credit_cost: int | None = Field(None, alias="creditCost")

    @model_validator(mode="before")
    @classmethod
    def _id(cls, v: Any) -> Any:
        if isinstance(v, dict) and "jobId" not in v and "id" in v:
            v = {**v, "jobId": v["id"]}
        return v


def _split(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [p.strip() for p in value.replace("\n", ",").split(",") if p.strip()]
    if isinstance(value, list):
        return [str(p).strip() for p in value if str(p).strip()]
    return []


class JobStatus(_Response):
    id: str
    type: str | None = None  # ASSUMPTION (contract §7): never branch on it
    status: str
    result: dict[str, Any] | None = None
    error: Any = None
    message: str | None = None
    created_at: str | None = None
    updated_at: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed")

    def image_urls(self) -> list[str]:
        result = self.result or {}
        urls = [u for u in result.get("imageUrls") or [] if isinstance(u, str) and u]
        if not urls and isinstance(result.get("imageUrl"), str) and result["imageUrl"]:
            urls = [result["imageUrl"]]
        return urls

    def listing_copy(self) -> ListingCopy:
        """ASSUMPTION (contract §7): one key per requested component; parsed defensively."""
        result = self.result or {}
        title = result.get("title")
        description = result.get("description")
        bullets = result.get("bullets")
        return ListingCopy(
            title=title if isinstance(title, str) and title else None,
            bullets=_split(bullets) if isinstance(bullets, list) else _lines(bullets),
            description=description if isinstance(description, str) and description else None,
            keywords=_split(result.get("keywords")),
        )

    def error_code(self) -> str:
        if isinstance(self.error, str) and self.error:
            return self.error
        if isinstance(self.error, dict) and isinstance(code := self.error.get("code"), str):
            return code
        return "job_failed"

    def error_message(self) -> str:
        if self.message:
            return self.message
        if isinstance(self.error, dict) and self.error.get("message"):
            return str(self.error["message"])
        if isinstance(self.error, str) and self.error:
            return self.error
        return "unknown failure"  # ASSUMPTION (contract §7): absence means unknown failure


def _lines(value: Any) -> list[str]:
    if isinstance(value, str):
        return [line.strip(" -•\t") for line in value.splitlines() if line.strip(" -•\t")]
    return []


class ProductImage(_Response):
    url: str


class Product(_Response):
    id: str
    title: str = ""
    category: str | None = None
    description: str | None = None
    images: list[ProductImage] = Field(default_factory=list)
    created_at: str | None = None

    @field_validator("images", mode="before")
    @classmethod
    def _images(cls, v: Any) -> Any:
        if v is None:
            return []
        return [{"url": i} if isinstance(i, str) else i for i in v]


class ProductPage(_Response):
    products: list[Product] = Field(default_factory=list)
    total: int | None = None
    page: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, v: Any) -> Any:
        return {"products": v} if isinstance(v, list) else v


class Credits(_Response):
    credits_remaining: int = Field(alias="creditsRemaining")
    subscription_credits: int | None = Field(None, alias="subscriptionCredits")
    topup_credits: int | None = Field(None, alias="topupCredits")
    plan: str | None = None  # ASSUMPTION (contract §8): free text
    renews_at: str | None = Field(None, alias="renewsAt")


class Webhook(_Response):
    """ASSUMPTION (contract §9): ``{id, url, events, secret, created_at}``; secret only on create."""

    id: str
    url: str | None = None
    events: list[str] = Field(default_factory=list)
    secret: str | None = None
    created_at: str | None = None

    def __repr__(self) -> str:  # the signing secret is shown once; keep it out of logs
        return f"Webhook(id={self.id!r}, url={self.url!r}, events={self.events!r})"

    __str__ = __repr__


def unwrap(data: Any, key: str) -> Any:
    """Accept ``{key: {...}}`` or the bare object."""
    if isinstance(data, dict) and isinstance(data.get(key), dict):
        return data[key]
    return data
