"""The client's address behind a proxy: ``--forwarded-allow-ips`` (uvicorn's convention).

``X-Forwarded-For`` and ``X-Real-IP`` are believed only when the connection comes from an
address in the list (IPs or CIDR networks, ``*`` for any). Then the client is the right-most
address of ``X-Forwarded-For`` that is not itself a trusted proxy (each proxy appends the address
it saw: the left part is what the client claimed, and anyone can claim anything), else
``X-Real-IP``. That address is what rate limits, access and audit logs and ``call.client``
use. From any other peer the headers are ignored: a client cannot choose its own address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

Address = tuple[str, int]


class ForwardedAddresses:
    def __init__(self, allowed: list[str]) -> None:
        self.any = "*" in allowed
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for item in allowed:
            if item == "*":
                continue
            try:
                self.networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"--forwarded-allow-ips {item!r}: expected an IP address, a CIDR network or '*'"
                ) from None

    def trusts(self, host: str) -> bool:
        if self.any:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def client(self, headers: Mapping[bytes, bytes], peer: Address | None) -> Address | None:
        """The client's address: from the headers when ``peer`` is a trusted proxy, else ``peer``."""
        if peer is None or not self.trusts(peer[0]):
            return peer
        forwarded = headers.get(b"x-forwarded-for")
        if forwarded is not None:
            hops = [hop.strip() for hop in forwarded.decode("latin-1").split(",") if hop.strip()]
            for hop in reversed(hops):
                if not _valid(hop):
                    break  # garbage: do not trust anything left of it
                if not self.trusts(hop):
                    return hop, 0
            if hops and _valid(hops[0]):
                return hops[0], 0  # every hop is a trusted proxy: the first one is the client
        real = headers.get(b"x-real-ip")
        if real is not None and _valid(host := real.decode("latin-1").strip()):
            return host, 0
        return peer


def _valid(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
