"""The end-of-run cost table: whole provider names and amounts at 80 columns, piped or narrower."""

from __future__ import annotations

import io
import re

from rich.console import Console

from flows.costs import CostLedger, JobCost
from listingflow.report import print_costs


def _summary() -> object:
    ledger = CostLedger()
    jobs = [
        ("listingrva", "copy", 10, 0),
        ("pixii", "aplus", 20, 0),
        ("pixii", "scale", 6, 6),
        ("prodvisual", "images", 7, 0),
    ]
    for i, (provider, step, charged, refunded) in enumerate(jobs * 3):
        ledger.add(
            JobCost(
                provider=provider,
                step=step,
                product=f"US/B0{i}",
                job_id=f"j{i}",
                charged=charged,
                refunded=refunded,
            )
        )
    ledger.add(
        JobCost(provider="pixii", step="aplus", product="US/B0X", job_id="old", charged=20, reused=True)
    )
    return ledger.summary(
        "run-1",
        price_per_credit={"pixii": 0.0125, "prodvisual": 0.5},
        currency="EUR",
        requests={"listingrva": 12, "pixii": 40, "prodvisual": 3},
    )


def _render(width: int) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=False, color_system=None)
    print_costs(console, _summary())  # type: ignore[arg-type]
    return out.getvalue().splitlines()


def test_at_80_columns_the_table_keeps_names_and_money_whole() -> None:
    lines = _render(80)
    assert all(len(line.rstrip()) <= 80 for line in lines), lines
    assert any(re.search(r"^ *listingrva +copy +3 .* no price", line) for line in lines), lines
    assert any(re.search(r"^ *prodvisual +all +3 .* 10\.50 EUR", line) for line in lines), lines
    assert any(re.search(r"^ *pixii +all +6 +78 +18 +60 .* 0\.75 EUR", line) for line in lines), lines
    total = next(line for line in lines if line.lstrip().startswith("total"))
    assert "11.25 EUR*" in total  # only the providers with a price; the note says which
    assert any("the money total covers pixii, prodvisual; listingrva has no price" in line for line in lines)
    assert not any("…" in line for line in lines)  # nothing cut with an ellipsis
    header = next(line for line in lines if "provider" in line)
    assert all(c in header for c in ("charged", "refunded", "reused", "requests", "money"))


def test_narrower_than_the_table_each_row_is_one_whole_line() -> None:
    lines = _render(40)
    assert not any("…" in line for line in lines)
    assert any(line.startswith("  prodvisual all:") and "money 10.50 EUR" in line for line in lines), lines
    assert any(line.startswith("  total:") and "money 11.25 EUR*" in line for line in lines), lines
