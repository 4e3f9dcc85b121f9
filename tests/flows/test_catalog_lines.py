"""A large JSON catalog: every rejection still names the line its item starts on, and the text is
walked once (counting lines from the start for every item made 20,000 items take minutes)."""

from __future__ import annotations

import json
from pathlib import Path

from flows.catalog import _item_lines, load_catalog

ITEMS = 20_000


def _catalog(count: int, *, bad_every: int) -> tuple[str, list[int], set[int]]:
    """A ``{"products": [...]}`` catalog whose items take one to four lines; returns the text, the line
    each item starts on and the lines of the items with an invalid ASIN (every ``bad_every``-th)."""
    parts, starts, bad = ['{\n  "source": "test",\n  "products": [\n'], [], set()
    line = 4
    for i in range(count):
        asin = "B0-BAD" if i % bad_every == 0 else f"B0{i:08d}"
        item = {"asin": asin, "country_code": "US", "title": f"Product {i}"}
        # spread over 1-4 lines: one line, or indented with a multi-line description
        body = json.dumps(item) if i % 3 == 0 else json.dumps({**item, "description": "x"}, indent=1)
        body = body.replace('"description": "x"', '"description":\n   "x"') if i % 5 == 0 else body
        starts.append(line)
        if asin == "B0-BAD":
            bad.add(line)
        parts.append(body + (",\n" if i < count - 1 else "\n"))
        line += body.count("\n") + 1
    parts.append("  ]\n}\n")
    return "".join(parts), starts, bad


def test_every_item_of_a_large_catalog_gets_its_own_line(tmp_path: Path) -> None:
    text, starts, bad = _catalog(ITEMS, bad_every=997)
    assert _item_lines(text, ITEMS) == starts
    path = tmp_path / "catalog.json"
    path.write_text(text)
    catalog = load_catalog(str(path))
    assert {r.line for r in catalog.rejected} == bad and all(r.field == "asin" for r in catalog.rejected)
    assert len(catalog.products) == ITEMS - len(bad)


class _CountingText(str):
    """Records how many characters ``count`` scans: the cost of turning offsets into line numbers."""

    scanned = 0

    def count(self, sub: str, start: int | None = None, end: int | None = None) -> int:  # type: ignore[override]
        lo = 0 if start is None else start
        hi = len(self) if end is None else end
        _CountingText.scanned += max(0, hi - lo)
        return super().count(sub, start, end)


def test_line_numbers_cost_one_pass_over_the_text() -> None:
    text, starts, _ = _catalog(2_000, bad_every=10**9)
    _CountingText.scanned = 0
    assert _item_lines(_CountingText(text), 2_000) == starts
    assert _CountingText.scanned <= len(text)  # quadratic: ~1,000 times the text
