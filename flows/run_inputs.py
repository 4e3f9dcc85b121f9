"""What a run reads and checks before it spends anything.

First its inputs, before any connection is opened: the parameters (a rerun's merged in), the archive,
the catalog and the providers its steps use. Then, with the providers' clients open, the pre-flight
checks: credentials and archive, each row against its providers, the estimate against the budget. A
run that cannot start raises ``Refused`` with every reason, one line each, and has spent nothing.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

from flows.settings import Settings
from providers.contract import Product, Provider
from providers.registry import load_providers

from .archive import ArchiveUnavailable, SpooledArchive, open_archive, product_manifest_key
from .catalog import Catalog, CatalogError, load_catalog
from .estimate import estimate_run, over_budget
from .params import RunParameters
from .preflight import check_rows, check_run
from .rerun import Rerun, log_rerun, plan_rerun
from .selection import select_products
from .summary import RunSummary


class Refused(Exception):
    """The run cannot start; each problem is one line that says why."""

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclasses.dataclass
class RunInputs:
    """What a run reads before it opens any connection: its parameters (a rerun's merged in), the
    archive, the earlier run it repeats, the catalog and the providers its steps use."""

    params: RunParameters
    archive: SpooledArchive
    rerun: Rerun | None
    catalog: Catalog
    names: list[str]
    classes: dict[str, type[Provider]]


async def load_inputs(params: RunParameters, settings: Settings, summary: RunSummary) -> RunInputs:
    """The run's inputs, or ``Refused`` with every reason it cannot start."""
    registry = load_providers(allow=settings.providers, strict=settings.strict_plugins)
    params, archive, rerun = await _resolve_rerun(params, settings)
    summary.catalog, summary.archive = params.catalog, archive.uri
    problems = _check_providers(params, registry)
    if problems:
        raise Refused(*problems)
    try:
        catalog = load_catalog(params.catalog, s3_endpoint_url=settings.s3_endpoint_url)
    except CatalogError as exc:
        raise Refused(str(exc)) from None
    summary.rejected_rows = list(catalog.rejected)
    names = sorted({params.providers.for_step(s) for s in params.ordered_steps()})
    return RunInputs(params, archive, rerun, catalog, names, {n: registry.get(n) for n in names})


async def _resolve_rerun(
    params: RunParameters, settings: Settings
) -> tuple[RunParameters, SpooledArchive, Rerun | None]:
    """The run's parameters and archive. A rerun's parameters are the original run's where this run does
    not give them (flows/rerun.py), so they are settled before anything reads them."""
    archive = _open_archive(params, settings)
    if not params.rerun_failed_of:
        return params, archive, None
    try:
        rerun = await plan_rerun(params, archive)
    except (ValueError, OSError, ArchiveUnavailable) as exc:
        raise Refused(f"rerun_failed_of: {exc}") from None
    log_rerun(rerun)
    if (rerun.params.archive or settings.archive) != (params.archive or settings.archive):
        archive = _open_archive(rerun.params, settings)
    return rerun.params, archive, rerun


def _open_archive(params: RunParameters, settings: Settings) -> SpooledArchive:
    destination = params.archive or settings.archive
    try:
        return SpooledArchive(
            open_archive(destination, endpoint_url=settings.s3_endpoint_url), settings.spool_path
        )
    except Exception as exc:  # noqa: BLE001 - e.g. an archive URI without a bucket: one line, no traceback
        raise Refused(f"archive {destination}: {exc}") from None


def _check_providers(params: RunParameters, registry: Any) -> list[str]:
    problems = []
    for step in params.ordered_steps():
        name = params.providers.for_step(step)
        if name not in registry.providers:
            why = registry.failures.get(name, "not installed")
            problems.append(f"providers.{step}: provider {name!r} is unavailable ({why})")
        elif step not in registry.providers[name].capabilities:
            able = ", ".join(registry.for_step(step)) or "none installed"
            problems.append(
                f"providers.{step}: {name!r} does not implement {step} (providers that do: {able})"
            )
    return problems


async def checked_products(
    inputs: RunInputs, providers: dict[str, Provider], summary: RunSummary
) -> tuple[list[Product], dict[str, int]]:
    """The products to run once pre-flight passed (nothing spent yet): credentials and archive, each
    row against its providers, the budget; ``Refused`` otherwise. With them, the balances the access
    checks read (each provider's starting balance)."""
    checks = await check_run(providers, inputs.archive, summary.run_id)
    if checks.problems:
        raise Refused(*checks.problems)
    await _replay_spool(inputs.archive, summary)
    products, notes = select_products(inputs.params, inputs.catalog, inputs.rerun)
    summary.notes += notes
    products, rejected = await check_rows(
        inputs.params, inputs.catalog, products, providers, partial(_manifest, inputs.archive)
    )
    summary.rejected_rows += rejected
    over_budget = await _over_budget(inputs, products, providers, checks.balances)
    if over_budget:
        raise Refused(*over_budget)
    return products, checks.balances


async def _over_budget(
    inputs: RunInputs, products: list[Product], providers: dict[str, Any], known: dict[str, int]
) -> list[str]:
    """Why the run's estimate does not fit its budget or a provider's balance (empty: it fits);
    ``known``: the balances pre-flight already read."""
    params = inputs.params
    if params.budget.max_credits is None and not params.budget.per_provider:
        return []
    manifests = {p.key: await _manifest(inputs.archive, p) for p in products}
    estimate = estimate_run(params, products, providers, manifests)
    balances = {n: known[n] if n in known else await _balance(providers[n]) for n in inputs.names}
    return over_budget(
        estimate,
        max_total=params.budget.max_credits,
        per_provider=params.budget.per_provider,
        balances=balances,
    )


async def _replay_spool(archive: SpooledArchive, summary: RunSummary) -> None:
    try:
        replayed = await archive.replay_spool()
        if replayed:
            summary.notes.append(f"archived {len(replayed)} output(s) spooled by an earlier run")
    except ArchiveUnavailable as exc:
        summary.notes.append(f"archive still unreachable, spool kept: {exc}")


async def _manifest(archive: SpooledArchive, product: Product) -> dict[str, Any] | None:
    try:
        return await archive.get_json(
            product_manifest_key(archive.prefix, product.country_code, product.asin)
        )
    except (ArchiveUnavailable, ValueError):
        return None


async def _balance(provider: Any) -> int | None:
    try:
        balance: int | None = await provider.balance()
        return balance
    except Exception:  # noqa: BLE001 - a balance we cannot read is simply unknown
        return None
