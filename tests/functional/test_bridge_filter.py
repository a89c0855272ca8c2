"""ARP/MAC anti-spoofing with real frames: a Linux bridge, three fake VMs, nftables.

Three namespaces ("VMs") hang off one Linux bridge in the root namespace by
veths whose host ends are named like Nova's taps, as with linuxbridge's
``brq`` or a hybrid plug's ``qbr``. VM2 is the attacker and VM3 the
observer: hand-made frames (see :mod:`tests.functional.frames`) are sent
from VM2's ``eth0`` and captured on VM3's. Each kind of forged frame is
first shown to arrive without the guard, so a filter that silently matched
nothing would fail the test.

Each test owns a uniquely named nftables table (``agentkit-t<hex>``), its
bridge and namespaces, all removed by cleanups, so tests run in parallel.
"""

from __future__ import annotations

import random
import re
import shutil
import struct
import subprocess
import uuid
from unittest import mock

import fixtures

from agentkit.lib import bridge_filter
from agentkit.lib import ip_lib
from agentkit.privileged import nftables as priv_nft
from agentkit.privileged import tool_exec
from tests.functional import base
from tests.functional import frames
from tests.functional import vm as fake_vm

BROADCAST = 'ff:ff:ff:ff:ff:ff'


def without_counters(listing: str | None) -> str:
    """``nft list`` output minus the counters' values, which traffic changes."""
    assert listing is not None, 'the table does not exist'
    return re.sub(r'counter packets \d+ bytes \d+', 'counter', listing)


def random_mac() -> str:
    return 'fa:16:3e:%02x:%02x:%02x' % tuple(random.randint(0, 255) for _ in range(3))


class Guest(fake_vm.FakeVM):
    """A fake VM with an IPv4 address and a socket to send hand-made frames."""

    def __init__(self, name: str, port_id: str, mac: str, ip: str) -> None:
        super().__init__(name, port_id, mac)
        self.ip = ip
        self.set_ip(ip + '/24')
        self.sender = frames.PacketSocket(name, 'eth0')

    def neighbour_mac(self, ip: str) -> str | None:
        for entry in ip_lib.IPDevice('eth0', self.name).neigh.list(4):
            if entry['ip'] == ip and entry['state'] not in ('failed', 'incomplete'):
                return entry['mac']
        return None


class BridgeAntiSpoofTest(base.FunctionalTestCase):

    def setUp(self) -> None:
        super().setUp()
        if shutil.which(priv_nft.NFT_BINARY, path=tool_exec.SEARCH_PATH) is None:
            self.skipTest('nft is not installed (Debian package nftables, see bindep.txt)')
        self.prefix = self.short_name('aks')[:9]
        self.bridge = self.prefix + 'br'
        bridge = ip_lib.IPWrapper().add_bridge(self.bridge)
        self.addCleanup(bridge.delete)
        bridge.disable_ipv6()
        bridge.link.set_up()
        # 100.64.0.0/10 (shared address space): clear of the other tests' ranges.
        self.subnet = '100.%d.%d' % (random.randint(64, 127), random.randint(0, 255))
        self.vm1 = self._guest(1)
        self.vm2 = self._guest(2)
        self.vm3 = self._guest(3)
        self.observer = frames.PacketSocket(self.vm3.name, 'eth0', capture=True)
        self.addCleanup(self.observer.close)
        self.guards = bridge_filter.BridgeAntiSpoof('agentkit-t' + uuid.uuid4().hex[:12])
        self.addCleanup(self.guards.remove_all)

    def _guest(self, host: int) -> Guest:
        name = self.prefix + 'v%d' % host
        port_id = str(uuid.uuid4())
        # Cleanup first: a half-built guest (namespace, veth) goes too.
        self.addCleanup(fake_vm.destroy_guest, name, 'tap' + port_id[:11])
        vm = Guest(name, port_id, random_mac(), '%s.%d' % (self.subnet, host))
        self.addCleanup(vm.sender.close)
        ip_lib.IPDevice(vm.tap).link.set_master(self.bridge)
        return vm

    def guard(self, vm: Guest, pairs: list[dict[str, str]] | None = None) -> None:
        """The port's MAC with its IP; each pair's IP with its MAC or the port's."""
        self.guards.update_port(bridge_filter.PortGuard(vm.tap, ((vm.mac, (vm.ip,)),) + tuple(
            (pair.get('mac_address') or vm.mac, (pair['ip_address'],)) for pair in pairs or ())))

    def guard_all(self) -> None:
        with self.guards.defer_apply():
            for vm in (self.vm1, self.vm2, self.vm3):
                self.guard(vm)

    # -- frames --------------------------------------------------------------
    def ipv4_frame(self, src: str, mark: bytes, src_ip: str | None = None) -> bytes:
        """An IPv4 packet towards VM3 (the observer's socket sees it before
        its IP stack drops the unknown protocol)."""
        return frames.ethernet(self.vm3.mac, src, frames.ETH_P_IP,
                               frames.ipv4(src_ip or self.vm2.ip, self.vm3.ip, mark))

    def marker(self, sender: Guest) -> tuple[bytes, bytes]:
        """A frame ``sender`` may always send, to end a capture."""
        mark = frames.token()
        return mark, self.ipv4_frame(sender.mac, mark, sender.ip)

    def arrived(self, sender: Guest, *frames_to_send: bytes) -> list[bytes]:
        """Send ``frames_to_send`` then a marker from ``sender``; the frames
        VM3 received up to the marker."""
        self.observer.drain()
        mark, marker = self.marker(sender)
        sender.sender.send(*frames_to_send, marker)
        return self.observer.receive_until(mark)

    def assert_passes(self, sender: Guest, frame: bytes, mark: bytes) -> None:
        self.assertEqual(16, len(mark), 'arguments swapped?')
        self.assertEqual(1, len(frames.carrying(self.arrived(sender, frame), mark)),
                         'frame %s did not reach the observer' % mark.hex())

    def assert_dropped(self, sender: Guest, frame: bytes, mark: bytes) -> None:
        self.assertEqual(16, len(mark), 'arguments swapped?')
        self.assertEqual([], frames.carrying(self.arrived(sender, frame), mark),
                         'frame %s was not dropped' % mark.hex())

    def fdb_macs(self) -> str:
        return subprocess.run(['bridge', 'fdb', 'show', 'br', self.bridge],
                              capture_output=True, text=True, check=True).stdout

    # -- tests -----------------------------------------------------------------
    def test_arp_claiming_another_vms_ip_is_dropped(self) -> None:
        vm1, vm2, vm3 = self.vm1, self.vm2, self.vm3
        self.assertTrue(fake_vm.ping(vm3.name, vm1.ip, count=1))
        self.assertEqual(vm1.mac, vm3.neighbour_mac(vm1.ip))

        def forged() -> tuple[bytes, bytes]:
            # Gratuitous ARP reply (sender = target): Linux lets it override
            # a fresh neighbour entry at once.
            mark = frames.token()
            return frames.arp_frame(vm2.mac, vm3.mac, frames.ARP_REPLY,
                                    vm2.mac, vm1.ip, vm2.mac, vm1.ip, mark), mark

        def other_forgeries() -> list[tuple[bytes, bytes]]:
            result = []
            # VM1's IP with VM1's MAC as ARP sender (from VM2's own source MAC).
            mark = frames.token()
            result.append((frames.arp_frame(vm2.mac, vm3.mac, frames.ARP_REPLY, vm1.mac,
                                            vm1.ip, vm3.mac, vm3.ip, mark), mark))
            # Not Ethernet/IPv4 ARP (plen 16), though the bytes where an IPv4
            # ARP has its sender MAC and IP are VM2's own: dropped, not misread.
            mark = frames.token()
            odd = bytearray(frames.arp(frames.ARP_REQUEST, vm2.mac, vm2.ip,
                                       '00:00:00:00:00:00', vm3.ip))
            odd[2:6] = struct.pack('!HBB', frames.ETH_P_IPV6, 6, 16)
            result.append((frames.ethernet(BROADCAST, vm2.mac, frames.ETH_P_ARP,
                                           bytes(odd) + bytes(24) + mark), mark))
            # An RFC 5227 probe (sender IP 0.0.0.0) with a foreign sender MAC.
            mark = frames.token()
            result.append((frames.arp_frame(vm2.mac, BROADCAST, frames.ARP_REQUEST,
                                            random_mac(), '0.0.0.0', '00:00:00:00:00:00',
                                            vm2.ip, mark), mark))
            return result

        # Without the guard the poisoning works: the test can fail.
        self.assert_passes(vm2, *forged())
        base.wait_until(lambda: vm3.neighbour_mac(vm1.ip) == vm2.mac, 5,
                        "VM3's ARP cache poisoned by VM2")
        for frame, mark in other_forgeries():
            self.assert_passes(vm2, frame, mark)
        # Repair VM3's cache, then guard every VM.
        ip_lib.IPDevice('eth0', vm3.name).neigh.delete(vm1.ip)
        self.assertTrue(fake_vm.ping(vm3.name, vm1.ip, count=1))
        self.assertEqual(vm1.mac, vm3.neighbour_mac(vm1.ip))
        self.guard_all()

        self.assert_dropped(vm2, *forged())
        # VM2's ARP about its own IP still passes: VM3 learns it...
        mark = frames.token()
        self.assert_passes(vm2, frames.arp_frame(
            vm2.mac, BROADCAST, frames.ARP_REQUEST, vm2.mac, vm2.ip,
            '00:00:00:00:00:00', vm3.ip, mark), mark)
        base.wait_until(lambda: vm3.neighbour_mac(vm2.ip) == vm2.mac, 5,
                        "VM3 learning VM2's own address")
        # ...and, after that, still maps VM1's IP to VM1.
        self.assertEqual(vm1.mac, vm3.neighbour_mac(vm1.ip))
        for frame, mark in other_forgeries():
            self.assert_dropped(vm2, frame, mark)
        # A probe with its own MAC passes.
        mark = frames.token()
        self.assert_passes(vm2, frames.arp_frame(
            vm2.mac, BROADCAST, frames.ARP_REQUEST, vm2.mac, '0.0.0.0',
            '00:00:00:00:00:00', vm2.ip, mark), mark)

    def test_forged_source_mac_is_dropped_and_not_learnt(self) -> None:
        vm2 = self.vm2
        before = random_mac()
        mark = frames.token()
        self.assert_passes(vm2, self.ipv4_frame(before, mark), mark)
        self.assertIn(before, self.fdb_macs())  # the bridge learnt it

        self.guard_all()
        forged = random_mac()
        mark = frames.token()
        self.assert_dropped(vm2, self.ipv4_frame(forged, mark), mark)
        # Dropped before the bridge's learning: no FDB entry for it.
        self.assertNotIn(forged, self.fdb_macs())
        mark = frames.token()
        self.assert_passes(vm2, self.ipv4_frame(vm2.mac, mark), mark)
        # Frames towards the VM are not filtered (nor are ports without guard).
        mark = frames.token()
        self.assert_passes(self.vm1, self.ipv4_frame(self.vm1.mac, mark, self.vm1.ip), mark)

    def test_allowed_address_pairs(self) -> None:
        vm2 = self.vm2
        vip, vip_mac = '%s.200' % self.subnet, random_mac()
        vip2 = '%s.201' % self.subnet

        def garp(eth_src: str, sender_mac: str, ip: str) -> tuple[bytes, bytes]:
            mark = frames.token()
            return frames.arp_frame(eth_src, BROADCAST, frames.ARP_REQUEST,
                                    sender_mac, ip, '00:00:00:00:00:00', ip, mark), mark

        def crossings() -> list[tuple[bytes, bytes]]:
            return [
                # IPs are tied to their MAC: no crossing over...
                garp(vm2.mac, vm2.mac, vip),
                garp(vip_mac, vip_mac, vm2.ip),
                garp(vip_mac, vip_mac, vip2),
                # ...and an allowed Ethernet source allows no other ARP sender.
                garp(vm2.mac, random_mac(), vm2.ip),
            ]

        for frame, mark in crossings():
            self.assert_passes(vm2, frame, mark)
        with self.guards.defer_apply():
            self.guard(self.vm1)
            self.guard(vm2, [{'ip_address': vip, 'mac_address': vip_mac},
                             {'ip_address': vip2}])
        # The pair's IP with the pair's MAC; the MAC-less pair with the port MAC.
        self.assert_passes(vm2, *garp(vip_mac, vip_mac, vip))
        self.assert_passes(vm2, *garp(vm2.mac, vm2.mac, vip2))
        mark = frames.token()
        self.assert_passes(vm2, self.ipv4_frame(vip_mac, mark), mark)
        for frame, mark in crossings():
            self.assert_dropped(vm2, frame, mark)

    def test_only_ipv4_ipv6_and_arp_pass(self) -> None:
        vm2, vm3 = self.vm2, self.vm3

        def others() -> list[tuple[bytes, bytes]]:
            result = []
            mark = frames.token()  # LLDP, unicast so the bridge would forward it
            result.append((mark, frames.ethernet(vm3.mac, vm2.mac, frames.ETH_P_LLDP, mark)))
            mark = frames.token()  # IPv4 in a VLAN tag (VID 42)
            result.append((mark, frames.ethernet(
                vm3.mac, vm2.mac, frames.ETH_P_8021Q,
                struct.pack('!HH', 42, frames.ETH_P_IP) + frames.ipv4(vm2.ip, vm3.ip, mark))))
            mark = frames.token()  # ARP in a VLAN tag, an otherwise valid one
            result.append((mark, frames.ethernet(
                vm3.mac, vm2.mac, frames.ETH_P_8021Q,
                struct.pack('!HH', 42, frames.ETH_P_ARP) + frames.arp(
                    frames.ARP_REQUEST, vm2.mac, vm2.ip, '00:00:00:00:00:00', vm3.ip) + mark)))
            mark = frames.token()  # raw 802.3: a length instead of a type, LLC
            result.append((mark, frames.ethernet(vm3.mac, vm2.mac, 3 + len(mark),
                                                 b'\x42\x42\x03' + mark)))
            return result

        for mark, frame in others():
            self.assert_passes(vm2, frame, mark)
        self.guard_all()
        for mark, frame in others():
            self.assert_dropped(vm2, frame, mark)
        mark = frames.token()
        self.assert_passes(vm2, frames.ethernet(
            vm3.mac, vm2.mac, frames.ETH_P_IPV6, frames.ipv6('fe80::1', 'ff02::1', mark)), mark)
        # Real traffic between guarded VMs is unaffected (ARP + IPv4 both ways).
        self.assertTrue(fake_vm.ping(vm2.name, vm3.ip, count=1))
        self.assertTrue(fake_vm.ping(self.vm1.name, vm2.ip, count=1))

    def test_remove_port_and_unchanged_apply(self) -> None:
        vm1, vm2 = self.vm1, self.vm2
        replace = mock.Mock(wraps=priv_nft.replace_bridge_table)
        self.useFixture(fixtures.MockPatchObject(priv_nft, 'replace_bridge_table', replace))
        self.guard(vm1)
        self.guard(vm2)
        self.assertTrue(self.guards.apply())
        live = self.guards.get_live_table(handles=True)
        self.assertIn('"%s" . %s . %s' % (vm2.tap, vm2.mac, vm2.ip), live)

        def spoofs(vm: Guest) -> tuple[bytes, bytes]:
            mark = frames.token()
            return self.ipv4_frame(random_mac(), mark, vm.ip), mark

        self.assert_dropped(vm2, *spoofs(vm2))
        # An unchanged apply does not run nft: same table, same handles.
        self.guard(vm2)
        self.assertFalse(self.guards.apply())
        self.assertEqual(1, replace.call_count)
        self.assertEqual(without_counters(live),
                         without_counters(self.guards.get_live_table(handles=True)))

        # Unguarding VM2 restores its forwarding; VM1 stays guarded across
        # the replace of the whole table.
        self.assertTrue(self.guards.remove_port(vm2.tap))
        self.assertTrue(self.guards.apply())
        self.assertEqual(2, replace.call_count)
        self.assertNotIn(vm2.tap, self.guards.get_live_table())
        self.assert_passes(vm2, *spoofs(vm2))
        self.assert_dropped(vm1, *spoofs(vm1))

        # remove_all takes the table away; VM1 is free again.
        self.assertTrue(self.guards.remove_all())
        self.assertIsNone(self.guards.get_live_table())
        self.assertFalse(self.guards.remove_all())
        self.assert_passes(vm1, *spoofs(vm1))

    def test_failed_transaction_keeps_the_previous_table(self) -> None:
        vm2 = self.vm2
        self.guard(vm2)
        self.guards.apply()
        before = self.guards.get_live_table(handles=True)
        # What the daemon would send for one more port, plus an element the
        # renderer never produces (it collapses overlaps): a prefix listed
        # before an address inside it, which the kernel refuses (EEXIST).
        # The whole transaction, the delete included, must roll back.
        self.guard(self.vm1)
        element = '"%s" . %s . %s,' % (vm2.tap, vm2.mac, vm2.ip)
        text = self.guards.render()
        self.assertIn(element, text)
        text = text.replace(element, '"%s" . %s . %s.0/24, %s' % (
            vm2.tap, vm2.mac, self.subnet, element))
        result = subprocess.run([shutil.which('nft', path=tool_exec.SEARCH_PATH), '-f', '-'],
                                input=text, capture_output=True, text=True)
        self.assertNotEqual(0, result.returncode)
        self.assertIn('File exists', result.stderr)
        self.assertEqual(without_counters(before),
                         without_counters(self.guards.get_live_table(handles=True)))
        mark = frames.token()
        self.assert_dropped(vm2, self.ipv4_frame(random_mac(), mark), mark)
