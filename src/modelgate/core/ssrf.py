"""Server-side request forgery defence for URLs that callers give modelgate to call
(job webhooks).

A caller-chosen URL must not make modelgate reach what only modelgate can reach: its own
loopback services, the private network, cloud metadata endpoints (169.254.169.254).
:func:`resolve_public` resolves the host and refuses it when *any* of its addresses is
loopback, private, link-local, multicast, reserved, unspecified or otherwise not global
(IPv4-mapped IPv6 addresses are judged by their IPv4 address). It answers the address it
checked, so the caller connects to exactly that address (``pinned``): a DNS name that
resolves to a public address at the check and to 127.0.0.1 a moment later (DNS rebinding)
is never connected to the second answer.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from modelgate.errors import invalid

__all__ = ["PinnedUrl", "check_url_syntax", "forbidden_address", "resolve_public"]

Resolver = Callable[[str, int], list[str]]


@dataclass(frozen=True, slots=True)
class PinnedUrl:
    """``url`` with its host replaced by the checked ``address``; send ``host`` as the
    ``Host`` header (and TLS server name)."""

    url: str
    host: str
    address: str
    #: the host name alone, for TLS (SNI and certificate checks)
    server_name: str


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def forbidden_address(address: str) -> str | None:
    """Why ``address`` may not be called (a short reason), or None when it is public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for reason, hit in (
        ("loopback", ip.is_loopback),
        ("private", ip.is_private),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("unspecified", ip.is_unspecified),
    ):
        if hit:
            return reason
    return None if ip.is_global else "not global"


def check_url_syntax(url: str, field: str = "webhook_url") -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL; INVALID_ARGUMENT otherwise."""
    if len(url) > 2048:
        raise invalid(f"'{field}' is longer than 2048 characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise invalid(f"'{field}' is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid(f"'{field}' must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise invalid(f"'{field}' must not carry credentials")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def resolve_public(
    url: str,
    *,
    allow_private: bool = False,
    timeout_s: float = 2.0,
    resolver: Resolver = _system_resolver,
    field: str = "webhook_url",
) -> PinnedUrl:
    """Resolve ``url``'s host (in a thread, within ``timeout_s``) and pin it to its first
    address; INVALID_ARGUMENT when it does not resolve or, unless ``allow_private``, when
    any of its addresses is not public."""
    scheme, host, port = check_url_syntax(url, field)
    try:
        addresses = await asyncio.wait_for(asyncio.to_thread(resolver, host, port), timeout_s)
    except (OSError, TimeoutError, UnicodeError):
        raise invalid(f"'{field}': the host {host!r} does not resolve") from None
    if not addresses:
        raise invalid(f"'{field}': the host {host!r} does not resolve")
    if not allow_private:
        for address in addresses:
            reason = forbidden_address(address)
            if reason is not None:
                raise invalid(
                    f"'{field}' resolves to a {reason} address ({address}); webhooks may only "
                    "call public addresses"
                )
    address = addresses[0]
    parts = urlsplit(url)
    literal = f"[{address}]" if ":" in address else address
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    pinned = parts._replace(netloc=netloc).geturl()
    default = 443 if scheme == "https" else 80
    host_header = host if port == default else f"{host}:{port}"
    if ":" in host and not host.startswith("["):  # an IPv6 literal host
        host_header = f"[{host}]" if port == default else f"[{host}]:{port}"
    return PinnedUrl(pinned, host_header, address, host)
