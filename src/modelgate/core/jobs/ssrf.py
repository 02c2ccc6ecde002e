"""Server-side request forgery defence for URLs that callers give modelgate to call
(job webhooks).

A caller-chosen URL must not make modelgate reach what only modelgate can reach: its own
loopback services, the private network, cloud metadata endpoints (169.254.169.254).
:func:`resolve_public` resolves the host and refuses it when *any* of its addresses is
loopback, private, link-local, multicast, reserved, unspecified or otherwise not global.
An IPv6 address that carries an IPv4 address (IPv4-mapped, IPv4-compatible,
IPv4-translated, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``, Teredo ``2001::/32``: its
server and its de-obfuscated client) is judged by that IPv4 address, which is where its
packets end up; Teredo, IPv4-compatible, IPv4-translated and the NAT64 local-use prefix
``64:ff9b:1::/48`` are refused whatever they carry. :func:`resolve_public` answers the
address it checked, so the caller connects to exactly that address (``pinned``): a DNS name
that resolves to a public address at the check and to 127.0.0.1 a moment later (DNS
rebinding) is never connected to the second answer.
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


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052, the well-known prefix
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: where the IPv4 sits varies
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # RFC 2765 (SIIT)
_COMPATIBLE = ipaddress.IPv6Network("::/96")  # RFC 4291, deprecated; :: and ::1 excepted

_REFUSED_FORMS = frozenset({"Teredo", "IPv4-compatible", "IPv4-translated"})

_IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, tuple[ipaddress.IPv4Address, ...]]:
    """The IPv4 addresses an IPv6 address carries, and the form that carries them."""
    low = ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", (ip.ipv4_mapped,)
    if ip in _TRANSLATED:
        return "IPv4-translated", (low,)
    if ip in _NAT64:
        return "NAT64", (low,)
    if ip in _COMPATIBLE and int(ip) > 1:
        return "IPv4-compatible", (low,)
    if ip.sixtofour is not None:
        return "6to4", (ip.sixtofour,)
    if ip.teredo is not None:  # (server, client); Python undoes the client's obfuscation
        return "Teredo", ip.teredo
    return "", ()


def _judge(ip: _IpAddress) -> str | None:
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


def forbidden_address(address: str) -> str | None:
    """Why ``address`` may not be called (a short reason), or None when it is public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv4Address):
        return _judge(ip)
    if ip in _NAT64_LOCAL:
        return "NAT64 local-use"
    form, carried = _embedded_ipv4(ip)
    if not carried:
        return _judge(ip)
    for ipv4 in carried:
        reason = _judge(ipv4)
        if reason is not None:
            return f"{reason} ({form} form of {ipv4})"
    # A public IPv4 behind a mapped, NAT64 or 6to4 address is as public as itself; Teredo
    # tunnels through a relay nobody here chose, and the other two forms are obsolete.
    return f"{form} address" if form in _REFUSED_FORMS else None


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
