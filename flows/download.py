"""Downloading provider outputs safely.

A provider response decides which URL we fetch, so the URL is untrusted input: only the provider's
own output hosts over HTTPS, no redirects, no private/loopback/link-local addresses (no SSRF through a
provider response), a size cap enforced while streaming, and the body must really be an image of a
supported type (magic bytes). Sandbox mode widens the host list to loopback, nothing else.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

import httpx

from providers.errors import (
    OutputExpired,
    OutputRejected,
    ProviderConnectionError,
    ProviderTimeout,
    ServerError,
)

MAGIC = {
    b"\x89PNG\r\n\x1a\n": ("image/png", "png"),
    b"\xff\xd8\xff": ("image/jpeg", "jpg"),
}
IMAGE_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
"""Every image type a download can yield (``sniff``), by content type: the archive names files by it."""
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def sniff(data: bytes) -> tuple[str, str] | None:
    for magic, kind in MAGIC.items():
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ("image/webp", "webp")
    return None


def _host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == a or host.endswith("." + a) for a in allowed)


async def _check_address(host: str) -> None:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, 443, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ProviderConnectionError(f"cannot resolve output host {host}: {exc}") from None
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not _public(ip):
            raise OutputRejected(f"output host {host} resolves to a non-public address {ip}")


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Globally routable unicast only. ``is_global`` also excludes the shared address space
    (100.64.0.0/10, where some clouds serve instance metadata) that ``is_private`` misses; an IPv4
    address embedded in IPv6 (mapped, NAT64) is judged by its IPv4 part."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None)
        if embedded is not None:
            return _public(embedded)
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


async def _vet_url(url: str, *, provider: str, allowed_hosts: tuple[str, ...], sandbox_mode: bool) -> None:
    """Refuses a URL before anything is fetched: HTTPS only (plain HTTP only to a sandbox's loopback),
    and only the provider's own output hosts, resolving to public addresses (no SSRF)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    loopback_ok = sandbox_mode and host in LOOPBACK_HOSTS
    if parts.scheme != "https" and not (loopback_ok and parts.scheme == "http"):
        raise OutputRejected(
            f"refusing non-https output URL from {provider}: scheme {parts.scheme!r}", provider=provider
        )
    if not loopback_ok:
        if not _host_allowed(host, allowed_hosts):
            raise OutputRejected(
                f"output host {host!r} is not one of {provider}'s output hosts", provider=provider
            )
        await _check_address(host)


def _check_status(response: httpx.Response, provider: str) -> None:
    """Maps the output host's answer to the error taxonomy before the body is read: a redirect is
    refused (it could lead anywhere), a gone URL is expired, 5xx is the host's fault."""
    if response.is_redirect:
        raise OutputRejected(f"{provider} output URL redirects elsewhere; refused", provider=provider)
    if response.status_code in (403, 404, 410):
        raise OutputExpired(
            f"{provider} output URL expired or gone (HTTP {response.status_code})",
            provider=provider,
            status=response.status_code,
        )
    if response.status_code >= 500:
        raise ServerError(f"{provider} output host error", provider=provider, status=response.status_code)
    if not response.is_success:
        raise OutputRejected(f"{provider} output URL answered HTTP {response.status_code}", provider=provider)


async def fetch_image(
    http: httpx.AsyncClient,
    url: str,
    *,
    provider: str,
    allowed_hosts: tuple[str, ...],
    sandbox_mode: bool = False,
    max_bytes: int = 25 * 1024 * 1024,
) -> tuple[bytes, str, str]:
    """Returns (body, content type, file extension)."""
    await _vet_url(url, provider=provider, allowed_hosts=allowed_hosts, sandbox_mode=sandbox_mode)
    try:
        async with http.stream("GET", url, follow_redirects=False, timeout=60) as response:
            _check_status(response, provider)
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise OutputRejected(
                    f"{provider} output is {declared} bytes, over the {max_bytes} cap", provider=provider
                )
            chunks, total = [], 0
            async for chunk in response.aiter_bytes():
                total += len(chunk)
                if total > max_bytes:
                    raise OutputRejected(
                        f"{provider} output exceeds the {max_bytes}-byte cap", provider=provider
                    )
                chunks.append(chunk)
    except httpx.TimeoutException:
        raise ProviderTimeout(f"downloading a {provider} output timed out", provider=provider) from None
    except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
        raise ProviderConnectionError(
            f"downloading a {provider} output failed: {type(exc).__name__}", provider=provider
        ) from None
    data = b"".join(chunks)
    kind = sniff(data)
    if kind is None:
        raise OutputRejected(
            f"{provider} output is not a PNG, JPEG or WebP image ({len(data)} bytes)", provider=provider
        )
    declared_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if declared_type.startswith("image/") and declared_type != kind[0]:
        raise OutputRejected(
            f"{provider} output declared {declared_type} but is {kind[0]}", provider=provider
        )
    return data, kind[0], kind[1]
