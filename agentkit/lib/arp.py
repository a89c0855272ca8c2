"""Gratuitous ARP: tell the neighbours at once that an address lives here now.

The unprivileged side of :mod:`agentkit.privileged.arp`. One announcement
can be lost (the upstream switch still learning the port, a busy
neighbour), so like Neutron's ``send_arp_for_ha`` it is repeated: the first
packet goes out before :func:`announce` returns (so a missing device is
reported to the caller), the others are sent by one scheduler thread per
process, whatever the number of addresses (a host bringing up hundreds of
routers must not start a thread per address).
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import logging
import threading
import time

from agentkit.lib import ip_lib
from agentkit.privileged import arp as priv

LOG = logging.getLogger(__name__)


class _Repeater:
    """Sends the repeated announcements at their time, from one thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        # (due, sequence, device, address, namespace, left, interval)
        self._heap: list[tuple[float, int, str, str, str, int, float]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, device: str, address: str, namespace: str, left: int,
                 interval: float) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + interval, next(self._seq),
                                        device, address, namespace, left, interval))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name='garp',
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(wait)
                _, _, device, address, namespace, left, interval = heapq.heappop(self._heap)
            try:
                priv.send_gratuitous_arp(device, address, namespace)
            except Exception as exc:  # the address or namespace went meanwhile
                LOG.debug('Gratuitous ARP for %s on %s not sent: %s', address, device, exc)
                continue
            if left > 1:
                self.schedule(device, address, namespace, left - 1, interval)


_repeater = _Repeater()


def announce(device: str, address: str, namespace: str, count: int = 3,
             interval: float = 1.0) -> None:
    """Send ``count`` gratuitous ARPs for IPv4 ``address`` on ``device``, ``interval`` apart.

    Does nothing for ``count`` < 1 or an IPv6 address (IPv6 neighbours are
    told by the kernel's unsolicited neighbour advertisements).

    :raises OSError, ValueError, NetworkNamespaceNotFound: the first one
        could not be sent (e.g. the device does not hold the address).
    """
    if count < 1 or ipaddress.ip_address(address).version != 4:
        return
    device = ip_lib.validate_device_name(device)
    valid_namespace = ip_lib.validate_namespace(namespace)
    if valid_namespace is None:
        raise ValueError('gratuitous ARPs are sent from a namespace only')
    priv.send_gratuitous_arp(device, address, valid_namespace)
    if count > 1:
        _repeater.schedule(device, address, valid_namespace, count - 1, interval)
