"""The cost ledger: sums per provider, step and product, money only where it is known, and the
``cost-summary.json`` document with every line."""

from __future__ import annotations

import pytest

from flows.costs import CostLedger, JobCost

from .helpers import written


def _ledger() -> CostLedger:
    ledger = CostLedger()
    for n, refunded in enumerate([0, 10, 0]):
        ledger.add(
            JobCost(
                provider="pixii",
                step="aplus",
                product=f"US/B{n}",
                job_id=f"a{n}",
                charged=50,
                refunded=refunded,
            )
        )
    ledger.add(JobCost(provider="pixii", step="scale", product="US/B0", job_id="s0", charged=6))
    ledger.add(JobCost(provider="listingrva", step="copy", product="US/B0", job_id="c0", charged=None))
    ledger.add(
        JobCost(provider="listingrva", step="copy", product="US/B1", job_id="c1", charged=5, reused=True)
    )
    return ledger


def test_lines_add_up_per_provider_step_product_and_total() -> None:
    summary = _ledger().summary("run-1", price_per_credit={"pixii": 0.1, "listingrva": 0.5})
    pixii = next(line for line in summary.by("provider") if line.provider == "pixii")
    assert (pixii.jobs, pixii.charged, pixii.refunded, pixii.net) == (4, 156, 10, 146)
    assert pixii.money_status == "ok" and abs((pixii.money or 0) - 14.6) < 1e-9
    products = {(line.step, line.product): line.net for line in summary.by("product")}
    assert products == {
        ("aplus", "US/B0"): 50,
        ("aplus", "US/B1"): 40,
        ("aplus", "US/B2"): 50,
        ("scale", "US/B0"): 6,
        ("copy", "US/B0"): 0,
        ("copy", "US/B1"): 0,
    }
    copy = next(line for line in summary.by("step") if line.step == "copy")
    # an unknown price is never counted as 0 credits, and a reused output costs this run nothing
    assert (copy.jobs, copy.unknown_jobs, copy.reused_jobs, copy.reused_credits) == (1, 1, 1, 5)
    assert copy.money_status == "unknown_credits" and copy.money is None
    assert summary.total.net == 146 and summary.total.money_status == "unknown_credits"


def test_money_only_where_every_paid_provider_has_a_price() -> None:
    summary = _ledger().summary("run-1", price_per_credit={"pixii": 0.1})
    assert summary.total.money_status == "no_price" and summary.total.money is None
    reused_only = next(
        line for line in summary.by("product") if line.product == "US/B1" and line.step == "copy"
    )
    assert reused_only.money_status == "ok" and reused_only.money == 0  # nothing paid: nothing unpriced


def test_document_and_table_hold_every_line_in_order() -> None:
    summary = _ledger().summary(
        "run-1", price_per_credit={}, requests={"pixii": 9}, skipped=["US/B9 aplus: budget"]
    )
    document = written(summary.write_document)
    assert document["run_id"] == "run-1" and document["requests"] == {"pixii": 9}
    assert document["skipped"] == ["US/B9 aplus: budget"]
    scopes = [line["scope"] for line in document["lines"]]
    assert scopes == ["provider"] * 2 + ["step"] * 3 + ["product"] * 6 + ["total"]
    assert document["lines"][-1]["net"] == summary.total.net == 146
    assert "product" not in {line.scope for line in summary.lines}  # product lines are not held


def test_the_table_artifact_has_one_line_per_product() -> None:
    """Provider, step and total lines as in the document; each product once, across its providers and
    steps (the per-step lines of a product are in ``cost-summary.json``)."""
    summary = _ledger().summary("run-1", price_per_credit={"pixii": 0.1, "listingrva": 0.05})
    table = summary.table()
    document = written(summary.write_document)
    products = {line["product"] for line in document["lines"] if line["scope"] == "product"}
    assert table["scope"] == ["provider"] * 2 + ["step"] * 3 + ["product"] * len(products) + ["total"]
    rows = [dict(zip(table, values, strict=True)) for values in zip(*table.values(), strict=True)]
    for row in (r for r in rows if r["scope"] == "product"):
        detail = [
            line
            for line in document["lines"]
            if line["scope"] == "product" and line["product"] == row["product"]
        ]
        assert row["net"] == sum(line["net"] for line in detail) and row["provider"] == row["step"] == "all"
    assert sum(r["net"] for r in rows if r["scope"] == "product") == summary.total.net
    by_product = {line.product: line for line in summary.by("product") if line.product == "US/B2"}
    b2 = next(r for r in rows if r["product"] == "US/B2")  # one pixii job: its money, priced
    assert b2["money"] == by_product["US/B2"].money_text("USD") and "5" in b2["money"]
    b0 = next(r for r in rows if r["product"] == "US/B0")  # a copy job of unknown cost: money unknown
    assert b0["money"] == summary.by("total")[0].money_text("USD")


def test_the_tables_use_words_and_show_money_early() -> None:
    """The UI renders a lone ``*`` or ``-`` cell as a bullet: "all" and "no price" are words. Money comes
    right after the names, not off-screen at the end."""
    summary = _ledger().summary("run-1", price_per_credit={})
    table = summary.table()
    assert list(table)[:5] == ["scope", "provider", "step", "product", "money"]
    cells = {str(value) for column in table.values() for value in column}
    assert not cells & {"*", "-", ""}
    total = {name: column[-1] for name, column in table.items()}
    assert (total["provider"], total["step"], total["product"], total["money"]) == (
        "all",
        "all",
        "all",
        "no price",
    )
    header = summary.markdown().splitlines()[2]
    assert header.startswith("| provider | step | money |")
    assert "| * |" not in summary.markdown() and "| - |" not in summary.markdown()


def test_money_total_covers_the_priced_providers_and_names_the_others() -> None:
    ledger = CostLedger()
    ledger.add(JobCost(provider="pixii", step="aplus", product="US/B0", job_id="a0", charged=20))
    ledger.add(
        JobCost(provider="prodvisual", step="images", product="US/B0", job_id="i0", charged=3, refunded=1)
    )
    ledger.add(JobCost(provider="listingrva", step="copy", product="US/B0", job_id="c0", charged=10))
    summary = ledger.summary("run-1", price_per_credit={"pixii": 0.05, "prodvisual": 0.5})
    assert summary.total.money is None  # the line itself stays honest: not every provider has a price
    rows = summary.table()
    total_money = rows["money"][rows["scope"].index("total")]
    assert total_money == "2.00 USD (covers pixii, prodvisual; listingrva has no price)"
    assert "The money total covers pixii, prodvisual; listingrva has no price." in summary.markdown()
    # with every provider priced, the total is plain
    priced = ledger.summary("run-1", price_per_credit={"pixii": 0.05, "prodvisual": 0.5, "listingrva": 0.1})
    assert priced.money_cell(priced.total) == "3.00 USD" and "covers" not in priced.markdown()


def test_a_column_is_one_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import costs

    summary = _ledger().summary("run-1", price_per_credit={}, requests={"pixii": 9})
    extra = costs.Column("lines seen", lambda line, s: 1)
    monkeypatch.setattr(costs, "TABLE_COLUMNS", (*costs.TABLE_COLUMNS, extra))
    monkeypatch.setattr(costs, "MARKDOWN_COLUMNS", (*costs.MARKDOWN_COLUMNS, extra))
    assert summary.table()["lines seen"] == [1] * len(summary.table()["scope"])
    assert summary.markdown().splitlines()[2].endswith("| requests | lines seen |")
