"""The plain baseline: the same provider calls as listingflow's default pipeline, with asyncio + httpx only.

No Prefect, no task runs, no caching, no pydantic models: what a competent hand-written script would do
for each catalog product, with the same request counts as listingflow's default steps (copy on
ListingRVA and images on ProdVisual at once, A+ on Pixii once both exist, Scale on Pixii per variation
once the image exists). Given the providers' limits (``spec["limits"]``), it keeps each route group
within them with a plain sliding window per group (N requests at once, then the next as the oldest
leaves the window), the way a script writer reads "N per minute"; without them it sends freely.

* ListingRVA: page through ``GET /products`` for an existing record with the product's title and
  category, ``POST /products`` if there is none, ``POST /ai/listing`` and poll ``GET /ai/jobs/{id}``;
* ProdVisual: ``GET /v1/styles`` once, then images of several products merged into
  ``POST /v1/generate/batch`` requests of at most 50 items (a product's items never split; a batch
  waits ``linger`` seconds for more products, like listingflow's batcher), polled on
  ``GET /v1/generations/{batch_id}``;
* Pixii: ``POST /v1/api/a_plus`` and one ``POST /v1/api/scale`` per variation, polled on
  ``GET /v1/api/jobs/{id}``;
* every output image is downloaded and written to ``out_dir``, plus one JSON file per product.

Poll cadences follow the same ``<PROVIDER>_POLL_INTERVAL_SECONDS`` variables listingflow reads, so at
zero latency both make one poll per job. ``python -m benchmarks.baseline_asyncio spec.json out.json``
runs it in a fresh process (as ``benchmarks.run`` does) and reports wall time and peak RSS.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import resource
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import httpx

PAGE_SIZE = 100
MAX_BATCH_ITEMS = 50


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def read_catalog(path: str) -> list[dict[str, Any]]:
    products = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for row in csv.DictReader(fh):
            variations = []
            for part in (row.get("variations") or "").split("|"):
                if part.strip():
                    variations.append(part.split(":", 1)[0].strip())
            products.append(
                {
                    "asin": row["asin"].strip(),
                    "country_code": row["country_code"].strip(),
                    "title": row["title"].strip(),
                    "category": (row.get("category") or "").strip(),
                    "description": (row.get("description") or "").strip(),
                    "image_url": (row.get("image_url") or "").strip(),
                    "variations": variations,
                }
            )
    return products


class Window:
    """At most ``n`` requests in any ``window`` seconds (plus 1% and 50 ms for the way to the server)."""

    def __init__(self, n: int, window: float) -> None:
        self.n, self.window = n, window * 1.01 + 0.05
        self.sent: deque[float] = deque()
        self.lock = asyncio.Lock()

    async def take(self) -> None:
        async with self.lock:
            while len(self.sent) >= self.n:
                wait = self.sent[0] + self.window - time.monotonic()
                if wait <= 0:
                    self.sent.popleft()
                else:
                    await asyncio.sleep(wait)
            self.sent.append(time.monotonic())


def route_groups(provider: str, method: str, url: str) -> list[str]:
    """The documented route groups a request counts against (docs/providers/*.md, rate limits)."""
    if provider == "listingrva":
        return (
            ["ai", "global"]
            if "/ai/" in url
            else ["products", "global"]
            if "/products" in url
            else ["global"]
        )
    if provider == "prodvisual":
        return ["api"]
    return ["submit"] if method == "POST" else []


class Baseline:
    def __init__(
        self,
        http: httpx.AsyncClient,
        out_dir: Path,
        *,
        linger: float,
        styles: list[str],
        limits: dict[str, dict[str, list[float]]] | None = None,
    ) -> None:
        self.windows = {
            (p, g): Window(int(n), float(w))
            for p, groups in (limits or {}).items()
            for g, (n, w) in groups.items()
        }
        self.http = http
        self.out = out_dir
        self.linger = linger
        self.styles = styles
        self.lrva = _env("LISTINGRVA_BASE_URL", "").rstrip("/")
        self.pv = _env("PRODVISUAL_BASE_URL", "").rstrip("/")
        self.px = _env("PIXII_BASE_URL", "").rstrip("/")
        self.h_lrva = {"Authorization": f"Bearer {_env('LISTINGRVA_API_KEY', '')}"}
        self.h_pv = {"Authorization": f"Bearer {_env('PRODVISUAL_API_KEY', '')}"}
        self.h_px = {"Authorization": f"Bearer {_env('PIXII_API_KEY', '')}"}
        self.poll_lrva = float(_env("LISTINGRVA_POLL_INTERVAL_SECONDS", "5"))
        self.first_lrva = float(
            _env("LISTINGRVA_FIRST_POLL_SECONDS", _env("LISTINGRVA_POLL_INTERVAL_SECONDS", "20"))
        )
        self.poll_pv = float(_env("PRODVISUAL_POLL_INTERVAL_SECONDS", "5"))
        self.poll_px = float(_env("PIXII_POLL_INTERVAL_SECONDS", "5"))
        self.styles_checked: asyncio.Task[Any] | None = None
        self.queue: list[tuple[dict[str, Any], asyncio.Future[list[str]]]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.batches: set[asyncio.Task[None]] = set()  # the running batches (the loop keeps weak references)
        self.requests = 0

    def provider_of(self, url: str) -> str:
        return (
            "listingrva"
            if url.startswith(self.lrva)
            else "prodvisual"
            if url.startswith(self.pv)
            else "pixii"
        )

    async def call(self, method: str, url: str, headers: dict[str, str], **kw: Any) -> Any:
        provider = self.provider_of(url)
        for attempt in range(8):
            for group in route_groups(provider, method, url):
                if (window := self.windows.get((provider, group))) is not None:
                    await window.take()
            self.requests += 1
            r = await self.http.request(method, url, headers=headers, **kw)
            if r.status_code == 429 or r.status_code >= 500:
                await asyncio.sleep(min(30.0, 0.5 * 2**attempt))
                continue
            r.raise_for_status()
            return r.json()
        r.raise_for_status()
        return r.json()

    async def download(self, url: str, path: Path) -> None:
        r = await self.http.get(url)
        r.raise_for_status()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(r.content)

    # ---- ListingRVA ----

    async def listing(self, p: dict[str, Any]) -> dict[str, Any]:
        product_id = None
        seen, page = 0, 1
        while product_id is None:
            data = await self.call(
                "GET", f"{self.lrva}/products", self.h_lrva, params={"page": page, "limit": PAGE_SIZE}
            )
            items = data.get("products", [])
            for item in items:
                if (
                    item.get("title", "").strip() == p["title"]
                    and (item.get("category") or "").strip() == p["category"]
                ):
                    product_id = item["id"]
                    break
            seen += len(items)
            if product_id is not None or not items or len(items) < PAGE_SIZE or seen >= data.get("total", 0):
                break
            page += 1
        if product_id is None:
            body = {
                "title": p["title"],
                "description": p["description"],
                "category": p["category"],
                "imageUrl": p["image_url"],
            }
            product_id = (await self.call("POST", f"{self.lrva}/products", self.h_lrva, json=body))["id"]
        body = {
            "productId": product_id,
            "platform": "amazon",
            "tone": "professional",
            "components": ["title", "bullets", "description", "keywords"],
        }
        job = await self.call("POST", f"{self.lrva}/ai/listing", self.h_lrva, json=body)
        job_id = job.get("jobId") or job.get("job_id") or job.get("id")
        await asyncio.sleep(self.first_lrva)
        while True:
            state = await self.call("GET", f"{self.lrva}/ai/jobs/{job_id}", self.h_lrva)
            if state["status"] in ("completed", "failed"):
                return state.get("result") or {}
            await asyncio.sleep(self.poll_lrva)

    # ---- ProdVisual (cross-product batches) ----

    async def images(self, p: dict[str, Any]) -> list[str]:
        if self.styles_checked is None:
            self.styles_checked = asyncio.ensure_future(self.call("GET", f"{self.pv}/v1/styles", {}))
        await self.styles_checked
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self.queue.append((p, future))
        if sum(len(self.styles) for _ in self.queue) >= MAX_BATCH_ITEMS:
            self.flush()
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.linger, self.flush)
        return await future

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        members, self.queue = self.queue, []
        chunk: list[tuple[dict[str, Any], asyncio.Future[list[str]]]] = []
        for member in members:
            if chunk and len(self.styles) * (len(chunk) + 1) > MAX_BATCH_ITEMS:
                self._start_batch(chunk)
                chunk = []
            chunk.append(member)
        if chunk:
            self._start_batch(chunk)

    def _start_batch(self, members: list[tuple[dict[str, Any], asyncio.Future[list[str]]]]) -> None:
        task = asyncio.ensure_future(self.batch(members))
        self.batches.add(task)
        task.add_done_callback(self.batches.discard)

    async def batch(self, members: list[tuple[dict[str, Any], asyncio.Future[list[str]]]]) -> None:
        try:
            items = [
                {"image_url": p["image_url"], "style": s, "platform": "amazon", "dimensions": "1500x1500"}
                for p, _ in members
                for s in self.styles
            ]
            sub = await self.call("POST", f"{self.pv}/v1/generate/batch", self.h_pv, json={"items": items})
            await asyncio.sleep(self.poll_pv)
            while True:
                state = await self.call("GET", f"{self.pv}/v1/generations/{sub['batch_id']}", self.h_pv)
                if state["status"] in ("completed", "failed"):
                    break
                await asyncio.sleep(self.poll_pv)
            urls = [r.get("output_url") for r in state.get("results", [])]
            for n, (_, future) in enumerate(members):
                future.set_result([u for u in urls[n * len(self.styles) : (n + 1) * len(self.styles)] if u])
        except BaseException as exc:  # noqa: BLE001
            for _, future in members:
                if not future.done():
                    future.set_exception(exc)

    # ---- Pixii ----

    async def pixii_job(self, path: str, body: dict[str, Any]) -> list[str]:
        job = await self.call("POST", f"{self.px}{path}", self.h_px, json=body)
        while True:
            state = await self.call("GET", f"{self.px}/v1/api/jobs/{job['job_id']}", self.h_px)
            if state["status"] in ("completed", "failed"):
                break
            await asyncio.sleep(self.poll_px)
        urls = []
        for ad in (state.get("output") or {}).get("ads", []):
            urls += [u for u in [ad.get("preview"), ad.get("preview_url"), *(ad.get("modules") or [])] if u]
        return urls

    # ---- one product ----

    async def product(self, p: dict[str, Any]) -> None:
        folder = self.out / p["country_code"] / p["asin"]
        copy_job = asyncio.ensure_future(self.listing(p))  # the image does not need the copy
        try:
            image_urls = await self.images(p)
        except BaseException:
            copy_job.cancel()
            raise
        await asyncio.gather(
            *[self.download(u, folder / f"images-{n}.png") for n, u in enumerate(image_urls)]
        )
        main = image_urls[0] if image_urls else p["image_url"]

        async def aplus_job() -> tuple[dict[str, Any], list[str]]:
            copy = await copy_job
            bullets = "\n".join(f"- {b}" for b in (copy.get("bullets") or []))
            prompt = f"Product: {copy.get('title') or p['title']}\nKey features:\n{bullets}"
            aplus = await self.pixii_job(
                "/v1/api/a_plus",
                {
                    "asin": p["asin"],
                    "country_code": p["country_code"],
                    "types": ["A+ Basic"],
                    "main_image_url": main,
                    "other_image_urls": [p["image_url"]],
                    "user_prompt": prompt,
                },
            )
            await asyncio.gather(*[self.download(u, folder / f"aplus-{n}.png") for n, u in enumerate(aplus)])
            return copy, aplus

        async def scale(variation: str) -> None:
            urls = await self.pixii_job(
                "/v1/api/scale",
                {
                    "asin": variation,
                    "country_code": p["country_code"],
                    "scale_mode": "variation",
                    "main_image_input": main,
                    "user_prompt": f"Variation {variation} of {p['title']}.",
                    "items": [{"preview_url": main, "platform": "Amazon", "asset_type": "Main Image"}],
                },
            )
            await asyncio.gather(
                *[
                    self.download(u, self.out / p["country_code"] / variation / f"scale-{n}.png")
                    for n, u in enumerate(urls)
                ]
            )

        (copy, aplus), *_ = await asyncio.gather(aplus_job(), *[scale(v) for v in p["variations"]])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "result.json").write_text(json.dumps({"copy": copy, "images": image_urls, "aplus": aplus}))


async def run(
    catalog: str,
    out_dir: Path,
    *,
    concurrency: int = 50,
    linger: float = 1.0,
    styles: list[str] | None = None,
    limits: dict[str, Any] | None = None,
) -> dict[str, Any]:
    products = read_catalog(catalog)
    pool = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    started = time.perf_counter()
    started_epoch = time.time()
    failures = 0
    async with httpx.AsyncClient(timeout=60.0, limits=pool) as http:
        base = Baseline(http, out_dir, linger=linger, styles=styles or ["white_bg"], limits=limits)
        gate = asyncio.Semaphore(concurrency)

        async def one(p: dict[str, Any]) -> None:
            nonlocal failures
            async with gate:
                try:
                    await base.product(p)
                except Exception as exc:  # noqa: BLE001
                    failures += 1
                    print(f"{p['asin']}: {type(exc).__name__}: {exc}", file=sys.stderr)

        await asyncio.gather(*[one(p) for p in products])
    wall = time.perf_counter() - started
    return {
        "wall": wall,
        "products": len(products),
        "failures": failures,
        "requests": base.requests,
        "started_epoch": started_epoch,
    }


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    result = asyncio.run(
        run(
            spec["catalog"],
            Path(spec["out_dir"]),
            concurrency=spec.get("concurrency", 50),
            linger=spec.get("linger", 1.0),
            styles=spec.get("styles"),
            limits=spec.get("limits"),
        )
    )
    from .worker import peak_rss_mb

    result["peak_rss_mb"] = peak_rss_mb()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["ru_maxrss_mb"] = usage.ru_maxrss / 1024.0
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    Path(sys.argv[2]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
