"""The plugin contract every provider implements (built-in or installed).

A provider is a class registered under the entry-point group ``listingflow.providers``. It declares
which pipeline steps it can run, its documented limits and prices, and implements two operations per
billable call: ``submit`` (the only call that spends credits; returns a serializable ``JobRef``) and
``wait`` (polls at the provider's advised cadence; returns a typed ``JobResult``).

The contract is versioned by ``PLUGIN_API_VERSION`` (major.minor): the host loads plugins whose major
version matches and reports the rest as incompatible.
"""

from __future__ import annotations

import abc
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Literal, get_args

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from .polling import Completions, JobClock, PollCadence, Polled, poll_job
from .retries import HttpRetry

PLUGIN_API_VERSION = "1.3"  # 1.1: optional cross-product batching (merge_requests/split_result)
# 1.2: optional pre-flight hooks (check_product, check_access) and price_key for learned prices
# 1.3: acheck_product, pre-flight's row check for checks that need a free lookup first


class Step(StrEnum):  # names only: what each step is, is declared once in ``STEPS`` below
    """The four pipeline steps, in chain order."""

    COPY = "copy"
    IMAGES = "images"
    APLUS = "aplus"
    SCALE = "scale"


# --- declared limits and prices ----------------------------------------------------------------


class RouteLimit(BaseModel):
    """``requests`` per ``per_seconds`` for one route group, as the provider documents it."""

    model_config = ConfigDict(frozen=True)

    group: str = Field(description="route group name, e.g. 'submit' or 'ai'")
    requests: int = Field(gt=0)
    per_seconds: float = Field(default=60.0, gt=0)

    @property
    def per_second(self) -> float:
        return self.requests / self.per_seconds


class ProviderLimits(BaseModel):
    model_config = ConfigDict(frozen=True)

    route_groups: tuple[RouteLimit, ...] = ()
    daily_requests: int | None = Field(default=None, description="per-day cap, None if undocumented")
    daily_counts: Literal["submissions", "requests"] = "requests"
    max_inflight_jobs: int = Field(default=10, gt=0, description="jobs submitted and not yet finished")
    max_batch_size: int = Field(default=1, gt=0)

    def group(self, name: str) -> RouteLimit:
        for g in self.route_groups:
            if g.group == name:
                return g
        raise KeyError(name)


class Price(BaseModel):
    """One published price. ``credits=None`` means unknown (unpublished), never free."""

    model_config = ConfigDict(frozen=True)

    step: Step
    item: str = Field(description="what is priced: a style, a type, a platform, '*' for any")
    credits: int | None
    unit: str = "job"
    note: str = ""


# --- provider-neutral step inputs (also the run form's options) -------------------------------


Marketplace = Literal[
    "AE", "AU", "BE", "BR", "CA", "CN", "DE", "EG", "ES", "FR", "GB", "IE", "IN",
    "IT", "JP", "MX", "NL", "PL", "SA", "SE", "SG", "TR", "UK", "US", "ZA",
]  # fmt: skip
MARKETPLACES: frozenset[str] = frozenset(get_args(Marketplace))

CopyPlatform = Literal["amazon", "flipkart", "shopify", "woocommerce", "etsy", "bigcommerce", "general"]
CopyComponent = Literal["title", "bullets", "description", "keywords"]
APlusType = Literal["A+ Basic", "A+ Premium", "A+ Premium Mobile"]


def _every_component() -> list[CopyComponent]:
    return ["title", "bullets", "description", "keywords"]


def _basic_aplus() -> list[APlusType]:
    return ["A+ Basic"]


ScaleMode = Literal["catalog", "inspire", "variation", "language"]
ScalePlatform = Literal["Amazon", "Amazon Mobile", "Shopify", "TikTok"]
ScaleAssetType = Literal["Product Photo", "Main Image"]
SCALE_ALLOWED: dict[str, frozenset[str]] = {
    "Amazon": frozenset({"Product Photo", "Main Image"}),
    "Amazon Mobile": frozenset({"Product Photo", "Main Image"}),
    "Shopify": frozenset({"Product Photo"}),
    "TikTok": frozenset({"Product Photo"}),
}


class Variation(BaseModel):
    """A child ASIN and what distinguishes it (colour, size...)."""

    asin: str = Field(min_length=5, max_length=15, pattern=r"^[A-Za-z0-9]+$")
    attributes: dict[str, str] = Field(default_factory=dict)


class Product(BaseModel):
    """One catalog product, already validated."""

    asin: str = Field(min_length=5, max_length=15, pattern=r"^[A-Za-z0-9]+$")
    country_code: Marketplace
    title: str = Field(min_length=1, max_length=500)
    category: str | None = None
    description: str | None = None
    image_urls: list[str] = Field(default_factory=list)
    variations: list[Variation] = Field(default_factory=list)
    overrides: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.country_code}/{self.asin}"


class ListingCopy(BaseModel):
    title: str | None = None
    bullets: list[str] = Field(default_factory=list)
    description: str | None = None
    keywords: list[str] = Field(default_factory=list)


class CopyOptions(BaseModel):
    platform: CopyPlatform = Field("amazon", title="Platform", description="marketplace the copy targets")
    tone: Literal["professional", "casual", "luxury"] = Field("professional", title="Tone")
    components: list[CopyComponent] = Field(
        default_factory=_every_component,
        title="Components",
        min_length=1,
    )
    seed_keywords: list[str] = Field(default_factory=list, title="Seed keywords")
    target_audience: str | None = Field(None, title="Target audience")


class ImageOptions(BaseModel):
    styles: list[str] = Field(
        default_factory=list,
        title="Styles",
        description="provider style ids (ListingRVA style keys, ProdVisual style ids, Pixii listing "
        "types); empty = the provider's defaults",
    )
    platform: str = Field("amazon", title="Platform", description="platform preset, e.g. amazon")
    size: Literal[1000, 1200, 1500, 2000] = Field(1500, title="Size (px, square)")


class APlusOptions(BaseModel):
    types: list[APlusType] = Field(default_factory=_basic_aplus, title="A+ types", min_length=1, max_length=3)

    @field_validator("types")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("A+ types must be unique")
        return v


class ScaleTarget(BaseModel):
    platform: ScalePlatform = "Amazon"
    asset_type: ScaleAssetType = "Main Image"


class ScaleOptions(BaseModel):
    mode: ScaleMode = Field("variation", title="Scale mode")
    targets: list[ScaleTarget] = Field(
        default_factory=lambda: [ScaleTarget()], title="Platforms and asset types", min_length=1
    )
    language: str | None = Field(None, title="Target language", description="required for language mode")

    @field_validator("targets")
    @classmethod
    def _allowed(cls, v: list[ScaleTarget]) -> list[ScaleTarget]:
        for i, t in enumerate(v):
            if t.asset_type not in SCALE_ALLOWED[t.platform]:
                raise ValueError(f"targets[{i}]: {t.platform} does not support asset_type {t.asset_type}")
        return v


class StepContext(BaseModel):
    """Everything a provider needs to build one step's request for one product."""

    product: Product
    copy_result: ListingCopy | None = None
    main_image_url: str | None = None
    variation: Variation | None = None
    style: str | None = Field(None, description="one style of ImageOptions.styles for this request")
    copy_options: CopyOptions = Field(default_factory=CopyOptions)
    image_options: ImageOptions = Field(default_factory=ImageOptions)
    aplus_options: APlusOptions = Field(default_factory=APlusOptions)
    scale_options: ScaleOptions = Field(default_factory=ScaleOptions)
    prepared: dict[str, Any] = Field(default_factory=dict, description="what prepare() returned")


# --- the steps, declared once ------------------------------------------------------------------


def one_per_product(ctx: StepContext) -> list[StepContext]:
    """The step's requests are built once for the product."""
    return [ctx]


def one_per_variation(ctx: StepContext) -> list[StepContext]:
    """The step's requests are built once per child ASIN; none for a product without variations."""
    return [ctx.model_copy(update={"variation": v}) for v in ctx.product.variations]


def _scale_check(options: ScaleOptions) -> str | None:
    if options.mode == "language" and not options.language:
        return "scale_options.language is required when scale.mode is 'language'"
    return None


@dataclass(frozen=True)
class StepSpec:
    """One pipeline step. The run parameters, the flow's form, catalog overrides, the pipeline's
    graph, the estimate, pre-flight, the CLI and the reports read this table rather than naming
    steps, so a step is added here (plus a ``Step`` name and a provider that implements it)."""

    step: Step
    title: str
    """Its label in reports (the gallery's section title)."""
    provider_title: str
    provider_description: str
    default_provider: str
    options_field: str
    """The run parameter (and ``StepContext`` field) holding its options, e.g. ``copy_options``."""
    options_model: type[BaseModel]
    options_title: str
    produces: str | None = None
    """The output a later step's request can read (``Provider.inputs``): ``"copy"``, ``"image"``."""
    requires: frozenset[str] = frozenset()
    """Outputs it cannot run without, from this run or an earlier one (A+ and Scale need an image)."""
    fan_out: Callable[[StepContext], list[StepContext]] = one_per_product
    """The contexts its requests are built from: one per product, or one per variation (Scale)."""
    check: Callable[[Any], str | None] | None = None
    """A rule on its options that holds only when the step runs; the reason when it does not."""

    @property
    def per_variation(self) -> bool:
        return self.fan_out is one_per_variation


STEPS: tuple[StepSpec, ...] = (
    StepSpec(
        Step.COPY,
        "Listing copy",
        "Listing copy",
        "provider for listing copy",
        "listingrva",
        "copy_options",
        CopyOptions,
        "Listing copy options",
        produces="copy",
    ),
    StepSpec(
        Step.IMAGES,
        "Images",
        "Images",
        "provider for product images",
        "prodvisual",
        "image_options",
        ImageOptions,
        "Image options",
        produces="image",
    ),
    StepSpec(
        Step.APLUS,
        "A+ modules",
        "A+ content",
        "provider for A+ content",
        "pixii",
        "aplus_options",
        APlusOptions,
        "A+ options",
        requires=frozenset({"image"}),
    ),
    StepSpec(
        Step.SCALE,
        "Variations",
        "Variation scaling",
        "provider for variation scaling",
        "pixii",
        "scale_options",
        ScaleOptions,
        "Scale options",
        requires=frozenset({"image"}),
        fan_out=one_per_variation,
        check=_scale_check,
    ),
)
"""In logical order (copy -> images -> A+ -> scale): the order of reports, manifests and the form;
a step runs as soon as the outputs its provider reads exist, whatever its place here."""

STEP_SPECS: dict[Step, StepSpec] = {s.step: s for s in STEPS}
if set(STEP_SPECS) != set(Step) or len(STEP_SPECS) != len(STEPS):
    raise RuntimeError("providers.contract.STEPS must declare every Step exactly once")

STEP_ORDER: tuple[Step, ...] = tuple(s.step for s in STEPS)

# What a step produces that a later step's request can read (``Provider.inputs``).
UPSTREAM_OUTPUTS: dict[str, Step] = {s.produces: s.step for s in STEPS if s.produces}


def producer(output: str) -> Step:
    """The step that produces ``output`` (``"copy"``, ``"image"``)."""
    return UPSTREAM_OUTPUTS[output]


def report_order(step: str) -> tuple[int, str]:
    """Sort key putting steps in the table's order in reports (anything else, e.g. ``*``, after)."""
    return (STEP_ORDER.index(Step(step)) if step in STEP_ORDER else len(STEP_ORDER), step)


# --- job references and results ----------------------------------------------------------------


class HostRecord(BaseModel):
    """What the host running a plugin records about a job, apart from the plugin's own ``meta``.
    Plugins neither read nor write it."""

    run_id: str | None = Field(None, description="the run that submitted the job")
    label: str | None = Field(None, description="the host's name for the submission")
    budget_hold: str | None = Field(None, description="the run budget's hold that the wait settles")
    member: str | None = Field(None, description="set on a batch member's pointer: its id in the merged job")

    @classmethod
    def from_legacy(cls, meta: dict[str, Any]) -> HostRecord:
        """The record an earlier version kept in ``meta`` (cached job references stay readable)."""
        return cls(**{k: meta[k] for k in cls.model_fields if isinstance(meta.get(k), str)})


class JobRef(BaseModel):
    """A submitted job: serializable, so it can be persisted before waiting and resumed later."""

    provider: str
    step: Step
    job_id: str
    kind: str = Field(description="provider-specific job kind, e.g. 'a_plus' or 'batch'")
    submitted_at: float = Field(default_factory=time.time)
    credits_at_submit: int | None = Field(
        None, description="credits this submission was charged, when the submit response says so"
    )
    balance_after: int | None = Field(None, description="account balance the submit response reported")
    outcome: Literal["submitted", "charged_not_retrievable", "unknown"] = Field(
        "submitted",
        description="'submitted': a job to wait on. Otherwise the submit failed after it may "
        "have been processed: charged (the balance shows it) but its job cannot be found, or unknown",
    )
    meta: dict[str, Any] = Field(default_factory=dict, description="the plugin's own record of the job")
    host: HostRecord = Field(default_factory=HostRecord, description="the host's record of the job")

    @model_validator(mode="before")
    @classmethod
    def _legacy_host(cls, data: Any) -> Any:
        """A reference cached by an earlier version keeps the host's record in ``meta`` (it always has
        a ``run_id`` there; a plugin's fresh reference never does)."""
        if (
            isinstance(data, dict)
            and "host" not in data
            and isinstance(data.get("meta"), dict)
            and "run_id" in data["meta"]
        ):
            return {**data, "host": HostRecord.from_legacy(data["meta"])}
        return data

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickling a reference an earlier version cached (Prefect's default result serializer)."""
        fields = state.get("__dict__", {})
        if "host" not in fields:
            state = {
                **state,
                "__dict__": {**fields, "host": HostRecord.from_legacy(fields.get("meta") or {})},
            }
        super().__setstate__(state)

    @property
    def held(self) -> bool:
        """No job to wait on: the submission is held for a person (never resent automatically)."""
        return self.outcome != "submitted"


class OutputRef(BaseModel):
    url: str
    label: str = Field(description="stable name within the job, e.g. 'image-1', 'a-plus-basic-module-2'")
    content_type: str = "image/png"
    expires_at: float | None = None


class ItemError(BaseModel):
    label: str
    code: str | None = None
    message: str = ""


class JobResult(BaseModel):
    ref: JobRef
    status: Literal["completed", "failed"]
    outputs: list[OutputRef] = Field(default_factory=list)
    copy_result: ListingCopy | None = None
    credits_charged: int | None = Field(None, description="None when the provider does not say")
    credits_refunded: int = 0
    errors: list[ItemError] = Field(default_factory=list)
    error_code: str | None = None
    error_message: str | None = None

    @property
    def net_credits(self) -> int | None:
        return None if self.credits_charged is None else self.credits_charged - self.credits_refunded


# --- settings and the plugin base class --------------------------------------------------------


class ProviderSettings(BaseSettings):
    """Base URL and credential for one provider; subclasses set the env prefix (``PIXII_`` ...)."""

    model_config = SettingsConfigDict(
        extra="ignore", env_file=".env", env_file_encoding="utf-8", env_nested_delimiter="__"
    )

    base_url: str
    api_key: SecretStr | None = Field(None, description="credential; never logged")
    timeout_seconds: float = Field(60.0, gt=0, le=600)
    poll_interval_seconds: float | None = Field(None, gt=0, description="override the advised cadence")
    poll_cadence: PollCadence = Field(
        default_factory=PollCadence,
        description="the provider's advised cadence (<PREFIX>POLL_CADENCE__FIRST_SECONDS ...)",
    )
    max_wait_seconds: float = Field(
        900.0, gt=0, description="give up waiting this long after the job's submission (it stays resumable)"
    )
    http_retry: HttpRetry = Field(
        default_factory=HttpRetry,
        description="retries of transient HTTP failures "
        "(<PREFIX>HTTP_RETRY__MAX_ATTEMPTS ...); paid submissions are never retried here",
    )
    settle_seconds: float = Field(
        10.0,
        ge=0,
        le=600,
        description="after a paid request's answer was lost, how long a job list that does not show it yet "
        "is not trusted: the provider may still be processing the request",
    )

    def secret_values(self) -> list[str]:
        return [self.api_key.get_secret_value()] if self.api_key else []

    def cadence(self) -> PollCadence:
        """The poll cadence in force: ``poll_interval_seconds`` when set, else the advised one."""
        return self.poll_cadence.fixed(self.poll_interval_seconds)

    @model_validator(mode="after")
    def _api_key_from_secret_block(self) -> ProviderSettings:
        """Without ``<PREFIX>API_KEY``, read the Prefect Secret block (``secret_block_name``) that
        ``listingflow bootstrap`` creates. Asked only when a Prefect API is configured (never starts an
        ephemeral server); no block or no server leaves the key unset, which the provider reports as a
        credential error."""
        block = secret_block_name(type(self))
        if self.api_key is not None or block is None:
            return self
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            return self
        try:
            from prefect.blocks.system import Secret

            # `_sync` is prefect's async_dispatch switch (not in load's signature): load synchronously
            # even when settings are built inside a running event loop
            loaded: Any = Secret.load(block, _sync=True)  # type: ignore[call-arg]
            value = loaded.get()
        except Exception:  # noqa: BLE001 - a missing block or an unreachable server: no key
            return self
        if value:
            self.api_key = SecretStr(str(value))
        return self


def secret_block_name(settings_class: type[ProviderSettings]) -> str | None:
    """The Prefect Secret block holding a provider's credential, named from the same env prefix as its
    variable (``PIXII_`` -> ``PIXII_API_KEY`` and ``pixii-api-key``): the one name the settings read
    and ``listingflow bootstrap`` and the deployments' pull step write and load. None without a prefix."""
    prefix = str(settings_class.model_config.get("env_prefix") or "").rstrip("_").lower()
    return f"{prefix}-api-key" if prefix else None


class WebhookSettings(ProviderSettings):
    """A provider that can finish jobs by signed webhook (``providers/webhooks.py``) instead of polls."""

    webhook_url: str | None = Field(
        None,
        description="public URL the provider POSTs finished jobs to (routed to webhook_listen); "
        "'auto' = a loopback listener on a port the OS picks (sandboxes). Unset: jobs are polled",
    )
    webhook_listen: str = Field("0.0.0.0:8787", description="host:port the webhook receiver listens on")
    webhook_reconcile_seconds: float = Field(
        60.0, gt=0, description="with webhooks, poll a job whose event has not come after this long"
    )

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, v: str | None) -> str | None:
        if v is None or v.strip() in ("", "none", "off"):
            return None
        v = v.strip()
        if v != "auto" and not re.match(r"^https?://[^/\s]+", v):
            prefix = str(cls.model_config.get("env_prefix") or "")
            raise ValueError(f"{prefix}WEBHOOK_URL must be an http(s) URL or 'auto'")
        return v


Throttle = Callable[[list[str]], Awaitable[Callable[[], None] | None]]
"""Awaited before every request with the route groups it counts against. It may return a callable to
call once the request's answer (or its failure) is in: a provider counts the request when it arrives,
somewhere between sending and answering, so a rate window measured from the answer never overlaps the
provider's. A throttle must not depend on it being called (a plugin's own code may not)."""


async def no_throttle(groups: list[str]) -> None:  # the default throttle
    return None


class Provider(abc.ABC):
    """Base class for provider plugins."""

    name: ClassVar[str]
    display_name: ClassVar[str]
    api_version: ClassVar[str] = PLUGIN_API_VERSION
    capabilities: ClassVar[frozenset[Step]]
    limits: ClassVar[ProviderLimits]
    prices: ClassVar[tuple[Price, ...]]
    settings_class: ClassVar[type[ProviderSettings]]
    default_styles: ClassVar[tuple[str, ...]] = ()
    output_hosts: ClassVar[tuple[str, ...]] = ()
    """Hosts the provider serves outputs from; downloads from anywhere else are refused."""
    balance_endpoint: ClassVar[bool] = False
    """``balance()`` reads the account's live balance from the provider (a free request). Only then can
    a run tell from the balance whether an ambiguous submission was charged (``flows.reconcile``)."""
    sandbox: ClassVar[str | None] = None
    """``module:Class`` of the local sandbox that plays this provider's test key."""
    sandbox_key: ClassVar[str] = ""
    """The credential the sandbox accepts (a test-key prefix, e.g. ``pk_test_``)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        settings: ProviderSettings | None = None,
        *,
        throttle: Throttle = no_throttle,
    ) -> None:
        self.http = http
        self.settings = settings or self.settings_class()
        self.throttle = throttle
        self.created_at = time.time()
        self.completions = Completions()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.settings.base_url}>"

    # ---- describing work (pure, no I/O) ----

    def supports(self, step: Step) -> bool:
        return step in self.capabilities

    def styles_for(self, options: ImageOptions) -> list[str]:
        return list(options.styles or self.default_styles)

    @abc.abstractmethod
    def build_requests(self, step: Step, ctx: StepContext) -> list[BaseModel]:
        """Validated request models for one product's step (one per job); raises
        ``RequestValidationError`` naming the field before anything is sent."""

    @abc.abstractmethod
    def estimate_credits(self, step: Step, request: BaseModel) -> int | None:
        """Credits the request should cost from published prices; None when unpublished."""

    def price_key(self, step: Step, request: BaseModel) -> str:
        """Requests with the same key cost the same. A run with a budget learns an unpublished price
        (``estimate_credits`` None) from the first job of each key and submits such a job alone
        until then; a key that is too coarse lets a dearer job pass as the cheaper one. Default: the
        step and the request type."""
        return f"{step}:{type(request).__name__}"

    def check_product(self, step: Step, ctx: StepContext) -> str | None:
        """Why this provider cannot serve ``ctx.product`` at ``step`` (one line naming the field), or
        None. Pre-flight asks before anything is paid for the product, with placeholders for what
        earlier steps produce (``ctx.copy_result``, ``ctx.main_image_url``, ``ctx.prepared``).
        Default: the step's requests are built, and a validation error is the reason."""
        from .errors import ProviderError

        try:
            self.build_requests(step, ctx)
        except ProviderError as exc:
            return exc.message
        return None

    async def acheck_product(self, step: Step, ctx: StepContext) -> str | None:
        """``check_product`` for checks that need a free lookup first (e.g. a list of valid ids the
        provider publishes). Pre-flight calls this one. Default: ``check_product``."""
        return self.check_product(step, ctx)

    # ---- I/O ----

    async def prepare(self, product: Product) -> dict[str, Any]:
        """Provider-side set-up a product needs before any step (e.g. a product record)."""
        return {}

    @abc.abstractmethod
    async def submit(self, step: Step, request: BaseModel) -> JobRef:
        """Spend credits: send the request and return the job reference."""

    @abc.abstractmethod
    async def wait(self, ref: JobRef) -> JobResult:
        """Poll the job until it finishes; raises ``WaitTimeout`` past its deadline (``job_clock``)."""

    def job_clock(self, ref: JobRef) -> JobClock:
        """The one deadline of waiting for ``ref``: ``max_wait_seconds`` after its submission, or after
        this plugin was created for a job of an earlier run (``providers.polling``)."""
        return JobClock(
            ref.job_id,
            ref.submitted_at,
            self.settings.max_wait_seconds,
            since=self.created_at,
            provider=self.name,
        )

    async def poll(
        self, ref: JobRef, cadence: PollCadence, read: Callable[[], Awaitable[Polled]], status: str
    ) -> Polled:
        """Poll ``read`` until ``ref``'s job is finished: on ``cadence`` from its submission, one poll
        timed to when this plugin's jobs of its kind finish, within its ``job_clock`` deadline."""
        return await poll_job(
            self.job_clock(ref),
            cadence,
            read,
            submitted_at=ref.submitted_at,
            kind=f"{ref.step}:{ref.kind}",
            completions=self.completions,
            status=status,
        )

    def inputs(self, step: Step) -> frozenset[str]:
        """The upstream outputs this provider's request for ``step`` reads: ``"copy"`` (the listing
        copy) and/or ``"image"`` (the images step's first output). The step starts as soon as those
        exist, beside steps it does not need. The default, everything upstream, is always correct;
        declaring less lets steps run side by side (and requests that do not read an output must
        not change with it, or a rerun would not find them)."""
        return frozenset(UPSTREAM_OUTPUTS)

    def merge_requests(self, step: Step, members: list[tuple[str, BaseModel]]) -> list[BaseModel] | None:
        """Combine several products' requests (``(member id, request)``) into batch requests of at
        most ``limits.max_batch_size`` items; None when the provider does not batch across products."""
        return None

    def split_result(self, result: JobResult, member: str) -> JobResult:
        """One member's share of a merged job's result: its outputs, errors and credits."""
        raise NotImplementedError(f"{self.name} does not batch across products")

    async def find_submitted(self, step: Step, request: BaseModel, since: float) -> JobRef | None:
        """The job ``request`` created at or after ``since`` (epoch seconds) although its submit's
        answer was lost (an earlier run was killed meanwhile); None when the provider shows there is no
        such job. Raises ``NotImplementedError`` when the provider cannot look jobs up: the submission
        is then held as *outcome unknown* rather than sent again."""
        raise NotImplementedError

    async def recover_lost(self, step: Step, request: BaseModel, *, price: int | None) -> JobRef | None:
        """The job of a submission in this run whose answer was lost and that the balance showed was
        (or may have been) processed, recovered from what the provider still sends: a webhook event
        for a job this process never heard of that matches ``request``. None when nothing arrives within
        the job's wait (the output stays *charged, not retrievable* or *unknown*) or the provider has
        no such channel."""
        return None

    def retry_request(self, step: Step, request: BaseModel, result: JobResult) -> BaseModel | None:
        """A request for only the parts of ``result`` (the completed job of ``request``) that failed and
        were refunded, e.g. the A+ types missing from it; None when nothing failed or the provider
        cannot ask for parts. A later run sends it instead of paying for the whole job again."""
        return None

    async def refresh(self, ref: JobRef) -> JobResult | None:
        """Read a finished job again for fresh output URLs; None when the provider cannot."""
        return None

    async def balance(self) -> int | None:
        """Current credit balance, None when the provider has no balance endpoint."""
        return None

    async def check_access(self) -> int | None:
        """Pre-flight: one free authenticated request proving that the base URL answers and the
        credential is accepted, before anything is paid; raises a ``ProviderError``
        (``AuthenticationError`` for a rejected key). Default: nothing to check.

        Returns the account's balance when the check read it (a provider with a balance endpoint
        uses that endpoint as its check): the run takes it as its starting balance rather than
        reading it again before its first paid submission."""
        return None

    async def aclose(self) -> None:
        """Release what the plugin started for the run (e.g. a webhook receiver); called at its end."""
        return None
