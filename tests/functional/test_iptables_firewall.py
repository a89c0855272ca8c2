"""The iptables_hybrid firewall filters real bridged traffic.

Topology (names ``akf`` + random hex; taps ``tap<port[:11]>`` as the driver
expects)::

    [vm1 ns] eth0 --veth-- tap1 --+
    [vm2 ns] eth0 --veth-- tap2 --+-- akf...br (Linux bridge, root namespace)
    [vm3 ns] eth0 --veth-- tap3 --+

br_netfilter hands the bridged frames to the root namespace's FORWARD
chain, where the driver's physdev rules pick them up, as with a
linuxbridge ``brq`` or the OVS hybrid ``qbr``. vm1 and vm2 are filtered
ports; vm3 stands for an unfiltered peer (a router or a host outside the
cloud) so one side of each check is known to be open. Each test uses its
own chain prefix, bridge and random subnet (conntrack is shared by the
whole host), and only matches its own taps, so tests may run in parallel
with anything else on the host; cleanups remove every chain and jump.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
import uuid
from unittest import mock

from agentkit.lib import ip_lib
from agentkit.lib import iptables_manager
from drivers.firewall import iptables_hybrid
from tests.functional import base
from tests.functional import vm as fake_vm

BRIDGE_NF = '/proc/sys/net/bridge/bridge-nf-call-iptables'

_TCP_SERVER = '''
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"hello")
    c.close()
'''

_TCP_CLIENT = '''
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    sys.exit(0 if c.recv(5) == b"hello" else 1)
except OSError:
    sys.exit(1)
'''

# Exit 0 once one datagram arrived on the port, 1 after the timeout.
_UDP_RECEIVER = '''
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(float(sys.argv[2]))
print("ready", flush=True)
try:
    s.recvfrom(64)
except socket.timeout:
    sys.exit(1)
'''

_UDP_SENDER = '''
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[3])))
for _ in range(5):
    s.sendto(b"x", (sys.argv[1], int(sys.argv[2])))
    time.sleep(0.1)
'''


def default_group_rules(sg_id: str) -> list[dict[str, object]]:
    """Neutron's default group: in from the group's members, out to anywhere."""
    return [{'direction': direction, 'ethertype': ethertype, 'security_group_id': sg_id,
             'remote_group_id': sg_id if direction == 'ingress' else None,
             'protocol': None, 'port_range_min': None, 'port_range_max': None,
             'remote_ip_prefix': None}
            for direction in ('ingress', 'egress') for ethertype in ('IPv4', 'IPv6')]


def rule(sg_id: str, protocol: str, port: int | None = None) -> dict[str, object]:
    return {'direction': 'ingress', 'ethertype': 'IPv4', 'security_group_id': sg_id,
            'protocol': protocol, 'port_range_min': port, 'port_range_max': port,
            'remote_ip_prefix': '0.0.0.0/0', 'remote_group_id': None}


def iptables_save(ip_version: int = 4) -> str:
    binary = 'iptables-save' if ip_version == 4 else 'ip6tables-save'
    return subprocess.run([binary, '-t', 'filter'], capture_output=True, text=True,
                          check=True).stdout


def purge_chains(prefix: str) -> None:
    """Last-resort cleanup of everything named ``prefix-*``, if the driver failed to."""
    for version, cmd in ((4, 'iptables'), (6, 'ip6tables')):
        text = iptables_save(version)
        for line in text.splitlines():
            match = re.match(r'-A (INPUT|FORWARD|OUTPUT) (.*-j %s-\S+)$' % re.escape(prefix),
                             line)
            if match:
                subprocess.run([cmd, '-D', match.group(1), *match.group(2).split()],
                               capture_output=True)
        chains = re.findall(r'^:(%s-\S+)' % re.escape(prefix), text, re.M)
        for chain in chains:
            subprocess.run([cmd, '-F', chain], capture_output=True)
        for chain in chains:
            subprocess.run([cmd, '-X', chain], capture_output=True)


def _destroy_guest(namespace: str, tap: str) -> None:
    if ip_lib.device_exists(tap):
        ip_lib.IPDevice(tap).delete()
    if ip_lib.namespace_exists(namespace):
        ip_lib.delete_namespace(namespace)


class Guest(fake_vm.FakeVM):
    """A fake VM that knows its addresses."""

    def __init__(self, name: str, port_id: str, mac: str, ip: str) -> None:
        super().__init__(name, port_id, mac)
        self.ip = ip
        self.ip6 = ''
        self.set_ip(ip + '/24')


class IptablesHybridFirewallTest(base.FunctionalTestCase):

    def setUp(self) -> None:
        super().setUp()
        if not os.path.exists(BRIDGE_NF):
            self.skipTest('br_netfilter is not available: bridged traffic bypasses iptables')
        self.prefix = 'akf' + uuid.uuid4().hex[:8]
        self.bridge = self.prefix + 'br'
        bridge = ip_lib.IPWrapper().add_bridge(self.bridge)
        self.addCleanup(bridge.delete)
        bridge.link.set_up()
        # 100.64.0.0/10 (shared address space): clear of the other tests' ranges.
        self.subnet = '100.%d.%d' % (random.randint(64, 127), random.randint(0, 255))
        self.sg_a = self.unique_id()
        self.sg_b = self.unique_id()
        self.subnet_id = self.unique_id()
        self.firewall = iptables_hybrid.IptablesHybridFirewallDriver(
            self.conf, 'akf-host', binary_name=self.prefix)
        self.addCleanup(purge_chains, self.prefix)
        self.addCleanup(self.firewall.remove_all)
        self.firewall.initialize()
        self.firewall.update_security_group_rules(self.sg_a, default_group_rules(self.sg_a))
        self.firewall.update_security_group_rules(self.sg_b, default_group_rules(self.sg_b))
        self.vm1 = self._vm(11)
        self.vm2 = self._vm(12)
        self.vm3 = self._vm(13)

    # -- fixtures -----------------------------------------------------------
    def _vm(self, host: int) -> Guest:
        mac = 'fa:16:3e:%02x:%02x:%02x' % tuple(random.randint(0, 255) for _ in range(3))
        # Cleanup first: a half-built guest (namespace, veth) goes too.
        name = self.prefix + 'v%d' % host
        port_id = self.unique_id()
        self.addCleanup(_destroy_guest, name, 'tap' + port_id[:11])
        vm = Guest(name, port_id, mac, '%s.%d' % (self.subnet, host))
        ip_lib.IPDevice(vm.tap).link.set_master(self.bridge)
        return vm

    def port(self, vm: Guest, groups: list[str], **extra: object) -> dict[str, object]:
        """The details dict the L2 agent hands the driver."""
        port: dict[str, object] = {
            'id': vm.port_id, 'device': vm.tap, 'mac_address': vm.mac,
            'fixed_ips': [{'ip_address': vm.ip, 'subnet_id': self.subnet_id}],
            'security_groups': groups, 'port_security_enabled': True,
            'allowed_address_pairs': []}
        port.update(extra)
        return port

    def members(self, sg_id: str, *vms: Guest) -> None:
        self.firewall.update_security_group_members(
            sg_id, {'IPv4': [[v.ip, v.mac] for v in vms], 'IPv6': []})

    def tcp_server(self, vm: Guest, port: int) -> None:
        proc = subprocess.Popen(['ip', 'netns', 'exec', vm.name, sys.executable,
                                 '-c', _TCP_SERVER, str(port)],
                                stdout=subprocess.PIPE, text=True)
        self.addCleanup(proc.wait, 5)
        self.addCleanup(proc.kill)
        self.assertEqual('ready', proc.stdout.readline().strip())  # type: ignore[union-attr]

    @staticmethod
    def tcp_connects(src: Guest, dst: Guest, port: int, timeout: float = 1.5) -> bool:
        return fake_vm.run_in(src.name, sys.executable, '-c', _TCP_CLIENT,
                              dst.ip, str(port), str(timeout)).returncode == 0

    @staticmethod
    def pings(src: Guest, address: str, source: str | None = None,
              expect: bool = True) -> bool:
        """One ping that should pass (3 tries) or that should not (1 try, 1 s)."""
        argv = ['ping', '-n', '-c', '3' if expect else '1', '-W', '1', '-i', '0.2']
        if source:
            argv += ['-I', source]
        return fake_vm.run_in(src.name, *argv, address).returncode == 0

    @staticmethod
    def udp_reaches(src: Guest, dst: Guest, sport: int, dport: int,
                    timeout: float = 1.5) -> bool:
        receiver = subprocess.Popen(['ip', 'netns', 'exec', dst.name, sys.executable,
                                     '-c', _UDP_RECEIVER, str(dport), str(timeout)],
                                    stdout=subprocess.PIPE, text=True)
        try:
            assert receiver.stdout is not None
            assert receiver.stdout.readline().strip() == 'ready'
            fake_vm.run_in(src.name, sys.executable, '-c', _UDP_SENDER, dst.ip,
                           str(dport), str(sport))
            return receiver.wait(timeout + 5) == 0
        finally:
            receiver.kill()
            receiver.wait(5)

    def chains(self, ip_version: int = 4) -> list[str]:
        return re.findall(r'^:(%s-\S+)' % re.escape(self.prefix),
                          iptables_save(ip_version), re.M)

    def our_rules(self, ip_version: int = 4) -> list[str]:
        return [line for line in iptables_save(ip_version).splitlines()
                if self.prefix in line and line.startswith('-A ')]

    # -- tests ----------------------------------------------------------------
    def test_default_group_blocks_until_a_rule_allows_icmp_then_tcp_22(self) -> None:
        self.firewall.prepare_port_filter(self.port(self.vm1, [self.sg_a]))
        self.firewall.prepare_port_filter(self.port(self.vm2, [self.sg_b]))
        self.members(self.sg_a, self.vm1)
        self.members(self.sg_b, self.vm2)
        self.tcp_server(self.vm1, 22)
        self.tcp_server(self.vm1, 23)

        self.assertFalse(self.pings(self.vm2, self.vm1.ip, expect=False))
        self.assertFalse(self.tcp_connects(self.vm2, self.vm1, 22))

        self.firewall.update_security_group_rules(
            self.sg_a, default_group_rules(self.sg_a) + [rule(self.sg_a, 'icmp')])
        self.assertTrue(self.pings(self.vm2, self.vm1.ip))
        self.assertFalse(self.tcp_connects(self.vm2, self.vm1, 22))

        self.firewall.update_security_group_rules(
            self.sg_a, default_group_rules(self.sg_a) + [rule(self.sg_a, 'icmp'),
                                                         rule(self.sg_a, 'tcp', 22)])
        self.assertTrue(self.tcp_connects(self.vm2, self.vm1, 22))
        self.assertFalse(self.tcp_connects(self.vm2, self.vm1, 23))

        # Taking the rules back closes the port again for new connections.
        self.firewall.update_security_group_rules(self.sg_a, default_group_rules(self.sg_a))
        self.assertFalse(self.tcp_connects(self.vm2, self.vm1, 22))

    def test_egress_is_open_and_replies_come_back_while_ingress_is_closed(self) -> None:
        self.firewall.prepare_port_filter(self.port(self.vm1, [self.sg_a]))
        self.members(self.sg_a, self.vm1)
        self.tcp_server(self.vm3, 8080)
        self.tcp_server(self.vm1, 8080)

        self.assertTrue(self.pings(self.vm1, self.vm3.ip))
        self.assertTrue(self.tcp_connects(self.vm1, self.vm3, 8080))
        self.assertFalse(self.pings(self.vm3, self.vm1.ip, expect=False))
        self.assertFalse(self.tcp_connects(self.vm3, self.vm1, 8080))

    def test_dhcp_client_traffic_passes_and_a_vm_cannot_answer_dhcp(self) -> None:
        self.firewall.prepare_port_filter(self.port(self.vm1, [self.sg_a]))
        # vm3 plays the DHCP port: trusted, so only vm1's rules decide.
        self.firewall.prepare_port_filter(self.port(self.vm3, [], device_owner='network:dhcp'))
        self.members(self.sg_a, self.vm1)
        # A "server reply" (67 -> 68) reaches vm1 although its ingress is closed ...
        self.assertTrue(self.udp_reaches(self.vm3, self.vm1, 67, 68))
        self.assertFalse(self.udp_reaches(self.vm3, self.vm1, 5067, 68))
        # ... vm1 may act as a DHCP client, not as a DHCP server.
        self.assertTrue(self.udp_reaches(self.vm1, self.vm3, 68, 67))
        self.assertTrue(self.udp_reaches(self.vm1, self.vm3, 5067, 68))
        self.assertFalse(self.udp_reaches(self.vm1, self.vm3, 67, 68))

    def test_spoofed_source_ip_and_mac_are_dropped(self) -> None:
        self.firewall.update_security_group_rules(
            self.sg_a, default_group_rules(self.sg_a) + [rule(self.sg_a, 'icmp')])
        self.firewall.prepare_port_filter(self.port(self.vm1, [self.sg_a]))
        self.firewall.prepare_port_filter(self.port(self.vm2, [self.sg_b]))
        # A router port: trusted, yet what vm2 sends to it is checked too.
        self.firewall.prepare_port_filter(self.port(
            self.vm3, [], device_owner='network:router_interface'))
        spoofed = '%s.77' % self.subnet
        self.vm2.set_ip(spoofed + '/24')

        self.assertTrue(self.pings(self.vm2, self.vm1.ip, source=self.vm2.ip))
        self.assertTrue(self.pings(self.vm2, self.vm3.ip, source=self.vm2.ip))
        self.assertFalse(self.pings(self.vm2, self.vm1.ip, source=spoofed, expect=False))
        self.assertFalse(self.pings(self.vm2, self.vm3.ip, source=spoofed, expect=False))
        # The drop was the anti-spoofing rule: allowing the address lets it through.
        self.firewall.update_port_filter(self.port(
            self.vm2, [self.sg_b], allowed_address_pairs=[{'ip_address': spoofed}]))
        self.assertTrue(self.pings(self.vm2, self.vm1.ip, source=spoofed))

        fake_vm.run_in(self.vm2.name, 'ip', 'link', 'set', 'eth0', 'address',
                       'fa:16:3e:00:00:77')
        self.assertFalse(self.pings(self.vm2, self.vm1.ip, source=self.vm2.ip,
                                    expect=False))

    def test_member_of_the_same_group_is_allowed_in(self) -> None:
        self.firewall.prepare_port_filter(self.port(self.vm1, [self.sg_a]))
        self.firewall.prepare_port_filter(self.port(self.vm2, [self.sg_b]))
        self.members(self.sg_a, self.vm1)
        self.members(self.sg_b, self.vm2)
        self.tcp_server(self.vm1, 8080)
        self.assertFalse(self.tcp_connects(self.vm2, self.vm1, 8080))

        # vm2 joins group A; the server's reply to security_group_info_for_devices.
        self.firewall.update_port_filter(self.port(self.vm2, [self.sg_a, self.sg_b]))
        self.firewall.update_security_group_info({
            'security_groups': {self.sg_a: default_group_rules(self.sg_a)},
            'sg_member_ips': {self.sg_a: {'IPv4': [[self.vm1.ip, self.vm1.mac],
                                                   [self.vm2.ip, self.vm2.mac]],
                                          'IPv6': []}},
            'devices': {}})
        self.assertTrue(self.tcp_connects(self.vm2, self.vm1, 8080))
        self.assertTrue(self.pings(self.vm2, self.vm1.ip))
        self.assertFalse(self.tcp_connects(self.vm3, self.vm1, 8080))

        self.members(self.sg_a, self.vm1)
        self.assertFalse(self.tcp_connects(self.vm2, self.vm1, 8080))

    def test_ipv6_members_reach_each_other_and_others_do_not(self) -> None:
        prefix = 'fd%02x:%04x::' % (random.randint(0, 255), random.randint(0, 0xffff))
        for vm, host in ((self.vm1, 11), (self.vm2, 12), (self.vm3, 13)):
            vm.ip6 = '%s%d' % (prefix, host)
            fake_vm.run_in(vm.name, 'ip', '-6', 'addr', 'add', vm.ip6 + '/64',
                           'dev', 'eth0', 'nodad')
        for vm in (self.vm1, self.vm2):
            self.firewall.prepare_port_filter(self.port(vm, [self.sg_a], fixed_ips=[
                {'ip_address': vm.ip6, 'subnet_id': self.subnet_id}]))
        self.firewall.update_security_group_members(
            self.sg_a, {'IPv4': [], 'IPv6': [self.vm1.ip6, self.vm2.ip6]})

        self.assertTrue(self.pings(self.vm2, self.vm1.ip6))
        self.assertFalse(self.pings(self.vm3, self.vm1.ip6, expect=False))
        # Egress to a non-member needs its neighbour advertisements let in.
        self.assertTrue(self.pings(self.vm1, self.vm3.ip6))

    def test_port_security_disabled_means_no_filter(self) -> None:
        self.firewall.prepare_port_filter(self.port(self.vm1, [self.sg_a]))
        self.assertFalse(self.pings(self.vm3, self.vm1.ip, expect=False))
        self.firewall.update_port_filter(self.port(self.vm1, [self.sg_a],
                                                   port_security_enabled=False))
        self.assertEqual([], self.firewall.filtered_ports)
        self.assertNotIn(self.vm1.port_id[:10], '\n'.join(self.chains()))
        self.assertTrue(self.pings(self.vm3, self.vm1.ip))

    def test_remove_port_filter_removes_all_its_chains(self) -> None:
        self.firewall.prepare_port_filter(self.port(self.vm1, [self.sg_a]))
        self.firewall.prepare_port_filter(self.port(self.vm2, [self.sg_a]))
        for version in (4, 6):
            self.assertEqual(
                {'i', 'o', 's'},
                {c[len(self.prefix) + 1] for c in self.chains(version)
                 if c.endswith(self.vm1.port_id[:10])})
        self.assertFalse(self.pings(self.vm3, self.vm1.ip, expect=False))

        self.firewall.remove_port_filter(self.vm1.port_id)
        for version in (4, 6):
            text = '\n'.join(self.our_rules(version) + self.chains(version))
            self.assertNotIn(self.vm1.port_id[:10], text)
            self.assertNotIn(self.vm1.tap, text)
            self.assertIn(self.vm2.port_id[:10], text)
        self.assertTrue(self.pings(self.vm3, self.vm1.ip))
        self.assertFalse(self.pings(self.vm3, self.vm2.ip, expect=False))

        # Gone entirely: no chain of ours and no jump from INPUT/FORWARD/OUTPUT.
        self.firewall.remove_all()
        for version in (4, 6):
            self.assertEqual([], self.chains(version))
            self.assertEqual([], self.our_rules(version))

    def test_reapplying_an_unchanged_port_does_not_touch_the_kernel(self) -> None:
        """The agent re-wires every port on each security-group notification."""
        self.firewall.update_security_group_members(self.sg_a, [self.vm1.ip])
        start = time.monotonic()
        self.firewall.prepare_port_filter(self.port(self.vm1, [self.sg_a]))
        self.assertLess(time.monotonic() - start, 2.0)
        with mock.patch.object(iptables_manager.priv, 'restore',
                               side_effect=AssertionError('iptables-restore ran')):
            self.firewall.update_port_filter(self.port(self.vm1, [self.sg_a]))
            self.firewall.update_security_group_rules(self.sg_b, [])
