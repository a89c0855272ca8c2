"""A canary VM's traffic kept running through a fault: pings and DHCP renewals.

Issue 14's fault cases start a :class:`Canary` before they inject the fault
and stop it after recovery; what it counts (pings lost, renewals that got no
lease or a different address) is what the case reports as lost.
"""

import threading
import time

from tests.functional import traffic
from tests.functional import vm as fake_vm


class Canary:
    """Continuous pings from VMs, and a DHCP renewal every ``renew_every`` s.

    ``pings`` are ``(namespace, address)`` pairs, one ``ping -i 0.2`` each;
    ``dhcp`` is a client whose VM already holds a lease (its address is the
    one every renewal must get back).
    """

    def __init__(self, pings: list[tuple[str, str]],
                 dhcp: fake_vm.DhcpClient | None = None, expected_ip: str | None = None,
                 renew_every: float = 5.0) -> None:
        self._pings = [traffic.ContinuousPing(ns, address) for ns, address in pings]
        self._dhcp, self._expected_ip = dhcp, expected_ip
        self.renewals: list[tuple[float, str | None]] = []  # (monotonic, address got)
        self._stop = threading.Event()
        self._result: dict[str, int] | None = None
        self._thread: threading.Thread | None = None
        if dhcp is not None:
            self._thread = threading.Thread(target=self._renew, args=(renew_every,),
                                            daemon=True)
            self._thread.start()

    def _renew(self, every: float) -> None:
        while not self._stop.wait(every):
            lease = self._dhcp.request(timeout=10) if self._dhcp else None
            self.renewals.append((time.monotonic(),
                                  lease.get('new_ip_address') if lease else None))

    def stop(self) -> dict[str, int]:
        """Stop everything; the counts a fault case reports.

        Idempotent (a test stops it, its cleanup again): later calls return
        the first call's counts.
        """
        if self._result is not None:
            return self._result
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        sent = received = 0
        for ping in self._pings:
            s, r = ping.stop()
            sent, received = sent + s, received + r
        lost = [ip for _, ip in self.renewals if ip != self._expected_ip]
        result = {'pings sent': sent, 'pings lost': sent - received}
        if self._dhcp is not None:
            result.update({'dhcp renewals': len(self.renewals), 'leases lost': len(lost)})
        self._result = result
        return result
