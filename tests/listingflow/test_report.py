"""The end-of-run cost table: whole provider names and amounts at 80 columns, piped or narrower."""

from __future__ import annotations

import io
import re

from rich.console import Console

from flows.costs import CostLedger, CostSummary, JobCost
from listingflow.report import print_costs


def _add_jobs(ledger: CostLedger, jobs: list[tuple[str, str, int | None, int, bool, bool]]) -> None:
    """(provider, step, charged, refunded, reused, held) per job, one product each; a held job may
    have cost 10."""
    for i, (provider, step, charged, refunded, reused, held) in enumerate(jobs):
        ledger.add(
            JobCost(
                provider=provider,
                step=step,
                product=f"US/B0{i}",
                job_id=f"j{i}",
                charged=charged,
                refunded=refunded,
                reused=reused,
                held=held,
                possibly_charged=10 if held else 0,
            )
        )


def _summary() -> object:
    ledger = CostLedger()
    jobs = [
        ("listingrva", "copy", 10, 0),
        ("pixii", "aplus", 20, 0),
        ("pixii", "scale", 6, 6),
        ("prodvisual", "images", 7, 0),
    ]
    _add_jobs(ledger, [(p, s, c, r, False, False) for p, s, c, r in jobs * 3])
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


def _markdown_rows(summary: CostSummary) -> tuple[list[str], list[dict[str, str]]]:
    """The markdown report's header and rows, each cell as it reads (no escapes, no bold)."""
    table = [line for line in summary.markdown().splitlines() if line.startswith("| ")]

    def cells(line: str) -> list[str]:
        parts = re.split(r"(?<!\\) \| ", line.strip()[2:-2])
        return [
            p.replace("\\*", "*").replace("\\|", "|").removeprefix("**").removesuffix("**") for p in parts
        ]

    header = cells(table[0])
    return header, [dict(zip(header, cells(line), strict=True)) for line in table[1:]]


def test_the_terminal_and_the_markdown_report_show_the_same_figures() -> None:
    """Every cell the terminal shows (as a table, or one line per row) reads as in the markdown report:
    the credits of jobs of unknown cost, the starred money total, the requests, what may have been
    charged."""
    ledger = CostLedger()
    jobs = [
        ("pixii", "aplus", 20, 0, False, False),
        ("pixii", "aplus", None, 0, False, False),  # its cost not reported: "+ 1 unknown"
        ("pixii", "scale", 6, 6, False, False),
        ("pixii", "aplus", 20, 0, True, False),  # reused from an earlier run
        ("prodvisual", "images", 3, 1, False, False),
        ("listingrva", "copy", 10, 0, False, False),
        ("listingrva", "copy", None, 0, False, True),  # held: may have cost 10
    ]
    _add_jobs(ledger, jobs)
    summary = ledger.summary(
        "run-1", price_per_credit={"prodvisual": 0.5, "pixii": 0.25}, requests={"pixii": 7, "prodvisual": 2}
    )
    header, rows = _markdown_rows(summary)
    total = rows[-1]
    assert total["provider"] == "total" and total["money"] == "1.00 USD*"  # prodvisual's only: see the note
    assert total["charged"] == "39 + 2 unknown" and total["possibly charged"] == "10"

    wide = io.StringIO()
    print_costs(Console(file=wide, width=200, color_system=None), summary)
    lines = wide.getvalue().splitlines()
    shown = [name for name in re.split(r" {2,}", lines[1].strip()) if name]  # the table's header
    assert set(shown) <= set(header) and {"charged", "possibly charged", "reused", "money"} <= set(shown)
    for row in rows:
        figures = [re.escape(row[name]) for name in shown if row[name]]
        assert any(re.fullmatch(r" *" + " {2,}".join(figures) + " *", line) for line in lines), (row, lines)

    narrow = io.StringIO()
    print_costs(Console(file=narrow, width=60, color_system=None), summary)
    for row in rows:
        label = " ".join(row[name] for name in ("provider", "step") if row[name])
        figures = ", ".join(f"{name} {row[name]}" for name in shown[2:] if row[name])
        assert f"  {label}: {figures}" in narrow.getvalue().splitlines(), (label, narrow.getvalue())
