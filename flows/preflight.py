"""Pre-flight: everything a run needs is checked before its first paid call.

* Each chosen provider answers a free authenticated request (``Provider.check_access``): a missing or
  rejected credential, or a base URL that is not the API, stops the run before anything is spent.
* The archive takes a test object (written, then removed): no credentials, a missing bucket or a
  read-only folder stops the run before outputs would be paid for and then lost.
* Every catalog row is checked against what its providers need for its steps
  (``Provider.check_product``, with placeholders for what earlier steps produce): a row a provider
  cannot serve is rejected with its file, line and reason, and nothing is spent on it, not even the
  steps before the one that cannot run; the other rows run.

Run-level problems are returned as one line each; the flow refuses the run with them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from providers.contract import (
    STEP_SPECS,
    ListingCopy,
    Product,
    Provider,
    Step,
    StepContext,
    producer,
)
from providers.errors import AuthenticationError, ProviderError, redact
from providers.retries import capped

from .archive import ArchiveUnavailable, SpooledArchive, run_key
from .catalog import Catalog, RowError
from .params import RunParameters

PLACEHOLDER_IMAGE = "https://placeholder.invalid/main.png"
PLACEHOLDER_PREPARED = {"product_id": "prod_preflight"}
ReadManifest = Callable[[Product], Awaitable[dict[str, Any] | None]]


@dataclass
class RunChecks:
    """What pre-flight found: the problems that stop the run (one line each), and the balances the
    providers' access checks read (the run's starting balances: not read again)."""

    problems: list[str] = field(default_factory=list)
    balances: dict[str, int] = field(default_factory=dict)


async def check_run(providers: dict[str, Provider], archive: SpooledArchive, run_id: str) -> RunChecks:
    """Credentials and the archive, checked at once."""
    names = sorted(providers)
    balances: dict[str, int | None] = dict.fromkeys(names)

    async def access(name: str) -> str | None:
        problem, balances[name] = await check_access(name, providers[name])
        return problem

    results = await asyncio.gather(check_archive(archive, run_id), *map(access, names))
    secrets = [s for p in providers.values() for s in p.settings.secret_values()]
    return RunChecks(
        problems=[redact(line, secrets) for line in results if line],
        balances={n: b for n, b in balances.items() if b is not None},
    )


async def check_access(name: str, plugin: Provider) -> tuple[str | None, int | None]:
    """One line when the provider cannot be used with the configured base URL and credential (a
    passing fault is retried by the client, as for any request), else the balance the check read."""
    try:
        with capped(max_attempts=3, max_total_seconds=30.0):  # a passing fault, not an outage waited out
            return None, await plugin.check_access()
    except Exception as exc:  # noqa: BLE001 - every failure becomes its one line
        return _access_problem(name, plugin, exc), None


def _access_problem(name: str, plugin: Provider, exc: Exception) -> str:
    """The line for a failed access check: which setting to look at (e.g. an invalid URL is reported
    this way too, never as a traceback)."""
    prefix = str(plugin.settings.model_config.get("env_prefix") or f"{name.upper()}_")
    if isinstance(exc, AuthenticationError) and plugin.settings.api_key is None:
        return (
            f"{name}: no credential: set {prefix}API_KEY (or the Prefect Secret block "
            f"'{prefix.rstrip('_').lower()}-api-key')"
        )
    if isinstance(exc, AuthenticationError):
        return f"{name}: credential rejected ({exc.message}): check {prefix}API_KEY"
    if isinstance(exc, ProviderError):
        return f"{name}: {plugin.settings.base_url} cannot be used ({exc.message}): check {prefix}BASE_URL"
    return f"{name}: {plugin.settings.base_url} cannot be used ({type(exc).__name__}: {exc})"


async def check_archive(archive: SpooledArchive, run_id: str) -> str | None:
    """Write a test object where this run's manifest will go, then remove it."""
    target = archive.archive
    key = run_key(archive.prefix, run_id, ".preflight")
    try:
        await asyncio.to_thread(
            target.put, key, b"listingflow pre-flight\n", content_type="text/plain", metadata={}
        )
        await asyncio.to_thread(target.delete, key)
    except (ArchiveUnavailable, OSError, ValueError) as exc:
        return f"archive {archive.uri} is not writable: {exc}"
    return None


async def check_rows(
    params: RunParameters,
    catalog: Catalog,
    products: list[Product],
    providers: dict[str, Provider],
    read_manifest: ReadManifest,
) -> tuple[list[Product], list[RowError]]:
    """The products every chosen provider can serve, and a row error for each other one."""
    servable: list[Product] = []
    rejected: list[RowError] = []
    for product in products:
        problem = await _row_problem(params, product, providers, read_manifest)
        if problem is None:
            servable.append(product)
        else:
            rejected.append(catalog.reject(product, problem[1], field=problem[0]))
    return servable, rejected


async def _row_problem(
    params: RunParameters, product: Product, providers: dict[str, Provider], read_manifest: ReadManifest
) -> tuple[str | None, str] | None:
    """(field, reason) of the first step the product cannot run, or None."""
    try:
        p = params.for_product(product.overrides)
    except ValueError as exc:
        return "overrides", f"invalid overrides: {exc}"
    steps = p.ordered_steps()
    needs_image = any("image" in STEP_SPECS[s].requires for s in steps)
    main_image = (
        await _main_image(product, producer("image") in steps, read_manifest) if needs_image else None
    )
    ctx = p.context_for(
        product,
        copy_result=ListingCopy(title=product.title, bullets=[product.title]),
        main_image_url=main_image,
        prepared=dict(PLACEHOLDER_PREPARED),
    )
    for step in steps:
        name = p.providers.for_step(step)
        plugin = providers.get(name)
        if plugin is None:
            return (
                "overrides.providers",
                f"{step}: provider {name!r} is not one of this run's ({', '.join(sorted(providers))})",
            )
        contexts = STEP_SPECS[step].fan_out(ctx)
        if "image" in STEP_SPECS[step].requires and contexts and main_image is None:
            return (
                "image_url",
                f"{step} ({name}) needs a main image: run the images step first or give image_url",
            )
        for context in contexts:
            reason = await _checked(plugin, step, context)
            if reason:
                return None, f"{step} ({name}): {reason}"
    return None


async def _checked(plugin: Provider, step: Step, ctx: StepContext) -> str | None:
    try:
        return await plugin.acheck_product(step, ctx)
    except Exception as exc:  # noqa: BLE001 - a plugin's check that breaks rejects the row, not the run
        return f"{type(exc).__name__}: {exc}"


async def _main_image(product: Product, images_run: bool, read_manifest: ReadManifest) -> str | None:
    """What A+ and Scale will get as the main image: the images step's output (a placeholder here),
    the row's first image, or the images an earlier run archived for the product."""
    if images_run:
        return PLACEHOLDER_IMAGE
    if product.image_urls:
        return product.image_urls[0]
    previous = await read_manifest(product) or {}
    outputs = previous.get("steps", {}).get(producer("image"), {}).get("outputs") or []
    return outputs[0].get("source_url") if outputs else None
