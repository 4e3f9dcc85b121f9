"""What the ProdVisual sandbox's outputs show: the requested dimensions and format, white_bg on pure
white with the product filling the frame, a scene for lifestyle styles, grey for non-compliant ASINs."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from providers.prodvisual.plugin import ProdVisualProvider
from providers.prodvisual.sandbox import ProdVisualSandbox
from providers.sandbox.render import NONCOMPLIANT_GREY

from ..sandbox.images import border_colours, fill, open_rgb
from .conftest import ctx
from .test_plugin import run

WHITE = (255, 255, 255)


@pytest.fixture
def full_size(clean: ProdVisualSandbox) -> Iterator[ProdVisualSandbox]:
    clean.reconfigure(image_px=None)
    yield clean
    clean.reconfigure(image_px=None, noncompliant_asins=[])


async def image(http: httpx.AsyncClient, provider: ProdVisualProvider, **kw: object):
    _, result = await run(provider, ctx(**kw))
    response = await http.get(result.outputs[0].url)
    assert response.headers["content-type"] == result.outputs[0].content_type
    return open_rgb(response.content)


@pytest.mark.parametrize("size", [1000, 1500, 2000])
async def test_white_bg_is_pure_white_at_the_requested_size(
    full_size, provider: ProdVisualProvider, http: httpx.AsyncClient, size: int
) -> None:
    white = await image(http, provider, styles=["white_bg"], size=size)
    assert white.size == (size, size)
    assert border_colours(white) == {WHITE} and fill(white) >= 0.9


async def test_lifestyle_has_a_scene_and_noncompliant_asins_get_grey(
    full_size, provider: ProdVisualProvider, http: httpx.AsyncClient
) -> None:
    scene = await image(http, provider, asin="B0PVSCENE1", styles=["lifestyle"])
    assert WHITE not in border_colours(scene)
    full_size.reconfigure(
        noncompliant_asins=["B0PVGREY01"]
    )  # found in the source image URL, as fail_asins are
    grey = await image(http, provider, asin="B0PVGREY01", styles=["white_bg"])
    assert border_colours(grey) == {NONCOMPLIANT_GREY} and fill(grey) >= 0.9


async def test_same_product_and_style_give_the_same_bytes(
    full_size, provider: ProdVisualProvider, http: httpx.AsyncClient
) -> None:
    async def png(**kw: object) -> bytes:
        _, result = await run(provider, ctx(**kw))
        return (await http.get(result.outputs[0].url)).content

    first = await png(asin="B0PVSAME01", styles=["lifestyle"], size=1000)
    assert await png(asin="B0PVSAME01", styles=["lifestyle"], size=1000) == first  # another job, same image
    assert await png(asin="B0PVSAME01", styles=["kitchen"], size=1000) != first
