"""Which network addresses a remote image may come from: public unicast ones only.

A server that fetches URLs for its clients must not become their way into the operator's
network (server-side request forgery): loopback, link-local (cloud metadata at
169.254.169.254), private, shared (CGNAT), unique-local, multicast, unspecified and reserved
addresses are refused unless the operator allows them. IPv6 forms that carry an IPv4 address
(IPv4-mapped, NAT64, 6to4) are judged by the IPv4 address they lead to.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")


def parse_address(text: str) -> IPAddress | None:
    """The address `text` spells in standard notation (an IPv6 zone such as ``%eth0`` dropped),
    else None. Shorthand IPv4 spellings (``127.1``, ``2130706433``) are not addresses here:
    they go to the resolver, whose reading is the one a connection would use."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    return address


def refusal(address: IPAddress) -> str | None:
    """Why `address` is not a public unicast address ("loopback", "private", ...), or None."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return refusal(address.ipv4_mapped)
        if address in _NAT64:  # a DNS64 answer: the gateway connects to the IPv4 address inside
            return refusal(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address.sixtofour is not None and refusal(address.sixtofour):
            return refusal(address.sixtofour)
    return _kind(address)


def _kind(address: IPAddress) -> str | None:
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address in _CGNAT:
        return "shared (CGNAT)"
    if address in _UNIQUE_LOCAL:
        return "unique-local"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "private"  # deprecated fec0::/10, which Python counts as global
    if address.is_reserved:
        return "reserved"
    if address.is_private or not address.is_global:
        return "private"
    return None
