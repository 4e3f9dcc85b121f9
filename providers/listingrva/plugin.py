"""The ListingRVA provider plugin: listing copy (``/ai/listing``) and styled images (``/ai/image``).

Why ``prepare`` exists: both generation endpoints take a ListingRVA ``productId``, so each catalog
product needs exactly one product record first; it is looked up by title and category before one is
created, so repeated runs never create duplicates. Why polling is slow: job polls share the 30/min
``ai`` bucket with submissions (contract §4), so the first poll waits for the low end of a job's
duration; image jobs can skip polls altogether with ``LISTINGRVA_WEBHOOK_URL`` (``webhooks.py``).

Contract: docs/providers/listingrva.md (cited below as "contract §N").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import httpx
from pydantic import BaseModel, Field, field_validator
from pydantic_settings import SettingsConfigDict

from providers import (
    JobRef,
    JobResult,
    ListingCopy,
    MalformedResponse,
    OutputRef,
    PollCadence,
    Price,
    Product,
    ProviderError,
    ProviderLimits,
    RequestValidationError,
    RouteLimit,
    Step,
    StepContext,
    Throttle,
    WebhookSettings,
    no_throttle,
)
from providers import Provider as BaseProvider

from ..webhooks import WebhookInbox
from .client import KIT, ListingRVAClient, TokenProvider
from .models import (
    IMAGE_STYLE_CREDITS,
    LISTING_CREDITS,
    PROVIDER,
    ImageRequest,
    JobStatus,
    ListingRequest,
    ProductCreate,
    WebhookCreate,
)
from .webhooks import IMAGE_EVENT, event_image_urls, webhook_inbox

PAGE_SIZE = 100  # GET /products max limit (contract §8)
MAX_PAGES = 1000
INDEX_TTL_SECONDS = 600.0  # re-read the workspace's product records after this
# The listing request has no language field (contract §6): the copy's language is asked for in the
# free-text persona (targetAudience) for marketplaces whose language is not English.
MARKETPLACE_LANGUAGES = {
    "DE": "German",
    "FR": "French",
    "BE": "French",
    "ES": "Spanish",
    "MX": "Spanish",
    "IT": "Italian",
    "JP": "Japanese",
    "BR": "Portuguese",
    "NL": "Dutch",
    "PL": "Polish",
    "SE": "Swedish",
    "TR": "Turkish",
    "CN": "Chinese",
    "EG": "Arabic",
    "SA": "Arabic",
}
logger = logging.getLogger("listingflow.listingrva")


class ListingRVASettings(WebhookSettings):
    """``LISTINGRVA_API_KEY`` holds the dashboard-session JWT (contract §1)."""

    model_config = SettingsConfigDict(env_prefix="LISTINGRVA_", extra="ignore")

    base_url: str = "https://api.listingrvaai.com/api"
    # ASSUMPTION (contract §7): give up after ~5 minutes; the job id stays resumable.
    max_wait_seconds: float = 300.0
    # Poll cadence. The docs give none (contract §7 assumes ~10 s, then every 5 s), but every poll is
    # counted against the same 30/min ``/ai/*`` bucket as submissions, and listing jobs have no webhook:
    # a poll before a job can be done spends a submission's budget. So the first poll waits for the low
    # end of the documented completion time (20-60 s), and later polls back off by 5 s up to 15 s.
    # Measured (benchmarks, x10 time-scaled): 3.1 polls per listing job at 10 s + 5 s, 1.0 with this.
    poll_cadence: PollCadence = PollCadence(
        first_seconds=20.0, every_seconds=5.0, step_seconds=5.0, max_seconds=15.0
    )
    first_poll_seconds: float | None = Field(
        None, gt=0, description="override the wait before the first poll"
    )
    webhook_listen: str = Field("0.0.0.0:8788", description="host:port the webhook receiver listens on")

    @field_validator("base_url")
    @classmethod
    def _with_api_path(cls, v: str) -> str:
        """The contract's documented form ``https://api.listingrvaai.com/api`` and the bare host are
        the same API: the client's paths are relative to ``/api``, which is added when missing."""
        v = v.strip().rstrip("/")
        return v if v.endswith("/api") else v + "/api"


class ListingRVAProvider(BaseProvider):
    name: ClassVar[str] = "listingrva"
    display_name: ClassVar[str] = "ListingRVA AI"
    capabilities: ClassVar[frozenset[Step]] = frozenset({Step.COPY, Step.IMAGES})
    limits: ClassVar[ProviderLimits] = ProviderLimits(
        route_groups=(
            RouteLimit(group="ai", requests=30, per_seconds=60),
            RouteLimit(group="products", requests=120, per_seconds=60),
            RouteLimit(group="global", requests=200, per_seconds=60),
        ),
        daily_requests=None,  # no daily cap documented
        # ASSUMPTION (contract §4): undocumented. The rate limiter, not this cap, keeps submits and
        # polls inside the shared 30/min ai bucket; the cap only must not throttle below that rate:
        # ~15 listing jobs/min (a submit + a poll each) x 20-75 s until seen done = 5-19 in flight.
        # Not more: submissions beyond it would queue ahead of the polls that deliver finished copy
        # to the next step (benchmark phase C at 30: the first images started 4 s later, x10 scaled).
        # Image jobs finished by webhook (30/min x 20-60 s) may want up to 30: LISTINGFLOW_INFLIGHT_LIMITS.
        max_inflight_jobs=15,
        max_batch_size=1,
    )
    prices: ClassVar[tuple[Price, ...]] = (
        *(
            Price(
                step=Step.IMAGES,
                item=style,
                credits=credits,
                unit="image",
                note="+ size surcharge: 1200px +1, 1500px +2, 2000px +3 (amazon forces 2000px)",
            )
            for style, credits in IMAGE_STYLE_CREDITS.items()
        ),
        *(
            Price(step=Step.COPY, item=platform, credits=credits, unit="generation")
            for platform, credits in LISTING_CREDITS.items()
        ),
    )
    settings_class: ClassVar[type[ListingRVASettings]] = ListingRVASettings
    settings: ListingRVASettings
    default_styles: ClassVar[tuple[str, ...]] = ("CLEAN_WHITE_BG",)
    output_hosts: ClassVar[tuple[str, ...]] = ("cdn.listingrvaai.com",)
    sandbox: ClassVar[str | None] = "providers.listingrva.sandbox:ListingRVASandbox"
    # ASSUMPTION (contract §1): no test-key prefix is documented; the sandbox accepts this fake JWT.
    sandbox_key: ClassVar[str] = (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJzYW5kYm94Iiwid3MiOiJ0ZXN0IiwicGxhbiI6InBybyJ9"
        ".sandbox-signature"
    )

    def __init__(
        self,
        http: httpx.AsyncClient,
        settings: ListingRVASettings | None = None,
        *,
        throttle: Throttle = no_throttle,
        token_provider: TokenProvider | None = None,
    ) -> None:
        super().__init__(http, settings, throttle=throttle)
        self.client = ListingRVAClient(
            http,
            base_url=self.settings.base_url,
            token_provider=token_provider or (lambda: self.settings.api_key),
            throttle=self.throttle,
            secrets=self.settings.secret_values(),
            timeout=self.settings.timeout_seconds,
            retry=self.settings.http_retry,
        )
        self._products: dict[tuple[str, str], str] = {}  # (title, category) -> product id
        self._indexed_at: float | None = None
        self._index_lock = asyncio.Lock()
        self._inbox: WebhookInbox | None = None
        self._hook_id: str | None = None
        self._hook_secret = ""  # shown once at registration (contract §9): kept in memory only
        self._hook_lock = asyncio.Lock()
        self._hook_failed = False

    # ---- describing work ----

    def build_requests(self, step: Step, ctx: StepContext) -> list[BaseModel]:
        where = f"products[{ctx.product.key}]"
        if step not in self.capabilities:
            raise RequestValidationError(
                f"listingrva does not support step {step}",
                provider=PROVIDER,
                code="LOCAL_VALIDATION",
                field="step",
            )
        product_id = ctx.prepared.get("product_id")
        if not product_id:
            raise RequestValidationError(
                f"{where}.product_id is required for ListingRVA (prepare() creates it)",
                provider=PROVIDER,
                code="LOCAL_VALIDATION",
                field=f"{where}.product_id",
            )
        if step == Step.COPY:
            opts = ctx.copy_options
            keywords = ", ".join(k.strip() for k in opts.seed_keywords if k.strip())
            return [
                KIT.build(
                    ListingRequest,
                    {
                        "productId": product_id,
                        "platform": opts.platform,
                        "tone": opts.tone,
                        "components": list(opts.components),
                        "seedKeywords": keywords or None,
                        "targetAudience": _audience(opts.target_audience, ctx.product.country_code),
                    },
                    where=where,
                )
            ]
        image = ctx.image_options
        styles = [ctx.style] if ctx.style else self.styles_for(image)
        common = {
            "productId": product_id,
            "platform": image.platform.strip().lower(),
            "outputSize": {"w": image.size, "h": image.size},
            "primaryImageUrl": ctx.product.image_urls[0] if ctx.product.image_urls else None,
            "customPrompt": _prompt(ctx.copy_result),
        }
        # one request per distinct style: one request is one variant (contract §5)
        return [KIT.build(ImageRequest, {**common, "style": s}, where=where) for s in dict.fromkeys(styles)]

    def estimate_credits(self, step: Step, request: BaseModel) -> int | None:
        """Exactly the published price; the returned ``creditCost`` still wins (contract §5)."""
        if isinstance(request, ImageRequest | ListingRequest):
            return request.credits
        return None

    # ---- I/O ----

    async def prepare(self, product: Product) -> dict[str, Any]:
        """Ensure one ListingRVA product record exists for this title + category; reuse it.

        The workspace's records are indexed once per run (one ``GET /products`` per 100 records) and
        the index is kept current with what this run creates. Looking each product up page by page
        instead cost O(products x records) requests: 598 for 300 new products, ~125,000 for 5,000
        (measured; ``/products/*`` allows 120/min). The index is re-read after ``INDEX_TTL_SECONDS``
        so records another process created meanwhile are found (two runs preparing the *same*
        product are already serialized by the cached prepare task's lock).
        """
        key = (product.title.strip(), (product.category or "").strip())
        if key not in self._products:
            async with self._index_lock:
                if key not in self._products:
                    await self._refresh_index()
                if key not in self._products:
                    request = KIT.build(
                        ProductCreate,
                        {
                            "title": product.title,
                            "description": product.description,
                            "category": product.category,
                            "imageUrl": product.image_urls[0] if product.image_urls else None,
                        },
                        where=f"products[{product.key}]",
                    )
                    self._products[key] = (await self.client.create_product(request)).id
        return {"product_id": self._products[key]}

    async def _refresh_index(self) -> None:
        if self._indexed_at is not None and time.monotonic() - self._indexed_at < INDEX_TTL_SECONDS:
            return
        found: dict[tuple[str, str], str] = {}
        seen = 0
        for page in range(1, MAX_PAGES + 1):
            listing = await self.client.list_products(page=page, limit=PAGE_SIZE)
            for p in listing.products:
                found.setdefault((p.title.strip(), (p.category or "").strip()), p.id)
            seen += len(listing.products)
            done = listing.total is not None and seen >= listing.total
            if not listing.products or done or len(listing.products) < PAGE_SIZE:
                break
        self._products = {**found, **self._products}
        self._indexed_at = time.monotonic()

    def inputs(self, step: Step) -> frozenset[str]:
        """Image jobs read the copy (``customPrompt``); listing copy reads nothing upstream."""
        return frozenset({"copy"}) if step == Step.IMAGES else frozenset()

    async def submit(self, step: Step, request: BaseModel) -> JobRef:
        """Spend credits. A 5xx/timeout here may come after the job was enqueued and debited (contract
        §3, no idempotency key): the host resolves it from ``GET /billing/credits`` (``balance``)."""
        inbox = None
        meta: dict[str, Any]
        # an ambiguous failure of the send is the host's to resolve (flows.submission)
        if step == Step.IMAGES and isinstance(request, ImageRequest):
            kind = "image"
            meta = {"style": request.style, "size": request.effective_size}
            inbox = await self._webhooks()
            submitted = await self.client.generate_image(request)
        elif step == Step.COPY and isinstance(request, ListingRequest):
            kind = "listing"
            meta = {"components": request.components}
            submitted = await self.client.generate_listing(request)
        else:
            raise RequestValidationError(
                f"{step} needs a matching ListingRVA request, got {type(request).__name__}",
                provider=PROVIDER,
                code="LOCAL_VALIDATION",
                field="request",
            )
        if inbox is not None:
            inbox.expect(submitted.job_id)
        return JobRef(
            provider=self.name,
            step=step,
            job_id=submitted.job_id,
            kind=kind,
            credits_at_submit=submitted.credit_cost,
            meta={
                **meta,
                "kind": kind,
                "product_id": request.product_id,
                "webhook": inbox is not None,
                "platform": request.platform or "general",
                "credit_cost": submitted.credit_cost,
                "estimate": request.credits,
            },
        )

    async def recover_lost(self, step: Step, request: BaseModel, *, price: int | None) -> JobRef | None:
        """An image job whose submit answer was lost: its ``image.generated`` event still reaches this
        run's receiver (the hook is this run's own), naming the product (contract §9, ASSUMPTION on the
        payload). Listing jobs have no event: they stay as the balance left them."""
        if step != Step.IMAGES or not isinstance(request, ImageRequest) or self._inbox is None:
            return None
        job_id = await self._inbox.claim(
            lambda data: str(data.get("productId") or "") == request.product_id,
            timeout=self.settings.max_wait_seconds,
        )
        if job_id is None:
            return None
        logger.warning(
            "ListingRVA image job %s for product %s recovered from its webhook event after its "
            "submit answer was lost",
            job_id,
            request.product_id,
        )
        return JobRef(
            provider=self.name,
            step=step,
            job_id=job_id,
            kind="image",
            credits_at_submit=price,
            meta={
                "style": request.style,
                "size": request.effective_size,
                "kind": "image",
                "product_id": request.product_id,
                "webhook": True,
                "platform": request.platform or "general",
                "credit_cost": price,
                "estimate": request.credits,
                "reconciled": True,
            },
        )

    async def wait(self, ref: JobRef) -> JobResult:
        if self._inbox is not None and self._inbox.expects(ref.job_id):
            return await self._wait_for_event(ref, self._inbox)
        cadence = self.settings.cadence()
        if self.settings.first_poll_seconds:
            cadence = cadence.model_copy(update={"first_seconds": self.settings.first_poll_seconds})
        job = await self.poll(ref, cadence, lambda: self.client.get_job(ref.job_id), "queued")
        return self._result(ref, job)

    async def refresh(self, ref: JobRef) -> JobResult | None:
        """Re-read ``GET /ai/jobs/:id`` (the only way to read a job again); None if unfinished."""
        job = await self.client.get_job(ref.job_id)
        return self._result(ref, job) if job.finished else None

    balance_endpoint = True

    async def balance(self) -> int | None:
        return (await self.client.credits()).credits_remaining

    async def check_access(self) -> int | None:
        """GET /billing/credits: free, and 401 for a rejected or expired token (contract §1/§8)."""
        return await self.balance()

    async def aclose(self) -> None:
        """Delete the run's webhook (best effort: a leftover one only sends events nobody receives)."""
        if self._hook_id is not None:
            with contextlib.suppress(ProviderError, httpx.HTTPError):
                await self.client.delete_webhook(self._hook_id)
            self._hook_id, self._hook_secret = None, ""
        if self._inbox is not None:
            await self._inbox.aclose()

    # ---- webhooks ----

    async def _webhooks(self) -> WebhookInbox | None:
        """The run's receiver, started and registered at the first image job (None: poll instead)."""
        if not self.settings.webhook_url or self._hook_failed:
            return None
        async with self._hook_lock:
            if self._inbox is None:
                self._inbox = webhook_inbox(
                    self.settings.webhook_url, self.settings.webhook_listen, lambda: self._hook_secret
                )
            await self._inbox.start()
            if self._hook_id is None and not self._hook_failed:
                try:
                    hook = await self.client.create_webhook(
                        WebhookCreate(url=self._inbox.url, events=[IMAGE_EVENT])
                    )
                except ProviderError as exc:  # e.g. 403: webhooks are a Pro feature (contract §9)
                    logger.warning("ListingRVA webhook not registered (%s); image jobs are polled", exc)
                    self._hook_failed = True
                    return None
                if not hook.secret:
                    logger.warning("ListingRVA returned no webhook signing secret; image jobs are polled")
                    self._hook_failed = True
                    with contextlib.suppress(ProviderError, httpx.HTTPError):
                        await self.client.delete_webhook(hook.id)
                    return None
                self._hook_id, self._hook_secret = hook.id, hook.secret
        return self._inbox

    async def _wait_for_event(self, ref: JobRef, inbox: WebhookInbox) -> JobResult:
        """Wait for the job's signed event; a poll only when none came within the reconcile delay or
        the event did not carry this job's images."""
        clock = self.job_clock(ref)
        try:
            while True:
                data = await inbox.wait(
                    ref.job_id, min(self.settings.webhook_reconcile_seconds, clock.left())
                )
                if data is not None and (urls := event_image_urls(ref.job_id, data)):
                    return self._image_result(ref, urls)
                job = await self.client.get_job(ref.job_id)
                if job.finished:
                    return self._result(ref, job)
                if clock.left() <= 0:
                    raise clock.timeout(job.status)
        finally:
            inbox.forget(ref.job_id)

    # ---- helpers ----

    def _result(self, ref: JobRef, job: JobStatus) -> JobResult:
        charged = ref.credits_at_submit
        if job.status == "failed":
            # ASSUMPTION (contract §7 client rule): a failed job's credits are returned.
            return JobResult(
                ref=ref,
                status="failed",
                credits_charged=charged,
                credits_refunded=charged or 0,
                error_code=self.client._clean(job.error_code()),
                error_message=self.client._clean(job.error_message()),
            )
        if ref.kind == "listing":
            copy = job.listing_copy()
            if copy == ListingCopy():
                raise MalformedResponse(f"listing job {ref.job_id} completed without copy", provider=PROVIDER)
            return JobResult(ref=ref, status="completed", copy_result=copy, credits_charged=charged)
        urls = job.image_urls()
        if not urls:
            raise MalformedResponse(f"image job {ref.job_id} completed without image URLs", provider=PROVIDER)
        return self._image_result(ref, urls)

    def _image_result(self, ref: JobRef, urls: list[str]) -> JobResult:
        style = str(ref.meta.get("style") or "image").lower()
        outputs = [
            OutputRef(url=u, label=f"{style}-{n}", expires_at=_expiry(u)) for n, u in enumerate(urls, 1)
        ]
        return JobResult(ref=ref, status="completed", outputs=outputs, credits_charged=ref.credits_at_submit)


def _audience(persona: str | None, country_code: str) -> str | None:
    """The persona, with "write in <language>" for a marketplace whose language is not English."""
    language = MARKETPLACE_LANGUAGES.get(country_code)
    if language is None or persona == "":  # "" stays as sent: the request's validation names it
        return persona
    return f"{persona}; write in {language}" if persona else f"write in {language}"


def _prompt(copy: ListingCopy | None) -> str | None:
    """Steer the scene with the generated copy: title, first bullets, keywords."""
    if copy is None:
        return None
    parts = []
    if copy.title:
        parts.append(f"Product: {copy.title}")
    if copy.bullets:
        parts.append("Highlights: " + "; ".join(copy.bullets[:3]))
    if copy.keywords:
        parts.append("Keywords: " + ", ".join(copy.keywords[:8]))
    return ". ".join(parts) or None


def _expiry(url: str) -> float | None:
    """ASSUMPTION (contract §7): CDN URLs have no documented expiry; honour an ``expires`` query
    parameter (a Unix time, as signed URLs carry) when one is present."""
    query = parse_qs(urlsplit(url).query)
    for key in ("expires", "Expires"):
        try:
            return float(query[key][0])
        except (KeyError, IndexError, ValueError):
            continue
    return None
