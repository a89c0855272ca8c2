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
own chain prefix, ipset prefix, nftables table, bridge and random subnet,
and only matches its own taps, so tests may run in parallel with anything
else on the host; cleanups remove every chain, set and jump.

Security-group data comes from :class:`tests.functional.fake_neutron.SecurityGroupModel`,
which answers ``security_group_info_for_devices`` the way neutron 29 does
(members are the addresses of a group's ports), and is parsed into
:mod:`agentkit.api.security_group` types exactly as the L2 agent does.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import subprocess
import sys
import time
import uuid
from unittest import mock

from agentkit.api import security_group as sg
from agentkit.lib import bridge_filter
from agentkit.lib import ip_lib
from agentkit.lib import ipset_manager
from agentkit.lib import iptables_manager
from drivers.firewall import iptables_hybrid
from tests.functional import base
from tests.functional import fake_neutron
from tests.functional import traffic
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


def default_group_rules(sg_id: str) -> list[dict[str, object]]:
    """Neutron's default group: in from the group's members, out to anywhere."""
    return [{'direction': direction, 'ethertype': ethertype, 'security_group_id': sg_id,
             'remote_group_id': sg_id if direction == 'ingress' else None,
             'protocol': None, 'port_range_min': None, 'port_range_max': None,
             'remote_ip_prefix': None}
            for direction in ('ingress', 'egress') for ethertype in ('IPv4', 'IPv6')]


def rule(sg_id: str, protocol: str, port: int | None = None,
         direction: str = 'ingress') -> dict[str, object]:
    return {'direction': direction, 'ethertype': 'IPv4', 'security_group_id': sg_id,
            'protocol': protocol, 'port_range_min': port, 'port_range_max': port,
            'remote_ip_prefix': '0.0.0.0/0', 'remote_group_id': None}


def iptables_save(ip_version: int = 4) -> str:
    binary = 'iptables-save' if ip_version == 4 else 'ip6tables-save'
    return subprocess.run([binary, '-t', 'filter'], capture_output=True, text=True,
                          check=True).stdout


def iptables_save_table(table: str, ip_version: int = 4) -> list[str]:
    binary = 'iptables-save' if ip_version == 4 else 'ip6tables-save'
    return subprocess.run([binary, '-t', table], capture_output=True, text=True,
                          check=True).stdout.splitlines()


def purge_chains(prefix: str) -> None:
    """Last-resort cleanup of everything named ``prefix-*``, if the driver failed to."""
    for (version, binary), table in itertools.product(
            ((4, 'iptables'), (6, 'ip6tables')), ('filter', 'raw')):
        cmd = [binary, '-t', table]
        lines = iptables_save_table(table, version)
        for line in lines:
            match = re.match(r'-A (INPUT|FORWARD|OUTPUT|PREROUTING) (.*-j %s-\S+)$'
                             % re.escape(prefix), line)
            if match:
                subprocess.run([*cmd, '-D', match.group(1), *match.group(2).split()],
                               capture_output=True)
        chains = re.findall(r'^:(%s-\S+)' % re.escape(prefix), '\n'.join(lines), re.M)
        for action in ('-F', '-X'):
            for chain in chains:
                subprocess.run([*cmd, action, chain], capture_output=True)


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
        tag = uuid.uuid4().hex[:8]
        # Chains carry agentkit's own prefix (root refuses any other);
        # devices a short one of the tests'.
        self.prefix = 'neutron-' + tag
        self.devices = 'akf' + tag
        self.bridge = self.make_bridge(self.devices + 'br')
        # 100.64.0.0/10 (shared address space): clear of the other tests' ranges.
        self.subnet = '100.%d.%d' % (random.randint(64, 127), random.randint(0, 255))
        self.sg_a = self.unique_id()
        self.sg_b = self.unique_id()
        self.net = self.unique_id()
        self.subnet_id = self.unique_id()
        self.server = fake_neutron.SecurityGroupModel()
        self.server.rules[self.sg_a] = default_group_rules(self.sg_a)
        self.server.rules[self.sg_b] = default_group_rules(self.sg_b)
        self.firewall = iptables_hybrid.IptablesHybridFirewallDriver(
            self.conf, 'akf-host', binary_name=self.prefix,
            set_prefix='T' + uuid.uuid4().hex[:7],
            antispoof_table='agentkit-t' + uuid.uuid4().hex[:12])
        self.addCleanup(purge_chains, self.prefix)
        self.addCleanup(self.firewall.remove_all)
        self.firewall.initialize()
        self.vm1 = self._vm(11)
        self.vm2 = self._vm(12)
        self.vm3 = self._vm(13)

    # -- fixtures -----------------------------------------------------------
    def make_bridge(self, name: str) -> str:
        bridge = ip_lib.IPWrapper().add_bridge(name)
        self.addCleanup(bridge.delete)
        bridge.disable_ipv6()
        bridge.link.set_up()
        return name

    def _vm(self, host: int, bridge: str | None = None, subnet: str | None = None) -> Guest:
        mac = 'fa:16:3e:%02x:%02x:%02x' % tuple(random.randint(0, 255) for _ in range(3))
        # Cleanup first: a half-built guest (namespace, veth) goes too.
        name = self.devices + 'v%d' % host
        port_id = self.unique_id()
        self.addCleanup(fake_vm.destroy_guest, name, 'tap' + port_id[:11])
        vm = Guest(name, port_id, mac, '%s.%d' % (subnet or self.subnet, host % 100))
        ip_lib.IPDevice(vm.tap).link.set_master(bridge or self.bridge)
        vm.bridge = bridge or self.bridge
        return vm

    def port(self, vm: Guest, groups: list[str], **extra: object) -> dict[str, object]:
        """The server's record of the port (what its database holds)."""
        port: dict[str, object] = {
            'port_id': vm.port_id, 'device': vm.port_id, 'mac_address': vm.mac,
            'network_id': getattr(vm, 'network_id', self.net),
            'fixed_ips': [{'ip_address': vm.ip, 'subnet_id': self.subnet_id}],
            'security_groups': groups, 'port_security_enabled': True,
            'allowed_address_pairs': [], 'device_owner': 'compute:nova'}
        port.update(extra)
        self.server.ports[vm.port_id] = port
        return port

    def apply(self, *vms: Guest) -> None:
        """What the agent does for ``vms``: one server call, one driver call."""
        info, devices = sg.SecurityGroupInfo.from_rpc(
            self.server.info_for_devices([vm.port_id for vm in vms]))
        self.firewall.apply_port_filters(
            [sg.PortFilter.from_rpc(devices.get(vm.port_id, self.server.ports[vm.port_id]),
                                    bridge=vm.bridge) for vm in vms], info)

    def filter(self, vm: Guest, groups: list[str], **extra: object) -> None:
        """Give ``vm`` these groups and filter it."""
        self.port(vm, groups, **extra)
        self.apply(vm)

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
        return traffic.udp_reaches(src.name, dst.name, dst.ip, sport, dport, timeout)

    def chains(self, ip_version: int = 4) -> list[str]:
        return re.findall(r'^:(%s-\S+)' % re.escape(self.prefix),
                          iptables_save(ip_version), re.M)

    def our_rules(self, ip_version: int = 4) -> list[str]:
        return [line for line in iptables_save(ip_version).splitlines()
                if self.prefix in line and line.startswith('-A ')]

    # -- tests ----------------------------------------------------------------
    def test_default_group_blocks_until_a_rule_allows_icmp_then_tcp_22(self) -> None:
        self.port(self.vm1, [self.sg_a])
        self.port(self.vm2, [self.sg_b])
        self.apply(self.vm1, self.vm2)
        self.tcp_server(self.vm1, 22)
        self.tcp_server(self.vm1, 23)

        self.assertFalse(self.pings(self.vm2, self.vm1.ip, expect=False))
        self.assertFalse(self.tcp_connects(self.vm2, self.vm1, 22))

        self.server.rules[self.sg_a] = default_group_rules(self.sg_a) + [
            rule(self.sg_a, 'icmp')]
        self.apply(self.vm1)
        self.assertTrue(self.pings(self.vm2, self.vm1.ip))
        self.assertFalse(self.tcp_connects(self.vm2, self.vm1, 22))

        self.server.rules[self.sg_a].append(rule(self.sg_a, 'tcp', 22))
        self.apply(self.vm1)
        self.assertTrue(self.tcp_connects(self.vm2, self.vm1, 22))
        self.assertFalse(self.tcp_connects(self.vm2, self.vm1, 23))

        # Taking the rules back closes the port again for new connections.
        self.server.rules[self.sg_a] = default_group_rules(self.sg_a)
        self.apply(self.vm1)
        self.assertFalse(self.tcp_connects(self.vm2, self.vm1, 22))

    def test_egress_is_open_and_replies_come_back_while_ingress_is_closed(self) -> None:
        self.filter(self.vm1, [self.sg_a])
        self.tcp_server(self.vm3, 8080)
        self.tcp_server(self.vm1, 8080)

        self.assertTrue(self.pings(self.vm1, self.vm3.ip))
        self.assertTrue(self.tcp_connects(self.vm1, self.vm3, 8080))
        self.assertFalse(self.pings(self.vm3, self.vm1.ip, expect=False))
        self.assertFalse(self.tcp_connects(self.vm3, self.vm1, 8080))

    def test_dhcp_client_traffic_passes_and_a_vm_cannot_answer_dhcp(self) -> None:
        # vm3 plays the DHCP port: trusted, so only vm1's rules decide.
        self.port(self.vm1, [self.sg_a])
        self.port(self.vm3, [], device_owner='network:dhcp')
        self.apply(self.vm1, self.vm3)
        # A "server reply" (67 -> 68) reaches vm1 although its ingress is closed ...
        self.assertTrue(self.udp_reaches(self.vm3, self.vm1, 67, 68))
        self.assertFalse(self.udp_reaches(self.vm3, self.vm1, 5067, 68))
        # ... vm1 may act as a DHCP client, not as a DHCP server.
        self.assertTrue(self.udp_reaches(self.vm1, self.vm3, 68, 67))
        self.assertTrue(self.udp_reaches(self.vm1, self.vm3, 5067, 68))
        self.assertFalse(self.udp_reaches(self.vm1, self.vm3, 67, 68))

    def test_spoofed_source_ip_and_mac_are_dropped(self) -> None:
        self.server.rules[self.sg_a].append(rule(self.sg_a, 'icmp'))
        # A router port: trusted, yet what vm2 sends to it is checked too.
        self.port(self.vm1, [self.sg_a])
        self.port(self.vm2, [self.sg_b])
        self.port(self.vm3, [], device_owner='network:router_interface')
        self.apply(self.vm1, self.vm2, self.vm3)
        spoofed = '%s.77' % self.subnet
        self.vm2.set_ip(spoofed + '/24')

        self.assertTrue(self.pings(self.vm2, self.vm1.ip, source=self.vm2.ip))
        self.assertTrue(self.pings(self.vm2, self.vm3.ip, source=self.vm2.ip))
        self.assertFalse(self.pings(self.vm2, self.vm1.ip, source=spoofed, expect=False))
        self.assertFalse(self.pings(self.vm2, self.vm3.ip, source=spoofed, expect=False))
        # The drop was the anti-spoofing rule: allowing the address lets it through.
        self.filter(self.vm2, [self.sg_b], allowed_address_pairs=[
            {'ip_address': spoofed, 'mac_address': self.vm2.mac}])
        self.assertTrue(self.pings(self.vm2, self.vm1.ip, source=spoofed))

        fake_vm.run_in(self.vm2.name, 'ip', 'link', 'set', 'eth0', 'address',
                       'fa:16:3e:00:00:77')
        self.assertFalse(self.pings(self.vm2, self.vm1.ip, source=self.vm2.ip,
                                    expect=False))

    def test_member_of_the_same_group_is_allowed_in(self) -> None:
        self.port(self.vm1, [self.sg_a])
        self.port(self.vm2, [self.sg_b])
        self.apply(self.vm1, self.vm2)
        self.tcp_server(self.vm1, 8080)
        self.assertFalse(self.tcp_connects(self.vm2, self.vm1, 8080))

        # vm2 joins group A: the server's answer for both ports has it as member.
        self.port(self.vm2, [self.sg_a, self.sg_b])
        self.apply(self.vm1, self.vm2)
        self.assertTrue(self.tcp_connects(self.vm2, self.vm1, 8080))
        self.assertTrue(self.pings(self.vm2, self.vm1.ip))
        self.assertFalse(self.tcp_connects(self.vm3, self.vm1, 8080))

        # ... and leaves it again: a member change of vm1's remote group.
        self.port(self.vm2, [self.sg_b])
        self.apply(self.vm1, self.vm2)
        self.assertFalse(self.tcp_connects(self.vm2, self.vm1, 8080))

    def test_ipv6_members_reach_each_other_and_others_do_not(self) -> None:
        prefix = 'fd%02x:%04x::' % (random.randint(0, 255), random.randint(0, 0xffff))
        for vm, host in ((self.vm1, 11), (self.vm2, 12), (self.vm3, 13)):
            vm.ip6 = '%s%d' % (prefix, host)
            fake_vm.run_in(vm.name, 'ip', '-6', 'addr', 'add', vm.ip6 + '/64',
                           'dev', 'eth0', 'nodad')
        for vm in (self.vm1, self.vm2):
            self.port(vm, [self.sg_a], fixed_ips=[
                {'ip_address': vm.ip6, 'subnet_id': self.subnet_id}])
        self.apply(self.vm1, self.vm2)

        self.assertTrue(self.pings(self.vm2, self.vm1.ip6))
        self.assertFalse(self.pings(self.vm3, self.vm1.ip6, expect=False))
        # Egress to a non-member needs its neighbour advertisements let in.
        self.assertTrue(self.pings(self.vm1, self.vm3.ip6))

    def test_port_security_disabled_means_no_filter(self) -> None:
        self.filter(self.vm1, [self.sg_a])
        self.assertFalse(self.pings(self.vm3, self.vm1.ip, expect=False))
        self.filter(self.vm1, [self.sg_a], port_security_enabled=False)
        self.assertEqual([], self.firewall.filtered_ports)
        self.assertNotIn(self.vm1.port_id[:10], '\n'.join(self.chains()))
        self.assertTrue(self.pings(self.vm3, self.vm1.ip))

    def test_remove_port_filter_removes_all_its_chains(self) -> None:
        self.port(self.vm1, [self.sg_a])
        self.port(self.vm2, [self.sg_a])
        self.apply(self.vm1, self.vm2)
        for version in (4, 6):
            self.assertEqual(
                {'i', 'o', 's'},
                {c[len(self.prefix) + 1] for c in self.chains(version)
                 if c.endswith(self.vm1.port_id[:10])})
        self.assertFalse(self.pings(self.vm3, self.vm1.ip, expect=False))

        self.firewall.remove_port_filters([self.vm1.port_id])
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
        start = time.monotonic()
        self.filter(self.vm1, [self.sg_a])
        self.assertLess(time.monotonic() - start, 2.0)
        kernel = AssertionError('the kernel was touched')
        with mock.patch.object(iptables_manager.priv, 'restore', side_effect=kernel), \
                mock.patch.object(bridge_filter.priv, 'replace_bridge_table',
                                  side_effect=kernel), \
                mock.patch.object(ipset_manager.priv, 'replace_set', side_effect=kernel):
            self.apply(self.vm1)

    def test_remote_address_group_lets_in_its_addresses_only(self) -> None:
        address_group = self.unique_id()
        self.server.address_groups[address_group] = [self.vm3.ip + '/32']
        self.server.rules[self.sg_a].append(
            {**rule(self.sg_a, 'tcp', 8080), 'remote_ip_prefix': None,
             'remote_address_group_id': address_group})
        self.filter(self.vm1, [self.sg_a])
        self.tcp_server(self.vm1, 8080)
        self.assertTrue(self.tcp_connects(self.vm3, self.vm1, 8080))
        self.assertFalse(self.tcp_connects(self.vm2, self.vm1, 8080))
        # The group's addresses change (the server pushes the AddressGroup).
        self.server.address_groups[address_group] = ['%s.0/24' % self.subnet]
        self.apply(self.vm1)
        self.assertTrue(self.tcp_connects(self.vm2, self.vm1, 8080))

    # -- conntrack ---------------------------------------------------------------
    def test_removing_a_rule_cuts_the_established_session_it_allowed(self) -> None:
        self.server.rules[self.sg_a].append(rule(self.sg_a, 'tcp', 5001))
        self.port(self.vm1, [self.sg_a])
        self.port(self.vm3, [], device_owner='network:router_interface')
        self.apply(self.vm1, self.vm3)
        echo = traffic.EchoServer(self.vm1.name, 5001)
        self.addCleanup(echo.stop)
        session = traffic.TcpSession(self.vm3.name, self.vm1.ip, 5001)
        self.addCleanup(session.close)
        self.assertTrue(session.connected, session.state)
        self.assertEqual('ok', session.exchange())
        # An unrelated rule going does not touch the session.
        self.server.rules[self.sg_a].append(rule(self.sg_a, 'udp', 53))
        self.apply(self.vm1)
        self.server.rules[self.sg_a].pop()
        self.apply(self.vm1)
        self.assertEqual('ok', session.exchange())

        self.server.rules[self.sg_a].pop()  # the tcp 5001 rule
        self.apply(self.vm1)
        self.assertEqual('timeout', session.exchange())
        self.assertFalse(self.tcp_connects(self.vm3, self.vm1, 5001))

    def test_stateless_group_needs_a_rule_for_return_traffic(self) -> None:
        self.server.rules[self.sg_a] = [rule(self.sg_a, None, direction='egress')]
        self.port(self.vm1, [self.sg_a])
        self.port(self.vm3, [], device_owner='network:router_interface')
        self.apply(self.vm1, self.vm3)
        # Stateful, the reply of an allowed egress ping comes back.
        self.assertTrue(self.pings(self.vm1, self.vm3.ip))
        self.server.stateful[self.sg_a] = False
        self.apply(self.vm1)
        self.assertFalse(self.pings(self.vm1, self.vm3.ip, expect=False))
        self.assertIn('--notrack', '\n'.join(
            line for line in iptables_save_table('raw') if self.vm1.tap in line))
        self.server.rules[self.sg_a].append(rule(self.sg_a, 'icmp'))
        self.apply(self.vm1)
        self.assertTrue(self.pings(self.vm1, self.vm3.ip))

    def test_same_addresses_in_two_networks_never_share_connection_state(self) -> None:
        """Two projects, same subnet, one host: each network has its conntrack zone.

        In network A, vm1 opens a UDP "connection" to vm3. In network B,
        vm5 has vm3's address and sends what looks exactly like vm3's reply
        to vm4, which has vm1's address. Sharing state, the reply would pass
        vm4's closed ingress as ESTABLISHED; with zones it is new, and dropped.
        """
        net_b = self.unique_id()
        bridge_b = self.make_bridge(self.devices + 'bb')
        vm4 = self._vm(111, bridge_b)   # vm1's address in network B
        vm5 = self._vm(113, bridge_b)   # vm3's address in network B
        for vm in (vm4, vm5):
            vm.network_id = net_b
        self.assertEqual((self.vm1.ip, self.vm3.ip), (vm4.ip, vm5.ip))
        self.server.rules[self.sg_a] = [rule(self.sg_a, None, direction='egress')]
        self.port(self.vm1, [self.sg_a])
        self.port(vm4, [self.sg_a])
        self.port(self.vm3, [], device_owner='network:router_interface')
        self.port(vm5, [], device_owner='network:router_interface')
        self.apply(self.vm1, vm4, self.vm3, vm5)
        # Without a connection, nothing gets in (both ingresses are closed).
        self.assertFalse(self.udp_reaches(self.vm3, self.vm1, 7000, 6000))
        # vm1 -> vm3 opens the flow in A's zone; vm3's reply is let in ...
        self.assertTrue(self.udp_reaches(self.vm1, self.vm3, 6000, 7000))
        self.assertTrue(self.udp_reaches(self.vm3, self.vm1, 7000, 6000))
        # ... the same packet in network B is not.
        self.assertTrue(self.udp_reaches(self.vm1, self.vm3, 6000, 7000))
        self.assertFalse(self.udp_reaches(vm5, vm4, 7000, 6000))
        zones = re.findall(r'--zone (\d+)', '\n'.join(
            line for line in iptables_save_table('raw') if self.prefix in line))
        self.assertEqual(2, len(set(zones)), zones)


class NeutronLeftoversTest(base.FunctionalTestCase):
    """The drop-in case: chains neutron-openvswitch-agent left, real kernel."""

    def test_stale_chain_hooked_into_a_shared_chain_is_removed(self) -> None:
        # A router's namespace: root rewrites the iptables of agentkit's only.
        ns = 'qrouter-' + str(uuid.uuid4())
        ip_lib.create_namespace(ns)
        self.addCleanup(ip_lib.delete_namespace, ns)
        # What Neutron's agent leaves: its -local chain hooked into the
        # shared neutron-filter-top, which also holds a rule of someone else.
        subprocess.run(
            ['ip', 'netns', 'exec', ns, 'iptables-restore', '--noflush'], check=True, text=True,
            input='*filter\n:neutron-filter-top - [0:0]\n:neutron-openvswi-local - [0:0]\n'
                  '-A FORWARD -j neutron-filter-top\n'
                  '-A neutron-filter-top -s 192.0.2.1/32 -j ACCEPT\n'
                  '-A neutron-filter-top -j neutron-openvswi-local\nCOMMIT\n')
        manager = iptables_manager.IptablesManager(
            ns, binary_name='neutron-openvswi', filter_top=False, tables=('filter',))
        manager.apply()  # raised IptablesError (EBUSY) before 72845cb
        saved = subprocess.run(['ip', 'netns', 'exec', ns, 'iptables-save', '-t', 'filter'],
                               check=True, capture_output=True, text=True).stdout
        self.assertNotIn('neutron-openvswi-local', saved)
        self.assertIn('-A neutron-filter-top -s 192.0.2.1/32 -j ACCEPT', saved)
        self.assertFalse(iptables_manager.IptablesManager(
            ns, binary_name='neutron-openvswi', filter_top=False, tables=('filter',)).apply())
