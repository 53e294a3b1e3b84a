"""Refuse to connect to addresses a user-supplied host must never reach (SSRF guard).

An account's host name comes from a user; without this check "test the connection" would let
anyone probe the deployment's internal network. Cloud metadata and other link-local addresses
are always blocked; private and loopback ranges unless the deployment allows them (demo, tests,
or an on-premises mail server).

The name is resolved once, here, and the caller connects to the address that was checked
(`PinnedContext` keeps TLS verifying the certificate against the name): resolving again when
connecting would let a DNS answer that changes in between (rebinding) slip past the check.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from typing import Any

from sync import errors

# Instance metadata services (AWS/GCP/Azure/OpenStack, AWS IPv6, Alibaba, Oracle).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)


def embedded_ipv4(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The IPv4 address an IPv6 address carries to its destination, if any: IPv4-mapped
    (::ffff:a.b.c.d), 6to4 (2002:AABB:CCDD::/48, RFC 3056) and Teredo (2001::/32, the client
    address, RFC 4380). `2002:a9fe:a9fe::` reaches 169.254.169.254 on a host with a 6to4 relay."""
    if isinstance(ip, ipaddress.IPv4Address):
        return ip
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if ip.teredo:
        return ip.teredo[1]
    return ip


def address_problem(address: str, *, allow_private: bool) -> str | None:
    """Why `address` may not be contacted, or None. Pure; tested from a table."""
    ip = embedded_ipv4(ipaddress.ip_address(address.split("%", 1)[0]))
    if ip in METADATA_ADDRESSES:
        return "it is a cloud metadata address"
    if ip.is_link_local:
        # 169.254/16 and fe80::/10 hold instance credentials endpoints (e.g. 169.254.170.2).
        return "it is a link-local address"
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return "it is not a routable unicast address"
    if allow_private:
        return None
    if ip.is_loopback:
        return "it is a loopback address (allowed only when the deployment permits private hosts)"
    if ip.is_private or not ip.is_global:
        return "it is a private network address (allowed only when the deployment permits private hosts)"
    return None


def check_host(host: str, port: int, *, allow_private: bool) -> str:
    """Resolve `host`, refuse if any of its addresses is blocked, and return the address to
    connect to."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise errors.HostNotFound(host) from exc
    for info in infos:
        problem = address_problem(str(info[4][0]), allow_private=allow_private)
        if problem:
            raise errors.BlockedHost(host, problem)
    if not infos:
        raise errors.HostNotFound(host)
    return str(infos[0][4][0])


class PinnedContext(ssl.SSLContext):
    """A client TLS context that verifies the certificate against `hostname` whatever address
    the socket was opened to (clients pass the address they connected to as server_hostname)."""

    hostname: str = ""

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        kwargs["server_hostname"] = self.hostname
        return super().wrap_socket(sock, *args, **kwargs)


def pinned_context(hostname: str, ca_file: str | None) -> PinnedContext:
    """Certificate and host name verification always on; `ca_file` replaces the system store
    for self-hosted servers with a private CA."""
    context = PinnedContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificate and name by default
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    else:
        context.load_default_certs()
    context.hostname = hostname
    return context
