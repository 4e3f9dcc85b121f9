"""Local sandbox that plays ProdVisual's ``pv_test_`` key (contract docs/providers/prodvisual.md).

What it does, and the choices it makes where the contract is silent:
- every endpoint of contract §2, the ``{"error": {"code","message","status"}}`` body and codes of §3,
  and ``X-RateLimit-Limit/Remaining/Reset`` on every response (§4); one sliding window of 60
  requests/minute for all routes (``/v1/styles`` and polls included) and 10,000 requests/day;
- POST /v1/generate blocks until the job is done (at most ``sync_limit_seconds``) and answers
  ``completed``; with a ``webhook_url`` it answers ``pending`` at once (202) and POSTs a signed event
  when done (fire-and-forget, delivery failures ignored);
- credits: 1 per image, charged at submission (single and batch alike) and refunded when the item
  fails, so a failed single generation reports ``credits_used: 0`` (contract §5/§6). Unlike the real
  test key, this sandbox keeps a ledger (see ``providers.sandbox.core``);
- the wire carries no ASIN, so the sandbox reads one from the image URL (an ``asin=`` query parameter,
  any configured failing ASIN appearing in it, or a ``B0…`` token) for ``fail_asins`` and
  ``partial_fail_asins`` (the first item of that ASIN in a job fails; for a one-item job that is the job);
- bad images: a URL ending in .gif/.bmp/.tif/.tiff/.svg/.heic/.avif -> 422 ``invalid_image``; a URL
  containing "oversize" -> 413 ``file_too_large`` (sandbox conventions);
- outputs expire 7 days after creation; after that GET /v1/generations/{id} answers 404 (contract §9).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from providers.sandbox.core import Job, Sandbox, SandboxConfig
from providers.sandbox.render import NONCOMPLIANT_GREY, WHITE, Look, caption_for, scene_for

from .models import MAX_BATCH_ITEMS, PLATFORMS

GROUP = "api"
CREDITS_PER_IMAGE = 1  # published price (contract §2): no unpublished prices to invent

# 22 styles (contract §7): the 8 documented ones, then 14 INVENTED plausible ids (the real ones are
# not published).
STYLES: list[tuple[str, str, str]] = [
    ("lifestyle", "Lifestyle Shot", "Product in a natural setting"),
    ("white_bg", "Clean White Background", "Studio-quality white background"),
    ("mockup", "Product Mockup", "3D mockup on clean surface"),
    ("infographic", "Infographic", "Feature callout layout"),
    ("social_square", "Social Media (1:1)", "Square format for Instagram/Facebook"),
    ("social_story", "Social Media (9:16)", "Vertical format for Stories/Reels"),
    ("hero_banner", "Hero Banner", "Wide banner for storefront headers"),
    ("comparison", "Before/After", "Side-by-side comparison layout"),
    ("studio_shadow", "Studio with Shadow", "White studio with a soft drop shadow"),
    ("flat_lay", "Flat Lay", "Top-down arrangement on a styled surface"),
    ("in_hand", "In Hand", "Product held in a hand for scale"),
    ("kitchen", "Kitchen Scene", "Product on a modern kitchen counter"),
    ("outdoor", "Outdoor Scene", "Product in natural outdoor light"),
    ("minimal_gradient", "Minimal Gradient", "Soft gradient studio backdrop"),
    ("luxury", "Luxury", "Dark premium backdrop with dramatic lighting"),
    ("seasonal_holiday", "Holiday", "Seasonal holiday decoration"),
    ("size_chart", "Size Chart", "Dimensions and size callouts"),
    ("packaging", "Packaging Shot", "Product next to its retail box"),
    ("color_pop", "Color Pop", "Bold solid-colour background"),
    ("marble_surface", "Marble Surface", "Product on a marble tabletop"),
    ("multi_angle", "Multi-Angle", "Several views in one composition"),
    ("transparent_cutout", "Transparent Cutout", "Background removed, transparent PNG"),
]
STYLE_IDS = frozenset(s[0] for s in STYLES)
# Only amazon's size is documented (contract §13); the others are sandbox INVENTIONS.
PRESET_SIZES = {
    "amazon": "1500x1500",
    "ebay": "1600x1600",
    "etsy": "2000x2000",
    "shopify": "2048x2048",
    "generic": "1024x1024",
    "woocommerce": "1200x1200",
    "mercadolibre": "1200x1200",
}
FORMATS = ("png", "jpeg", "webp")
BAD_EXTENSIONS = (".gif", ".bmp", ".tif", ".tiff", ".svg", ".heic", ".avif")
_DIMENSIONS = re.compile(r"^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$")
_BACKGROUND = re.compile(r"^(transparent|#[0-9a-fA-F]{3}|#[0-9a-fA-F]{6})$")
_ASIN = re.compile(r"(?<![A-Za-z0-9])(B0[A-Z0-9]{8})(?![A-Za-z0-9])")


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_http_url(value: Any) -> bool:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        return False
    parsed = urlparse(value)
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


class ProdVisualSandbox(Sandbox):
    provider = "prodvisual"
    id_prefix = "gen"
    sync_limit_seconds = 5.0
    """Longest POST /v1/generate blocks; a longer job answers ``processing`` (the "under load" case)."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self._items: dict[str, tuple[str, int]] = {}  # batch item id -> (batch id, position)
        self._tasks: set[asyncio.Task[None]] = set()
        super().__init__(config)
        self._started_at = self.clock.now()

    @classmethod
    def default_config(cls) -> SandboxConfig:
        return SandboxConfig(
            api_keys=["pv_test_sandbox"],
            rate_limits={GROUP: (60, 60.0)},
            daily_limit=10_000,
            daily_groups=[GROUP],
            job_seconds=2.0,
        )

    def register_routes(self) -> None:
        self.add_route("POST", "/v1/generate", "generate", self._generate, groups=[GROUP])
        self.add_route("POST", "/v1/generate/batch", "generate_batch", self._batch, groups=[GROUP])
        self.add_route("GET", "/v1/styles", "styles", self._styles, groups=[GROUP], authenticated=False)
        self.add_route("GET", "/v1/account/credits", "credits", self._credits, groups=[GROUP])
        self.add_route("GET", "/v1/generations/{id}", "generation", self._generation, groups=[GROUP])

    # ---- error bodies and rate-limit headers ----

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
        merged = {**self.rate_limit_headers([GROUP], self.clock.now()), **(headers or {})}
        return JSONResponse(
            {"error": {"code": code, "message": message, "status": status}},
            status_code=status,
            headers=merged,
        )

    def rate_limit_headers(self, groups: list[str], now: float) -> dict[str, str]:
        window = self._windows.get(GROUP)
        if window is None:
            return {}
        with self._lock:
            return {
                "X-RateLimit-Limit": str(window.limit),
                "X-RateLimit-Remaining": str(window.remaining(now)),
                "X-RateLimit-Reset": str(math.ceil(window.reset_at(now))),
            }

    def rate_limit_error(self, group: str, retry_after: float, daily: bool) -> Response:
        # ASSUMPTION (contract §4): the daily cap answers the same 429 with Reset at the daily reset.
        now = self.clock.now()
        if daily:
            limit, reset = self.config.daily_limit, (int(now // 86400) + 1) * 86400
            message = "Daily request limit reached"
        else:
            window = self._windows[group]
            limit, reset = window.limit, math.ceil(window.reset_at(now))
            message = f"Rate limit exceeded: {window.limit} requests per {window.window:g} seconds"
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(reset),
        }
        return self.error_response(429, "rate_limited", message, headers=headers)

    def _bad(self, message: str, status: int = 400, code: str = "invalid_request") -> Response:
        return self.error_response(status, code, message)

    # ---- validation ----

    def _check_item(self, item: Any, where: str = "") -> Response | None:
        if not isinstance(item, dict):
            return self._bad(f"{where or 'body'} must be an object")
        url = item.get("image_url")
        if url is None:
            return self._bad(f"Missing required parameter: {where}image_url")
        if not _is_http_url(url):
            return self._bad(f"{where}image_url must be an http(s) URL")
        if urlparse(url).path.lower().endswith(BAD_EXTENSIONS):
            return self._bad(
                f"{where}image_url: image format not supported. Use JPEG, PNG or WebP.", 422, "invalid_image"
            )
        if "oversize" in url.lower():
            return self._bad(f"{where}image_url: source image exceeds 10MB", 413, "file_too_large")
        style = item.get("style")
        if style is None:
            return self._bad(f"Missing required parameter: {where}style")
        if not isinstance(style, str) or style not in STYLE_IDS:
            return self._bad(f"{where}style: unknown style {style!r}. See /v1/styles for available options.")
        checks: list[tuple[str, Callable[[Any], bool], str]] = [
            ("platform", lambda v: v in PLATFORMS, f"one of {', '.join(PLATFORMS)}"),
            (
                "dimensions",
                lambda v: isinstance(v, str) and bool(_DIMENSIONS.match(v)),
                "WxH, e.g. 1500x1500",
            ),
            (
                "background",
                lambda v: isinstance(v, str) and bool(_BACKGROUND.match(v)),
                "#rrggbb or transparent",
            ),
            ("format", lambda v: v in FORMATS, "png, jpeg or webp"),
            ("quality", lambda v: type(v) is int and 1 <= v <= 100, "an integer 1-100"),
            ("webhook_url", _is_http_url, "an http(s) URL"),
        ]
        for field, ok, expected in checks:
            if field in item and not ok(item[field]):
                return self._bad(f"{where}{field} must be {expected}")
        return None

    def _check_credits(self, cost: int) -> Response | None:
        if self.balance < cost:
            return self._bad(
                f"Your account has {max(0, self.balance)} credits remaining. Please purchase more "
                "credits to continue.",
                402,
                "insufficient_credits",
            )
        return None

    # ---- handlers ----

    async def _generate(self, request: Request, body: dict[str, Any]) -> Response:
        bad = self._check_item(body) or self._check_credits(CREDITS_PER_IMAGE)
        if bad is not None:
            return bad
        job = self._create("generation", [body], request)
        if body.get("webhook_url"):  # ASSUMPTION (contract §5): async with a webhook
            return JSONResponse(self._generation_body(job), status_code=202)
        await asyncio.sleep(max(0.0, min(job.done - self.clock.now(), self.sync_limit_seconds)))
        view = self._generation_body(job)
        return JSONResponse(view, status_code=200 if view["status"] in ("completed", "failed") else 202)

    async def _batch(self, request: Request, body: dict[str, Any]) -> Response:
        items = body.get("items")
        if not isinstance(items, list) or not items:
            return self._bad("Missing required parameter: items (1-50 generation objects)")
        if len(items) > MAX_BATCH_ITEMS:  # ASSUMPTION (contract §6): >50 -> 400 invalid_request
            return self._bad(f"items: maximum {MAX_BATCH_ITEMS} images per batch (got {len(items)})")
        for n, item in enumerate(items):
            if (bad := self._check_item(item, f"items[{n}].")) is not None:
                return bad
        if "webhook_url" in body and not _is_http_url(body["webhook_url"]):
            return self._bad("webhook_url must be an http(s) URL")
        if (bad := self._check_credits(CREDITS_PER_IMAGE * len(items))) is not None:
            return bad
        # ASSUMPTION (contract §6): a per-item webhook_url is ignored.
        job = self._create(
            "batch",
            [{k: v for k, v in i.items() if k != "webhook_url"} for i in items],
            request,
            webhook_url=body.get("webhook_url"),
        )
        return JSONResponse(
            {
                "batch_id": job.id,
                "status": self.status_of(job),
                "total_items": len(items),
                "credits_used": job.charged,
                "credits_remaining": self.balance,
                "estimated_time_ms": int((job.done - job.created) * 1000),
                "results_url": f"{self.public_url}/v1/generations/{job.id}",
            }
        )

    async def _styles(self, request: Request, body: dict[str, Any]) -> Response:
        styles = [{"id": i, "name": n, "description": d} for i, n, d in STYLES]
        return JSONResponse({"styles": styles, "total": len(styles)})

    async def _credits(self, request: Request, body: dict[str, Any]) -> Response:
        day = int(self.clock.now() // 86400)
        with self._lock:
            total = sum(c.credits for c in self.charges)
            today = sum(c.credits for c in self.charges if int(c.t // 86400) == day)
        return JSONResponse(
            {
                "credits_remaining": self.balance,
                "credits_used_total": total,
                "credits_used_today": today,
                "last_purchase": {"amount": self.config.starting_credits, "date": iso(self._started_at)},
            }
        )

    async def _generation(self, request: Request, body: dict[str, Any]) -> Response:
        ident = request.path_params["id"]
        batch_item = self._items.get(ident)
        job = self.jobs.get(batch_item[0] if batch_item else ident)
        if job is None or self.clock.now() > job.created + self.config.url_ttl_seconds:
            return self._bad(f"Generation {ident!r} not found", 404, "not_found")
        if batch_item is not None:
            return JSONResponse(self._item_view(job, batch_item[1], self.status_of(job)))
        return JSONResponse(self._batch_body(job) if job.kind == "batch" else self._generation_body(job))

    # ---- jobs ----

    def _create(
        self, kind: str, items: list[dict[str, Any]], request: Request, webhook_url: str | None = None
    ) -> Job:
        asins = {self._asin(i["image_url"]) for i in items}
        job_id = self.new_id("batch" if kind == "batch" else "gen")
        ids = [self.new_id("gen") for _ in items] if kind == "batch" else [job_id]
        job = self.create_job(
            kind,
            asin=asins.pop() if len(asins) == 1 else None,
            job_id=job_id,
            payload={"items": items, "item_ids": ids},
            charge=CREDITS_PER_IMAGE * len(items),
            route="generate_batch" if kind == "batch" else "generate",
        )
        if kind == "batch":
            for n, item_id in enumerate(ids):
                self._items[item_id] = (job.id, n)
        webhook_url = webhook_url or (items[0].get("webhook_url") if kind == "generation" else None)
        if webhook_url:
            token = request.headers.get("authorization", "")[len("Bearer ") :].strip()
            task = asyncio.get_running_loop().create_task(self._deliver_webhook(job, webhook_url, token))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return job

    def _asin(self, url: str) -> str | None:
        query = parse_qs(urlparse(url).query).get("asin")
        if query:
            return query[0]
        for asin in [
            *self.config.fail_asins,
            *self.config.partial_fail_asins,
            *self.config.noncompliant_asins,
        ]:
            if asin in url:
                return asin
        match = _ASIN.search(url)
        return match.group(1) if match else None

    def finalize(self, job: Job) -> None:
        cfg, partial_used, results = self.config, set(), []
        for n, item in enumerate(job.payload["items"]):
            asin = self._asin(item["image_url"])
            partial = asin in cfg.partial_fail_asins and asin not in partial_used
            if partial:
                partial_used.add(asin)
            fail = asin is not None and (asin in cfg.fail_asins or partial)
            results.append(self._outcome(job, n, item, asin, fail))
        failed = sum(1 for r in results if "error" in r)
        self.refund(job, CREDITS_PER_IMAGE * failed)
        job.fail = failed == len(results)
        job.result = {"results": results}

    def _outcome(
        self, job: Job, n: int, item: dict[str, Any], asin: str | None, fail: bool
    ) -> dict[str, Any]:
        if fail:
            message = f"Generation failed for {asin} ({item['style']})"
            return {"credits_used": 0, "error": {"code": "generation_failed", "message": message}}
        file_id = self.add_file(self._look(item, asin))
        url = self.signed_url(file_id)
        expires = int(parse_qs(urlparse(url).query)["expires"][0])
        digest = hashlib.sha256(file_id.encode()).digest()
        return {
            "output_url": url,
            "expires_at": iso(expires),
            "credits_used": CREDITS_PER_IMAGE,
            "file_size": 300_000 + int.from_bytes(digest[:3]) % 700_000,  # plausible, not the PNG's size
            "generation_time_ms": int((job.done - job.created) * 1000),
        }

    def _look(self, item: dict[str, Any], asin: str | None) -> Look:
        """The output image: the product named by its source image URL (the only product text on the
        wire), on the style's scene, at the effective dimensions, in the requested format."""
        style = item["style"]
        width, height = (
            int(v)
            for v in (item.get("dimensions") or PRESET_SIZES[item.get("platform", "generic")]).split("x")
        )
        name, description = next((n, d) for i, n, d in STYLES if i == style)
        return Look(
            subject=item["image_url"],
            scene=scene_for(style),
            size=(width, height),
            caption=caption_for(style, name, description),
            fmt=item.get("format", "png"),
            backdrop=NONCOMPLIANT_GREY if self.is_noncompliant(asin) else WHITE,
            shot=style,
        )

    def _item_view(self, job: Job, n: int, status: str) -> dict[str, Any]:
        item = job.payload["items"][n]
        platform = item.get("platform", "generic")
        view = {
            "id": job.payload["item_ids"][n],
            "status": status,
            "style": item["style"],
            "platform": platform,
            "dimensions": item.get("dimensions") or PRESET_SIZES[platform],
            "format": item.get("format", "png"),
            "credits_used": CREDITS_PER_IMAGE,
            "created_at": iso(job.created),
        }
        if job.finalized and job.result:
            outcome = job.result["results"][n]
            view.update(outcome, status="failed" if "error" in outcome else "completed")
        return view

    def _generation_body(self, job: Job) -> dict[str, Any]:
        view = self._item_view(job, 0, self.status_of(job))
        view.update(credits_used=job.charged - job.refunded, credits_remaining=self.balance)
        return view

    def _batch_body(self, job: Job) -> dict[str, Any]:
        status = self.status_of(job)
        results = [self._item_view(job, n, status) for n in range(len(job.payload["items"]))]
        body: dict[str, Any] = {
            "id": job.id,
            "status": status,
            "total_items": len(results),
            "completed_items": sum(r["status"] == "completed" for r in results),
            "failed_items": sum(r["status"] == "failed" for r in results),
            "credits_used": job.charged,
            "created_at": iso(job.created),
            "results": results,
        }
        if status == "failed":
            body["error"] = {"code": "generation_failed", "message": "Every item of the batch failed"}
        return body

    async def _deliver_webhook(self, job: Job, url: str, api_key: str) -> None:
        """Signed event when the job finishes (contract §11); delivery failures are ignored."""
        await asyncio.sleep(max(0.0, job.done - self.clock.now()) + 0.01)
        with contextlib.suppress(Exception):
            if job.kind == "batch":
                data, event = self._batch_body(job), "batch.completed"
            else:
                data = self._generation_body(job)
                event = "generation.completed" if data["status"] == "completed" else "generation.failed"
            raw = json.dumps({"event": event, "data": data, "timestamp": iso(self.clock.now())}).encode()
            signature = hmac.new(api_key.encode(), raw, hashlib.sha256).hexdigest()
            async with httpx.AsyncClient(timeout=5.0) as client:
                await client.post(
                    url,
                    content=raw,
                    headers={"Content-Type": "application/json", "X-ProdVisual-Signature": signature},
                )
