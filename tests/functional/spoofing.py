"""ARP and MAC spoofing attempts between fake VMs, for agent-level tests.

An attacker VM sends hand-made frames (:mod:`tests.functional.frames`) and
an observer VM captures what reaches it. Every attempt is followed by a
frame the attacker may always send (an ARP request for its own address),
so "dropped" is proven by the marker arriving without the forged frame,
never by waiting for nothing.
"""

from __future__ import annotations

from tests.functional import frames
from tests.functional import vm as fake_vm

BROADCAST = 'ff:ff:ff:ff:ff:ff'
ZERO_MAC = '00:00:00:00:00:00'


class Spoofer:
    """``attacker`` (with ``attacker_ip``) trying to fool ``observer``."""

    def __init__(self, attacker: fake_vm.FakeVM, attacker_ip: str,
                 observer: fake_vm.FakeVM, observer_ip: str) -> None:
        self.attacker, self.attacker_ip = attacker, attacker_ip
        self.observer, self.observer_ip = observer, observer_ip
        self.sender = frames.PacketSocket(attacker.name, 'eth0')
        self.capture = frames.PacketSocket(observer.name, 'eth0', capture=True)

    def close(self) -> None:
        self.sender.close()
        self.capture.close()

    def arrives(self, frame: bytes, mark: bytes) -> bool:
        """Whether ``frame`` (carrying ``mark``) reached the observer."""
        self.capture.drain()
        marker = frames.token()
        self.sender.send(frame, self.own_arp(marker))
        return bool(frames.carrying(self.capture.receive_until(marker), mark))

    def own_arp(self, mark: bytes) -> bytes:
        """An ARP request for the observer from the attacker's own MAC and IP."""
        mac = self.attacker.mac
        return frames.arp_frame(mac, BROADCAST, frames.ARP_REQUEST, mac, self.attacker_ip,
                                ZERO_MAC, self.observer_ip, mark)

    def arp_claiming(self, address: str) -> tuple[bytes, bytes]:
        """A gratuitous ARP reply saying ``address`` is at the attacker's MAC."""
        mark = frames.token()
        mac = self.attacker.mac
        return frames.arp_frame(mac, self.observer.mac, frames.ARP_REPLY, mac, address,
                                mac, address, mark), mark

    def from_forged_mac(self, forged_mac: str) -> tuple[bytes, bytes]:
        """An otherwise correct ARP request sent from another MAC."""
        mark = frames.token()
        return frames.arp_frame(forged_mac, BROADCAST, frames.ARP_REQUEST, forged_mac,
                                self.attacker_ip, ZERO_MAC, self.observer_ip, mark), mark

    def other_ethertype(self) -> tuple[bytes, bytes]:
        """An LLDP frame: neither IPv4, IPv6 nor ARP."""
        mark = frames.token()
        return frames.ethernet('01:80:c2:00:00:0e', self.attacker.mac, frames.ETH_P_LLDP,
                               bytes(46) + mark), mark

    def neighbour_mac(self, address: str) -> str | None:
        """The MAC the observer's ARP cache holds for ``address``."""
        out = fake_vm.run_in(self.observer.name, 'ip', '-4', 'neigh', 'show', address).stdout
        fields = out.split()
        return fields[fields.index('lladdr') + 1] if 'lladdr' in fields else None
