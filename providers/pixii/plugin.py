"""The Pixii provider plugin: listing images (Listing Builder), A+ Content and variation Scale.

Pixii has no idempotency mechanism (contract §9), so a submission that may have reached Pixii
(5xx, timeout, garbled 2xx) is reconciled against ``GET /v1/api/jobs?asin=`` before the error is
allowed to propagate: a retry must never pay for the same job twice.

Contract: docs/providers/pixii.md (cited below as "contract §N").
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

from pydantic import BaseModel, field_validator
from pydantic_settings import SettingsConfigDict

from providers import (
    BearerAuth,
    ItemError,
    JobRef,
    JobResult,
    OutputRef,
    PollCadence,
    Price,
    Provider,
    ProviderError,
    ProviderLimits,
    ProviderSettings,
    RequestValidationError,
    RetryableError,
    RouteLimit,
    Step,
    StepContext,
    SubmitOutcomeUnknown,
    Throttle,
    no_throttle,
    resend_is_safe,
)

from .client import KIT, SUBMIT_GROUP, PixiiClient
from .models import (
    APLUS_CREDITS,
    JOB_TYPE_LISTING_BUILDER,
    JOB_TYPE_SCALE,
    PROVIDER,
    APlusRequest,
    Job,
    ListingBuilderRequest,
    ScaleRequest,
    SubmitResponse,
    parse_time,
)

logger = logging.getLogger("listingflow.providers.pixii")

URL_TTL_SECONDS = 7 * 24 * 3600  # contract §10: signed URLs valid 7 days
RECONCILE_SKEW_SECONDS = 30.0
"""How far before our submit a listed job may have been created and still be ours (clock skew)."""
PREFLIGHT_ASIN = "LISTINGFLOW"  # a well-formed ASIN whose (empty) job list proves the key works

_KIND_BY_STEP = {Step.IMAGES: "listing_builder", Step.APLUS: "a_plus", Step.SCALE: "scale"}
_MODEL_BY_STEP: dict[Step, type[ListingBuilderRequest | APlusRequest | ScaleRequest]] = {
    Step.IMAGES: ListingBuilderRequest,
    Step.APLUS: APlusRequest,
    Step.SCALE: ScaleRequest,
}


class PixiiSettings(ProviderSettings):
    model_config = SettingsConfigDict(env_prefix="PIXII_", extra="ignore")

    base_url: str = "https://api.pixii.ai"
    # contract §10: "poll every 5 seconds"; the first poll at once (a job may be done by then)
    poll_cadence: PollCadence = PollCadence(first_seconds=0.0, every_seconds=5.0)

    @field_validator("base_url")
    @classmethod
    def _host_only(cls, v: str) -> str:
        """The client's paths carry the ``/v1/api`` prefix (contract §1): a base URL given with it
        is the same API."""
        return v.strip().rstrip("/").removesuffix("/v1/api")


class PixiiProvider(Provider):
    name = "pixii"
    display_name = "Pixii"
    capabilities = frozenset({Step.IMAGES, Step.APLUS, Step.SCALE})
    limits = ProviderLimits(
        route_groups=(RouteLimit(group=SUBMIT_GROUP, requests=10, per_seconds=60.0),),
        daily_requests=500,
        daily_counts="submissions",
        # ASSUMPTION (contract §10/§11): no concurrency limit is documented; live jobs take ~2 min
        # and 10 submissions/min are allowed, so ~20 jobs are in flight at steady state, and a slot
        # is held until a poll sees its job done. At 30 the cap itself throttled the benchmark's
        # 100 submissions (x10, 2-min jobs) from the third window on, each window's later than the
        # last. 50 leaves the rate as the only bound for jobs of up to 4 min.
        max_inflight_jobs=50,
        max_batch_size=1,  # one ASIN per request
    )
    prices = (
        # ASSUMPTION (contract §4/§12): Listing Builder price unpublished; read credit_cost from the job.
        Price(step=Step.IMAGES, item="*", credits=None, note="unpublished; credit_cost of the job"),
        Price(step=Step.APLUS, item="A+ Basic", credits=20, unit="type"),
        Price(step=Step.APLUS, item="A+ Premium", credits=20, unit="type"),
        Price(step=Step.APLUS, item="A+ Premium Mobile", credits=30, unit="type"),
        # ASSUMPTION (contract §6/§12): Scale price unpublished; read credit_cost from the job.
        Price(step=Step.SCALE, item="*", credits=None, note="unpublished; credit_cost of the job"),
    )
    settings_class = PixiiSettings
    default_styles = ("amazon_listing",)
    # ASSUMPTION: the host of Pixii's signed output URLs is not documented; Pixii's own domains.
    output_hosts = ("pixii.ai", "api.pixii.ai", "cdn.pixii.ai")
    sandbox = "providers.pixii.sandbox:PixiiSandbox"
    sandbox_key = "pk_test_sandbox"

    def __init__(
        self, http: Any, settings: ProviderSettings | None = None, *, throttle: Throttle = no_throttle
    ) -> None:
        super().__init__(http, settings, throttle=throttle)
        self.client = PixiiClient(
            http,
            base_url=self.settings.base_url,
            auth=BearerAuth(self.settings.api_key),
            throttle=throttle,
            secrets=self.settings.secret_values(),
            timeout=self.settings.timeout_seconds,
            retry=self.settings.http_retry,
        )
        self._known_jobs: set[str] = set()
        self._remaining_credits: int | None = None

    # ---- building requests (pure) ----

    def build_requests(self, step: Step, ctx: StepContext) -> list[BaseModel]:
        if step == Step.IMAGES:
            styles = [ctx.style] if ctx.style else self.styles_for(ctx.image_options)
            return [self._listing_request(ctx, s) for s in dict.fromkeys(styles)]
        if step == Step.APLUS:
            return [self._aplus_request(ctx)]
        if step == Step.SCALE:
            return [self._scale_request(ctx)]
        raise RequestValidationError(f"Pixii does not run the {step} step", provider=PROVIDER, field="step")

    def _listing_request(self, ctx: StepContext, style: str) -> ListingBuilderRequest:
        urls = ctx.product.image_urls
        data = {
            "asin": ctx.product.asin,
            "country_code": ctx.product.country_code,
            "listing_type": style,
            "main_image_url": urls[0] if urls else None,
            "other_image_urls": urls[1:] or None,
        }
        return KIT.build(ListingBuilderRequest, _present(data), where=f"products[{ctx.product.asin}]")

    def _aplus_request(self, ctx: StepContext) -> APlusRequest:
        product = ctx.product
        main = ctx.main_image_url or (product.image_urls[0] if product.image_urls else None)
        others = [u for u in product.image_urls if u != main]
        data = {
            "asin": product.asin,
            "country_code": product.country_code,
            "types": list(ctx.aplus_options.types),
            "main_image_url": main,
            "other_image_urls": others or None,
            "user_prompt": _aplus_prompt(ctx),
        }
        return KIT.build(APlusRequest, _present(data), where=f"products[{ctx.product.asin}]")

    def _scale_request(self, ctx: StepContext) -> ScaleRequest:
        product, variation, options = ctx.product, ctx.variation, ctx.scale_options
        where = f"products[{product.asin}]"
        if variation is None:
            raise RequestValidationError(
                f"{where}.variation is required for Pixii Scale", provider=PROVIDER, field="variation"
            )
        reference = ctx.main_image_url or (product.image_urls[0] if product.image_urls else None)
        if not reference:
            raise RequestValidationError(
                f"{where}.image_urls: Pixii Scale needs a reference image (the images step's main image "
                "or product.image_urls[0])",
                provider=PROVIDER,
                field="items.preview_url",
            )
        attrs = ", ".join(f"{k}: {v}" for k, v in variation.attributes.items() if str(v).strip())
        describe = f"Variation {variation.asin} of {product.title}" + (f" ({attrs})" if attrs else "")
        if options.mode == "language":
            language = (options.language or "").strip()
            if not language:
                raise RequestValidationError(
                    f"{where}: scale_options.language is required for scale mode 'language'",
                    provider=PROVIDER,
                    field="scale_options.language",
                )
            prompt = f"Translate all text on the visual into {language}. {describe}."
        else:
            prompt = f"{describe}. Keep the reference visual identity and show this variation's attributes."
        data = {
            "asin": variation.asin,
            "country_code": product.country_code,
            "scale_mode": options.mode,
            "main_image_input": reference,
            "user_prompt": prompt,
            "items": [
                {"preview_url": reference, "platform": t.platform, "asset_type": t.asset_type}
                for t in options.targets
            ],
        }
        return KIT.build(ScaleRequest, _present(data), where=f"products[{ctx.product.asin}]")

    def estimate_credits(self, step: Step, request: BaseModel) -> int | None:
        if isinstance(request, APlusRequest):
            return sum(APLUS_CREDITS[t] for t in request.types)
        return None  # Listing Builder and Scale prices are unpublished (contract §12)

    def price_key(self, step: Step, request: BaseModel) -> str:
        """ASSUMPTION (contract §12): a Listing Builder job's price depends on its listing type (how
        many images it makes), a Scale job's on its mode and its items; nothing else."""
        if isinstance(request, ListingBuilderRequest):
            return f"listing_builder:{request.listing_type}"
        if isinstance(request, ScaleRequest):
            items = sorted(f"{i.platform}/{i.asset_type}" for i in request.items)
            return f"scale:{request.scale_mode}:{len(items)}:{','.join(items)}"
        return super().price_key(step, request)

    # ---- submitting ----

    async def submit(self, step: Step, request: BaseModel) -> JobRef:
        model = _MODEL_BY_STEP.get(step)
        if model is None:
            raise RequestValidationError(
                f"Pixii does not run the {step} step", provider=PROVIDER, field="step"
            )
        req = KIT.build(model, request)  # a wrong model fails validation
        kind = _KIND_BY_STEP[step]
        started = time.time()
        try:
            if isinstance(req, ListingBuilderRequest):
                resp = await self.client.listing_builder(req)
            elif isinstance(req, APlusRequest):
                resp = await self.client.a_plus(req)
            else:
                resp = await self.client.scale(req)
        except RetryableError as exc:
            if resend_is_safe(exc):
                raise  # a 429, or the connection never opened: nothing reached Pixii
            # The request may have reached Pixii and created (and charged) a job: adopt it if so.
            ref = await self._reconcile(step, req, kind, started, exc)
            if ref is None:
                exc.resend_safe = True  # the job list was read and has no such job
                raise
            return ref
        return self._ref(step, req, kind, resp)

    def inputs(self, step: Step) -> frozenset[str]:
        """Listing Builder reads neither; A+ reads the copy (``user_prompt``) and the main image;
        Scale only the reference image."""
        return {
            Step.IMAGES: frozenset(),
            Step.APLUS: frozenset({"copy", "image"}),
            Step.SCALE: frozenset({"image"}),
        }.get(step, frozenset())

    def retry_request(self, step: Step, request: BaseModel, result: JobResult) -> BaseModel | None:
        """A+ only: the types that failed (each A+ type is priced and refunded on its own, contract §5).
        Listing Builder and Scale images cannot be asked for one by one."""
        if not isinstance(request, APlusRequest) or not result.errors:
            return None
        failed_labels = {e.label for e in result.errors}
        failed = [t for t in request.types if _slug(t) in failed_labels]
        if not failed or len(failed) == len(request.types):
            return None
        return request.model_copy(update={"types": failed})

    def _ref(
        self, step: Step, req: Any, kind: str, resp: SubmitResponse, *, reconciled: bool = False
    ) -> JobRef:
        self._known_jobs.add(resp.job_id)
        remaining = _int(resp.remaining_credits)
        if remaining is not None:
            self._remaining_credits = remaining
        meta: dict[str, Any] = {
            "asin": req.asin,
            "job_type": resp.job_type,
            "created_at": resp.created_at,
            "remaining_credits": remaining,
            "estimate": self.estimate_credits(step, req),
            "reconciled": reconciled,
        }
        if isinstance(req, ListingBuilderRequest):
            meta["listing_type"] = req.listing_type
        elif isinstance(req, APlusRequest):
            meta["types"] = list(req.types)
        else:
            meta["items"] = len(req.items)
        return JobRef(
            provider=self.name, step=step, job_id=resp.job_id, kind=kind, balance_after=remaining, meta=meta
        )

    async def _reconcile(
        self, step: Step, req: Any, kind: str, started: float, exc: ProviderError
    ) -> JobRef | None:
        """Find a job for the same ASIN created since just before the submit that we do not know yet.
        The job list's transient failures are retried by the HTTP layer (``providers.retries``)."""
        since = started - RECONCILE_SKEW_SECONDS
        try:
            found = await self._find_job(step, req, kind, since, exc)
            if found is None and self.settings.settle_seconds:
                # a gateway's 5xx, a timeout or a dropped connection: Pixii may still be creating the
                # job; an empty list is believed only once it has had time to appear
                await asyncio.sleep(self.settings.settle_seconds)
                found = await self._find_job(step, req, kind, since, exc)
            return found
        except ProviderError as lookup:
            logger.warning("pixii reconciliation for %s failed: %s", req.asin, lookup)
        # The job may exist and be charged, and we cannot tell: resending could pay twice.
        raise SubmitOutcomeUnknown(
            f"submit outcome unknown after {type(exc).__name__} and the job list could not be read: "
            "credits may have been debited",
            provider=PROVIDER,
            possible_credits=self.estimate_credits(step, req),
            detail=f"check GET /v1/api/jobs?asin={req.asin} before resubmitting",
        ) from exc

    async def find_submitted(self, step: Step, request: BaseModel, since: float) -> JobRef | None:
        """Look the job up by ASIN (contract §8), as after a lost submit response."""
        req = KIT.build(_MODEL_BY_STEP[step], request)
        lost = ProviderError("an earlier run stopped before the submit's answer was saved", provider=PROVIDER)
        return await self._find_job(step, req, _KIND_BY_STEP[step], since - RECONCILE_SKEW_SECONDS, lost)

    async def _find_job(
        self, step: Step, req: Any, kind: str, since: float, exc: ProviderError
    ) -> JobRef | None:
        """The unknown job of the same kind for this ASIN created since ``since``, or None: the list
        was read and no job of ours exists, so resending is safe."""
        async for job in self.client.iter_jobs(req.asin):
            created = parse_time(job.created_at)
            if created is None:
                continue
            if created < since:
                break  # listed most recent first (contract §8)
            if job.id in self._known_jobs or not _same_kind(kind, job.job_type):
                continue
            logger.warning(
                "pixii submit for %s failed (%s) but job %s exists: adopting it",
                req.asin,
                type(exc).__name__,
                job.id,
            )
            resp = SubmitResponse(
                job_id=job.id,
                job_type=job.job_type,
                status=job.status or "pending",
                created_at=job.created_at,
            )
            return self._ref(step, req, kind, resp, reconciled=True)
        return None

    # ---- waiting ----

    async def wait(self, ref: JobRef) -> JobResult:
        job = await self.poll(
            ref, self.settings.cadence(), lambda: self.client.get_job(ref.job_id), "pending"
        )
        return self._result(ref, job)

    async def refresh(self, ref: JobRef) -> JobResult | None:
        """Re-read the job for fresh signed URLs; NotFound once past the 7-day retention."""
        job = await self.client.get_job(ref.job_id)
        return self._result(ref, job) if job.finished else None

    async def balance(self) -> int | None:
        # ASSUMPTION (contract §12): no balance endpoint; report the last remaining_credits seen.
        return self._remaining_credits

    async def check_access(self) -> int | None:
        """No account endpoint exists (contract §12): listing the jobs of an ASIN (§8) is free,
        authenticated and not rate-limited, and answers 401 UNAUTHORIZED for a rejected key."""
        await self.client.list_jobs(PREFLIGHT_ASIN, limit=1)
        return None

    def _result(self, ref: JobRef, job: Job) -> JobResult:
        charged, refunded = _int(job.credit_cost), _int(job.credits_refunded) or 0
        if job.status == "failed":
            message = job.error_message or f"Pixii job {job.id} failed" + (
                f" ({job.error_code})" if job.error_code else ""
            )
            return JobResult(
                ref=ref,
                status="failed",
                credits_charged=charged,
                credits_refunded=refunded,
                error_code=job.error_code,
                error_message=message,
            )
        expires = (parse_time(job.completed_at) or time.time()) + URL_TTL_SECONDS
        ads = job.output.ads if job.output else []
        aplus = ref.kind == "a_plus" or (
            ref.kind not in _KIND_BY_STEP.values() and any(a.is_aplus for a in ads)
        )
        outputs: list[OutputRef] = []
        errors: list[ItemError] = []
        if aplus:
            requested = list(ref.meta.get("types") or [])
            seen: set[str] = set()
            for i, ad in enumerate(ads):
                kind = ad.type or (requested[i] if i < len(requested) else f"variant {i + 1}")
                seen.add(kind)
                slug = _slug(kind)
                if not ad.url:
                    errors.append(_item_error(slug, ad))
                    continue
                outputs.append(OutputRef(url=ad.url, label=f"{slug}-preview", expires_at=expires))
                outputs += [
                    OutputRef(url=u, label=f"{slug}-module-{n}", expires_at=expires)
                    for n, u in enumerate(ad.modules or [], start=1)
                    if u
                ]
            errors += [
                ItemError(label=_slug(t), message=f"{t} missing from the job output")
                for t in requested
                if t not in seen
            ]
        else:
            # one product may run several listing types: their images must not share labels (archive keys)
            prefix = "scale" if ref.kind == "scale" else str(ref.meta.get("listing_type") or "image")
            for n, ad in enumerate(ads, start=1):
                label = f"{prefix}-{n}"
                if ad.url:
                    outputs.append(OutputRef(url=ad.url, label=label, expires_at=expires))
                else:
                    errors.append(_item_error(label, ad))
        return JobResult(
            ref=ref,
            status="completed",
            outputs=outputs,
            credits_charged=charged,
            credits_refunded=refunded,
            errors=errors,
        )


# --- helpers -----------------------------------------------------------------------------------


def _present(data: dict[str, Any]) -> dict[str, Any]:
    """Pixii rejects empty optional fields: leave them out."""
    return {k: v for k, v in data.items() if v is not None}


def _aplus_prompt(ctx: StepContext) -> str:
    """Guidance from the generated copy when there is some, else from the catalog row; never empty."""
    parts: list[str] = []
    copy = ctx.copy_result
    if copy is not None:
        if copy.title and copy.title.strip():
            parts.append(f"Product: {copy.title.strip()}")
        bullets = [b.strip() for b in copy.bullets if b.strip()]
        if bullets:
            parts.append("Key features:\n" + "\n".join(f"- {b}" for b in bullets))
        keywords = [k.strip() for k in copy.keywords if k.strip()]
        if keywords:
            parts.append("Keywords: " + ", ".join(keywords))
    if not parts:
        parts.append(f"Product: {ctx.product.title.strip() or ctx.product.asin}")
        if ctx.product.description and ctx.product.description.strip():
            parts.append(ctx.product.description.strip())
    return "\n".join(parts)


def _same_kind(kind: str, job_type: str | None) -> bool:
    if not job_type:
        return True
    if kind == "listing_builder":
        return job_type == JOB_TYPE_LISTING_BUILDER
    if kind == "scale":
        return job_type == JOB_TYPE_SCALE
    # ASSUMPTION (contract §5): the A+ job_type string is undocumented; anything that is not one
    # of the two documented types may be an A+ job.
    return job_type not in (JOB_TYPE_LISTING_BUILDER, JOB_TYPE_SCALE)


def _slug(text: str) -> str:
    """'A+ Premium Mobile' -> 'a-plus-premium-mobile'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower().replace("+", "-plus-")).strip("-")


def _item_error(label: str, ad: Any) -> ItemError:
    code = ad.error.code if ad.error else None
    message = ad.error.message if ad.error and ad.error.message else "no image was generated"
    return ItemError(label=label, code=code, message=message)


def _int(value: float | None) -> int | None:
    return None if value is None else round(value)
