"""The end of ``listingflow run``: the headline, where the outputs are, the cost table, what is not done.

Paths and messages are printed whole on one line (``soft_wrap``: a terminal may fold them, nothing here
breaks them). The cost table keeps only the columns that say something for this run, so it fits 80
columns; where it still does not fit, the same figures are printed as one line per row.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

from flows.costs import TERMINAL_COLUMNS, CostSummary
from listingflow.tables import Row, print_figures


def print_summary(console: Console, summary: Any, elapsed: float) -> None:
    say = line_printer(console)
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


def line_printer(console: Console) -> Any:
    """Print whole lines: never folded by rich (a terminal may), and a catalog's or provider's text is
    not markup."""

    def say(text: str, style: str | None = None) -> None:
        console.print(text, style=style, soft_wrap=True, markup=False, highlight=False)

    return say


def print_costs(console: Console, cost: CostSummary) -> None:
    """The provider-and-step, provider and total lines in the cells of the markdown report (one
    definition, ``flows.costs.REPORT_COLUMNS``), without the columns that say nothing for this run."""
    columns = [c for c in TERMINAL_COLUMNS if c.shown is None or c.shown(cost)]
    rows = [
        Row([str(c.cell(line, cost)) for c in columns], bold=line.scope != "step")
        for line in cost.report_lines()
    ]
    print_figures(console, "Cost summary (credits)", [(c.name, c.numeric) for c in columns], rows)
    if cost.money_note():
        console.print(
            f"* the money total covers {cost.money_note()}",
            soft_wrap=True,
            markup=False,
            highlight=False,
            style="dim",
        )
