"""The ProdVisual provider plugin: styled product images (step IMAGES only).

One product becomes one job: a single POST /v1/generate when one style is asked for (it usually
completes inside the POST, so ``wait`` needs no extra request), or one batch with an item per style.
``build_batch`` lets the flow merge many products' items into batches of at most 50; every item keeps
a label in ``JobRef.meta["labels"]`` so outputs, matched to inputs by position, map back to products.

Contract: docs/providers/prodvisual.md (cited below as "contract §N").
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ValidationError, field_validator
from pydantic_settings import SettingsConfigDict

from providers import (
    ItemError,
    JobClock,
    JobRef,
    JobResult,
    MalformedResponse,
    NotFound,
    OutputExpired,
    OutputRef,
    PollCadence,
    Price,
    Provider,
    ProviderLimits,
    RequestValidationError,
    RouteLimit,
    Step,
    StepContext,
    Throttle,
    WebhookSettings,
    no_throttle,
)
from providers.webhooks import WebhookInbox

from .client import API_GROUP, ProdVisualClient, check_style_ids
from .models import (
    MAX_BATCH_ITEMS,
    PLATFORMS,
    PROVIDER,
    BatchRequest,
    BatchStatus,
    GenerateItem,
    GenerateRequest,
    Generation,
    Platform,
    default_labels,
)
from .webhooks import webhook_inbox

logger = logging.getLogger("listingflow.prodvisual")

CREDITS_PER_IMAGE = 1  # published price (contract §2)
_CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}


class ProdVisualSettings(WebhookSettings):
    """``PRODVISUAL_WEBHOOK_URL``: batches finished by ProdVisual's webhook instead of polls
    (``webhooks.py``)."""

    model_config = SettingsConfigDict(env_prefix="PRODVISUAL_", extra="ignore")

    # Paths carry the /v1 prefix (contract §1: base URL https://api.prodvisual.com/v1).
    base_url: str = "https://api.prodvisual.com"
    # ASSUMPTION (contract §9): a single generation polled every 2 s; a batch first after its
    # estimated_time_ms (counted from the submission), then every 5 s
    poll_cadence: PollCadence = PollCadence(first_seconds=2.0, every_seconds=2.0)
    batch_poll_cadence: PollCadence = PollCadence(first_seconds=0.0, every_seconds=5.0)

    @field_validator("base_url")
    @classmethod
    def _host_only(cls, v: str) -> str:
        """The contract's documented form ``https://api.prodvisual.com/v1`` and the bare host are the
        same API: the client's paths carry ``/v1``, so a trailing ``/v1`` is dropped here."""
        return v.strip().rstrip("/").removesuffix("/v1")


def normalize_platform(value: str) -> Platform | None:
    """Map a platform name to a ProdVisual preset id ("Mercado Libre" -> mercadolibre); None if unknown."""
    key = re.sub(r"[\s_\-.]", "", value.strip().lower())
    return next((platform for platform in PLATFORMS if platform == key), None)


MEMBER_SEPARATOR = "|"
"""Separates the product from the item label in a cross-product batch."""


def labeled_items(
    request: GenerateRequest | BatchRequest, prefix: str = ""
) -> list[tuple[str, GenerateItem]]:
    """A built request's items with their labels (``prefix`` e.g. ``"US/B0ABC/"`` to name the product)."""
    if isinstance(request, GenerateRequest):
        return [(prefix + (request.label or default_labels([request.style])[0]), request.item())]
    return [(prefix + label, item) for label, item in zip(request.item_labels(), request.items, strict=True)]


def build_batch(
    items: Iterable[tuple[str, GenerateItem | GenerateRequest]],
    *,
    webhook_url: str | None = None,
    max_items: int = MAX_BATCH_ITEMS,
) -> list[BatchRequest]:
    """Pack labelled items into batches of at most ``max_items`` (<= 50), keeping their order.

    Labels must be unique across all items: they are how each output maps back to its product."""
    pairs = [(label, item.item() if isinstance(item, GenerateRequest) else item) for label, item in items]
    labels = [label for label, _ in pairs]
    if len(set(labels)) != len(labels):
        dup = next(lbl for lbl in labels if labels.count(lbl) > 1)
        raise RequestValidationError(
            f"duplicate item label {dup!r}", provider=PROVIDER, code="LOCAL_VALIDATION", field="labels"
        )
    size = max(1, min(max_items, MAX_BATCH_ITEMS))
    try:
        return [
            BatchRequest(
                items=[i for _, i in pairs[n : n + size]],
                labels=labels[n : n + size],
                webhook_url=webhook_url,
            )
            for n in range(0, len(pairs), size)
        ]
    except ValidationError as exc:
        raise RequestValidationError.from_pydantic(exc, provider=PROVIDER, model="BatchRequest") from None


class ProdVisualProvider(Provider):
    name: ClassVar[str] = "prodvisual"
    display_name: ClassVar[str] = "ProdVisual"
    capabilities: ClassVar[frozenset[Step]] = frozenset({Step.IMAGES})
    limits: ClassVar[ProviderLimits] = ProviderLimits(
        route_groups=(RouteLimit(group=API_GROUP, requests=60, per_seconds=60.0),),
        daily_requests=10_000,
        daily_counts="requests",
        # ASSUMPTION (contract §4, undocumented). The rate limiter keeps submits and polls inside
        # 60 requests/minute; this cap only must not throttle below it: up to 30 batches/min (a
        # submit + a poll each) x a few seconds per batch.
        max_inflight_jobs=8,
        max_batch_size=MAX_BATCH_ITEMS,
    )
    prices: ClassVar[tuple[Price, ...]] = (
        Price(
            step=Step.IMAGES,
            item="*",
            credits=1,
            unit="image",
            note="1 credit per successful generation, any style/platform/format (ASSUMPTION contract §5); "
            "batches charge every item at submission and refund failed items (contract §6)",
        ),
    )
    settings_class: ClassVar[type[ProdVisualSettings]] = ProdVisualSettings
    settings: ProdVisualSettings
    default_styles: ClassVar[tuple[str, ...]] = ("white_bg",)
    output_hosts: ClassVar[tuple[str, ...]] = ("cdn.prodvisual.com",)
    sandbox: ClassVar[str | None] = "providers.prodvisual.sandbox:ProdVisualSandbox"
    sandbox_key: ClassVar[str] = "pv_test_sandbox"

    build_batch = staticmethod(build_batch)
    labeled_items = staticmethod(labeled_items)

    def __init__(
        self,
        http: httpx.AsyncClient,
        settings: ProdVisualSettings | None = None,
        *,
        throttle: Throttle = no_throttle,
    ) -> None:
        super().__init__(http, settings, throttle=throttle)
        self.client = ProdVisualClient(
            http,
            base_url=self.settings.base_url,
            api_key=self.settings.api_key,
            throttle=self.throttle,
            timeout=self.settings.timeout_seconds,
            retry=self.settings.http_retry,
        )
        self._inbox: WebhookInbox | None = None

    # ---- describing work ----

    def build_requests(self, step: Step, ctx: StepContext) -> list[BaseModel]:
        self._check_step(step)
        product = ctx.product
        where = f"products[{product.asin}]"
        image_url = product.image_urls[0] if product.image_urls else None
        if not image_url:
            raise RequestValidationError(
                f"{where}.image_url is required for ProdVisual (the source product image)",
                provider=PROVIDER,
                code="LOCAL_VALIDATION",
                field=f"{where}.image_url",
            )
        platform = normalize_platform(ctx.image_options.platform)
        if platform is None:
            raise RequestValidationError(
                f"image_options.platform {ctx.image_options.platform!r} is not a ProdVisual preset "
                f"({', '.join(PLATFORMS)})",
                provider=PROVIDER,
                code="LOCAL_VALIDATION",
                field="image_options.platform",
            )
        styles = self._styles(ctx)
        if not styles:
            raise RequestValidationError(
                "no style to generate",
                provider=PROVIDER,
                code="LOCAL_VALIDATION",
                field="image_options.styles",
            )
        known = self.client.cached_style_ids  # pure: only a list already fetched is used
        if known is not None:
            check_style_ids(styles, _style_fields(styles), known)
        size = ctx.image_options.size
        dimensions = f"{size}x{size}"
        labels = default_labels(styles)
        try:
            if len(styles) == 1:
                one = GenerateRequest(
                    image_url=image_url,
                    platform=platform,
                    dimensions=dimensions,
                    style=styles[0],
                    label=labels[0],
                )
                return [one]
            items = [
                GenerateItem(image_url=image_url, platform=platform, dimensions=dimensions, style=style)
                for style in styles
            ]
        except ValidationError as exc:
            problems = [(f"{where}." + ".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
            raise RequestValidationError(
                "invalid ProdVisual request: " + "; ".join(f"{f}: {m}" for f, m in problems),
                provider=PROVIDER,
                code="LOCAL_VALIDATION",
                field=problems[0][0],
            ) from None
        return list(build_batch(zip(labels, items, strict=True)))

    def estimate_credits(self, step: Step, request: BaseModel) -> int | None:
        if isinstance(request, GenerateRequest):
            return 1
        if isinstance(request, BatchRequest):
            return len(request.items)
        return None

    # ---- cross-product batching (contract 1.1) ----

    def merge_requests(self, step: Step, members: list[tuple[str, BaseModel]]) -> list[BaseModel] | None:
        """Several products' image requests packed into batches of up to 50 images: throughput is
        then bounded by 60 requests x 50 images per minute instead of 60 images."""
        self._check_step(step)
        pairs: list[tuple[str, GenerateItem]] = []
        for member, request in members:
            if not isinstance(request, GenerateRequest | BatchRequest):
                raise RequestValidationError(
                    f"ProdVisual cannot batch a {type(request).__name__}",
                    provider=PROVIDER,
                    code="LOCAL_VALIDATION",
                    field="request",
                )
            pairs += labeled_items(request, prefix=f"{member}{MEMBER_SEPARATOR}")
        return list(build_batch(pairs, max_items=self.limits.max_batch_size))

    def inputs(self, step: Step) -> frozenset[str]:
        """Images from the product's own photo: no copy needed, so they start with the copy."""
        return frozenset()

    def retry_request(self, step: Step, request: BaseModel, result: JobResult) -> BaseModel | None:
        """A product's batch of several images: only the items that failed (each is refunded its
        credit, contract §6), under the same labels so their outputs land where they belong."""
        if not isinstance(request, BatchRequest) or not result.errors:
            return None
        failed = {e.label for e in result.errors}
        kept = [
            (label, item)
            for label, item in zip(request.item_labels(), request.items, strict=True)
            if label in failed
        ]
        if not kept or len(kept) == len(request.items):
            return None
        return request.model_copy(update={"items": [i for _, i in kept], "labels": [lbl for lbl, _ in kept]})

    def split_result(self, result: JobResult, member: str) -> JobResult:
        prefix = f"{member}{MEMBER_SEPARATOR}"
        labels = [lbl for lbl in result.ref.meta.get("labels") or [] if lbl.startswith(prefix)]
        outputs = [
            o.model_copy(update={"label": o.label[len(prefix) :]})
            for o in result.outputs
            if o.label.startswith(prefix)
        ]
        errors = [
            e.model_copy(update={"label": e.label[len(prefix) :]})
            for e in result.errors
            if e.label.startswith(prefix)
        ]
        charged = CREDITS_PER_IMAGE * len(labels)
        # ASSUMPTION (contract §6): each failed item is refunded its credit, all of them if the batch failed.
        refunded = (
            charged if result.status == "failed" and not result.outputs else CREDITS_PER_IMAGE * len(errors)
        )
        meta = {**result.ref.meta, "member": member, "labels": [lbl[len(prefix) :] for lbl in labels]}
        return JobResult(
            ref=result.ref.model_copy(update={"meta": meta}),
            status="completed" if outputs else "failed",
            outputs=outputs,
            errors=errors,
            credits_charged=charged,
            credits_refunded=refunded,
            error_code=None if outputs else (errors[0].code if errors else result.error_code),
            error_message=None if outputs else (errors[0].message if errors else result.error_message),
        )

    # ---- I/O ----

    async def submit(self, step: Step, request: BaseModel) -> JobRef:
        self._check_step(step)
        if isinstance(request, GenerateRequest):
            gen = await self.client.generate(request)
            meta = {
                "labels": [labeled_items(request)[0][0]],
                "credits_used": gen.credits_used,
                "response": gen.model_dump(mode="json", exclude_none=True),
            }
            return JobRef(
                provider=self.name,
                step=step,
                job_id=str(gen.id),
                kind="generation",
                credits_at_submit=gen.credits_used,
                balance_after=gen.credits_remaining,
                meta=meta,
            )
        if isinstance(request, BatchRequest):
            inbox = await self._webhooks()
            if inbox is not None:  # sent, not part of the request: the submission's cache key stays the same
                request = request.model_copy(update={"webhook_url": inbox.url})
            sub = await self.client.generate_batch(request)
            if inbox is not None:
                inbox.expect(sub.batch_id)
            used = sub.credits_used if sub.credits_used is not None else len(request.items)
            meta = {
                "labels": request.item_labels(),
                "credits_used": used,
                "webhook": inbox is not None,
                "estimated_time_ms": sub.estimated_time_ms,
                "total_items": len(request.items),
            }
            return JobRef(
                provider=self.name,
                step=step,
                job_id=sub.batch_id,
                kind="batch",
                credits_at_submit=used,
                balance_after=sub.credits_remaining,
                meta=meta,
            )
        raise RequestValidationError(
            f"ProdVisual cannot submit a {type(request).__name__}",
            provider=PROVIDER,
            code="LOCAL_VALIDATION",
            field="request",
        )

    async def recover_lost(self, step: Step, request: BaseModel, *, price: int | None) -> JobRef | None:
        """A batch whose submit answer was lost: with a webhook, its completion event still reaches this
        run's receiver (the URL went out with the batch). It is taken as this batch's when its items
        match this request's, in number and, position by position, in style (contract §11)."""
        if not isinstance(request, BatchRequest) or self._inbox is None:
            return None
        styles = [item.style for item in request.items]

        def same_batch(data: dict[str, Any]) -> bool:
            try:
                batch = BatchStatus.model_validate(data)
            except ValidationError:
                return False
            got = [r.style for r in batch.results]
            return (batch.total_items or len(got)) == len(styles) and got == styles

        job_id = await self._inbox.claim(same_batch, timeout=self.settings.max_wait_seconds)
        if job_id is None:
            return None
        logger.warning(
            "ProdVisual batch %s recovered from its webhook event after its submit answer was lost", job_id
        )
        meta = {
            "labels": request.item_labels(),
            "credits_used": price,
            "webhook": True,
            "total_items": len(styles),
            "reconciled": True,
        }
        return JobRef(
            provider=self.name, step=step, job_id=job_id, kind="batch", credits_at_submit=price, meta=meta
        )

    async def wait(self, ref: JobRef) -> JobResult:
        if ref.kind == "generation" and ref.meta.get("response"):
            try:
                result = self._result(ref, Generation.model_validate(ref.meta["response"]))
            except MalformedResponse:
                result = None  # completed without a URL: ask the status endpoint instead
            if result is not None:  # completed inside the POST: no request needed
                return result
        inbox = self._inbox if self._inbox is not None and self._inbox.expects(ref.job_id) else None
        clock, delays = self.job_clock(ref), self._cadence(ref, inbox).delays()
        try:
            event = await self._pause(clock, next(delays), "pending", inbox, first=True)
            while True:
                if event is not None and (result := self._event_result(ref, event)) is not None:
                    return result
                state = await self.client.generation(ref.job_id)
                if (result := self._result(ref, state)) is not None:
                    return result
                event = await self._pause(clock, next(delays), state.status, inbox)
        finally:
            if inbox is not None:
                inbox.forget(ref.job_id)

    async def refresh(self, ref: JobRef) -> JobResult | None:
        """Re-read the job for its output URLs. ASSUMPTION (contract §9): after the 7-day expiry the id
        may answer 404; the outputs are then gone for good."""
        try:
            state = await self.client.generation(ref.job_id)
        except NotFound as exc:
            raise OutputExpired(
                f"job {ref.job_id} is no longer readable (outputs expire after 7 days)",
                provider=PROVIDER,
                code=exc.code,
                status=exc.status,
            ) from None
        return self._result(ref, state)

    balance_endpoint = True

    async def balance(self) -> int | None:
        return (await self.client.credits()).credits_remaining

    async def check_access(self) -> int | None:
        """GET /v1/account/credits: free, and 401 for a rejected key (contract §2/§3)."""
        return await self.balance()

    def _styles(self, ctx: StepContext) -> list[str]:
        """The style ids a product's images step asks for: its variation's, else the run's."""
        return [ctx.style] if ctx.style else self.styles_for(ctx.image_options)

    async def acheck_product(self, step: Step, ctx: StepContext) -> str | None:
        """A row's style ids against the style list, fetched (once, cached) only when a row asks for
        a style that is not publicly documented; then the pure check."""
        styles = self._styles(ctx)
        try:
            await self.client.check_styles(styles, _style_fields(styles))
        except RequestValidationError as exc:
            return exc.message
        return self.check_product(step, ctx)

    async def aclose(self) -> None:
        if self._inbox is not None:
            await self._inbox.aclose()

    async def _webhooks(self) -> WebhookInbox | None:
        """The run's webhook receiver, started at the first batch (None when webhooks are not set up)."""
        if not self.settings.webhook_url:
            return None
        if self._inbox is None:
            self._inbox = webhook_inbox(
                self.settings.webhook_url, self.settings.webhook_listen, self.settings.api_key
            )
        await self._inbox.start()
        return self._inbox

    def _event_result(self, ref: JobRef, data: dict[str, Any]) -> JobResult | None:
        """The result a webhook carries, when it is this batch, finished, with a result per item;
        otherwise None and the caller confirms with a status request (contract §11)."""
        if ref.kind != "batch":
            return None
        try:
            state = BatchStatus.model_validate(data)
        except ValidationError:
            return None
        if (
            state.id != ref.job_id
            or not state.done
            or len(state.results) != len(ref.meta.get("labels") or [])
        ):
            return None
        try:
            return self._result(ref, state)
        except MalformedResponse:
            return None

    # ---- helpers ----

    def _check_step(self, step: Step) -> None:
        if step not in self.capabilities:
            raise RequestValidationError(
                f"ProdVisual does not run step {step}",
                provider=PROVIDER,
                code="LOCAL_VALIDATION",
                field="step",
            )

    def _cadence(self, ref: JobRef, inbox: WebhookInbox | None) -> PollCadence:
        """With webhooks, the event ends each pause and a poll comes only when it does not (or says
        too little). A batch is first polled when its estimated time is up (the contract's advice,
        also when ``poll_interval_seconds`` sets the interval of the polls after it): polling earlier
        finds it unfinished, later leaves it idle."""
        settings = self.settings
        if inbox is not None:
            every = settings.webhook_reconcile_seconds
            return PollCadence(first_seconds=every, every_seconds=every)
        if ref.kind != "batch":
            return settings.cadence()
        cadence = settings.batch_poll_cadence.fixed(settings.poll_interval_seconds)
        estimate = ref.meta.get("estimated_time_ms")
        if estimate is None:
            return cadence
        first = max(0.0, ref.submitted_at + estimate / 1000 - time.time())
        return cadence.model_copy(update={"first_seconds": first})

    async def _pause(
        self, clock: JobClock, seconds: float, status: str, inbox: WebhookInbox | None, *, first: bool = False
    ) -> dict[str, Any] | None:
        """Sleep, or with webhooks wait up to ``seconds`` for the job's event (returned when it comes)."""
        if inbox is None:
            await clock.pause(seconds, status, first=first)
            return None
        event = await inbox.wait(clock.job_id, min(seconds, clock.left()))
        if event is None and seconds > clock.left():
            await clock.pause(seconds, status, first=first)  # past the deadline: raises WaitTimeout
        return event

    def _result(self, ref: JobRef, state: Generation | BatchStatus) -> JobResult | None:
        """The finished job's result, or None while it is still running."""
        if not state.done:
            return None
        if isinstance(state, BatchStatus):
            return self._batch_result(ref, state)
        return self._single_result(ref, state)

    def _single_result(self, ref: JobRef, gen: Generation) -> JobResult:
        label = (ref.meta.get("labels") or [f"{gen.style or 'image'}-1"])[0]
        charged = gen.credits_used if gen.credits_used is not None else ref.meta.get("credits_used")
        if gen.status == "failed":
            code, message = _error_of(gen, "generation_failed")
            # ASSUMPTION (contract §5): failed generations are not charged, or are refunded.
            return JobResult(
                ref=ref,
                status="failed",
                credits_charged=charged,
                credits_refunded=charged or 0,
                errors=[ItemError(label=label, code=code, message=message)],
                error_code=code,
                error_message=message,
            )
        if not gen.output_url:
            raise MalformedResponse(
                f"generation {gen.id} is completed without an output_url", provider=PROVIDER
            )
        return JobResult(ref=ref, status="completed", outputs=[_output(gen, label)], credits_charged=charged)

    def _batch_result(self, ref: JobRef, batch: BatchStatus) -> JobResult:
        labels: list[str] = list(ref.meta.get("labels") or [])
        labels += [f"item-{n + 1}" for n in range(len(labels), len(batch.results))]
        outputs: list[OutputRef] = []
        errors: list[ItemError] = []
        for n, label in enumerate(labels):
            item = batch.results[n] if n < len(batch.results) else None
            if item is not None and item.status == "completed" and item.output_url:
                outputs.append(_output(item, label))
            elif item is None:
                errors.append(
                    ItemError(label=label, code="missing_result", message="no result at this position")
                )
            else:
                code, message = _error_of(
                    item, "generation_failed" if item.status == "failed" else "incomplete"
                )
                errors.append(ItemError(label=label, code=code, message=message))
        charged = ref.meta.get("credits_used")
        charged = charged if charged is not None else batch.credits_used
        failed = batch.status == "failed" or not outputs
        if batch.credits_refunded is not None:
            refunded = batch.credits_refunded
        else:
            # ASSUMPTION (contract §6): 1 credit refunded per failed item (all of them if the batch failed).
            refunded = (charged or 0) if batch.status == "failed" else len(errors)
        if not failed:
            return JobResult(
                ref=ref,
                status="completed",
                outputs=outputs,
                errors=errors,
                credits_charged=charged,
                credits_refunded=refunded,
            )
        code, message = _error_of(batch, errors[0].code if errors else "batch_failed")
        if batch.error is None and errors:
            message = errors[0].message
        return JobResult(
            ref=ref,
            status="failed",
            outputs=outputs,
            errors=errors,
            credits_charged=charged,
            credits_refunded=refunded,
            error_code=code,
            error_message=message,
        )


def _style_fields(styles: list[str]) -> list[str]:
    """The parameter each style id came from, as a validation error names it."""
    return [f"image_options.styles.{n}" for n in range(len(styles))]


def _error_of(state: Generation | BatchStatus, default_code: str | None) -> tuple[str, str]:
    """The provider's error, or unknown (contract §9: missing details are treated as unknown)."""
    err = state.error
    code = (err.code if err else None) or default_code or "unknown"
    return code, (err.message if err else None) or f"ProdVisual reported status {state.status}"


def _output(gen: Generation, label: str) -> OutputRef:
    content_type = _CONTENT_TYPES.get((gen.format or "png").lower(), "image/png")
    return OutputRef(
        url=str(gen.output_url), label=label, content_type=content_type, expires_at=gen.expires_epoch()
    )


__all__ = ["ProdVisualProvider", "ProdVisualSettings", "build_batch", "labeled_items", "normalize_platform"]
