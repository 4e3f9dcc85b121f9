"""Tables of figures in the terminal: the run's costs, the estimate.

A table when it fits the console's width; when it does not, the same figures as one line per row
(``provider step: jobs 3, net 30, ...``), printed whole: rich would otherwise cut names and amounts
with an ellipsis or fold them inside their cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True, slots=True)
class Row:
    """A row's cells, in the order of the headers; ``bold``: a subtotal or total."""

    cells: Sequence[str]
    bold: bool = False


def print_figures(
    console: Console, title: str, headers: Sequence[tuple[str, bool]], rows: Sequence[Row], *, labels: int = 2
) -> None:
    """``headers``: each column's name and whether it holds figures (right-aligned); the first ``labels``
    columns name the row. Cells are plain text: a ``[`` in a name is not markup."""
    table = Table(
        title=Text(title, style="table.title"),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1, 0, 0),
    )  # two spaces between columns, none at the edges
    for name, numeric in headers:
        table.add_column(name, justify="right" if numeric else "left", no_wrap=True)
    for row in rows:
        table.add_row(*map(Text, row.cells), style="bold" if row.bold else None)
    if console.measure(table, options=console.options.update_width(10_000)).maximum <= console.width:
        console.print(table)
        return
    console.print(title, style="bold", soft_wrap=True, markup=False, highlight=False)
    names = [name for name, _ in headers[labels:]]
    for row in rows:
        label = " ".join(cell for cell in row.cells[:labels] if cell)
        figures = ", ".join(
            f"{name} {text}" for name, text in zip(names, row.cells[labels:], strict=True) if text
        )
        console.print(f"  {label}: {figures}", soft_wrap=True, markup=False, highlight=False)
