"""Root operations of ``agentkit-doctor --probe``: active checks that change no VM.

A passive reading can say dnsmasq runs and has the VM's entry, yet not that
it answers. These operations let the doctor ask, and nothing more:

* a *probe port*: a temporary namespace ``akprobe-<id>`` whose veth end
  ``akq<id>`` reaches the network through ``akp<id>``, which the doctor
  attaches where a VM's port would be (br-int with the network's local
  VLAN, or the network's ``brq`` bridge), and removes afterwards. ``<id>``
  is 8 hex digits (the doctor's pid), so only such names can be created or
  removed here. IPv6 is off on both ends: the probe sends nothing of its own.
* a DHCP DISCOVER from the probe port: the probe's own Ethernet source MAC,
  the diagnosed port's MAC as ``chaddr`` and the BROADCAST flag, so the
  OFFER comes back broadcast and no switch learns the VM's MAC on the
  probe. DISCOVER/OFFER leaves no lease (dnsmasq records one on REQUEST).
  Both are broadcast on the network's segment, so they reach every VM
  port of it, the diagnosed VM's included: its DHCP client ignores the
  OFFER, whose ``xid`` is the probe's (random), not one of its own.
* ARP and ping of a subnet's gateway from a ``qdhcp-`` namespace, from the
  DHCP port's own device and address (the daemon reads the address itself):
  only a host address of that device's own subnet, not the device's own.
  The ARP request is broadcast (VMs of the network receive it); the ping
  is unicast to the gateway.
* a TCP connect (and close, nothing sent) to the metadata service,
  169.254.169.254:80 and nothing else, from a ``qdhcp-`` or ``qrouter-``
  namespace.

Packets are built here and sent from ``AF_PACKET``/raw sockets opened in the
namespace (``CAP_NET_RAW``), so no ``dhclient``/``arping``/``ping`` is run.
Only primitives cross the privsep channel.
"""

from __future__ import annotations

import ipaddress
import os
import re
import select
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from agentkit.api import metadata as metadata_api
from agentkit.lib import naming
from agentkit.privileged import arp
from agentkit.privileged import namespaces
from agentkit.privileged import netlink
from agentkit.privileged import network

PROBE_NS_PREFIX = 'akprobe-'
PROBE_HOST_PREFIX = 'akp'      # the end the doctor attaches to the switch
PROBE_INNER_PREFIX = 'akq'     # the end in the probe namespace
MAX_TIMEOUT = 10.0
#: DISCOVERs go out this often until one is answered
RESEND_INTERVAL = 1.0
#: after the first OFFER, how long other servers' OFFERs are awaited
MORE_OFFERS_WAIT = 0.3
_PROBE_ID_RE = re.compile(r'[0-9a-f]{8}')
_UUID_NS_RE = re.compile(r'(%s|%s)([0-9a-f-]{36})' % (
    re.escape(naming.DHCP_NS_PREFIX), re.escape(naming.ROUTER_NS_PREFIX)))
_MAC_RE = re.compile(r'[0-9a-f]{2}(?::[0-9a-f]{2}){5}')

ETH_P_IP = 0x0800
BOOTP_REQUEST, BOOTP_REPLY = 1, 2
DHCP_MAGIC = b'\x63\x82\x53\x63'
DHCPDISCOVER, DHCPOFFER = 1, 2
OPT_MESSAGE_TYPE, OPT_SERVER_ID, OPT_PARAMS, OPT_END, OPT_PAD = 53, 54, 55, 255, 0
BROADCAST_FLAG = 0x8000
ARP_REPLY = 2
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0


# -- names ------------------------------------------------------------------
def check_probe_id(value: Any) -> str:
    if not isinstance(value, str) or not _PROBE_ID_RE.fullmatch(value):
        raise ValueError('a probe id is 8 lowercase hex digits, got %r' % (value,))
    return value


def probe_namespace(probe_id: str) -> str:
    return PROBE_NS_PREFIX + check_probe_id(probe_id)


def probe_host_device(probe_id: str) -> str:
    return PROBE_HOST_PREFIX + check_probe_id(probe_id)


def probe_inner_device(probe_id: str) -> str:
    return PROBE_INNER_PREFIX + check_probe_id(probe_id)


def _service_namespace(value: Any, prefixes: tuple[str, ...]) -> str:
    match = _UUID_NS_RE.fullmatch(value) if isinstance(value, str) else None
    if not (match and match.group(1) in prefixes and naming.is_valid_id(match.group(2))):
        raise ValueError('not a %s namespace: %r' % (' or '.join(prefixes), value))
    return str(value)


def _timeout(value: Any) -> float:
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not 0 < value <= MAX_TIMEOUT):
        raise ValueError('timeout must be in (0, %s] seconds, got %r' % (MAX_TIMEOUT, value))
    return float(value)


def _ipv4(value: Any) -> ipaddress.IPv4Address:
    try:
        address = ipaddress.IPv4Address(value)
    except (ValueError, TypeError):
        raise ValueError('not an IPv4 address: %r' % (value,)) from None
    if address.is_multicast or address.is_unspecified or address == ipaddress.IPv4Address(
            '255.255.255.255'):
        raise ValueError('not a unicast IPv4 address: %r' % (value,))
    return address


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b'\0'
    total = sum(struct.unpack('!%dH' % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xffff) + (total >> 16)
    return ~total & 0xffff


# -- the probe port ---------------------------------------------------------
@network.entrypoint
def create_probe(probe_id: str, mtu: int | None = None) -> None:
    """Namespace ``akprobe-<id>`` and veth ``akp<id>`` (root) / ``akq<id>`` (in it), up.

    Anything created is removed again if a later step fails.
    """
    namespace, host, inner = (probe_namespace(probe_id), probe_host_device(probe_id),
                              probe_inner_device(probe_id))
    if mtu is not None and (not isinstance(mtu, int) or not 68 <= mtu <= 65535):
        raise ValueError('invalid MTU %r' % (mtu,))
    netlink.create_namespace(namespace)
    try:
        for scope in ('all', 'default'):   # devices born in it get no IPv6
            netlink.set_sysctl(['net', 'ipv6', 'conf', scope, 'disable_ipv6'], '1',
                               namespace)
        netlink.create_veth(host, inner, None, namespace, mtu=mtu)
        netlink.set_sysctl(['net', 'ipv6', 'conf', host, 'disable_ipv6'], '1', None)
        netlink.set_link(inner, namespace, state='up')
        netlink.set_link(host, None, state='up')
    except BaseException:
        remove_probe(probe_id)
        raise


@network.entrypoint
def remove_probe(probe_id: str) -> bool:
    """Delete ``akp<id>`` and the namespace ``akprobe-<id>``; False if neither existed."""
    deleted = netlink.delete_link(probe_host_device(probe_id), None)
    return netlink.delete_namespace(probe_namespace(probe_id)) or deleted


# -- DHCP -------------------------------------------------------------------
def build_discover(source_mac: bytes, chaddr: bytes, xid: int) -> bytes:
    """An Ethernet frame with a DHCPDISCOVER for ``chaddr`` from ``source_mac``."""
    if len(source_mac) != 6 or len(chaddr) != 6:
        raise ValueError('MAC addresses have 6 bytes')
    options = (DHCP_MAGIC + bytes([OPT_MESSAGE_TYPE, 1, DHCPDISCOVER,
                                   OPT_PARAMS, 3, 1, 3, 6, OPT_END]))
    bootp = struct.pack('!BBBBIHH', BOOTP_REQUEST, 1, 6, 0, xid, 0, BROADCAST_FLAG)
    bootp += b'\0' * 16 + chaddr + b'\0' * (10 + 64 + 128) + options
    bootp += b'\0' * max(0, 300 - len(bootp))   # BOOTP's minimum size
    udp = struct.pack('!HHHH', 68, 67, 8 + len(bootp), 0) + bootp   # no UDP checksum
    header = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 0, 0, 64,
                         socket.IPPROTO_UDP, 0, b'\0' * 4, b'\xff' * 4)
    header = header[:10] + struct.pack('!H', _checksum(header)) + header[12:]
    return arp.BROADCAST + source_mac + struct.pack('!H', ETH_P_IP) + header + udp


def parse_offer(frame: bytes, xid: int, chaddr: bytes) -> dict[str, str] | None:
    """The OFFER in an Ethernet frame for (``xid``, ``chaddr``), None if it is not one."""
    if len(frame) < 14 + 20 + 8 + 240 or frame[12:14] != struct.pack('!H', ETH_P_IP):
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0f) * 4
    if ip[9] != socket.IPPROTO_UDP or len(ip) < ihl + 8 + 240:
        return None
    if struct.unpack('!H', ip[ihl + 2:ihl + 4])[0] != 68:
        return None
    bootp = ip[ihl + 8:]
    op, _, _, _, got_xid = struct.unpack('!BBBBI', bootp[:8])
    if op != BOOTP_REPLY or got_xid != xid or bootp[28:34] != chaddr \
            or bootp[236:240] != DHCP_MAGIC:
        return None
    options: dict[int, bytes] = {}
    i = 240
    while i < len(bootp) and bootp[i] != OPT_END:
        if bootp[i] == OPT_PAD:
            i += 1
            continue
        if i + 1 >= len(bootp):
            break
        length = bootp[i + 1]
        options[bootp[i]] = bootp[i + 2:i + 2 + length]
        i += 2 + length
    if options.get(OPT_MESSAGE_TYPE) != bytes([DHCPOFFER]):
        return None
    server = options.get(OPT_SERVER_ID, b'')
    return {'address': str(ipaddress.IPv4Address(bootp[16:20])),
            'server': str(ipaddress.IPv4Address(server)) if len(server) == 4
            else str(ipaddress.IPv4Address(ip[12:16])),
            'server_mac': ':'.join('%02x' % b for b in frame[6:12])}


def collect_offers(sock: Any, frame: bytes, xid: int, client: bytes, wait: float,
                   clock: Callable[[], float] = time.monotonic,
                   readable: Callable[..., Any] = select.select) -> list[dict[str, str]]:
    """Send ``frame`` (a DISCOVER) every :data:`RESEND_INTERVAL` s until an
    OFFER comes, then listen :data:`MORE_OFFERS_WAIT` s more for other
    servers; at most ``wait`` s in all. ``clock``/``readable``: for tests.

    :returns: the OFFERs, one per server.
    """
    offers: dict[str, dict[str, str]] = {}
    deadline = clock() + wait
    resend = 0.0
    while (now := clock()) < deadline:
        if not offers and now >= resend:
            sock.send(frame)
            resend = now + RESEND_INTERVAL
        # No resend once answered: only the (shortened) deadline bounds the wait.
        until = deadline if offers else min(deadline, resend)
        if readable([sock], [], [], max(0.0, until - now))[0]:
            offer = parse_offer(sock.recv(4096), xid, client)
            if offer is not None and offer['server'] not in offers:
                offers[offer['server']] = offer
                deadline = min(deadline, clock() + MORE_OFFERS_WAIT)
    return list(offers.values())


@network.entrypoint
def dhcp_discover(probe_id: str, chaddr: str, timeout: float = 3.0) -> list[dict[str, str]]:
    """Broadcast DISCOVERs for ``chaddr`` from the probe (one a second) and
    collect the OFFERs that answer within ``timeout`` seconds.

    :returns: ``[{address, server, server_mac}]``, one per answering server.
    """
    namespace, device = probe_namespace(probe_id), probe_inner_device(probe_id)
    if not isinstance(chaddr, str) or not _MAC_RE.fullmatch(chaddr):
        raise ValueError('invalid MAC address %r' % (chaddr,))
    client = bytes.fromhex(chaddr.replace(':', ''))
    wait = _timeout(timeout)
    xid = int.from_bytes(os.urandom(4), 'big')

    def exchange() -> list[dict[str, str]]:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                           socket.htons(ETH_P_IP)) as sock:
            sock.bind((device, ETH_P_IP))
            source = sock.getsockname()[4][:6]     # the probe's own MAC
            return collect_offers(sock, build_discover(source, client, xid), xid, client,
                                  wait)

    return namespaces.run_in_namespace(namespace, exchange)


# -- gateway ----------------------------------------------------------------
def _arp_request(mac: bytes, source: ipaddress.IPv4Address,
                 target: ipaddress.IPv4Address) -> bytes:
    body = struct.pack('!HHBBH', arp.ARPHRD_ETHER, ETH_P_IP, 6, 4, arp.ARP_REQUEST)
    body += mac + source.packed + b'\0' * 6 + target.packed
    return arp.BROADCAST + mac + struct.pack('!H', arp.ETH_P_ARP) + body


def _arp(device: str, source: ipaddress.IPv4Address, target: ipaddress.IPv4Address,
         deadline: float) -> str | None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                       socket.htons(arp.ETH_P_ARP)) as sock:
        sock.bind((device, arp.ETH_P_ARP))
        mac = sock.getsockname()[4][:6]
        sock.send(_arp_request(mac, source, target))
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                break
            frame = sock.recv(128)
            body = frame[14:]
            if (len(body) >= 28 and struct.unpack('!H', body[6:8])[0] == ARP_REPLY
                    and body[14:18] == target.packed and body[24:28] == source.packed):
                return ':'.join('%02x' % b for b in body[8:14])
    return None


def _ping(target: ipaddress.IPv4Address, deadline: float) -> float | None:
    ident, started = os.getpid() & 0xffff, time.monotonic()
    request = struct.pack('!BBHHH', ICMP_ECHO_REQUEST, 0, 0, ident, 1) + b'agentkit-doctor'
    request = request[:2] + struct.pack('!H', _checksum(request)) + request[4:]
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.sendto(request, (str(target), 0))
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                break
            packet, (sender, _) = sock.recvfrom(2048)
            icmp = packet[(packet[0] & 0x0f) * 4:]
            if (sender == str(target) and len(icmp) >= 8 and icmp[0] == ICMP_ECHO_REPLY
                    and struct.unpack('!H', icmp[4:6])[0] == ident):
                return (time.monotonic() - started) * 1000
    return None


@network.entrypoint
def probe_gateway(namespace: str, device: str, gateway: str,
                  timeout: float = 2.0) -> dict[str, Any]:
    """ARP, then ping, ``gateway`` from ``device`` in a ``qdhcp-`` namespace.

    Only a host of the device's own subnet is asked: ``gateway`` must lie in
    the subnet of one of the device's IPv4 addresses (read here, not taken
    from the caller), and be neither that subnet's network or broadcast
    address (a /31 has neither) nor an address of the device itself. The
    source is the device's address on that subnet.

    :returns: ``{source, mac (None: no ARP reply), rtt_ms (None: no echo reply)}``.
    :raises ValueError: bad arguments, a gateway outside those limits, or
        the device has no address on its subnet.
    """
    namespace = _service_namespace(namespace, (naming.DHCP_NS_PREFIX,))
    device = arp._check_device(device)
    target = _ipv4(gateway)
    wait = _timeout(timeout)
    own = [ipaddress.IPv4Interface('%s/%s' % (a['address'], a['prefixlen']))
           for a in netlink.list_addresses(namespace, device, 4)]
    if any(target == i.ip for i in own):
        raise ValueError('%s is an address of %s in %s itself' % (target, device, namespace))
    source = next((i for i in own if target in i.network), None)
    if source is None:
        raise ValueError('%s in %s has no address on the subnet of %s'
                         % (device, namespace, target))
    subnet = source.network
    if subnet.prefixlen < 31 and target in (subnet.network_address, subnet.broadcast_address):
        raise ValueError('%s is the network or broadcast address of %s, not a host'
                         % (target, subnet))

    def run() -> dict[str, Any]:
        mac = _arp(device, source.ip, target, time.monotonic() + wait)
        rtt = _ping(target, time.monotonic() + wait)
        return {'source': str(source.ip), 'mac': mac,
                'rtt_ms': None if rtt is None else round(rtt, 3)}

    return namespaces.run_in_namespace(namespace, run)


# -- TCP --------------------------------------------------------------------
#: What :func:`tcp_connect` may reach: the metadata service, as a VM asks it.
METADATA_TARGETS = frozenset({(metadata_api.METADATA_V4_IP, metadata_api.METADATA_PORT)})


@network.entrypoint
def tcp_connect(namespace: str, address: str, port: int,
                timeout: float = 3.0) -> str | None:
    """Open and close a TCP connection to the metadata service
    (:data:`METADATA_TARGETS`: 169.254.169.254:80, nothing else) from
    ``namespace`` (``qdhcp-``/``qrouter-``); nothing is sent.

    :returns: None when it connected, else why not.
    """
    namespace = _service_namespace(namespace, (naming.DHCP_NS_PREFIX,
                                               naming.ROUTER_NS_PREFIX))
    target = _ipv4(address)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError('invalid port %r' % (port,))
    if (str(target), port) not in METADATA_TARGETS:
        raise ValueError('only the metadata service (%s) is connected to, not %s:%s'
                         % (', '.join('%s:%s' % t for t in sorted(METADATA_TARGETS)),
                            target, port))
    wait = _timeout(timeout)

    def connect() -> str | None:
        try:
            socket.create_connection((str(target), port), timeout=wait).close()
        except OSError as exc:
            return str(exc) or type(exc).__name__
        return None

    return namespaces.run_in_namespace(namespace, connect)
