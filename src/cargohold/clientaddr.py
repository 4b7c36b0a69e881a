"""Who the client is: the peer's address, or behind trusted proxies the one they report.

``http.trustedproxies`` (CIDRs) names the load balancers whose ``X-Forwarded-For`` is believed.
The client is then the rightmost address in that header that is not itself a trusted proxy:
every hop appends the address it received from, so anything left of that could have been
written by the client. Without trusted proxies the header is ignored: any client could send it.
"""

from __future__ import annotations

import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(cidrs: list[str]) -> list[Network]:
    return [ipaddress.ip_network(c, strict=False) for c in cidrs]


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_trusted(address: str, networks: list[Network]) -> bool:
    """Whether ``address`` (an IPv4-mapped IPv6 address too) is in one of ``networks``."""
    if not networks or not address:
        return False
    ip = _ip(address)
    return ip is not None and any(ip in net for net in networks)


def client_address(peer: str | None, forwarded_for: list[str], trusted: list[Network]) -> str:
    address = peer or "-"
    if not is_trusted(address, trusted):
        return address
    hops = [h.strip() for header in forwarded_for for h in header.split(",") if h.strip()]
    for hop in reversed(hops):
        if _ip(hop) is None:
            return address  # a hop we cannot read: count against the proxy, never a guess
        if not is_trusted(hop, trusted):
            return hop
    return hops[0] if hops else address
