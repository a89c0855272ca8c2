"""Gratuitous ARP: tell the neighbours at once that an address lives here now.

The unprivileged side of :mod:`agentkit.privileged.arp`. One announcement
can be lost (the upstream switch still learning the port, a busy
neighbour), so like Neutron's ``send_arp_for_ha`` it is repeated: the first
packet goes out before :func:`announce` returns (so a missing device is
reported to the caller), the others follow from a timer thread and never
block the caller.
"""

from __future__ import annotations

import ipaddress
import logging
import threading

from agentkit.lib import ip_lib
from agentkit.privileged import arp as priv

LOG = logging.getLogger(__name__)


def announce(device: str, address: str, namespace: str | None = None,
             count: int = 3, interval: float = 1.0) -> None:
    """Send ``count`` gratuitous ARPs for IPv4 ``address`` on ``device``.

    Does nothing for ``count`` < 1 or an IPv6 address (IPv6 neighbours are
    told by the kernel's unsolicited neighbour advertisements).

    :raises OSError, NetworkNamespaceNotFound: the first one could not be sent.
    """
    if count < 1 or ipaddress.ip_address(address).version != 4:
        return
    device = ip_lib.validate_device_name(device)
    namespace = ip_lib.validate_namespace(namespace)
    priv.send_gratuitous_arp(device, address, namespace)
    if count > 1:
        _schedule(device, address, namespace, count - 1, interval)


def _schedule(device: str, address: str, namespace: str | None, left: int,
              interval: float) -> None:
    def send() -> None:
        try:
            priv.send_gratuitous_arp(device, address, namespace)
        except Exception as exc:  # the address or namespace went meanwhile
            LOG.debug('Gratuitous ARP for %s on %s not sent: %s', address, device, exc)
            return
        if left > 1:
            _schedule(device, address, namespace, left - 1, interval)

    timer = threading.Timer(interval, send)
    timer.daemon = True
    timer.start()
