"""Refuse to connect to addresses a user-supplied host must never reach (SSRF guard).

An account's host name comes from a user; without this check "test the connection" would let
anyone probe the deployment's internal network. Cloud metadata addresses are always blocked;
private, loopback and link-local ranges unless the deployment allows them (demo, tests, or an
on-premises mail server).
"""

from __future__ import annotations

import ipaddress
import socket

from sync import errors

# Instance metadata services (AWS/GCP/Azure/OpenStack, AWS IPv6, Alibaba, Oracle).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)


def address_problem(address: str, *, allow_private: bool) -> str | None:
    """Why `address` may not be contacted, or None. Pure; tested from a table."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return "it is a cloud metadata address"
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return "it is not a routable unicast address"
    if allow_private:
        return None
    if ip.is_loopback:
        return "it is a loopback address (allowed only when the deployment permits private hosts)"
    if ip.is_link_local:
        return "it is a link-local address"
    if ip.is_private or not ip.is_global:
        return "it is a private network address (allowed only when the deployment permits private hosts)"
    return None


def check_host(host: str, port: int, *, allow_private: bool) -> None:
    """Resolve `host` and refuse if any of its addresses is blocked."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise errors.HostNotFound(host) from exc
    for info in infos:
        problem = address_problem(str(info[4][0]), allow_private=allow_private)
        if problem:
            raise errors.BlockedHost(host, problem)
