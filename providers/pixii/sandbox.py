"""A local Pixii that plays the ``pk_test_`` key faithfully (contract docs/providers/pixii.md).

It validates requests with Pixii's own error envelope and codes, charges credits at submission and
refunds failed jobs / failed images / failed A+ variants when the job finishes, enforces the
per-organization 10/min + 500/day submission limits with the documented headers and 429 bodies, runs
the pending -> processing -> completed|failed lifecycle, lists jobs per ASIN with paging, and serves
real PNGs at signed URLs that expire after 7 days.

Unlike Pixii's test keys the sandbox keeps a credit ledger, so tests can check charges and refunds.
"""

from __future__ import annotations

import math
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from providers.contract import MARKETPLACES, SCALE_ALLOWED
from providers.sandbox.core import Job, Sandbox, SandboxConfig
from providers.sandbox.render import NONCOMPLIANT_GREY, WHITE, Look, Scene

from .models import APLUS_CREDITS, LISTING_TYPES, iso

SANDBOX_KEY = "pk_test_sandbox"  # PixiiProvider.sandbox_key: a documented test-key prefix
SUBMIT = "submit"
RETENTION_SECONDS = 7 * 24 * 3600  # contract §10
JOB_TYPES = {"listing_builder": "Listing Builder", "a_plus": "A+ Content", "scale": "Scale"}
# ASSUMPTION (contract §5): the A+ job_type string is undocumented; the sandbox says "A+ Content".

# Sandbox prices for what Pixii does not publish (contract §12): Listing Builder costs 3 credits per
# generated image (amazon_listing = 1 main + 4 gallery = 15 credits), Scale 6 credits per item.
LB_CREDITS_PER_IMAGE = 3
SCALE_CREDITS_PER_ITEM = 6
LB_IMAGES = {
    "amazon_listing": 5,
    "amazon_main_images": 2,
    "amazon_mobile_listing": 5,
    "shopify_listing": 4,
    "tiktok_listing": 4,
}
# A+ module images at Amazon's A+ module sizes (Seller Central's A+ module guidelines): Basic = Standard
# Image Header with Text 970x600, Standard Image & Light Text Overlay 970x300, Standard Single Image &
# Highlights 300x300; Premium = Premium Full Image / Background Image with Text / Simple Image Carousel /
# Full Video poster 1464x600 and Premium Single Image with Text 650x350; Premium Mobile = the Premium
# modules' mobile images, 600x450. The preview stacks a type's modules at the widest module's width.
APLUS_MODULE_SIZES: dict[str, list[tuple[int, int]]] = {
    "A+ Basic": [(970, 600), (970, 300), (300, 300)],
    "A+ Premium": [(1464, 600), (1464, 600), (650, 350), (1464, 600), (1464, 600)],
    "A+ Premium Mobile": [(600, 450)] * 4,
}
APLUS_MODULES = {t: len(sizes) for t, sizes in APLUS_MODULE_SIZES.items()}
APLUS_MODULE_SCENES: list[Scene] = ["lifestyle", "layout", "studio", "layout", "dark"]
# Output sizes Pixii does not document (sandbox choices): Amazon's 2000 px zoom size, Shopify's 2048 px
# square, TikTok's 1080x1920 vertical.
LISTING_SIZES = {
    "amazon_listing": (2000, 2000),
    "amazon_main_images": (2000, 2000),
    "amazon_mobile_listing": (2000, 2000),
    "shopify_listing": (2048, 2048),
    "tiktok_listing": (1080, 1920),
}
LISTING_SCENES: list[Scene] = ["white", "lifestyle", "layout", "kitchen", "studio"]
SCALE_SIZES = {
    "Amazon": (2000, 2000),
    "Amazon Mobile": (2000, 2000),
    "Shopify": (2048, 2048),
    "TikTok": (1080, 1920),
}
SCALE_MODES = ("catalog", "inspire", "variation", "language")

_CODE_BY_STATUS = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    402: "INSUFFICIENT_CREDITS",
    404: "JOB_NOT_FOUND",
    429: "RATE_LIMIT_MINUTE_EXCEEDED",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}
_FIELDS = {
    "listing_builder": {"asin", "country_code", "listing_type", "main_image_url", "other_image_urls"},
    "a_plus": {"asin", "country_code", "types", "main_image_url", "other_image_urls", "user_prompt"},
    "scale": {
        "asin",
        "country_code",
        "scale_mode",
        "main_image_input",
        "other_images_input",
        "user_prompt",
        "items",
    },
}


class _Invalid(Exception):
    """A VALIDATION_ERROR; the message becomes ``detail`` and starts with the field name."""


class PixiiSandbox(Sandbox):
    provider = "pixii"
    id_prefix = "job"

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.active_brand = True
        """False -> every submission answers NO_ACTIVE_BRAND."""
        self.lose_responses = 0
        """Answer the next N accepted submissions with 500 *after* creating (and charging) the job,
        as when Pixii's response is lost: the case the client's reconciliation exists for."""
        super().__init__(config)

    @classmethod
    def default_config(cls) -> SandboxConfig:
        return SandboxConfig(
            api_keys=[SANDBOX_KEY],
            rate_limits={SUBMIT: (10, 60.0)},  # contract §11: 10/min per organization
            daily_limit=500,
            daily_groups=[SUBMIT],
            url_ttl_seconds=7 * 24 * 3600,
        )

    def register_routes(self) -> None:
        self.add_route(
            "POST", "/v1/api/listing_builder", "listing_builder", self._listing_builder, groups=[SUBMIT]
        )
        self.add_route("POST", "/v1/api/a_plus", "a_plus", self._a_plus, groups=[SUBMIT])
        self.add_route("POST", "/v1/api/scale", "scale", self._scale, groups=[SUBMIT])
        self.add_route("GET", "/v1/api/jobs", "list_jobs", self._list_jobs, groups=[])
        self.add_route("GET", "/v1/api/jobs/{job_id}", "get_job", self._get_job, groups=[])

    # ---- error envelope and rate-limit headers ----

    def error_response(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retry_after: float | None = None,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        if not code.isupper():  # the core's generic codes (auth, faults) -> Pixii's catalogue
            code = (
                "SERVICE_UNAVAILABLE"
                if code == "timeout"
                else _CODE_BY_STATUS.get(status, "INTERNAL_ERROR" if status >= 500 else "VALIDATION_ERROR")
            )
        # The sandbox picks the bare envelope of the two documented shapes (contract §9).
        body = {"code": code, "message": message, "detail": detail, "retry_after": retry_after}
        return JSONResponse(body, status_code=status, headers=headers)

    def rate_limit_headers(self, groups: list[str], now: float) -> dict[str, str]:
        if SUBMIT not in groups:
            return {}
        minute = self._windows[SUBMIT]
        day_limit = self.config.daily_limit or 0
        used_today = self._day_counts[int(now // 86400)]
        return {
            "X-RateLimit-Limit-Minute": str(minute.limit),
            "X-RateLimit-Remaining-Minute": str(minute.remaining(now)),
            "X-RateLimit-Limit-Day": str(day_limit),
            "X-RateLimit-Remaining-Day": str(max(0, day_limit - used_today)),
        }

    def rate_limit_error(self, group: str, retry_after: float, daily: bool) -> Response:
        seconds = max(1, math.ceil(retry_after))
        code = "RATE_LIMIT_DAY_EXCEEDED" if daily else "RATE_LIMIT_MINUTE_EXCEEDED"
        message = (
            "Daily request limit reached." if daily else "Too many requests in the current minute window."
        )
        headers = {"Retry-After": str(seconds), **self.rate_limit_headers([SUBMIT], self.clock.now())}
        return self.error_response(
            429, code, message, retry_after=seconds, detail=f"retry after {seconds} seconds", headers=headers
        )

    # ---- submissions ----

    async def _listing_builder(self, request: Request, body: dict[str, Any]) -> Response:
        def check() -> int:
            _common(body, "listing_builder")
            if body.get("listing_type") not in LISTING_TYPES:
                raise _Invalid(f"listing_type: must be one of {', '.join(LISTING_TYPES)}")
            _url(body, "main_image_url")
            _url_list(body, "other_image_urls")
            return LB_CREDITS_PER_IMAGE * LB_IMAGES[body["listing_type"]]

        return self._submit("listing_builder", body, check)

    async def _a_plus(self, request: Request, body: dict[str, Any]) -> Response:
        def check() -> int:
            _common(body, "a_plus")
            types = body.get("types")
            if not isinstance(types, list) or not 1 <= len(types) <= 3:
                raise _Invalid("types: 1-3 values required")
            if any(t not in APLUS_CREDITS for t in types) or len(set(types)) != len(types):
                raise _Invalid(f"types: unique values from {', '.join(APLUS_CREDITS)}")
            _url(body, "main_image_url")
            _url_list(body, "other_image_urls")
            _prompt(body)
            return sum(APLUS_CREDITS[t] for t in types)

        return self._submit("a_plus", body, check)

    async def _scale(self, request: Request, body: dict[str, Any]) -> Response:
        def check() -> int:
            _common(body, "scale")
            if body.get("scale_mode") not in SCALE_MODES:
                raise _Invalid(f"scale_mode: must be one of {', '.join(SCALE_MODES)}")
            _url(body, "main_image_input")
            _url_list(body, "other_images_input")
            _prompt(body)
            if body["scale_mode"] == "language" and "user_prompt" not in body:
                raise _Invalid("user_prompt: the target language must be stated for scale_mode language")
            items = body.get("items")
            if not isinstance(items, list) or not items:
                raise _Invalid("items: at least 1 item required")
            for i, item in enumerate(items):
                if not isinstance(item, dict) or set(item) - {"preview_url", "platform", "asset_type"}:
                    raise _Invalid(f"items[{i}]: expected preview_url, platform, asset_type")
                _url(item, "preview_url", required=True, where=f"items[{i}].")
                allowed = SCALE_ALLOWED.get(str(item.get("platform")))
                if allowed is None:
                    raise _Invalid(f"items[{i}].platform: must be one of {', '.join(SCALE_ALLOWED)}")
                if item.get("asset_type") not in allowed:
                    raise _Invalid(
                        f"items[{i}].asset_type: {item.get('asset_type')!r} is not supported "
                        f"on {item['platform']}"
                    )
            return SCALE_CREDITS_PER_ITEM * len(items)

        return self._submit("scale", body, check)

    def _submit(self, kind: str, body: dict[str, Any], check: Any) -> Response:
        try:
            price = check()
        except _Invalid as exc:
            return self.error_response(
                400, "VALIDATION_ERROR", "One or more request parameters are invalid.", detail=str(exc)
            )
        if not self.active_brand:
            return self.error_response(400, "NO_ACTIVE_BRAND", "No active brand found for your organization.")
        with self._lock:
            if self.balance < price:
                return self.error_response(
                    402,
                    "INSUFFICIENT_CREDITS",
                    "Not enough credits to process this request.",
                    detail=f"required {price}, available {self.balance}",
                )
            job = self.create_job(kind, asin=body["asin"], payload=body, charge=price, route=kind)
            lost = self.lose_responses > 0
            self.lose_responses -= 1 if lost else 0
        if lost:
            return self.error_response(500, "INTERNAL_ERROR", "An unexpected error occurred.")
        return JSONResponse(
            {
                "job_id": job.id,
                "job_type": JOB_TYPES[kind],
                "status": "pending",
                "created_at": iso(job.created),
                "remaining_credits": self.balance,
            }
        )

    # ---- jobs ----

    def _live_job(self, job_id: str) -> Job | None:
        job = self.jobs.get(job_id)
        if job is None or self.clock.now() > job.done + RETENTION_SECONDS:
            return None  # ASSUMPTION (contract §7): past retention answers JOB_NOT_FOUND
        return job

    async def _get_job(self, request: Request, body: dict[str, Any]) -> Response:
        job = self._live_job(request.path_params["job_id"])
        if job is None:
            return self.error_response(404, "JOB_NOT_FOUND", "Job not found.")
        return JSONResponse(self._job_body(job))

    async def _list_jobs(self, request: Request, body: dict[str, Any]) -> Response:
        asin = request.query_params.get("asin", "")
        try:
            page = int(request.query_params.get("page", "1"))
            limit = int(request.query_params.get("limit", "20"))
        except ValueError:
            page = limit = 0
        if not 5 <= len(asin) <= 15:
            return self._invalid("asin: required, 5-15 characters")
        if page < 1 or not 1 <= limit <= 100:
            return self._invalid("page/limit: positive integers, limit at most 100")
        jobs = sorted(
            (j for j in list(self.jobs.values()) if j.asin == asin and self._live_job(j.id)),
            key=lambda j: j.created,
            reverse=True,
        )
        chunk = jobs[(page - 1) * limit : page * limit]
        data = [
            {
                "id": j.id,
                "job_type": JOB_TYPES[j.kind],
                "status": self.status_of(j),
                "created_at": iso(j.created),
            }
            for j in chunk
        ]
        return JSONResponse({"data": data, "total": len(jobs), "page": page, "limit": limit})

    def _invalid(self, detail: str) -> Response:
        return self.error_response(
            400, "VALIDATION_ERROR", "One or more request parameters are invalid.", detail=detail
        )

    def _job_body(self, job: Job) -> dict[str, Any]:
        status = self.status_of(job)  # finalizes (and refunds) first when the job is due
        now = self.clock.now()
        result = job.result or {}
        return {
            "id": job.id,
            "job_type": JOB_TYPES[job.kind],
            "status": status,
            "created_at": iso(job.created),
            "started_at": iso(job.started) if now >= job.started else None,
            "completed_at": iso(job.done) if status in ("completed", "failed") else None,
            "credit_cost": job.charged,
            "credits_refunded": job.refunded,
            "output": self._render_output(job) if status == "completed" else None,
            "error_code": result.get("error_code") if status == "failed" else None,
        }

    def _render_output(self, job: Job) -> dict[str, Any]:
        """Sign the stored file ids at read time, so re-reading a job yields fresh URLs."""
        ads = []
        for ad in (job.result or {}).get("ads", []):
            if job.kind == "a_plus":
                ok = ad["preview"] is not None
                ads.append(
                    {
                        "type": ad["type"],
                        "preview": self.signed_url(ad["preview"]) if ok else None,
                        "modules": [self.signed_url(f) for f in ad["modules"]],
                        "error": ad["error"],
                    }
                )
            else:
                url = self.signed_url(ad["file"]) if ad["file"] else None
                ads.append({"preview_url": url, "error": ad["error"]})
        return {"ads": ads}

    def finalize(self, job: Job) -> None:
        if job.fail:  # failed job: everything refunded (contract §10)
            self.refund(job, job.charged - job.refunded)
            job.result = {"error_code": "GENERATION_FAILED"}
            return
        body = job.payload
        failure = {"code": "IMAGE_GENERATION_FAILED", "message": "Generation failed for this item."}
        ads: list[dict[str, Any]] = []
        if job.kind == "a_plus":
            types = body["types"]
            for t in types:
                if job.partial and t == types[-1]:  # one variant fails and its price is refunded
                    self.refund(job, APLUS_CREDITS[t])
                    ads.append({"type": t, "preview": None, "modules": [], "error": failure})
                    continue
                looks = self._aplus_looks(body, t)
                ads.append(
                    {
                        "type": t,
                        "preview": self.add_file(looks[0]),
                        "modules": [self.add_file(look) for look in looks[1:]],
                        "error": None,
                    }
                )
        else:
            looks = self._listing_looks(body) if job.kind == "listing_builder" else self._scale_looks(body)
            unit = LB_CREDITS_PER_IMAGE if job.kind == "listing_builder" else SCALE_CREDITS_PER_ITEM
            for n, look in enumerate(looks, start=1):
                if job.partial and n == len(looks):  # the last image fails and is refunded
                    self.refund(job, unit)
                    ads.append({"file": None, "error": failure})
                else:
                    ads.append({"file": self.add_file(look), "error": None})
        job.result = {"ads": ads}

    # ---- what the outputs show ----

    def _backdrop(self, asin: str) -> tuple[int, int, int]:
        return NONCOMPLIANT_GREY if self.is_noncompliant(asin) else WHITE

    def _listing_looks(self, body: dict[str, Any]) -> list[Look]:
        """Main image on white first (both of ``amazon_main_images``), then the gallery's scenes."""
        listing_type = body["listing_type"]
        subject = " ".join([body.get("main_image_url") or "", *(body.get("other_image_urls") or [])])
        mains = 2 if listing_type == "amazon_main_images" else 1
        scenes = ["white" if n < mains else LISTING_SCENES[n % 5] for n in range(LB_IMAGES[listing_type])]
        return [
            Look(
                subject=subject or body["asin"],
                scene=scene,
                size=LISTING_SIZES[listing_type],
                backdrop=self._backdrop(body["asin"]),
                shot=f"{listing_type}/{n}",
                caption="Product highlights" if scene == "layout" else "",
            )
            for n, scene in enumerate(scenes)
        ]

    def _aplus_looks(self, body: dict[str, Any], aplus_type: str) -> list[Look]:
        """The preview, then one image per module at its A+ size, headed by the copy's title."""
        prompt = body.get("user_prompt") or ""
        subject = f"{prompt} {body.get('main_image_url') or ''}"
        headline = re.sub(r"^Product:\s*", "", prompt.split("\n", 1)[0]).strip() or body["asin"]
        features = [line.lstrip("- ").strip() for line in prompt.splitlines() if line.startswith("- ")]
        sizes = APLUS_MODULE_SIZES[aplus_type]
        preview = (max(w for w, _ in sizes), sum(h for _, h in sizes))
        looks = [Look(subject=subject, scene="layout", size=preview, caption=f"{headline}\n{aplus_type}")]
        for n, size in enumerate(sizes):
            caption = (
                "\n".join([headline, *features[n : n + 2]]) if n % 2 == 0 else "\n".join(features[n : n + 3])
            )
            looks.append(
                Look(
                    subject=subject,
                    scene=APLUS_MODULE_SCENES[n],
                    size=size,
                    caption=caption,
                    shot=f"{aplus_type}/{n}",
                )
            )
        return looks

    def _scale_looks(self, body: dict[str, Any]) -> list[Look]:
        """One image per item in the variation's colour; its size printed on the product; Main Images on
        white, Product Photos in a scene captioned with every attribute."""
        prompt = body.get("user_prompt") or ""
        attributes = variation_attributes(prompt)
        colour = next(
            (v for k, v in attributes.items() if k.lower() in ("color", "colour", "farbe", "couleur")), ""
        )
        size = next(
            (v for k, v in attributes.items() if k.lower() in ("size", "größe", "taille", "talla")), ""
        )
        subject = f"{prompt} {body.get('main_image_input') or ''}"
        looks = []
        for n, item in enumerate(body["items"]):
            main = item["asset_type"] == "Main Image"
            looks.append(
                Look(
                    subject=subject,
                    scene="white" if main else "lifestyle",
                    size=SCALE_SIZES[item["platform"]],
                    colour=colour,
                    badge=size,
                    backdrop=self._backdrop(body["asin"]),
                    shot=f"{item['platform']}/{n}",
                    caption="" if main else " · ".join(f"{k}: {v}" for k, v in attributes.items()),
                )
            )
        return looks


def variation_attributes(prompt: str) -> dict[str, str]:
    """``{"color": "Ocean Blue", "size": "M"}`` from the plugin's "Variation X of T (color: Ocean Blue,
    size: M)" prompt: the last parenthesis holding "key: value" pairs."""
    for group in reversed(re.findall(r"\(([^()]*)\)", prompt)):
        pairs = [p.split(":", 1) for p in group.split(",") if ":" in p]
        if pairs:
            return {k.strip(): v.strip() for k, v in pairs if k.strip() and v.strip()}
    return {}


# --- request checks (Pixii's documented rules, independent of the client's models) -------------


def _common(body: dict[str, Any], kind: str) -> None:
    # Sandbox choice: unknown fields are rejected so client typos (main_image_url on scale) surface.
    extra = set(body) - _FIELDS[kind]
    if extra:
        raise _Invalid(f"{sorted(extra)[0]}: unknown field")
    asin = body.get("asin")
    if not isinstance(asin, str) or not 5 <= len(asin) <= 15:
        raise _Invalid("asin: required, 5-15 characters")
    if body.get("country_code") not in MARKETPLACES:
        raise _Invalid("country_code: not a supported marketplace")


def _url(body: dict[str, Any], key: str, *, required: bool = False, where: str = "") -> None:
    if key in body or required:
        _check_url(body.get(key), f"{where}{key}")


def _check_url(value: Any, name: str) -> None:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise _Invalid(f"{name}: must be a publicly accessible image URL")


def _url_list(body: dict[str, Any], key: str) -> None:
    if key not in body:
        return
    value = body[key]
    if not isinstance(value, list) or not value:
        raise _Invalid(f"{key}: minimum 1 item if provided")
    for i, url in enumerate(value):
        _check_url(url, f"{key}[{i}]")


def _prompt(body: dict[str, Any]) -> None:
    if "user_prompt" in body and (
        not isinstance(body["user_prompt"], str) or not body["user_prompt"].strip()
    ):
        raise _Invalid("user_prompt: cannot be empty if provided")
