"""dnsmasq's lease file, and which leases no port holds any more.

A deleted port's lease would keep its address from a new port until it
expires; the driver releases those leases (``dhcp_release``) instead.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

from agentkit.api.dhcp import IPAddress, Network, Port
from agentkit.lib import ip_lib
from drivers.dhcp.dnsmasq import render


_HEX_BYTES_RE = re.compile(r'[0-9a-f]{2}(?::[0-9a-f]{2})*')


@dataclasses.dataclass(frozen=True)
class Lease:
    """One line of dnsmasq's lease file (the expiry is left out on purpose:
    a renewed lease is still the same lease)."""

    address: IPAddress
    #: IPv4: the client's MAC (Ethernet only; other hardware types are skipped)
    mac: str | None = None
    #: IPv4: client id; IPv6: the client's DUID (hex bytes), None if unknown
    client_id: str | None = None
    #: IPv6: the IAID (temporary addresses, ``T<n>``, are skipped)
    iaid: int | None = None


def parse_leases(text: str) -> tuple[list[Lease], str | None]:
    """(leases, server DUID) from a lease file dnsmasq wrote.

    Lines are ``<expiry> <mac|iaid> <ip> <hostname> <client-id|duid>`` and
    one ``duid <server-duid>``. Lines agentkit cannot release (unknown
    shapes, non-Ethernet hardware, temporary IPv6 addresses) are skipped.
    """
    leases = []
    server_duid = None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == 'duid':
            if _HEX_BYTES_RE.fullmatch(parts[1].lower()):
                server_duid = parts[1].lower()
            continue
        if len(parts) != 5:
            continue
        try:
            address = ipaddress.ip_address(parts[2].strip('[]'))
        except ValueError:
            continue
        client = parts[4].lower()
        client_id = client if _HEX_BYTES_RE.fullmatch(client) else None
        if address.version == 4:
            try:
                mac = ip_lib.validate_mac(parts[1], unicast=False)
            except ValueError:
                continue
            leases.append(Lease(address, mac=mac, client_id=client_id))
        elif parts[1].isdigit() and int(parts[1]) < 2 ** 32:
            leases.append(Lease(address, client_id=client_id, iaid=int(parts[1])))
    return leases, server_duid


def read_leases(path: str) -> tuple[list[Lease], str | None]:
    try:
        with open(path, encoding='ascii', errors='replace') as f:
            return parse_leases(f.read())
    except FileNotFoundError:
        return [], None


def read_host_macs(path: str) -> dict[IPAddress, str]:
    """address -> MAC of the ``host`` file agentkit wrote last time."""
    macs: dict[IPAddress, str] = {}
    try:
        with open(path, encoding='ascii', errors='replace') as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return macs
    for line in lines:
        mac, *fields = line.split(',')
        for field in fields:
            try:
                macs[ipaddress.ip_address(field.strip('[]'))] = mac.lower()
            except ValueError:
                continue
    return macs


def client_id_hex(value: str | None) -> str | None:
    """A port's client-id the way dnsmasq records it: hex bytes.

    dnsmasq reads ``id:`` as hex when it looks like colon-separated hex and
    as a string otherwise; ``*`` means "ignore the client id".
    """
    if not value or value == '*':
        return None
    if _HEX_BYTES_RE.fullmatch(value.lower()):
        return value.lower()
    return ':'.join('%02x' % b for b in value.encode())


def _mac_in_duid(duid: str | None) -> str | None:
    """The Ethernet MAC a DUID-LLT or DUID-LL carries, else None."""
    if not duid:
        return None
    octets = duid.split(':')
    if octets[:4] == ['00', '01', '00', '01'] and len(octets) == 14:
        return ':'.join(octets[8:])
    if octets[:4] == ['00', '03', '00', '01'] and len(octets) == 10:
        return ':'.join(octets[4:])
    return None


def stale_leases(network: Network, leases: list[Lease],
                 old_hosts: dict[IPAddress, str] | None = None) -> list[Lease]:
    """Leases no port of ``network`` holds any more: to be released.

    IPv4: no port has that address with that MAC, or the port's client-id
    differs (a port without one accepts any). IPv6 leases carry no MAC: a
    lease is stale when no port holds the address, when its DUID names
    another MAC than the port's, or when the address belonged to another
    MAC in the previous ``host`` file (``old_hosts``).
    """
    old_hosts = old_hosts or {}
    holders: dict[IPAddress, Port] = {}
    for host_port, fixed_ip, subnet in render.host_entries(network):
        if subnet.assigns_addresses:
            holders[fixed_ip.address] = host_port
    stale = []
    for lease in leases:
        port = holders.get(lease.address)
        if port is None:
            stale.append(lease)
        elif lease.address.version == 4:
            wanted_id = client_id_hex(port.client_id)
            if lease.mac != port.mac_address or (
                    wanted_id is not None and lease.client_id != wanted_id):
                stale.append(lease)
        else:
            duid_mac = _mac_in_duid(lease.client_id)
            previous = old_hosts.get(lease.address)
            if ((duid_mac is not None and duid_mac != port.mac_address)
                    or (previous is not None and previous != port.mac_address)):
                stale.append(lease)
    return stale
