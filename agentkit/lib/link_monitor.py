"""Netlink link events (devices appearing and going) without polling.

Subscribing to the RTNLGRP_LINK multicast group needs no privilege, so this
runs in the agent process on a plain socket: it works unchanged under
eventlet (the socket is green) and does not need pyroute2, which must stay
inside the privsep daemons.
"""

import logging
import socket
import struct
import threading
from collections.abc import Callable

LOG = logging.getLogger(__name__)

RTMGRP_LINK = 0x1
RTM_NEWLINK = 16
RTM_DELLINK = 17
IFLA_IFNAME = 3
_NLMSG_HDR = struct.Struct('=IHHII')
_IFINFOMSG = struct.Struct('=BxHiII')
_RTATTR = struct.Struct('=HH')

ADDED = 'added'
REMOVED = 'removed'

LinkCallback = Callable[[str, str], None]


def _align(length: int) -> int:
    return (length + 3) & ~3


def parse_link_events(data: bytes) -> list[tuple[str, str]]:
    """``[(ADDED|REMOVED, ifname), ...]`` from one netlink datagram.

    RTM_NEWLINK also announces attribute changes (up/down, master); callers
    treat ADDED as "exists now", which is idempotent for them.
    """
    events = []
    offset = 0
    while offset + _NLMSG_HDR.size <= len(data):
        length, msg_type, _flags, _seq, _pid = _NLMSG_HDR.unpack_from(data, offset)
        if length < _NLMSG_HDR.size or offset + length > len(data):
            break
        if msg_type in (RTM_NEWLINK, RTM_DELLINK):
            name = None
            attr = offset + _NLMSG_HDR.size + _IFINFOMSG.size
            end = offset + length
            while attr + _RTATTR.size <= end:
                attr_len, attr_type = _RTATTR.unpack_from(data, attr)
                if attr_len < _RTATTR.size:
                    break
                if attr_type == IFLA_IFNAME:
                    raw = data[attr + _RTATTR.size:attr + attr_len]
                    name = raw.split(b'\0', 1)[0].decode(errors='replace')
                    break
                attr += _align(attr_len)
            if name:
                events.append((ADDED if msg_type == RTM_NEWLINK else REMOVED, name))
        offset += _align(length)
    return events


class LinkMonitor:
    """Calls ``callback(kind, ifname)`` for link events in the root namespace.

    :param name_filter: only names for which it returns True are reported.
    """

    def __init__(self, callback: LinkCallback,
                 name_filter: Callable[[str], bool] = lambda name: True) -> None:
        self._callback = callback
        self._filter = name_filter
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW,
                                   socket.NETLINK_ROUTE)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self._sock.bind((0, RTMGRP_LINK))
        self._sock.settimeout(0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='link-monitor',
                                        daemon=True)
        self.overflows = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except socket.timeout:
                continue
            except OSError as exc:
                if self._stop.is_set():
                    return
                # ENOBUFS: events were lost; report it so the owner resyncs.
                self.overflows += 1
                LOG.warning('netlink link monitor lost events: %s', exc)
                self._safe_call('overflow', '')
                continue
            for kind, name in parse_link_events(data):
                if self._filter(name):
                    self._safe_call(kind, name)

    def _safe_call(self, kind: str, name: str) -> None:
        try:
            self._callback(kind, name)
        except Exception:
            LOG.exception('link event callback failed for %s %s', kind, name)
