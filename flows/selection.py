"""Which of a catalog's products a run covers: one rule for the run and for ``listingflow estimate``."""

from __future__ import annotations

from providers.contract import Product

from .catalog import Catalog
from .params import RunParameters
from .rerun import Rerun


def select_products(
    params: RunParameters, catalog: Catalog, rerun: Rerun | None = None
) -> tuple[list[Product], list[str]]:
    """The catalog's products a run (or an estimate) covers, and notes on what was asked for and is
    not there: ``products`` matches an ASIN or a marketplace key (``DE/B0...``), in any case."""
    notes = []
    products = catalog.products
    if params.products:
        wanted = {a.strip().upper() for a in params.products}
        products = [p for p in products if p.asin.upper() in wanted or p.key.upper() in wanted]
        missing = wanted - {p.asin.upper() for p in products} - {p.key.upper() for p in products}
        if missing:
            notes.append(f"not in the catalog: {', '.join(sorted(missing))}")
    if rerun is not None:
        products = [p for p in products if p.key in rerun.failed]
        notes.append(f"rerunning {len(products)} failed/deferred product(s) of run {rerun.of}")
        notes.append(rerun.describe())
    return products, notes
