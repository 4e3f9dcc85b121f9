"""What the Pixii sandbox's outputs show: A+ modules at Amazon's module sizes, Scale images in the
variation's colour and size, a Listing Builder main image on pure white, grey for non-compliant ASINs."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from providers.contract import APlusOptions, ScaleOptions, ScaleTarget, Step, Variation
from providers.pixii.plugin import PixiiProvider
from providers.pixii.sandbox import APLUS_MODULE_SIZES, PixiiSandbox, variation_attributes
from providers.sandbox.render import NONCOMPLIANT_GREY

from ..sandbox.images import border_colours, centre, fill, open_rgb
from .conftest import ctx
from .test_plugin import run

WHITE = (255, 255, 255)


@pytest.fixture
def full_size(sandbox: PixiiSandbox) -> Iterator[PixiiSandbox]:
    """Images at the size the outputs stand for (the module's sandbox renders 32 px by default)."""
    sandbox.reconfigure(image_px=None)
    yield sandbox
    sandbox.reconfigure(image_px=32, noncompliant_asins=[])


async def sizes(http: httpx.AsyncClient, urls: list[str]) -> list[tuple[int, int]]:
    return [open_rgb((await http.get(u)).content).size for u in urls]


@pytest.mark.parametrize("aplus_type", list(APLUS_MODULE_SIZES))
async def test_aplus_modules_come_at_amazons_module_sizes(
    full_size, provider: PixiiProvider, http: httpx.AsyncClient, aplus_type: str
) -> None:
    [result] = await run(
        provider, Step.APLUS, ctx("B0APLUS001", aplus_options=APlusOptions(types=[aplus_type]))
    )
    modules = [o.url for o in result.outputs if "-module-" in o.label]
    [preview] = [o.url for o in result.outputs if o.label.endswith("-preview")]
    assert await sizes(http, modules) == APLUS_MODULE_SIZES[aplus_type]
    assert APLUS_MODULE_SIZES["A+ Basic"] == [(970, 600), (970, 300), (300, 300)]
    widths = [w for w, _ in APLUS_MODULE_SIZES[aplus_type]]
    assert (await sizes(http, [preview]))[0] == (
        max(widths),
        sum(h for _, h in APLUS_MODULE_SIZES[aplus_type]),
    )


async def test_scale_images_show_each_variations_colour_and_size(
    full_size, provider: PixiiProvider, http: httpx.AsyncClient
) -> None:
    images = {}
    for child, colour, size in (("B0VARBLUE1", "Ocean Blue", "M"), ("B0VARGRN01", "Forest Green", "L")):
        variation = Variation(asin=child, attributes={"color": colour, "size": size})
        options = ScaleOptions(
            targets=[
                ScaleTarget(platform="Amazon", asset_type="Main Image"),
                ScaleTarget(platform="TikTok", asset_type="Product Photo"),
            ]
        )
        [result] = await run(
            provider, Step.SCALE, ctx("B0PARENT01", variation=variation, scale_options=options)
        )
        main, photo = [open_rgb((await http.get(o.url)).content) for o in result.outputs]
        assert main.size == (2000, 2000) and photo.size == (1080, 1920)
        assert border_colours(main) == {WHITE} and fill(main) >= 0.9
        assert WHITE not in border_colours(photo)  # a scene behind the product photo
        images[colour] = main
    assert centre(images["Ocean Blue"]) != centre(images["Forest Green"])


def test_variation_attributes_are_read_from_the_plugins_prompt() -> None:
    prompt = "Variation B0X of Chair (Office) (color: Black, size: M). Keep the reference visual identity."
    assert variation_attributes(prompt) == {"color": "Black", "size": "M"}
    assert variation_attributes("Translate all text into German. Variation B0X of Chair.") == {}


async def test_listing_main_image_is_white_and_grey_for_noncompliant_asins(
    full_size, provider: PixiiProvider, http: httpx.AsyncClient
) -> None:
    [ok] = await run(provider, Step.IMAGES, ctx("B0LISTOK01"))
    main = open_rgb((await http.get(ok.outputs[0].url)).content)
    assert main.size == (2000, 2000) and border_colours(main) == {WHITE} and fill(main) >= 0.9
    gallery = open_rgb((await http.get(ok.outputs[1].url)).content)
    assert WHITE not in border_colours(gallery)
    # reachable like the rest of the sandbox's config: from another process, over HTTP
    await http.post(f"{full_size.public_url}/_sandbox/config", json={"noncompliant_asins": ["B0LISTBAD1"]})
    [bad] = await run(provider, Step.IMAGES, ctx("B0LISTBAD1"))
    assert border_colours(open_rgb((await http.get(bad.outputs[0].url)).content)) == {NONCOMPLIANT_GREY}
