"""What the ListingRVA sandbox writes and draws: copy in the marketplace's language within Amazon's
limits, a CLEAN_WHITE_BG image on pure white at the forced 2000 px, and the deliberately non-compliant
outputs (promotional title, grey background) for the ASINs configured so.

Contract: docs/providers/listingrva.md (cited below as "contract §N")."""

from __future__ import annotations

import httpx
import pytest

from providers.contract import CopyOptions, ImageOptions, Step, StepContext
from providers.listingrva.plugin import ListingRVAProvider
from providers.listingrva.sandbox import ListingRVASandbox
from providers.listingrva.sandbox_copy import PROMOTIONAL, listing_copy
from providers.sandbox.render import NONCOMPLIANT_GREY

from ..sandbox.images import border_colours, fill, open_rgb
from .conftest import product
from .test_plugin import run

# a phrase only each language's template uses ("what you get")
MARKERS = {
    "de": "LIEFERUMFANG",
    "fr": "CONTENU DU COLIS",
    "es": "CONTENIDO DEL PAQUETE",
    "it": "CONTENUTO DELLA CONFEZIONE",
    "ja": "【セット内容】",
    "en": "WHAT YOU GET",
}
LANGUAGE = {
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "it": "Italian",
    "ja": "Japanese",
    "en": "English",
}
PAYLOAD = {
    "platform": "amazon",
    "tone": "professional",
    "components": ["title", "bullets", "description", "keywords"],
}


def text_of(copy: dict) -> str:
    return " ".join([copy["title"], *copy["bullets"], copy["description"]])


def test_the_plugin_asks_for_the_marketplaces_language(provider: ListingRVAProvider) -> None:
    def audience(country: str, persona: str | None) -> str | None:
        context = StepContext(
            product=product(country_code=country),
            prepared={"product_id": "p"},
            copy_options=CopyOptions(target_audience=persona),
        )
        [request] = provider.build_requests(Step.COPY, context)
        return request.body().get("targetAudience")

    assert audience("DE", None) == "write in German"
    assert audience("JP", "hikers") == "hikers; write in Japanese"
    assert audience("US", None) is None and audience("GB", "hikers") == "hikers"  # English: as before


async def test_german_marketplace_gets_german_copy(provider: ListingRVAProvider) -> None:
    p = product("B0GERMAN01", title="Ergonomic Office Chair", category="Office Products", country_code="DE")
    prepared = await provider.prepare(p)
    [result] = await run(provider, Step.COPY, StepContext(product=p, prepared=prepared))
    copy = result.copy_result
    text = " ".join([copy.title, *copy.bullets, copy.description])
    assert "LIEFERUMFANG" in text and "Bürobedarf" in text  # the German template and category
    assert not any(
        english in text for english in ("WHAT YOU GET", "made for", "designed around", "Office Products")
    )


@pytest.mark.parametrize("language", list(MARKERS))
def test_copy_is_in_the_language_asked_for_and_within_amazons_limits(language: str) -> None:
    title = "Stainless Steel Insulated Water Bottle with Straw Lid " * 8  # 440 characters
    seeds = ", ".join(f"keyword number {n} für draußen" for n in range(30))
    payload = {**PAYLOAD, "targetAudience": f"hikers; write in {LANGUAGE[language]}", "seedKeywords": seeds}
    copy = listing_copy({"title": title, "category": "Sports & Outdoors"}, payload)
    own, english = MARKERS[language], MARKERS["en"]
    assert own in text_of(copy) and (language == "en" or english not in text_of(copy))
    assert len(copy["title"]) <= 200
    assert len(copy["bullets"]) <= 5 and all(len(b) <= 500 for b in copy["bullets"])
    assert (
        len(" ".join(copy["keywords"]).encode()) <= 249 and len(", ".join(copy["keywords"]).encode()) <= 249
    )
    assert "write in" not in text_of(copy)  # the language note is for the model, not the shopper
    assert listing_copy({"title": title, "category": "Sports & Outdoors"}, payload) == copy  # deterministic


async def test_noncompliant_asins_get_a_promotional_title_and_a_grey_main_image(
    provider: ListingRVAProvider, sandbox: ListingRVASandbox, http: httpx.AsyncClient
) -> None:
    sandbox.reconfigure(noncompliant_asins=["B0BADCOPY1"], image_px=None)
    try:
        for asin, compliant in (("B0GOODCOPY", True), ("B0BADCOPY1", False)):
            p = product(asin, title=f"Bamboo Cutting Board {asin}")  # records are per title (plugin.prepare)
            prepared = await provider.prepare(p)
            [copy] = await run(provider, Step.COPY, StepContext(product=p, prepared=prepared))
            assert (PROMOTIONAL in copy.copy_result.title) is not compliant
            assert len(copy.copy_result.title) <= 200
            options = ImageOptions(styles=["CLEAN_WHITE_BG"], platform="amazon", size=1500)
            [image] = await run(
                provider, Step.IMAGES, StepContext(product=p, prepared=prepared, image_options=options)
            )
            main = open_rgb((await http.get(image.outputs[0].url)).content)
            assert main.size == (2000, 2000)  # platform amazon forces 2000 px (contract §5)
            assert border_colours(main) == ({(255, 255, 255)} if compliant else {NONCOMPLIANT_GREY})
            assert fill(main) >= 0.9
    finally:
        sandbox.reconfigure(noncompliant_asins=[], image_px=None)
