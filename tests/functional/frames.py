"""Hand-made Ethernet frames, sent and captured with AF_PACKET sockets in namespaces.

For tests that must prove what a layer-2 filter does with frames no normal
stack would send (a forged source MAC, ARP claiming someone else's IP, LLDP,
a VLAN tag). Sockets are opened inside a fake VM's namespace by a throwaway
thread that ``setns()``es first (a socket stays in the namespace it was
created in; the test's own threads never change namespace), so sending and
receiving are plain socket calls in the test process: no helper process to
start per frame, no output to parse.

Every frame carries a random token after its payload (trailing bytes that
receivers ignore), so a capture can tell exactly which frames arrived.
Negative checks never sleep: the sender follows the frames that must be
dropped with a *marker* frame that must pass, pinned to one CPU so the
frames cross the veths and the bridge in order; once the marker is
captured, anything sent before it would have been captured too.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
import uuid
from typing import Callable, Iterator, TypeVar

from agentkit.privileged import namespaces

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ETH_P_IPV6 = 0x86DD
ETH_P_LLDP = 0x88CC
PACKET_OUTGOING = 4
ARP_REQUEST = 1
ARP_REPLY = 2

T = TypeVar('T')


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(':', ''))


def token() -> bytes:
    """16 random bytes that identify one frame in a capture."""
    return uuid.uuid4().bytes


def ethernet(dst: str, src: str, ethertype: int, payload: bytes) -> bytes:
    return mac_bytes(dst) + mac_bytes(src) + struct.pack('!H', ethertype) + payload


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack('!%dH' % (len(header) // 2), header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(src: str, dst: str, payload: bytes, protocol: int = 253) -> bytes:
    """A well-formed IPv4 packet (protocol 253: "for experimentation").

    Well-formed matters: with br_netfilter loaded the bridge validates IPv4
    headers before iptables and drops broken ones.
    """
    header = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), 0, 0x4000, 64,
                         protocol, 0, socket.inet_aton(src), socket.inet_aton(dst))
    return header[:10] + struct.pack('!H', _checksum(header)) + header[12:] + payload


def ipv6(src: str, dst: str, payload: bytes, next_header: int = 59) -> bytes:
    """A well-formed IPv6 packet (next header 59: "no next header")."""
    return (struct.pack('!IHBB', 6 << 28, len(payload), next_header, 64)
            + socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
            + payload)


def arp(op: int, sender_mac: str, sender_ip: str, target_mac: str, target_ip: str) -> bytes:
    """An Ethernet/IPv4 ARP packet (28 bytes)."""
    return (struct.pack('!HHBBH', 1, ETH_P_IP, 6, 4, op)
            + mac_bytes(sender_mac) + socket.inet_aton(sender_ip)
            + mac_bytes(target_mac) + socket.inet_aton(target_ip))


def arp_frame(src: str, dst: str, op: int, sender_mac: str, sender_ip: str,
              target_mac: str, target_ip: str, mark: bytes) -> bytes:
    return ethernet(dst, src, ETH_P_ARP,
                    arp(op, sender_mac, sender_ip, target_mac, target_ip) + mark)


def in_namespace(namespace: str, func: Callable[[], T]) -> T:
    """Run ``func`` in a throwaway thread that joined ``namespace`` first."""
    result: dict[str, object] = {}

    def run() -> None:
        try:
            fd = os.open(os.path.join('/run/netns', namespace), os.O_RDONLY | os.O_CLOEXEC)
            try:
                namespaces.setns(fd)
            finally:
                os.close(fd)
            result['value'] = func()
        except BaseException as exc:  # noqa: B036 - handed to the caller
            result['error'] = exc

    thread = threading.Thread(target=run, name='setns-' + namespace)
    thread.start()
    thread.join()
    if 'error' in result:
        raise result['error']  # type: ignore[misc]
    return result['value']  # type: ignore[return-value]


class PacketSocket:
    """An AF_PACKET socket on ``device`` in ``namespace``: sends raw frames and,
    with ``capture=True``, records every frame the device receives."""

    def __init__(self, namespace: str, device: str, capture: bool = False) -> None:
        protocol = ETH_P_ALL if capture else 0  # protocol 0: send only

        def make() -> socket.socket:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(protocol))
            sock.bind((device, protocol))
            return sock

        self.sock = in_namespace(namespace, make)
        self.capture = capture

    def close(self) -> None:
        self.sock.close()

    @contextlib.contextmanager
    def _one_cpu(self) -> Iterator[None]:
        # sched_setaffinity(0) pins the calling thread only.
        cpus = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(cpus)})
        try:
            yield
        finally:
            os.sched_setaffinity(0, cpus)

    def send(self, *frames: bytes) -> None:
        """Transmit ``frames`` in order, from one CPU."""
        with self._one_cpu():
            for frame in frames:
                self.sock.send(frame)

    def drain(self) -> None:
        """Forget everything captured so far."""
        self.received()

    def received(self) -> list[bytes]:
        """The frames received (not sent) since the last read, without waiting."""
        frames = []
        self.sock.setblocking(False)
        try:
            while True:
                data, address = self.sock.recvfrom(65535)
                if address[2] != PACKET_OUTGOING:
                    frames.append(data)
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)
        return frames

    def receive_until(self, mark: bytes, timeout: float = 5.0) -> list[bytes]:
        """Frames received (not sent) up to and including the one carrying
        ``mark``; AssertionError if it does not arrive within ``timeout``."""
        assert self.capture, 'socket opened without capture=True'
        frames: list[bytes] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError('marker frame %s not received within %.1f s (got %d '
                                     'other frames)' % (mark.hex(), timeout, len(frames)))
            self.sock.settimeout(remaining)
            try:
                data, address = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            if address[2] == PACKET_OUTGOING:
                continue
            frames.append(data)
            if mark in data:
                return frames


def carrying(frames: list[bytes], mark: bytes) -> list[bytes]:
    """The frames that carry ``mark``."""
    return [frame for frame in frames if mark in frame]
