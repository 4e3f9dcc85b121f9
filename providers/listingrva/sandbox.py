"""A local ListingRVA AI (REST v1) that plays the plugin's sandbox JWT.

It implements every endpoint of the contract with its error body ``{"error": code, "message"}``, the
three per-minute route groups (no rate-limit headers and no ``Retry-After``: none are documented),
credits debited at enqueue (402 ``insufficient_credits``) and returned when a job fails, async jobs
``queued -> processing -> completed|failed``, PNG outputs at expiring signed URLs, listing copy derived
from the product, paged products, assets, ZIP exports and signed webhook deliveries.

Routes are served both at the root and under ``/api``, so the plugin's ``base_url`` may be either
``sandbox.public_url`` or ``sandbox.api_url`` (the real base URL ends in ``/api``).

ListingRVA products carry no ASIN, so a job's ASIN (for ``fail_asins`` / ``partial_fail_asins`` and
the charge records) is found in the product's text: a configured ASIN, else an Amazon-style ASIN
(``B0`` + 8) appearing in its title, description or image URL.

Contract: docs/providers/listingrva.md (cited below as "contract §N").
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import re
import secrets
import threading
import zipfile
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..sandbox.core import Job, Sandbox, SandboxConfig
from ..sandbox.render import NONCOMPLIANT_GREY, WHITE, Look, caption_for, scene_for
from .models import COMPONENTS, IMAGE_STYLE_CREDITS, LISTING_CREDITS, SIZE_SURCHARGE
from .sandbox_copy import listing_copy

SANDBOX_JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJzYW5kYm94Iiwid3MiOiJ0ZXN0IiwicGxhbiI6InBybyJ9"
    ".sandbox-signature"
)
FREE_PLAN_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJwbGFuIjoiZnJlZSJ9.free-plan"  # valid JWT, not Pro -> 403
EXPORT_TTL = 3600.0  # ASSUMPTION (contract §8): export URLs live about one hour
ASIN_RE = re.compile(r"\b(B0[A-Z0-9]{8})\b")
AI_MODELS = {"auto", "gemini", "openai"}
TONES = {"professional", "casual", "luxury"}


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sign(secret: str, body: bytes) -> str:
    """``X-Webhook-Signature``: hex HMAC-SHA256 of the raw body (contract §9)."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Invalid(Exception):
    """A 400 with the field named in the message."""


class ListingRVASandbox(Sandbox):
    provider = "listingrva"
    id_prefix = "job"

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.products: dict[str, dict[str, Any]] = {}
        self.assets: list[dict[str, Any]] = []
        self.webhooks: dict[str, dict[str, Any]] = {}
        self.deliveries: list[dict[str, Any]] = []
        self.exports: dict[str, tuple[str, float]] = {}
        self._partial_done: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        super().__init__(config)

    @classmethod
    def default_config(cls) -> SandboxConfig:
        return SandboxConfig(
            api_keys=[SANDBOX_JWT, FREE_PLAN_JWT],
            rate_limits={"ai": (30, 60.0), "products": (120, 60.0), "global": (200, 60.0)},
        )

    @property
    def api_url(self) -> str:
        return f"{self.public_url}/api"

    # ---- routing ----

    def register_routes(self) -> None:
        ai, products, glob = ["ai", "global"], ["products", "global"], ["global"]
        table = [
            ("POST", "/ai/image", "ai_image", self._ai_image, ai),
            ("POST", "/ai/listing", "ai_listing", self._ai_listing, ai),
            ("GET", "/ai/jobs/{job_id}", "ai_job", self._ai_job, ai),  # ASSUMPTION (contract §4)
            ("GET", "/products", "products_list", self._products_list, products),
            ("POST", "/products", "products_create", self._products_create, products),
            ("GET", "/products/{product_id}", "products_get", self._products_get, products),
            ("GET", "/assets", "assets", self._assets, glob),
            ("GET", "/export/{product_id}", "export", self._export, glob),
            ("GET", "/billing/credits", "credits", self._credits, glob),
            ("POST", "/webhooks", "webhooks_create", self._webhooks_create, glob),
            ("GET", "/webhooks", "webhooks_list", self._webhooks_list, glob),
            ("PATCH", "/webhooks/{webhook_id}", "webhooks_update", self._webhooks_update, glob),
            ("PUT", "/webhooks/{webhook_id}", "webhooks_update", self._webhooks_update, glob),
            ("DELETE", "/webhooks/{webhook_id}", "webhooks_delete", self._webhooks_delete, glob),
        ]
        for prefix in ("", "/api"):
            for method, path, name, handler, groups in table:
                self.add_route(method, prefix + path, name, self._guard(handler), groups=groups)
        self._routes.append(Route("/exports/{export_id}", self._serve_export, methods=["GET"]))

    def _guard(self, handler: Any) -> Any:
        """Pro plan only (contract §1), and validation failures as 400 bodies."""

        async def guarded(request: Request, body: dict[str, Any]) -> Response:
            if request.headers.get("authorization", "").endswith(FREE_PLAN_JWT):
                return self.error_response(403, "plan_required", "The API is available on the Pro plan only")
            try:
                response: Response = await handler(request, body)
                return response
            except Invalid as exc:
                return self.error_response(400, "validation_error", str(exc))

        return guarded

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
        return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)

    def rate_limit_error(self, group: str, retry_after: float, daily: bool) -> Response:
        # ASSUMPTION (contract §4): no Retry-After / X-RateLimit-* headers are documented; send none.
        if daily:
            return self.error_response(429, "daily_limit_exceeded", "Daily request limit reached")
        return self.error_response(429, "rate_limit_exceeded", f"Rate limit exceeded for /api/{group}")

    # ---- AI jobs ----

    async def _ai_image(self, request: Request, body: dict[str, Any]) -> Response:
        product = self._product_for(body)
        if isinstance(product, Response):
            return product
        style = body.get("style")
        if style not in IMAGE_STYLE_CREDITS:
            raise Invalid(f"style must be one of {', '.join(IMAGE_STYLE_CREDITS)}")
        platform = _enum(body, "platform", set(LISTING_CREDITS), "general")
        _enum(body, "aiModel", AI_MODELS, "auto")
        for key in ("primaryImageUrl", "customPrompt", "context", "season"):
            _text(body, key)
        size = body.get("outputSize", {"w": 1000, "h": 1000})
        if not isinstance(size, dict) or set(size) != {"w", "h"}:
            raise Invalid("outputSize must be an object {w, h}")
        if size["w"] not in SIZE_SURCHARGE or size["h"] not in SIZE_SURCHARGE or size["w"] != size["h"]:
            raise Invalid("outputSize sides must be equal and one of 1000, 1200, 1500, 2000")
        px = 2000 if platform == "amazon" else size["w"]  # amazon forces 2000 px (contract §5)
        cost = IMAGE_STYLE_CREDITS[style] + SIZE_SURCHARGE[px]
        payload = {"productId": product["id"], "style": style, "platform": platform, "px": px}
        return self._enqueue("image", product, payload, cost, "ai_image")

    async def _ai_listing(self, request: Request, body: dict[str, Any]) -> Response:
        product = self._product_for(body)
        if isinstance(product, Response):
            return product
        platform = _enum(body, "platform", set(LISTING_CREDITS), "general")
        tone = _enum(body, "tone", TONES, "professional")
        components = body.get("components", list(COMPONENTS))
        if (
            not isinstance(components, list)
            or not components
            or len(set(map(str, components))) != len(components)
            or any(c not in COMPONENTS for c in components)
        ):
            raise Invalid(f"components must be a non-empty unique subset of {list(COMPONENTS)}")
        payload = {
            "productId": product["id"],
            "platform": platform,
            "tone": tone,
            "components": components,
            "seedKeywords": _text(body, "seedKeywords"),
            "targetAudience": _text(body, "targetAudience"),
        }
        return self._enqueue("listing", product, payload, LISTING_CREDITS[platform], "ai_listing")

    def _product_for(self, body: dict[str, Any]) -> dict[str, Any] | Response:
        product_id = body.get("productId")
        if not isinstance(product_id, str) or not product_id:
            raise Invalid("productId is required")
        if product_id not in self.products:
            return self.error_response(404, "not_found", f"Product {product_id} not found")
        return self.products[product_id]

    def _enqueue(
        self, kind: str, product: dict[str, Any], payload: dict[str, Any], cost: int, route: str
    ) -> Response:
        with self._lock:
            if self.balance < cost:
                return self.error_response(
                    402,
                    "insufficient_credits",
                    f"This operation costs {cost} credits; {self.balance} remaining",
                )
            job = self.create_job(
                kind, asin=self._asin_of(product), payload=payload, charge=cost, route=route
            )
            # partial failure: no per-item semantics exist (contract §7), so the first image job of a
            # "partial" product fails (refunded) and its other jobs complete.
            if job.partial and kind == "image" and product["id"] not in self._partial_done:
                self._partial_done.add(product["id"])
                job.fail = True
        if kind == "image" and any("image.generated" in h["events"] for h in self.webhooks.values()):
            task = asyncio.get_running_loop().create_task(self._finish_when_due(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return JSONResponse({"jobId": job.id, "status": "queued", "creditCost": cost}, status_code=202)

    def _asin_of(self, product: dict[str, Any]) -> str | None:
        text = " ".join(str(product.get(k) or "") for k in ("title", "description", "imageUrl"))
        for asin in [
            *self.config.fail_asins,
            *self.config.partial_fail_asins,
            *self.config.noncompliant_asins,
        ]:
            if asin and asin.upper() in text.upper():
                return asin
        match = ASIN_RE.search(text)
        return match.group(1) if match else None

    async def _ai_job(self, request: Request, body: dict[str, Any]) -> Response:
        job = self.jobs.get(request.path_params["job_id"])
        if job is None:
            return self.error_response(404, "not_found", "Job not found")
        status = self.status_of(job)
        now = self.clock.now()
        out: dict[str, Any] = {
            "id": job.id,
            "type": "image_generation" if job.kind == "image" else "listing_generation",
            "status": {"pending": "queued"}.get(status, status),
            "created_at": iso(job.created),
            "updated_at": iso(min(now, job.done) if now >= job.started else job.created),
        }
        if status == "completed" and job.result is not None:
            if job.kind == "image":
                urls = [self.signed_url(f) for f in job.result["files"]]  # fresh signature per read
                out["result"] = {"imageUrl": urls[0], "imageUrls": urls}
            else:
                out["result"] = job.result
        elif status == "failed":
            out.update(error="generation_failed", message="AI model error; credits were returned")
        return JSONResponse(out)

    def finalize(self, job: Job) -> None:
        if job.fail:
            self.refund(job, job.charged - job.refunded)
            return
        product = self.products[job.payload["productId"]]
        noncompliant = self.is_noncompliant(job.asin)
        if job.kind == "listing":
            job.result = listing_copy(product, job.payload, promotional=noncompliant)
            return
        style, platform, px = job.payload["style"], job.payload["platform"], job.payload["px"]
        file_id = self.add_file(
            Look(
                subject=" ".join(str(product.get(k) or "") for k in ("title", "category", "imageUrl")),
                scene=scene_for(style),
                size=(px, px),
                caption=caption_for(style, product["title"], product.get("description")),
                backdrop=NONCOMPLIANT_GREY if noncompliant else WHITE,
                shot=f"{style}/{platform}",
            )
        )
        job.result = {"files": [file_id]}
        # ASSUMPTION: no approval endpoint is documented, so generated images count as approved.
        self.assets.append(
            {
                "id": self.new_id("asset"),
                "file": file_id,
                "productId": product["id"],
                "platform": platform,
                "style": style,
                "approved": True,
                "jobId": job.id,
                "created_at": iso(job.done),
            }
        )
        url = self.signed_url(file_id)
        self._deliver(
            "image.generated",
            {"jobId": job.id, "productId": product["id"], "imageUrl": url, "imageUrls": [url]},
        )

    # ---- products ----

    async def _products_list(self, request: Request, body: dict[str, Any]) -> Response:
        page, limit = _int(request, "page", 1, 1, 10**6), _int(request, "limit", 20, 1, 100)
        items = list(self.products.values())
        chunk = items[(page - 1) * limit : page * limit]
        return JSONResponse({"products": [_public(p) for p in chunk], "total": len(items), "page": page})

    async def _products_get(self, request: Request, body: dict[str, Any]) -> Response:
        product = self.products.get(request.path_params["product_id"])
        if product is None:
            return self.error_response(404, "not_found", "Product not found")
        return JSONResponse({**_public(product), "description": product.get("description")})

    async def _products_create(self, request: Request, body: dict[str, Any]) -> Response:
        title = body.get("title")
        if not isinstance(title, str) or not title.strip():
            raise Invalid("title is required")
        for key in ("description", "category", "imageUrl"):
            _text(body, key)
        image = body.get("imageUrl")
        if image is not None and not image.startswith(("http://", "https://")):
            raise Invalid("imageUrl must be an http(s) URL")
        product: dict[str, Any] = {
            "id": self.new_id("prod"),
            "title": title.strip(),
            "category": body.get("category"),
            "description": body.get("description"),
            "imageUrl": image,
            "images": [{"url": image}] if image else [],
            "created_at": iso(self.clock.now()),
        }
        with self._lock:
            self.products[product["id"]] = product
        return JSONResponse({**_public(product), "description": product["description"]}, status_code=201)

    # ---- assets, export, credits ----

    async def _assets(self, request: Request, body: dict[str, Any]) -> Response:
        q = request.query_params
        page, limit = _int(request, "page", 1, 1, 10**6), _int(request, "limit", 50, 1, 100)
        items = [
            a
            for a in self.assets
            if all(q.get(k) in (None, a[k]) for k in ("productId", "platform", "style"))
        ]
        chunk = items[(page - 1) * limit : page * limit]
        out = [
            {**{k: v for k, v in a.items() if k != "file"}, "url": self.signed_url(a["file"])} for a in chunk
        ]
        return JSONResponse({"assets": out, "total": len(items), "page": page})

    async def _export(self, request: Request, body: dict[str, Any]) -> Response:
        product_id = request.path_params["product_id"]
        if product_id not in self.products:
            return self.error_response(404, "not_found", "Product not found")
        if not any(a["productId"] == product_id and a["approved"] for a in self.assets):
            # ASSUMPTION (contract §8): no approved images -> 404
            return self.error_response(404, "no_approved_images", "Product has no approved images")
        export_id = f"{product_id}_{int(self.clock.now())}_{secrets.token_hex(8)}.zip"
        expires = self.clock.now() + EXPORT_TTL
        self.exports[export_id] = (product_id, expires)
        return JSONResponse(
            {"downloadUrl": f"{self.public_url}/exports/{export_id}", "expiresAt": iso(expires)}
        )

    async def _serve_export(self, request: Request) -> Response:
        entry = self.exports.get(request.path_params["export_id"])
        if entry is None:
            return Response("AccessDenied", status_code=403)
        if self.clock.now() > entry[1]:
            return Response("Request has expired", status_code=403)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as zf:  # per-platform subfolders (contract §8)
            for a in self.assets:
                if a["productId"] == entry[0] and a["approved"]:
                    ext = a["file"].rsplit(".", 1)[-1]
                    zf.writestr(
                        f"{a['platform']}/{a['style'].lower()}-{a['id']}.{ext}", self.file_bytes(a["file"])
                    )
        return Response(out.getvalue(), media_type="application/zip")

    async def _credits(self, request: Request, body: dict[str, Any]) -> Response:
        now = datetime.fromtimestamp(self.clock.now(), UTC)
        renews = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
        topup = 0  # the sandbox ledger is one pool; all of it counts as subscription credits
        return JSONResponse(
            {
                "creditsRemaining": self.balance,
                "subscriptionCredits": self.balance - topup,
                "topupCredits": topup,
                "plan": "pro",
                "renewsAt": renews.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )

    # ---- webhooks ----

    async def _webhooks_create(self, request: Request, body: dict[str, Any]) -> Response:
        url, events = _webhook_fields(body, partial=False)
        hook: dict[str, Any] = {
            "id": self.new_id("wh"),
            "url": url,
            "events": events,
            "secret": f"whsec_{secrets.token_hex(16)}",
            "created_at": iso(self.clock.now()),
        }
        self.webhooks[hook["id"]] = hook
        return JSONResponse(hook, status_code=201)  # the secret is shown only here

    async def _webhooks_list(self, request: Request, body: dict[str, Any]) -> Response:
        return JSONResponse({"webhooks": [_no_secret(h) for h in self.webhooks.values()]})

    async def _webhooks_update(self, request: Request, body: dict[str, Any]) -> Response:
        hook = self.webhooks.get(request.path_params["webhook_id"])
        if hook is None:
            return self.error_response(404, "not_found", "Webhook not found")
        url, events = _webhook_fields(body, partial=True)
        hook.update({k: v for k, v in (("url", url), ("events", events)) if v is not None})
        return JSONResponse(_no_secret(hook))

    async def _webhooks_delete(self, request: Request, body: dict[str, Any]) -> Response:
        if self.webhooks.pop(request.path_params["webhook_id"], None) is None:
            return self.error_response(404, "not_found", "Webhook not found")
        return Response(status_code=204)

    async def _finish_when_due(self, job: Job) -> None:
        """A job finishes at its time whether or not anyone polls, so its event goes out then."""
        await asyncio.sleep(max(0.0, job.done - self.clock.now()) + 0.01)
        self._finalize_once(job)

    def _deliver(self, event: str, data: dict[str, Any]) -> None:
        """POST to every subscribed URL: 5 s to answer, no retries (contract §9)."""
        for hook in list(self.webhooks.values()):
            if event not in hook["events"]:
                continue
            raw = json.dumps({"event": event, "created_at": iso(self.clock.now()), "data": data}).encode()
            record = {
                "webhook_id": hook["id"],
                "url": hook["url"],
                "event": event,
                "body": raw,
                "signature": sign(hook["secret"], raw),
                "status": None,
                "error": None,
            }
            self.deliveries.append(record)
            threading.Thread(target=_post, args=(record,), daemon=True).start()


def _post(record: dict[str, Any]) -> None:
    try:
        response = httpx.post(
            record["url"],
            content=record["body"],
            timeout=5.0,
            headers={"Content-Type": "application/json", "X-Webhook-Signature": record["signature"]},
        )
        record["status"] = response.status_code
    except httpx.HTTPError as exc:
        record["error"] = type(exc).__name__


def _public(product: dict[str, Any]) -> dict[str, Any]:
    return {k: product[k] for k in ("id", "title", "category", "images", "created_at")}


def _no_secret(hook: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in hook.items() if k != "secret"}


def _enum(body: dict[str, Any], key: str, allowed: set[str], default: str) -> str:
    value = body.get(key, default)
    if value not in allowed:
        raise Invalid(f"{key} must be one of {', '.join(sorted(allowed))}")
    return str(value)


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise Invalid(f"{key} must be a non-empty string")
    return value


def _int(request: Request, key: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(key)
    try:
        value = default if raw is None else int(raw)
    except ValueError:
        raise Invalid(f"{key} must be an integer") from None
    if not lo <= value <= hi:
        raise Invalid(f"{key} must be between {lo} and {hi}")
    return value


def _webhook_fields(body: dict[str, Any], *, partial: bool) -> tuple[str | None, list[str] | None]:
    url, events = body.get("url"), body.get("events")
    if partial and url is None and events is None:
        raise Invalid("url or events is required")
    if (url is not None or not partial) and (
        not isinstance(url, str) or not url.startswith(("http://", "https://"))
    ):
        raise Invalid("url must be an http(s) URL")
    if (events is not None or not partial) and (
        not isinstance(events, list) or not events or not all(isinstance(e, str) and e for e in events)
    ):
        raise Invalid("events must be a non-empty array of event names")
    return url, events
