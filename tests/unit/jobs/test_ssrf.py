"""The webhook SSRF filter: forbidden IPv4 addresses stay forbidden in every IPv6 form that
carries them (mapped, compatible, translated, NAT64, 6to4, Teredo), and public ones in the
forms that really reach them stay allowed."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelgate.core.jobs.ssrf import forbidden_address, resolve_public
from modelgate.errors import ErrorKind, ModelgateError

FORBIDDEN_V4 = [
    ipaddress.IPv4Network(n)
    for n in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "100.64.0.0/10",
        "0.0.0.0/8",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
]
PUBLIC_V4 = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "151.101.1.69"]


def mapped(v4: ipaddress.IPv4Address) -> str:
    return str(ipaddress.IPv6Address((0xFFFF << 32) | int(v4)))


def translated(v4: ipaddress.IPv4Address) -> str:
    return str(ipaddress.IPv6Address((0xFFFF << 48) | int(v4)))


def compatible(v4: ipaddress.IPv4Address) -> str:
    return str(ipaddress.IPv6Address(int(v4)))


def nat64(v4: ipaddress.IPv4Address) -> str:
    return str(ipaddress.IPv6Address((0x0064_FF9B << 96) | int(v4)))


def sixtofour(v4: ipaddress.IPv4Address) -> str:
    return str(ipaddress.IPv6Address((0x2002 << 112) | (int(v4) << 80) | 1))


def teredo(server: ipaddress.IPv4Address, client: ipaddress.IPv4Address) -> str:
    # 2001:0:<server>:<flags>:<port ^ ffff>:<client ^ ffffffff> (RFC 4380)
    value = (0x2001_0000 << 96) | (int(server) << 64) | (0x8000 << 48) | (0x9C3F << 32)
    return str(ipaddress.IPv6Address(value | (int(client) ^ 0xFFFF_FFFF)))


FORMS = [mapped, translated, compatible, nat64, sixtofour]


@st.composite
def forbidden_v4(draw: st.DrawFn) -> ipaddress.IPv4Address:
    network = draw(st.sampled_from(FORBIDDEN_V4))
    offset = draw(st.integers(0, network.num_addresses - 1))
    return network[offset]


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("2002:a9fe:a9fe::", "private (6to4 form of 169.254.169.254)"),
        ("2002:7f00:1::", "loopback (6to4 form of 127.0.0.1)"),
        ("64:ff9b::7f00:1", "loopback (NAT64 form of 127.0.0.1)"),
        ("::ffff:169.254.169.254", "private (IPv4-mapped form of 169.254.169.254)"),
        ("::127.0.0.1", "loopback (IPv4-compatible form of 127.0.0.1)"),
        ("::ffff:0:a9fe:a9fe", "private (IPv4-translated form of 169.254.169.254)"),
        ("64:ff9b:1::808:808", "NAT64 local-use"),
    ],
)
def test_the_reported_addresses_are_refused_with_their_reason(address: str, reason: str) -> None:
    assert forbidden_address(address) == reason


@given(forbidden_v4(), st.sampled_from(FORMS))
def test_a_forbidden_ipv4_is_forbidden_in_every_ipv6_form(
    v4: ipaddress.IPv4Address, form: object
) -> None:
    assert callable(form)
    assert forbidden_address(str(v4)) is not None
    assert forbidden_address(form(v4)) is not None


@given(forbidden_v4(), st.sampled_from(PUBLIC_V4), st.booleans())
def test_teredo_is_refused_for_a_forbidden_server_or_client(
    v4: ipaddress.IPv4Address, public: str, as_client: bool
) -> None:
    other = ipaddress.IPv4Address(public)
    address = teredo(other, v4) if as_client else teredo(v4, other)
    reason = forbidden_address(address)
    assert reason is not None and f"Teredo form of {v4}" in reason


def test_the_teredo_client_is_deobfuscated() -> None:
    # the client 127.0.0.1 travels as 80ff:fffe; a filter that forgot the XOR would see
    # 128.255.255.254 (public) instead
    address = teredo(ipaddress.IPv4Address("8.8.8.8"), ipaddress.IPv4Address("127.0.0.1"))
    assert address.endswith("80ff:fffe")
    assert forbidden_address(address) == "loopback (Teredo form of 127.0.0.1)"


@pytest.mark.parametrize("public", PUBLIC_V4)
def test_teredo_and_obsolete_forms_are_refused_even_for_public_ipv4(public: str) -> None:
    v4 = ipaddress.IPv4Address(public)
    assert forbidden_address(teredo(v4, v4)) == "Teredo address"
    assert forbidden_address(compatible(v4)) == "IPv4-compatible address"
    assert forbidden_address(translated(v4)) == "IPv4-translated address"


@pytest.mark.parametrize("public", PUBLIC_V4)
@pytest.mark.parametrize("form", [mapped, nat64, sixtofour])
def test_a_public_ipv4_stays_reachable_through_forms_that_reach_it(
    public: str, form: object
) -> None:
    assert callable(form)
    assert forbidden_address(form(ipaddress.IPv4Address(public))) is None


@pytest.mark.parametrize("address", ["2606:4700:4700::1111", "2a00:1450:4001:81b::200e"])
def test_plain_public_ipv6_is_allowed(address: str) -> None:
    assert forbidden_address(address) is None


@pytest.mark.parametrize("host", ["[2002:a9fe:a9fe::]", "[2002:7f00:1::]", "[64:ff9b::a9fe:a9fe]"])
async def test_a_webhook_url_with_an_embedded_forbidden_address_is_refused(host: str) -> None:
    address = host.strip("[]")
    with pytest.raises(ModelgateError) as caught:
        await resolve_public(f"http://{host}/hook", resolver=lambda _h, _p: [address])
    assert caught.value.kind is ErrorKind.INVALID_ARGUMENT
    assert "webhooks may only call public addresses" in caught.value.message


async def test_a_name_resolving_to_one_embedded_forbidden_address_is_refused() -> None:
    def resolver(_host: str, _port: int) -> list[str]:
        return ["2606:4700:4700::1111", "2002:a9fe:a9fe::1"]

    with pytest.raises(ModelgateError, match=r"169\.254\.169\.254"):
        await resolve_public("https://hooks.example.com/x", resolver=resolver)
