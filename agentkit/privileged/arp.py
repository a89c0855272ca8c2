"""Root operation: announce an IPv4 address with a gratuitous ARP.

When a router gains an address on its gateway port -- its gateway IP, or a
floating IP that was just associated or moved here -- the upstream router
still maps that address to whatever MAC it learnt before, until its ARP
cache entry expires (minutes). A gratuitous ARP (an ARP request whose
sender and target address are both the announced one, broadcast) makes
every neighbour that already has an entry for the address update it at
once; it is what Neutron's L3 agent sends with ``arping -U``.

The packet is built here and sent from an ``AF_PACKET`` socket opened
inside the namespace (``CAP_NET_RAW``), so no ``arping`` binary is
needed. Only the announced address and the device come from the caller;
the sender MAC is the device's own, read from the kernel.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

from agentkit.privileged import namespaces
from agentkit.privileged import netlink
from agentkit.privileged import network

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARPHRD_ETHER = 1
ARP_REQUEST = 1
BROADCAST = b'\xff' * 6
SIOCGIFHWADDR = 0x8927
IFNAMSIZ = 16


def build_packet(mac: bytes, address: str) -> bytes:
    """The Ethernet frame of a gratuitous ARP request for ``address`` from ``mac``."""
    if len(mac) != 6:
        raise ValueError('a MAC address has 6 bytes, got %d' % len(mac))
    ip = ipaddress.IPv4Address(address).packed
    ethernet = BROADCAST + mac + struct.pack('!H', ETH_P_ARP)
    arp = struct.pack('!HHBBH', ARPHRD_ETHER, ETH_P_IP, 6, 4, ARP_REQUEST)
    # Sender and target protocol address are both the announced one; the
    # target hardware address is unknown (zero), as in arping -U.
    arp += mac + ip + b'\0' * 6 + ip
    return ethernet + arp


def _check_device(device: str) -> str:
    if (not isinstance(device, str) or not 0 < len(device) < IFNAMSIZ
            or '/' in device or '\0' in device or device.strip() != device):
        raise ValueError('invalid device name %r' % (device,))
    return device


@network.entrypoint
def send_gratuitous_arp(device: str, address: str, namespace: str) -> None:
    """Broadcast one gratuitous ARP for IPv4 ``address`` on ``device`` in ``namespace``.

    Only from a router's namespace (never the host's own), and only for an
    address the device holds: the daemon does not announce what the caller
    names without checking.

    :raises NetworkNamespaceNotFound: no such namespace.
    :raises OSError: the device does not exist or is down (ENXIO/ENETDOWN).
    :raises ValueError: no namespace, invalid device name, not an IPv4
        address, or an address the device does not have.
    """
    if namespace is None:
        raise ValueError('gratuitous ARPs are sent from a namespace only')
    device = _check_device(device)
    ip = str(ipaddress.IPv4Address(address))
    if not any(a['address'] == ip for a in netlink.list_addresses(namespace, device, 4)):
        raise ValueError('%s is not an address of %s in %s' % (ip, device, namespace))

    def send() -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                           socket.htons(ETH_P_ARP)) as sock:
            sock.bind((device, ETH_P_ARP))
            request = struct.pack('256s', device.encode())
            mac = fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR, request)[18:24]
            sock.send(build_packet(mac, address))

    namespaces.run_in_namespace(namespace, send)
