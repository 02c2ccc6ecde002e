"""The client of a request that came through proxies: the TCP peer, or, when that peer is
listed in ``MODELGATE_FORWARDED_ALLOW_IPS``, the rightmost ``X-Forwarded-For`` address that
is not itself a listed proxy (the one the outermost trusted proxy saw). Addresses to the left
of it were written by the client and prove nothing.

REST gets this from uvicorn's ``ProxyHeadersMiddleware``, which decides the same way; gRPC
metadata comes here, so that the abuse throttle counts the same client on both protocols.
"""

from __future__ import annotations

import ipaddress

__all__ = ["TrustedProxies"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """``spec``: comma-separated addresses or networks (``10.0.0.0/8``), or ``*`` for any
    peer; other names are matched literally."""

    def __init__(self, spec: str) -> None:
        self.any = False
        self._networks: list[_Network] = []
        self._names: set[str] = set()
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            if item == "*":
                self.any = True
                continue
            try:
                self._networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self._names.add(item)
        # host -> trusted, for the few proxies a deployment has (bounded below)
        self._seen: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return self.any or bool(self._networks or self._names)

    def trusts(self, host: str) -> bool:
        if self.any:
            return True
        known = self._seen.get(host)
        if known is not None:
            return known
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            trusted = host in self._names
        else:
            trusted = any(address in network for network in self._networks)
        if len(self._seen) >= 1024:
            self._seen.clear()
        self._seen[host] = trusted
        return trusted

    def client(self, peer: str | None, forwarded: str | None) -> str | None:
        """The client address of a request from ``peer`` carrying ``forwarded`` (the
        ``X-Forwarded-For`` values joined with commas; None: none was sent)."""
        if peer is None or not forwarded or not self.trusts(peer):
            return peer
        hosts = [host.strip() for host in forwarded.split(",")]
        hosts = [host for host in hosts if host]
        for host in reversed(hosts):
            if not self.trusts(host):
                return host
        return hosts[0] if hosts else peer  # every hop a proxy: the first one named
