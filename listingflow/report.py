"""The end of ``listingflow run``: the headline, where the outputs are, the cost table, what is not done.

Paths and messages are printed whole on one line (``soft_wrap``: a terminal may fold them, nothing here
breaks them). The cost table keeps only the columns that say something for this run, so it fits 80
columns; where it still does not fit, the same figures are printed as one line per row.
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from flows.costs import CostLine, CostSummary


def print_summary(console: Console, summary: Any, elapsed: float) -> None:
    say = _say(console)
    console.print()
    style = "green" if summary.ok else "yellow"
    manifest = f"{summary.archive}/runs/{summary.run_id}/manifest.json"
    if not summary.interrupted:
        console.print(
            f"{summary.headline()}  ({elapsed:.0f}s)",
            style=f"bold {style}",
            soft_wrap=True,
            markup=False,
            highlight=False,
        )
        say(f"outputs: {summary.archive}")
        say(f"run manifest: {manifest}")
    for note in summary.notes:
        say(f"note: {note}", style="dim")
    if summary.cost is not None:
        print_costs(console, summary.cost)
        say(f"cost summary: {summary.archive}/runs/{summary.run_id}/cost-summary.json")
    _print_compliance(say, summary.products)
    failures = summary.failure_report(include_interrupted=False)
    if failures:
        console.print("not done:", style="bold")
        for line in failures:
            say(f"  {line}")  # "[pixii] ..." is text, not markup
    gallery = summary.gallery  # the review page (flows/gallery.py)
    if gallery:  # what to open next, after the failures (a long list must not bury it), on one line
        say(f"review gallery: {gallery}")
    if summary.interrupted:  # last, in one line: what the person who pressed Ctrl-C looks for
        say(f"{summary.headline()} ({elapsed:.0f}s); manifest: {manifest}", style="bold yellow")


def _print_compliance(say: Any, products: list[Any]) -> None:
    """One line of counts, then the non-compliant products with their reasons (flows/compliance)."""
    from flows.compliance import report

    line = report.summary_line(products)
    if line is None:
        return
    say(line)
    for flagged in report.noncompliant(products, limit=20, reasons=3):
        say(f"  {flagged}")


def _say(console: Console) -> Any:
    def say(text: str, style: str | None = None) -> None:
        console.print(text, style=style, soft_wrap=True, markup=False, highlight=False)

    return say


_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("jobs", lambda line, cost: str(line.jobs)),
    ("charged", lambda line, cost: _credits(line.charged, line.unknown_jobs)),
    ("refunded", lambda line, cost: str(line.refunded)),
    ("net", lambda line, cost: _credits(line.net, line.unknown_jobs)),
    ("reused", lambda line, cost: str(line.reused_jobs)),
    ("requests", lambda line, cost: _requests(line, cost)),
    ("money", lambda line, cost: _money(line, cost)),
)


def print_costs(console: Console, cost: CostSummary) -> None:
    """The provider-and-step, provider and total lines, as a table when it fits the console's width."""
    rows = [*cost.by("step"), *cost.by("provider"), cost.total]
    columns = [(name, cell) for name, cell in _COLUMNS if _says_something(name, cost)]
    table = Table(
        title="Cost summary (credits)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1, 0, 0),
    )  # two spaces between columns, none at the edges
    table.add_column("provider", no_wrap=True)
    table.add_column("step", no_wrap=True)
    for name, _ in columns:
        table.add_column(name, justify="right", no_wrap=True)
    for line in rows:
        table.add_row(
            *_names(line),
            *[cell(line, cost) for _, cell in columns],
            style="bold" if line.scope != "step" else None,
        )
    if console.measure(table, options=console.options.update_width(10_000)).maximum <= console.width:
        console.print(table)
    else:  # too narrow for the table: the same figures, one line per row, never cut
        console.print("Cost summary (credits)", style="bold")
        for line in rows:
            cells = ", ".join(f"{name} {text}" for name, cell in columns if (text := cell(line, cost)))
            console.print(
                f"  {' '.join(_names(line)).strip()}: {cells}", soft_wrap=True, markup=False, highlight=False
            )
    if cost.money_note():
        console.print(
            f"* the money total covers {cost.money_note()}",
            soft_wrap=True,
            markup=False,
            highlight=False,
            style="dim",
        )


def _says_something(column: str, cost: CostSummary) -> bool:
    """Charged and refunded only when something was refunded (else both equal net), reused only when
    something was; the others always."""
    total = cost.total
    if column in ("charged", "refunded"):
        return total.refunded != 0
    if column == "reused":
        return total.reused_jobs != 0
    return True


def _names(line: CostLine) -> tuple[str, str]:
    if line.scope == "total":
        return "total", ""
    return line.provider, line.step if line.scope == "step" else "all"


def _requests(line: CostLine, cost: CostSummary) -> str:
    if line.scope == "provider":
        return str(cost.requests.get(line.provider, 0))
    return str(sum(cost.requests.values())) if line.scope == "total" else ""


def _money(line: CostLine, cost: CostSummary) -> str:
    """A line's money; the total's adds up the providers that have a price (starred: see the note)."""
    if line.scope != "total" or not cost.money_note():
        return line.money_text(cost.currency)
    priced = sum(p.money or 0.0 for p in cost.by("provider") if p.money_status == "ok")
    return f"{priced:.2f} {cost.currency}*"


def _credits(value: int, unknown: int) -> str:
    return f"{value} + {unknown} unknown" if unknown else str(value)
