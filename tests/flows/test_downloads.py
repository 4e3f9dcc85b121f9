"""Downloading provider outputs: a provider response chooses the URL, so the URL is untrusted.

Only https from the provider's own output hosts, no redirects, no private/loopback/link-local
addresses outside sandbox mode, a size cap enforced while streaming, and the body must be an image of
the declared type. Everything runs on ``httpx.MockTransport`` with a fake resolver: no network.
"""

from __future__ import annotations

import asyncio
import io
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from PIL import Image

from flows.download import fetch_image
from providers.errors import OutputExpired, OutputRejected, RetryableError

HOSTS = ("cdn.prodvisual.com",)
URL = "https://cdn.prodvisual.com/out/B0TEST0001/white_bg.png?sig=abc"
PUBLIC_IP = "93.184.216.34"


def _image(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(out, format=fmt)
    return out.getvalue()


PNG, JPEG, WEBP = _image("PNG"), _image("JPEG"), _image("WEBP")


class Recorder:
    """A MockTransport handler that answers with ``respond`` and remembers every request."""

    def __init__(self, respond: Callable[[httpx.Request], httpx.Response]) -> None:
        self.respond = respond
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return self.respond(request)


def png_response(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=PNG, headers={"content-type": "image/png"})


@pytest.fixture
def resolve(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, str]], None]:
    """Make the running loop's resolver answer ``{host: ip}`` (a DNS answer the provider controls)."""

    def install(answers: dict[str, str]) -> None:
        async def getaddrinfo(host: str, port: Any, *args: Any, **kw: Any) -> list[Any]:
            if host not in answers:
                raise socket.gaierror(socket.EAI_NONAME, "unknown host")
            ip = answers[host]
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            addr = (ip, 443, 0, 0) if family == socket.AF_INET6 else (ip, 443)
            return [(family, socket.SOCK_STREAM, 6, "", addr)]

        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)

    return install


async def fetch(handler: Recorder, url: str = URL, **kw: Any) -> tuple[bytes, str, str]:
    kw.setdefault("provider", "prodvisual")
    kw.setdefault("allowed_hosts", HOSTS)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        return await fetch_image(http, url, **kw)


# ---- what is accepted ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "ctype", "ext"),
    [(PNG, "image/png", "png"), (JPEG, "image/jpeg", "jpg"), (WEBP, "image/webp", "webp")],
)
async def test_image_from_an_allowed_public_https_host_is_returned(
    resolve: Any, body: bytes, ctype: str, ext: str
) -> None:
    resolve({"cdn.prodvisual.com": PUBLIC_IP})
    handler = Recorder(lambda r: httpx.Response(200, content=body, headers={"content-type": ctype}))
    assert await fetch(handler) == (body, ctype, ext)
    assert len(handler.seen) == 1


async def test_subdomain_of_an_allowed_host_is_allowed(resolve: Any) -> None:
    resolve({"eu.cdn.prodvisual.com": PUBLIC_IP})
    data, _, _ = await fetch(Recorder(png_response), "https://eu.cdn.prodvisual.com/x.png")
    assert data == PNG


# ---- scheme and host ------------------------------------------------------------------------------


async def test_plain_http_is_refused_before_any_request(resolve: Any) -> None:
    resolve({"cdn.prodvisual.com": PUBLIC_IP})
    handler = Recorder(png_response)
    with pytest.raises(OutputRejected, match="non-https"):
        await fetch(handler, URL.replace("https://", "http://"))
    assert handler.seen == []


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.com/x.png",
        "https://cdn.prodvisual.com.evil.example.com/x.png",  # allowed name as a prefix
        "https://evilcdn.prodvisual.com/x.png",  # allowed name as a suffix, no dot
        "https://cdn.prodvisual.com@evil.example.com/x.png",  # allowed name as userinfo
        "https://cdn.listingrvaai.com/x.png",  # another provider's host
    ],
)
async def test_hosts_outside_the_providers_allow_list_are_refused(resolve: Any, url: str) -> None:
    resolve(
        {
            "evil.example.com": PUBLIC_IP,
            "cdn.prodvisual.com.evil.example.com": PUBLIC_IP,
            "evilcdn.prodvisual.com": PUBLIC_IP,
            "cdn.listingrvaai.com": PUBLIC_IP,
        }
    )
    handler = Recorder(png_response)
    with pytest.raises(OutputRejected, match="not one of prodvisual's output hosts"):
        await fetch(handler, url)
    assert handler.seen == []


async def test_redirects_are_refused_not_followed(resolve: Any) -> None:
    resolve({"cdn.prodvisual.com": PUBLIC_IP})
    handler = Recorder(
        lambda r: httpx.Response(302, headers={"location": "http://169.254.169.254/latest/meta-data"})
    )
    with pytest.raises(OutputRejected, match="redirect"):
        await fetch(handler)
    assert [str(r.url) for r in handler.seen] == [URL]


# ---- SSRF: where the allowed name resolves to -------------------------------------------------------


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",  # loopback, private
        "169.254.169.254",  # link-local: cloud metadata
        "100.100.100.200",  # shared address space: a metadata service too
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd12::1",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",  # IPv4-mapped and NAT64 metadata address
    ],
)
async def test_allowed_host_resolving_to_a_non_public_address_is_refused(resolve: Any, ip: str) -> None:
    resolve({"cdn.prodvisual.com": ip})
    handler = Recorder(png_response)
    with pytest.raises(OutputRejected, match="non-public address"):
        await fetch(handler)
    assert handler.seen == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8123/files/f_1.png",
        "https://127.0.0.1/files/f_1.png",
        "http://localhost:8123/files/f_1.png",
        "http://[::1]:8123/files/f_1.png",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.5/x.png",
    ],
)
async def test_loopback_and_private_urls_are_refused_outside_sandbox_mode(url: str) -> None:
    handler = Recorder(png_response)
    with pytest.raises(OutputRejected):
        await fetch(handler, url, sandbox_mode=False)
    assert handler.seen == []


async def test_sandbox_mode_widens_to_loopback_only() -> None:
    handler = Recorder(png_response)
    data, _, _ = await fetch(handler, "http://127.0.0.1:8123/files/f_1.png", sandbox_mode=True)
    assert data == PNG
    for url in (
        "http://10.0.0.5:8123/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "https://169.254.169.254/latest/meta-data/",
    ):
        with pytest.raises(OutputRejected):
            await fetch(handler, url, sandbox_mode=True)
    assert len(handler.seen) == 1


# ---- size cap -------------------------------------------------------------------------------------


async def test_size_cap_is_enforced_while_streaming_without_content_length(resolve: Any) -> None:
    resolve({"cdn.prodvisual.com": PUBLIC_IP})
    served = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal served
        yield PNG
        for _ in range(10_000):  # ~640 MB if it were read to the end
            served += 1
            yield b"\0" * 65536

    handler = Recorder(
        lambda r: httpx.Response(200, content=endless(), headers={"content-type": "image/png"})
    )
    with pytest.raises(OutputRejected, match="exceeds the 1000000-byte cap"):
        await fetch(handler, max_bytes=1_000_000)
    assert "content-length" not in handler.seen[0].headers  # (request side) and the response was chunked
    assert served < 40, f"read {served} chunks past the cap"


async def test_declared_length_over_the_cap_is_refused_before_reading(resolve: Any) -> None:
    resolve({"cdn.prodvisual.com": PUBLIC_IP})
    handler = Recorder(
        lambda r: httpx.Response(200, content=PNG + b"\0" * 5000, headers={"content-type": "image/png"})
    )
    with pytest.raises(OutputRejected, match="over the 4096 cap"):
        await fetch(handler, max_bytes=4096)
    data, _, _ = await fetch(handler, max_bytes=len(PNG) + 5000)
    assert len(data) == len(PNG) + 5000


# ---- content ---------------------------------------------------------------------------------------


async def test_html_labelled_as_png_is_refused(resolve: Any) -> None:
    resolve({"cdn.prodvisual.com": PUBLIC_IP})
    body = b"<!doctype html><html><body>Sign in to continue</body></html>"
    handler = Recorder(lambda r: httpx.Response(200, content=body, headers={"content-type": "image/png"}))
    with pytest.raises(OutputRejected, match="not a PNG, JPEG or WebP image"):
        await fetch(handler)


async def test_image_of_another_type_than_declared_is_refused(resolve: Any) -> None:
    resolve({"cdn.prodvisual.com": PUBLIC_IP})
    handler = Recorder(lambda r: httpx.Response(200, content=JPEG, headers={"content-type": "image/png"}))
    with pytest.raises(OutputRejected, match="declared image/png but is image/jpeg"):
        await fetch(handler)


# ---- provider-side failures map to the taxonomy ----------------------------------------------------


@pytest.mark.parametrize("status", [403, 404, 410])
async def test_expired_or_gone_url_raises_output_expired(resolve: Any, status: int) -> None:
    resolve({"cdn.prodvisual.com": PUBLIC_IP})
    with pytest.raises(OutputExpired, match=f"HTTP {status}"):
        await fetch(Recorder(lambda r: httpx.Response(status, text="Request has expired")))


async def test_output_host_5xx_and_resets_are_retryable(resolve: Any) -> None:
    resolve({"cdn.prodvisual.com": PUBLIC_IP})
    with pytest.raises(RetryableError):
        await fetch(Recorder(lambda r: httpx.Response(503)))

    def reset(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("connection reset by peer", request=request)

    with pytest.raises(RetryableError):
        await fetch(Recorder(reset))
