"""Synthetic catalogs for the benchmarks: unique ASINs, titles and image URLs, optional variations.

Titles are unique per product (ListingRVA's ``prepare`` reuses a product record per title + category,
so duplicate titles would hide work). Every product has a source image URL (ProdVisual and Pixii need
one); ``variation_every=k`` gives every k-th product two variations (Pixii Scale runs once per
variation).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

CATEGORIES = (
    "Home & Kitchen",
    "Sports & Outdoors",
    "Office Products",
    "Grocery & Gourmet Food",
    "Toys & Games",
)
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def asin(n: int, salt: int = 0) -> str:
    """``B0`` + 8 base-36 characters, unique per (n, salt)."""
    value = n + salt * 36**6
    chars = []
    for _ in range(8):
        value, r = divmod(value, 36)
        chars.append(_ALPHABET[r])
    return "B0" + "".join(reversed(chars))


@dataclass(frozen=True)
class CatalogShape:
    products: int
    variation_every: int = 0
    variations_per_product: int = 2
    tag: str = "bench"

    @property
    def variations(self) -> int:
        if not self.variation_every:
            return 0
        return sum(self.variations_per_product for n in range(self.products) if n % self.variation_every == 0)

    def products_with_variations(self) -> int:
        return (
            0
            if not self.variation_every
            else sum(1 for n in range(self.products) if n % self.variation_every == 0)
        )


def write_catalog(path: Path, shape: CatalogShape) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["asin", "country_code", "title", "category", "description", "image_url", "variations"]
        )
        for n in range(shape.products):
            a = asin(n)
            variations = ""
            if shape.variation_every and n % shape.variation_every == 0:
                variations = "|".join(
                    f"{asin(n, salt=v + 1)}:color=Colour {v + 1}" for v in range(shape.variations_per_product)
                )
            writer.writerow(
                [
                    a,
                    "US",
                    f"{shape.tag} product {n:06d} stainless insulated bottle",
                    CATEGORIES[n % len(CATEGORIES)],
                    f"Benchmark product {n}: double-wall vacuum insulated, leak-proof lid, BPA-free.",
                    f"https://m.media-amazon.com/images/I/{a}-main.jpg",
                    variations,
                ]
            )
    return path
