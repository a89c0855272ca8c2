"""A minimal DHCP client for benchmarks: DISCOVER from inside a namespace,
wait for the OFFER, resend every few ms - so "dnsmasq answers" is measured
to the millisecond instead of dhclient's one-second retransmit timer."""

import ctypes
import os
import random
import socket
import struct
import threading

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _socket_in_namespace(namespace: str, device: str) -> socket.socket:
    """A UDP :68 socket created inside ``namespace`` (a socket keeps the
    namespace it was born in, so the thread may leave afterwards)."""
    result: dict = {}

    def make() -> None:
        try:
            fd = os.open(f'/run/netns/{namespace}', os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), 'setns failed')
            finally:
                os.close(fd)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                            device.encode())
            sock.bind(('0.0.0.0', 68))
            sock.setblocking(False)
            result['sock'] = sock
        except Exception as exc:  # reported to the caller below
            result['error'] = exc

    t = threading.Thread(target=make)  # a throwaway thread owns the setns
    t.start()
    t.join()
    if 'error' in result:
        raise result['error']
    return result['sock']


def discover_packet(mac: str, xid: int) -> bytes:
    chaddr = bytes.fromhex(mac.replace(':', '')) + b'\0' * 10
    header = struct.pack('!BBBBIHH4s4s4s4s16s64s128s', 1, 1, 6, 0, xid, 0,
                         0x8000, b'\0' * 4, b'\0' * 4, b'\0' * 4, b'\0' * 4,
                         chaddr, b'\0' * 64, b'\0' * 128)
    options = b'\x63\x82\x53\x63' + b'\x35\x01\x01' + b'\xff'
    return header + options


def is_offer(data: bytes, xid: int) -> bool:
    if len(data) < 240 or struct.unpack('!I', data[4:8])[0] != xid:
        return False
    options = data[240:]
    i = 0
    while i < len(options) and options[i] != 255:
        if options[i] == 0:
            i += 1
            continue
        code, length = options[i], options[i + 1]
        if code == 53:
            return options[i + 2] == 2
        i += 2 + length
    return False


class Probe:
    """One VM's DHCP probe: ``send()`` a DISCOVER, ``answered()`` by OFFER."""

    def __init__(self, namespace: str, device: str, mac: str) -> None:
        self.sock = _socket_in_namespace(namespace, device)
        self.mac = mac
        self.xid = random.getrandbits(32)
        self.packet = discover_packet(mac, self.xid)

    def send(self) -> None:
        try:
            self.sock.sendto(self.packet, ('255.255.255.255', 67))
        except OSError:
            pass  # device not ready yet: try again next round

    def answered(self) -> bool:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return False
            if is_offer(data, self.xid):
                return True

    def close(self) -> None:
        self.sock.close()
