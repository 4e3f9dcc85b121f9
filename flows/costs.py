"""The cost summary: credits charged, refunded and net per provider, step and product.

Only jobs submitted by *this* run cost anything; outputs reused from earlier runs are listed apart at
zero cost. A job whose provider does not report its price is counted as unknown, never as 0, and money
is shown only where a price per credit is set.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import BinaryIO, Literal

from pydantic import BaseModel, Field, PrivateAttr

from providers.contract import report_order

from .archive import write_json_with_list


class JobCost(BaseModel):
    provider: str
    step: str
    product: str
    job_id: str
    charged: int | None
    refunded: int = 0
    reused: bool = False
    held: bool = Field(False, description="a held submission: charged and lost, or outcome unknown")
    possibly_charged: int | None = Field(
        0, description="credits an unknown outcome may have cost; None: unknown"
    )
    original_run: str | None = None

    @property
    def net(self) -> int | None:
        return None if self.charged is None else self.charged - self.refunded


# what a cost line sums over; the summary shows the provider, step and total lines (products on request)
Scope = Literal["provider", "step", "product", "total"]
SUMMARY_SCOPES: tuple[Scope, ...] = ("provider", "step", "total")


class CostLine(BaseModel):
    scope: Scope
    provider: str = "*"
    step: str = "*"
    product: str = "*"
    jobs: int = 0
    reused_jobs: int = 0
    unknown_jobs: int = Field(0, description="paid jobs whose cost the provider did not report")
    charged: int = 0
    refunded: int = 0
    net: int = 0
    reused_credits: int = Field(0, description="what the reused outputs cost when first paid")
    held_jobs: int = Field(0, description="submissions held: outcome unknown, or charged and not retrievable")
    possibly_charged: int = Field(0, description="credits held submissions of unknown outcome may have cost")
    possibly_unknown_jobs: int = Field(0, description="held submissions whose possible cost is not known")
    money: float | None = Field(None, description="net money; None when not computable")
    money_status: Literal["ok", "no_price", "unknown_credits"] = "no_price"

    def money_text(self, currency: str) -> str:
        if self.money_status == "ok" and self.money is not None:
            return f"{self.money:.2f} {currency}"
        return "unknown" if self.money_status == "unknown_credits" else "no price"


class BalanceCheck(BaseModel):
    """A provider's balance at the start and end of the run, against what the summary explains."""

    provider: str
    start: int | None
    end: int | None
    end_stated: bool = Field(
        False, description="the end balance is the one the provider's last answer stated, not read again"
    )
    net: int = Field(description="net credits this run's summary counts for the provider")
    possibly_charged: int = 0

    @property
    def spent(self) -> int | None:
        return None if self.start is None or self.end is None else self.start - self.end

    @property
    def unexplained(self) -> int | None:
        """Spent but not in the summary (beyond what held submissions may have cost); None: unknown."""
        return None if self.spent is None else self.spent - self.net

    @property
    def explained(self) -> bool:
        return self.unexplained is not None and 0 <= self.unexplained <= self.possibly_charged

    def text(self) -> str:
        if self.spent is None:
            return f"{self.provider}: balance not readable at {'start' if self.start is None else 'end'}"
        line = (
            f"{self.provider}: balance {self.start} -> {self.end}"
            + (" (as its last answer stated)" if self.end_stated else "")
            + f" ({self.spent} spent); "
            f"summary: {self.net} net"
            + (f" + up to {self.possibly_charged} possibly charged" if self.possibly_charged else "")
        )
        return (
            line
            if self.explained
            else f"{line}: {self.unexplained} NOT EXPLAINED (another user of the account?)"
        )


class CostSummary(BaseModel):
    """Provider, step and total lines; the product lines (one per provider, step and product: ~3.5 per
    product) are produced from the run's ledger when asked for, never all held at once: as pydantic
    models they were ~2 KB each, ~35 MB at the end of a 5,000-product run (benchmarks, phase E)."""

    run_id: str
    currency: str = "USD"
    lines: list[CostLine] = Field(description="provider, step and total lines")
    requests: dict[str, int] = Field(default_factory=dict, description="HTTP requests per provider")
    skipped: list[str] = Field(default_factory=list, description="work not submitted (budget, quota)")
    balances: list[BalanceCheck] = Field(
        default_factory=list, description="providers with a balance endpoint"
    )
    _ledger: CostLedger | None = PrivateAttr(default=None)
    _prices: dict[str, float] = PrivateAttr(default_factory=dict)

    def product_lines(self) -> Iterator[CostLine]:
        if self._ledger is not None:
            yield from self._ledger.lines("product", self._prices)

    def product_totals(self) -> Iterator[CostLine]:
        """One line per product, across its providers and steps."""
        if self._ledger is not None:
            yield from self._ledger.product_totals(self._prices)

    def all_lines(self) -> Iterator[CostLine]:
        """Every line in order: providers, steps, products, total."""
        yield from self.by("provider")
        yield from self.by("step")
        yield from self.product_lines()
        yield from self.by("total")

    def by(self, scope: str) -> list[CostLine]:
        if scope == "product":
            return list(self.product_lines())
        return [line for line in self.lines if line.scope == scope]

    @property
    def total(self) -> CostLine:
        return self.by("total")[0]

    def write_document(self, out: BinaryIO) -> None:
        """``cost-summary.json`` written to ``out`` one line at a time."""
        head = self.model_dump(mode="json", exclude={"lines"})
        lines = (line.model_dump(mode="json") for line in self.all_lines())
        write_json_with_list(out, head, "lines", lines)

    def table(self) -> dict[str, list[object]]:
        """Provider, step and total lines, and one line per product (all its providers and steps), as
        a column-oriented table (Prefect table artifacts take columns: one list per column costs a few
        bytes per line where a dict per row cost ~1 KB). The per-provider-and-step lines of each product
        are in ``cost-summary.json``: four per product made the artifact of a 5,000-product run ~20 MB
        of the process's peak while Prefect serialized and sent it (measured, benchmarks phase E).
        The columns are ``TABLE_COLUMNS``."""
        columns: dict[str, list[object]] = {column.name: [] for column in TABLE_COLUMNS}
        lines = (self.by("provider"), self.by("step"), self.product_totals(), self.by("total"))
        for line in itertools.chain(*lines):
            for column in TABLE_COLUMNS:
                columns[column.name].append(column.cell(line, self))
        return columns

    def report_lines(self) -> list[CostLine]:
        """The reports' lines (markdown, terminal): the providers' steps, the providers, the total."""
        return [*self.by("step"), *self.by("provider"), *self.by("total")]

    def markdown(self) -> str:
        """Step, provider and total lines in ``MARKDOWN_COLUMNS``, and what was not submitted."""
        out = [f"# Cost summary, run `{self.run_id}`", ""]
        out.append("| " + " | ".join(_md(c.name) for c in MARKDOWN_COLUMNS) + " |")
        out.append("|" + "|".join("---:" if c.numeric else "---" for c in MARKDOWN_COLUMNS) + "|")
        for line in self.report_lines():
            cells = [_md(str(c.cell(line, self))) for c in MARKDOWN_COLUMNS]
            if line.scope != "step":  # a provider's or the run's line: its name in bold
                cells[0] = f"**{cells[0]}**"
            out.append("| " + " | ".join(cells) + " |")
        if self.money_note():
            out += ["", f"\\* The money total covers {self.money_note()}."]
        t = self.total
        if t.held_jobs:
            out += [
                "",
                f"**Held submissions:** {t.held_jobs} (charged, not retrievable, or outcome unknown; "
                f"up to {t.possibly_charged} credits possibly charged"
                + (f", {t.possibly_unknown_jobs} of unknown price" if t.possibly_unknown_jobs else "")
                + "): `listingflow unknown` lists them",
            ]
        if self.balances:
            out += ["", "**Balances:**", *[f"- {b.text()}" for b in self.balances]]
        if self.skipped:
            out += ["", "**Not submitted:**", *[f"- {s}" for s in self.skipped]]
        return "\n".join(out)

    def money_cell(self, line: CostLine, *, footnote: bool = False) -> str:
        """A line's money; the total's adds up the providers that have a price and names the others: in
        the cell, or (``footnote``, for the reports) in ``money_note`` under the table, the cell starred."""
        note = self.money_note() if line.scope == "total" else ""
        if not note:
            return line.money_text(self.currency)
        priced = sum(p.money or 0.0 for p in self.by("provider") if p.money_status == "ok")
        return f"{priced:.2f} {self.currency}" + ("*" if footnote else f" (covers {note})")

    def money_note(self) -> str:
        """Which providers the money total covers and which it cannot, e.g. "pixii, prodvisual;
        listingrva has no price"; empty when it covers every provider or none."""
        covered, missing = [], []
        for p in self.by("provider"):
            if p.money_status == "ok":
                covered.append(p.provider)
            else:
                why = "has no price" if p.money_status == "no_price" else "has jobs of unknown cost"
                missing.append(f"{p.provider} {why}")
        if not covered or not missing:
            return ""
        return "; ".join([", ".join(covered), *missing])


@dataclass(frozen=True, slots=True)
class Column:
    """One column of the cost tables: a new column is one entry in ``TABLE_COLUMNS`` (the artifact's
    table) or ``REPORT_COLUMNS`` (the markdown report and the terminal's table). ``cell`` renders a line
    (with its summary, for per-run values); ``numeric`` columns are right-aligned; ``shown`` says whether
    a run's figures make the column worth its width (the terminal drops the others to fit 80 columns;
    None: always)."""

    name: str
    cell: Callable[[CostLine, CostSummary], object]
    numeric: bool = True
    shown: Callable[[CostSummary], bool] | None = None


def _word(value: str) -> str:
    """``*`` (every provider, step or product) as a word: the UI renders a lone ``*`` or ``-`` cell as
    a markdown bullet, so both looked the same."""
    return "all" if value == "*" else value


TABLE_COLUMNS: tuple[Column, ...] = (
    Column("scope", lambda line, s: line.scope, numeric=False),
    Column("provider", lambda line, s: _word(line.provider), numeric=False),
    Column("step", lambda line, s: _word(line.step), numeric=False),
    Column("product", lambda line, s: _word(line.product), numeric=False),
    # money early: it is what a seller reads, and the last columns are off-screen on a laptop
    Column("money", lambda line, s: s.money_cell(line), numeric=False),
    Column("net", lambda line, s: line.net),
    Column("jobs", lambda line, s: line.jobs),
    Column("charged", lambda line, s: line.charged),
    Column("refunded", lambda line, s: line.refunded),
    Column("reused", lambda line, s: line.reused_jobs),
    Column("possibly charged", lambda line, s: line.possibly_charged),
    Column("held", lambda line, s: line.held_jobs),
    Column("unknown cost jobs", lambda line, s: line.unknown_jobs),
)


def _report_provider(line: CostLine, summary: CostSummary) -> str:
    return "total" if line.scope == "total" else line.provider


def _report_step(line: CostLine, summary: CostSummary) -> str:
    return {"step": line.step, "provider": "all"}.get(line.scope, "")


def _report_requests(line: CostLine, summary: CostSummary) -> str:
    if line.scope == "provider":
        return str(summary.requests.get(line.provider, 0))
    return str(sum(summary.requests.values())) if line.scope == "total" else ""


def _refunds(summary: CostSummary) -> bool:
    """Charged and refunded say something only when something was refunded (else both equal net)."""
    return summary.total.refunded != 0


def _held(summary: CostSummary) -> bool:
    return bool(summary.total.possibly_charged or summary.total.possibly_unknown_jobs)


# The cells of the reports, each defined once: the markdown report and the terminal's table (listingflow
# report.py) render the same text, and differ only in which columns they show and in what order.
REPORT_COLUMNS: dict[str, Column] = {
    c.name: c
    for c in (
        Column("provider", _report_provider, numeric=False),
        Column("step", _report_step, numeric=False),
        Column("jobs", lambda line, s: str(line.jobs)),
        Column("charged", lambda line, s: _c(line.charged, line.unknown_jobs), shown=_refunds),
        Column("refunded", lambda line, s: str(line.refunded), shown=_refunds),
        Column("net", lambda line, s: _c(line.net, line.unknown_jobs)),
        Column("reused", lambda line, s: str(line.reused_jobs), shown=lambda s: s.total.reused_jobs != 0),
        Column("possibly charged", lambda line, s: _possibly(line), shown=_held),
        Column("requests", _report_requests),
        Column("money", lambda line, s: s.money_cell(line, footnote=True)),
    )
}


def _report_columns(*names: str) -> tuple[Column, ...]:
    return tuple(REPORT_COLUMNS[name] for name in names)


# The Prefect UI's report shows every column, money early (the last ones are off-screen on a laptop);
# the terminal's table drops the columns a run leaves empty to fit 80 columns, so it reads as the sum:
# jobs, charged - refunded = net, then money.
MARKDOWN_COLUMNS = _report_columns(
    "provider",
    "step",
    "money",
    "net",
    "jobs",
    "charged",
    "refunded",
    "reused",
    "possibly charged",
    "requests",
)
TERMINAL_COLUMNS = _report_columns(
    "provider",
    "step",
    "jobs",
    "charged",
    "refunded",
    "net",
    "reused",
    "possibly charged",
    "requests",
    "money",
)


def _md(text: str) -> str:
    """A cell's text in a markdown table: a ``|`` would end the cell, a ``*`` start emphasis."""
    return text.replace("|", "\\|").replace("*", "\\*")


def _possibly(line: CostLine) -> str:
    """Held submissions of unknown outcome: what they may have cost."""
    if line.possibly_unknown_jobs:
        return f"{line.possibly_charged} + {line.possibly_unknown_jobs} unknown"
    return str(line.possibly_charged)


def _c(credits: int, unknown: int) -> str:
    return f"{credits} + {unknown} unknown" if unknown else str(credits)


@dataclass(slots=True)
class _Tally:
    jobs: int = 0
    reused_jobs: int = 0
    unknown_jobs: int = 0
    charged: int = 0
    refunded: int = 0
    net: int = 0
    reused_credits: int = 0
    held_jobs: int = 0
    possibly_charged: int = 0
    possibly_unknown_jobs: int = 0


class CostLedger:
    """The run's costs, added up as its jobs finish.

    A summary line needs only its sums, so the ledger keeps one small tally per line instead of every
    job: a 5,000-product run pays ~17,000 jobs, and holding their records to the end was a steady part
    of the run's memory growth (benchmarks, phase E)."""

    def __init__(self) -> None:
        self._tallies: dict[tuple[str, str, str, str], _Tally] = {("total", "*", "*", "*"): _Tally()}

    def add(self, job: JobCost) -> None:
        keys = (
            ("provider", job.provider, "*", "*"),
            ("step", job.provider, job.step, "*"),
            ("product", job.provider, job.step, job.product),
            ("total", "*", "*", "*"),
        )
        for key in keys:
            tally = self._tallies.get(key)
            if tally is None:
                tally = self._tallies[key] = _Tally()
            if job.held:
                tally.held_jobs += 1
                if job.reused:  # held by an earlier run, which counted it
                    continue
                if job.possibly_charged is None:
                    tally.possibly_unknown_jobs += 1
                else:
                    tally.possibly_charged += job.possibly_charged
            elif job.reused:
                tally.reused_jobs += 1
                tally.reused_credits += job.net or 0
                continue
            tally.jobs += 1
            if job.charged is None:
                tally.unknown_jobs += 1
            else:
                tally.charged += job.charged
                tally.refunded += job.refunded
                tally.net += job.charged - job.refunded

    def lines(self, scope: Scope, prices: dict[str, float]) -> Iterator[CostLine]:
        """The summary lines of one scope, sorted."""
        paid_net = {key[1]: t.net for key, t in self._tallies.items() if key[0] == "provider" and t.jobs}
        keys = [
            k for k in self._tallies if k[0] == scope
        ]  # by provider, its steps in the table's order, product
        for key in sorted(keys, key=lambda k: (k[1], report_order(k[2]), k[3])):
            _, provider, step, product = key
            t = self._tallies[key]
            paid = paid_net if scope == "total" else ({provider: t.net} if t.jobs else {})
            yield _line(scope, provider, step, product, t, paid, prices)

    def product_totals(self, prices: dict[str, float]) -> Iterator[CostLine]:
        """One line per product across its providers and steps, summed from its per-step tallies (the
        same jobs, so the same sums) when asked, rather than kept beside them as every job is added."""
        totals: dict[str, tuple[_Tally, dict[str, int]]] = {}
        for (scope, provider, _, product), t in self._tallies.items():
            if scope != "product":
                continue
            total, nets = totals.setdefault(product, (_Tally(), {}))
            for f in fields(_Tally):
                setattr(total, f.name, getattr(total, f.name) + getattr(t, f.name))
            if t.jobs:  # what the product paid each provider, for its money
                nets[provider] = nets.get(provider, 0) + t.net
        for product in sorted(totals):
            total, nets = totals[product]
            yield _line("product", "*", "*", product, total, nets, prices)

    def summary(
        self,
        run_id: str,
        *,
        price_per_credit: dict[str, float],
        currency: str = "USD",
        requests: dict[str, int] | None = None,
        skipped: list[str] | None = None,
    ) -> CostSummary:
        lines = [line for scope in SUMMARY_SCOPES for line in self.lines(scope, price_per_credit)]
        summary = CostSummary(
            run_id=run_id, currency=currency, lines=lines, requests=requests or {}, skipped=skipped or []
        )
        summary._ledger, summary._prices = self, dict(price_per_credit)
        return summary


def _line(
    scope: Scope,
    provider: str,
    step: str,
    product: str,
    t: _Tally,
    paid: dict[str, int],
    prices: dict[str, float],
) -> CostLine:
    """Money is shown for a line only when every provider it paid has a price and no paid job's cost
    is unknown."""
    line = CostLine(
        scope=scope,
        provider=provider,
        step=step,
        product=product,
        jobs=t.jobs,
        reused_jobs=t.reused_jobs,
        unknown_jobs=t.unknown_jobs,
        charged=t.charged,
        refunded=t.refunded,
        net=t.net,
        reused_credits=t.reused_credits,
        held_jobs=t.held_jobs,
        possibly_charged=t.possibly_charged,
        possibly_unknown_jobs=t.possibly_unknown_jobs,
    )
    if any(p not in prices for p in paid):
        line.money_status = "no_price"
    elif t.unknown_jobs:
        line.money_status = "unknown_credits"
    else:
        line.money_status = "ok"
        line.money = sum(net * prices[p] for p, net in paid.items())
    return line
