"""Which client a request through proxies came from (api/forwarded.py): only a trusted
peer's X-Forwarded-For counts, and only its rightmost address that is not a proxy."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from modelgate.api.forwarded import TrustedProxies

PROXY = "10.0.0.5"


def test_an_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    proxies = TrustedProxies("10.0.0.0/24")
    assert proxies.client("192.0.2.9", "198.51.100.1") == "192.0.2.9"


def test_a_trusted_peer_names_the_client_it_saw_not_what_the_client_wrote() -> None:
    proxies = TrustedProxies("10.0.0.0/24, 127.0.0.1")
    # the client wrote 203.0.113.66; the proxy appended the address it saw
    assert proxies.client(PROXY, "203.0.113.66, 198.51.100.7") == "198.51.100.7"
    # a chain of trusted proxies is skipped
    assert proxies.client(PROXY, "198.51.100.7, 10.0.0.9") == "198.51.100.7"
    assert proxies.client(PROXY, None) == PROXY
    assert proxies.client(PROXY, "") == PROXY


def test_nothing_is_trusted_by_an_empty_setting() -> None:
    proxies = TrustedProxies("")
    assert not proxies
    assert proxies.client("127.0.0.1", "203.0.113.1") == "127.0.0.1"


def test_any_peer_is_trusted_with_a_star() -> None:
    proxies = TrustedProxies("*")
    assert proxies.client("192.0.2.1", "203.0.113.1, 198.51.100.2") == "203.0.113.1"


def test_ipv6_networks_and_names() -> None:
    proxies = TrustedProxies("fd00::/8, lb.internal")
    assert proxies.client("fd00::1", "2001:db8::7") == "2001:db8::7"
    assert proxies.client("lb.internal", "192.0.2.3") == "192.0.2.3"
    assert proxies.client("fe80::1", "192.0.2.3") == "fe80::1"


@given(
    peer=st.one_of(st.none(), st.sampled_from([PROXY, "192.0.2.1"]), st.text(max_size=20)),
    forwarded=st.one_of(st.none(), st.text(max_size=200)),
)
def test_any_header_yields_the_peer_or_one_of_its_entries(
    peer: str | None, forwarded: str | None
) -> None:
    proxies = TrustedProxies("10.0.0.0/24")
    client = proxies.client(peer, forwarded)
    entries = [part.strip() for part in (forwarded or "").split(",")]
    assert client == peer or client in entries
    if peer is None or not proxies.trusts(peer):
        assert client == peer
