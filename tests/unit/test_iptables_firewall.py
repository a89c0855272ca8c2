"""iptables_hybrid: rule text, layout, sets, zones, guards and conntrack cleanup.

The kernel side of iptables is :class:`tests.unit.test_iptables_manager.FakeIptables`
(an in-memory iptables-save/-restore), one per IP version, so what the
driver sends is checked the way the kernel would take it: chains must exist
before jumps, referenced chains cannot be deleted, and foreign rules must
survive. ipsets, the nftables guards and conntrack are recorded by fakes.
Security-group data is written in the server's shape and parsed by
:mod:`agentkit.api.security_group`, as the agent does.
"""

from __future__ import annotations

import ipaddress
import threading
from typing import Any
from unittest import mock

from agentkit.api import security_group as sg
from agentkit.lib import conntrack
from agentkit.lib import iptables_manager as im
from drivers.firewall import conntrack_zones
from drivers.firewall import iptables_hybrid as ih
from drivers.firewall import iptables_rules
from tests import base
from tests.unit.test_iptables_manager import FakeIptables

SG = '5a1f0000-0000-4000-8000-000000000001'
SG2 = '5a1f0000-0000-4000-8000-000000000002'
AG = '5a1f0000-0000-4000-8000-0000000000a9'
NET = '0e7c0000-0000-4000-8000-000000000001'
NET2 = '0e7c0000-0000-4000-8000-000000000002'
PORT = '8cbd0e17-4b44-4b06-a0a4-2ef8e3f0a1b2'
PORT2 = '1f2e3d4c-0000-4000-8000-00000000abcd'
MAC = 'fa:16:3e:12:34:56'
TAP = 'tap8cbd0e17-4b'
QBR = 'qbr8cbd0e17-4b'
I_CHAIN = 'neutron-openvswi-i8cbd0e17-4'
O_CHAIN = 'neutron-openvswi-o8cbd0e17-4'
S_CHAIN = 'neutron-openvswi-s8cbd0e17-4'
SET4 = 'NIPv4' + SG[:24]


def rule(**kwargs: Any) -> dict[str, Any]:
    """A rule as security_group_info_for_devices sends it."""
    values: dict[str, Any] = {'direction': 'ingress', 'ethertype': 'IPv4', 'stateful': True}
    values.update(kwargs)
    return values


def spec(member_set: str | None = None, **kwargs: Any) -> str:
    return iptables_rules.rule_spec(sg.SecurityGroupRule.from_rpc(rule(**kwargs)), member_set)


def default_group(sg_id: str = SG) -> list[dict[str, Any]]:
    return [rule(direction=d, ethertype=e, **({'remote_group_id': sg_id} if d == 'ingress'
                                              else {}))
            for d in ('ingress', 'egress') for e in ('IPv4', 'IPv6')]


def port(port_id: str = PORT, network_id: str = NET, **kwargs: Any) -> sg.PortFilter:
    values: dict[str, Any] = {
        'id': port_id, 'device': port_id, 'network_id': network_id, 'mac_address': MAC,
        'fixed_ips': ['10.0.0.5'], 'security_groups': [SG], 'port_security_enabled': True,
        'allowed_address_pairs': [], 'device_owner': 'compute:nova'}
    values.update(kwargs)
    return sg.PortFilter.from_rpc(values, bridge='qbr' + port_id[:11])


def info(groups: dict[str, list[dict[str, Any]]] | None = None,
         members: dict[str, list[str]] | None = None) -> sg.SecurityGroupInfo:
    reply = {'devices': {}, 'security_groups': groups if groups is not None
             else {SG: default_group()},
             'sg_member_ips': {g: {'IPv4': [[m, None] for m in ms if ':' not in m],
                                   'IPv6': [[m, None] for m in ms if ':' in m]}
                               for g, ms in (members or {}).items()}}
    return sg.SecurityGroupInfo.from_rpc(reply)[0]


class RuleTextTest(base.TestCase):
    """Every kind of Neutron rule becomes the iptables text Neutron would write."""

    def test_protocols_and_ports(self) -> None:
        self.assertEqual('-j RETURN', spec())
        self.assertEqual('-p tcp -m tcp --dport 22 -j RETURN',
                         spec(protocol='tcp', port_range_min=22, port_range_max=22))
        self.assertEqual('-p udp -m udp --dport 1000:2000 -j RETURN',
                         spec(protocol='udp', port_range_min=1000, port_range_max=2000))
        self.assertEqual('-p sctp -m sctp --dport 5 -j RETURN',
                         spec(protocol='132', port_range_min=5, port_range_max=5))
        self.assertEqual('-p 47 -j RETURN', spec(protocol='gre'))

    def test_icmp_type_and_code(self) -> None:
        self.assertEqual('-p icmp -j RETURN', spec(protocol='icmp'))
        self.assertEqual('-p icmp -m icmp --icmp-type 8/0 -j RETURN',
                         spec(protocol='icmp', port_range_min=8, port_range_max=0))
        self.assertEqual('-p ipv6-icmp -m icmp6 --icmpv6-type 128 -j RETURN',
                         spec(ethertype='IPv6', protocol='icmp', port_range_min=128))

    def test_remote_prefix_direction_and_member_sets(self) -> None:
        self.assertEqual('-s 10.0.0.0/8 -p tcp -j RETURN',
                         spec(protocol='tcp', source_ip_prefix='10.1.2.3/8'))
        self.assertEqual('-d 192.0.2.7/32 -j RETURN',
                         spec(direction='egress', dest_ip_prefix='192.0.2.7'))
        self.assertEqual('-m set --match-set NIPv4x src -p tcp -m tcp --dport 22 -j RETURN',
                         spec('NIPv4x', remote_group_id=SG, protocol='tcp',
                              port_range_min=22, port_range_max=22))
        self.assertEqual('-m set --match-set NIPv4y dst -j RETURN',
                         spec('NIPv4y', direction='egress', remote_address_group_id=AG))
        self.assertRaises(ValueError, spec, remote_group_id=SG)


class FakeIpsets:
    """Records what the driver wants of its member sets."""

    def __init__(self) -> None:
        self.members: dict[str, list[str]] = {}
        self.writes = 0
        self.destroyed: list[str] = []

    def set_name(self, ip_version: int, group_id: str) -> str:
        return 'NIPv%d%s' % (ip_version, group_id[:24])

    def set_members(self, ip_version: int, group_id: str, members: Any) -> bool:
        name = self.set_name(ip_version, group_id)
        members = sorted(members)
        if self.members.get(name) == members:
            return False
        self.members[name] = members
        self.writes += 1
        return True

    def destroy_unused(self, keep: Any) -> set[str]:
        gone = set(self.members) - set(keep)
        for name in gone:
            del self.members[name]
        self.destroyed += sorted(gone)
        return gone


class FakeGuards:
    def __init__(self) -> None:
        self.ports: dict[str, Any] = {}
        self.applies = 0
        self.removed = False

    def set_ports(self, guards: Any) -> None:
        self.ports = {g.device: g for g in guards}

    def apply(self) -> bool:
        self.applies += 1
        return True

    def remove_all(self) -> bool:
        self.removed = True
        self.ports = {}
        return True


class FirewallTestCase(base.TestCase):
    """A driver on fake IPv4 and IPv6 kernels."""

    def setUp(self) -> None:
        super().setUp()
        self.fakes = {4: FakeIptables(), 6: FakeIptables()}
        for name in ('save', 'restore'):
            patcher = mock.patch.object(im.priv, name, side_effect=self._kernel(name))
            patcher.start()
            self.addCleanup(patcher.stop)
        self.flows: list[conntrack.FlowFilter] = []
        patcher = mock.patch.object(ih.conntrack, 'delete_flows',
                                    side_effect=lambda f: self.flows.extend(f) or len(f))
        patcher.start()
        self.addCleanup(patcher.stop)
        self.fw = ih.IptablesHybridFirewallDriver(self.conf, 'host', use_ipv6=True)
        self.fw.recheck_delay = 0  # no timer thread outliving the test's mocks
        self.sets = self.fw.ipsets = FakeIpsets()  # type: ignore[assignment]
        self.guards = self.fw.antispoof = FakeGuards()  # type: ignore[assignment]

    def _kernel(self, name: str) -> Any:
        def call(namespace: str | None, version: int, *args: Any) -> tuple[int, str, str]:
            assert namespace is None, 'the firewall lives in the root namespace'
            return getattr(self.fakes[version], name)(namespace, version, *args)
        return call

    def apply(self, *ports: sg.PortFilter, groups: Any = None, members: Any = None) -> None:
        self.fw.apply_port_filters(list(ports), info(groups, members))

    def restores(self) -> int:
        return sum(len(f.restores) for f in self.fakes.values())

    def chain(self, name: str, version: int = 4, table: str = 'filter') -> list[str]:
        return [line.split(' ', 2)[2] for line in self.fakes[version].lines(table)
                if line.startswith('-A %s ' % name)]


class LayoutTest(FirewallTestCase):

    def test_layout_is_neutrons_and_scoped_to_the_tap(self) -> None:
        self.apply(port(), members={SG: ['10.0.0.5', '10.0.0.6', '2001:db8::6']})
        self.assertEqual(['-j neutron-openvswi-FORWARD'], self.chain('FORWARD'))
        self.assertEqual(['-j neutron-openvswi-INPUT'], self.chain('INPUT'))
        forward = self.chain('neutron-openvswi-FORWARD')
        self.assertEqual(2, len(forward))
        for line, direction in zip(forward, ('out', 'in')):
            self.assertIn('-m physdev --physdev-%s %s --physdev-is-bridged -j '
                          'neutron-openvswi-sg-chain' % (direction, TAP), line)
        self.assertEqual(
            ['-m physdev --physdev-out %s --physdev-is-bridged -j %s' % (TAP, I_CHAIN),
             '-m physdev --physdev-in %s --physdev-is-bridged -j %s' % (TAP, O_CHAIN),
             '-j ACCEPT'], self.chain('neutron-openvswi-sg-chain'))
        self.assertTrue(self.chain('neutron-openvswi-INPUT')[0].endswith(
            '-m physdev --physdev-in %s -j %s' % (TAP, O_CHAIN)))
        # Members are one set, matched by one rule.
        self.assertEqual([
            '-m state --state RELATED,ESTABLISHED -j RETURN',
            '-p udp -m udp --sport 67 --dport 68 -j RETURN',
            '-m state --state INVALID -j DROP',
            '-m set --match-set %s src -j RETURN' % SET4,
            '-j neutron-openvswi-sg-fallback'], self.chain(I_CHAIN))
        self.assertEqual(['10.0.0.5/32', '10.0.0.6/32'], self.sets.members[SET4])
        self.assertEqual(['2001:db8::6/128'], self.sets.members['NIPv6' + SG[:24]])
        self.assertEqual([
            '-s 0.0.0.0/32 -d 255.255.255.255/32 -p udp -m udp --sport 68 --dport 67 '
            '-j RETURN',
            '-j ' + S_CHAIN,
            '-p udp -m udp --sport 68 --dport 67 -j RETURN',
            '-p udp -m udp --sport 67 --dport 68 -j DROP',
            '-m state --state RELATED,ESTABLISHED -j RETURN',
            '-m state --state INVALID -j DROP',
            '-j RETURN',
            '-j neutron-openvswi-sg-fallback'], self.chain(O_CHAIN))
        self.assertEqual([
            '-s 10.0.0.5/32 -m mac --mac-source %s -j RETURN' % MAC,
            '-m comment --comment "Drop traffic without an IP/MAC allow rule." -j DROP'],
            self.chain(S_CHAIN))
        self.assertIn('-p ipv6-icmp -m icmp6 --icmpv6-type 136 -j RETURN',
                      self.chain(I_CHAIN, 6))
        self.assertIn('-p ipv6-icmp -m icmp6 --icmpv6-type 134 -j DROP',
                      self.chain(O_CHAIN, 6))
        # The network's conntrack zone, on the port's bridge, in both families.
        for version in (4, 6):
            self.assertEqual(['-m comment --comment "zone of network %s" -i %s -j CT --zone %d'
                              % (NET, QBR, conntrack_zones.FIRST_ZONE)],
                             self.chain('neutron-openvswi-PREROUTING', version, 'raw'))
        # ARP/MAC guard: the MAC, and ARP only for the port's IPv4 address.
        self.assertEqual({TAP: ((MAC, ('10.0.0.5/32',)),)},
                         {d: g.allowed for d, g in self.guards.ports.items()})

    def test_rules_per_port_do_not_grow_with_members(self) -> None:
        self.apply(port(), members={SG: ['10.0.0.5']})
        few = sum(len(self.fakes[v].lines('filter')) for v in (4, 6))
        many = ['10.1.%d.%d' % (i // 250, i % 250 + 1) for i in range(200)]
        self.apply(port(), members={SG: many})
        self.assertEqual(few, sum(len(self.fakes[v].lines('filter')) for v in (4, 6)))
        self.assertEqual(200, len(self.sets.members[SET4]))

    def test_linuxbridge_hosts_get_neutrons_linuxbridge_chain_prefix(self) -> None:
        conf = mock.Mock()
        conf.l2.mechanism_driver = 'linuxbridge'
        self.assertEqual('neutron-linuxbri', ih.default_binary_name(conf))
        self.assertEqual('neutron-openvswi', ih.default_binary_name(self.conf))


class ChangeTest(FirewallTestCase):

    def test_member_changes_swap_the_set_and_leave_iptables_alone(self) -> None:
        self.apply(port(), members={SG: ['10.0.0.5']})
        before = self.restores()
        self.apply(port(), members={SG: ['10.0.0.5', '10.0.0.9']})
        self.assertEqual(before, self.restores())
        self.assertEqual(['10.0.0.5/32', '10.0.0.9/32'], self.sets.members[SET4])
        # The same again touches nothing at all.
        writes = self.sets.writes
        self.apply(port(), members={SG: ['10.0.0.5', '10.0.0.9']})
        self.assertEqual((before, writes), (self.restores(), self.sets.writes))

    def test_rule_changes_restore_only_the_changed_family(self) -> None:
        self.apply(port(), members={SG: ['10.0.0.5']})
        before = self.restores()
        self.apply(port(), groups={SG: default_group() + [rule(protocol='icmp')]},
                   members={SG: ['10.0.0.5']})
        self.assertEqual(before + 1, self.restores())
        self.assertIn('-p icmp -j RETURN', self.chain(I_CHAIN))

    def test_group_without_known_rules_is_closed_and_logged_once(self) -> None:
        self.apply(port(security_groups=[SG2]), groups={})
        self.apply(port(PORT2, security_groups=[SG2]), groups={})
        self.assertEqual(['-m state --state RELATED,ESTABLISHED -j RETURN',
                          '-p udp -m udp --sport 67 --dport 68 -j RETURN',
                          '-m state --state INVALID -j DROP',
                          '-j neutron-openvswi-sg-fallback'], self.chain(I_CHAIN))
        self.assertEqual(1, self.log.output.count('No rules known for security group'))

    def test_unused_sets_are_destroyed_after_iptables_stopped_using_them(self) -> None:
        self.apply(port(), members={SG: ['10.0.0.5']})
        self.apply(port(), groups={SG: [rule(protocol='icmp')]})
        self.assertIn(SET4, self.sets.destroyed)
        self.assertNotIn('match-set', '\n'.join(self.fakes[4].lines('filter')))

    def test_failed_restore_raises_and_the_retry_applies(self) -> None:
        self.fakes[4].fail_restore = True
        self.assertRaises(im.IptablesError, self.apply, port())
        self.fakes[4].fail_restore = False
        self.apply(port())
        self.assertIn(I_CHAIN, self.fakes[4].tables['filter'].chains)


class UnfilteredPortTest(FirewallTestCase):

    def test_port_security_off_removes_the_filter_and_accepts(self) -> None:
        self.apply(port())
        self.apply(port(port_security_enabled=False))
        self.assertEqual([], self.fw.filtered_ports)
        self.assertEqual({}, self.guards.ports)
        for version in (4, 6):
            self.assertNotIn(I_CHAIN, self.fakes[version].tables['filter'].chains)
            self.assertEqual(
                ['-m comment --comment "Accept all packets when port security is '
                 'disabled." -m physdev --physdev-%s %s --physdev-is-bridged -j ACCEPT'
                 % (d, TAP) for d in ('out', 'in')],
                [r for r in self.chain('neutron-openvswi-FORWARD', version) if TAP in r])
        self.fw.remove_port_filters([PORT])
        self.assertFalse([r for r in self.fakes[4].lines('filter') if TAP in r])

    def test_network_ports_are_accepted_after_every_filtered_port(self) -> None:
        # PORT2 sorts first; its ACCEPT must still come after PORT's jumps,
        # or a VM could send spoofed traffic to the router unchecked.
        self.apply(port(PORT2, device_owner='network:router_interface'), port())
        forward = self.chain('neutron-openvswi-FORWARD')
        self.assertEqual([TAP, TAP, 'tap' + PORT2[:11], 'tap' + PORT2[:11]],
                         [line.split('--physdev-')[1].split()[1] for line in forward])
        self.assertIn('Accept all packets when port is trusted.', forward[-1])
        self.assertEqual([PORT], self.fw.filtered_ports)

    def test_remove_all_leaves_foreign_rules_alone(self) -> None:
        self.fakes[4] = FakeIptables(
            '*filter\n:FORWARD ACCEPT [0:0]\n:DOCKER - [0:0]\n-A FORWARD -j DOCKER\n'
            '-A FORWARD -o br0 -j ACCEPT\nCOMMIT\n')
        self.apply(port())
        self.fw.remove_all()
        for version in (4, 6):
            self.assertNotIn('neutron-openvswi', self.fakes[version].render())
        self.assertEqual(['-j DOCKER', '-o br0 -j ACCEPT'], self.chain('FORWARD'))
        self.assertTrue(self.guards.removed)
        self.assertEqual([], self.fw.filtered_ports)


class FailClosedTest(FirewallTestCase):
    """What the review of the restart and failure paths asked for."""

    def test_a_restart_sync_shuts_the_ports_it_has_no_details_for(self) -> None:
        self.apply(port(), port(PORT2, fixed_ips=['10.0.0.6']))
        # A new agent on the same kernel; PORT2's details did not come.
        fw = ih.IptablesHybridFirewallDriver(self.conf, 'host', use_ipv6=True)
        fw.ipsets, fw.antispoof = self.sets, self.guards  # type: ignore[assignment]
        with mock.patch.object(ih.ip_lib, 'get_sysctl', return_value='1'):
            fw.initialize()  # learns which devices the kernel's rules name
        # A tap never filtered here (not bound yet, or not agentkit's) is left alone.
        fw.sync_port_filters([port()], info(), ['tap' + PORT2[:11], 'tapforeign01'])
        self.assertNotIn('tapforeign01', '\n'.join(self.fakes[4].lines('filter')))
        self.assertNotIn('tapforeign01', self.guards.ports)
        forward = self.chain('neutron-openvswi-FORWARD')
        tap2 = 'tap' + PORT2[:11]
        self.assertEqual(['-m comment --comment "Drop all packets of a port the server has '
                          'not described." -m physdev --physdev-%s %s --physdev-is-bridged '
                          '-j DROP' % (d, tap2) for d in ('out', 'in')],
                         [r for r in forward if tap2 in r])
        self.assertEqual((), self.guards.ports[tap2].allowed)  # sends nothing
        # Once described, it is filtered like any port.
        fw.apply_port_filters([port(PORT2, fixed_ips=['10.0.0.6'])], info())
        self.assertNotIn('DROP', ' '.join(r for r in self.chain('neutron-openvswi-FORWARD')
                                          if tap2 in r))
        self.assertIn((MAC, ('10.0.0.6/32',)), self.guards.ports[tap2].allowed)
        fw.sync_port_filters([], info(), [tap2])  # shut again, then unplugged
        fw.remove_port_filters([PORT2], [tap2])
        self.assertNotIn(tap2, '\n'.join(self.fakes[4].lines('filter')))

    def test_guard_of_address_pairs(self) -> None:
        # ARP only for IPv4; a pair without MAC (or a None one) claims the port
        # MAC, an IPv6 pair still lets its MAC send; MACs are normalised.
        self.apply(port(mac_address=MAC.upper(), fixed_ips=['10.0.0.5', 'fd00::5'],
                        allowed_address_pairs=[
                            {'ip_address': '10.0.0.6', 'mac_address': None},
                            {'ip_address': '10.0.0.100'},
                            {'ip_address': '192.168.7.0/24', 'mac_address': 'FA:16:3E:AA:BB:CC'},
                            {'ip_address': 'fd00::100', 'mac_address': 'fa:16:3e:dd:ee:ff'}]))
        self.assertEqual(((MAC, ('10.0.0.5/32', '10.0.0.6/32', '10.0.0.100/32')),
                          ('fa:16:3e:aa:bb:cc', ('192.168.7.0/24',)),
                          ('fa:16:3e:dd:ee:ff', ())),
                         self.guards.ports[TAP].allowed)
        self.assertEqual((MAC, 'fa:16:3e:aa:bb:cc', 'fa:16:3e:dd:ee:ff'),
                         self.guards.ports[TAP].macs)

    def test_a_port_without_a_usable_mac_may_send_nothing(self) -> None:
        self.apply(port(mac_address='01:00:5e:00:00:01'))
        self.assertEqual((), self.guards.ports[TAP].allowed)

    def test_a_zone_given_up_is_not_reused_before_it_was_flushed(self) -> None:
        self.apply(port(), port(PORT2, NET2, fixed_ips=['10.0.0.5']))
        zone2 = self.fw.zones.zone(NET2)
        self.fakes[4].fail_restore = True
        self.assertRaises(im.IptablesError, self.fw.remove_port_filters, [PORT2])
        self.fakes[4].fail_restore = False
        net3 = '0e7c0000-0000-4000-8000-000000000003'
        with mock.patch.object(ih.conntrack, 'delete_flows', side_effect=OSError('busy')):
            self.apply(port('3a3a3a3a-0000-4000-8000-00000000abcd', net3))
        self.assertNotEqual(zone2, self.fw.zones.zone(net3))
        self.assertNotIn(conntrack.FlowFilter(ip_version=4, zone=zone2), self.flows)
        self.apply(port())  # conntrack answers again: the flush is done now
        self.assertIn(conntrack.FlowFilter(ip_version=4, zone=zone2), self.flows)

    def test_failed_connection_deletions_are_retried_with_the_next_change(self) -> None:
        self.apply(port(), groups={SG: [rule(protocol='icmp')]})
        with mock.patch.object(ih.conntrack, 'delete_flows', side_effect=OSError('busy')):
            self.apply(port(), groups={SG: []})
        self.assertEqual([], self.flows)
        self.apply(port(), groups={SG: []})
        self.assertEqual([1], [f.protocol for f in self.flows])

    def test_members_of_one_family_do_not_wipe_the_other(self) -> None:
        self.apply(port(), members={SG: ['10.0.0.7', '2001:db8::7']})
        # An answer for ports whose rules name SG over IPv4 only.
        reply = {'devices': {}, 'security_groups': {},
                 'sg_member_ips': {SG: {'IPv4': [['10.0.0.8', None]]}}}
        self.fw.apply_port_filters([], sg.SecurityGroupInfo.from_rpc(reply)[0])
        self.assertEqual(['2001:db8::7/128'], self.sets.members['NIPv6' + SG[:24]])
        self.assertEqual(['10.0.0.8/32'], self.sets.members[SET4])

    def test_an_address_the_port_lost_loses_its_connections(self) -> None:
        self.apply(port(allowed_address_pairs=[{'ip_address': '10.0.9.0/24'}]))
        self.apply(port())
        lost = ipaddress.ip_network('10.0.9.0/24')
        self.assertEqual({conntrack.FlowFilter(ip_version=4, zone=4097, orig_src=lost),
                          conntrack.FlowFilter(ip_version=4, zone=4097, orig_dst=lost)},
                         set(self.flows))

    def test_a_port_that_becomes_filtered_loses_its_unchecked_connections(self) -> None:
        self.apply(port(), port(PORT2, fixed_ips=['10.0.0.6'], port_security_enabled=False))
        self.apply(port(PORT2, fixed_ips=['10.0.0.6']))
        own = ipaddress.ip_network('10.0.0.6/32')
        self.assertIn(conntrack.FlowFilter(ip_version=4, zone=4097, orig_dst=own), self.flows)


class StatelessTest(FirewallTestCase):

    def test_stateless_ports_are_untracked_and_have_no_established_shortcut(self) -> None:
        stateless = [rule(direction='egress', stateful=False),
                     rule(protocol='icmp', stateful=False)]
        self.apply(port(), port(PORT2, fixed_ips=['10.0.0.6'], security_groups=[SG2]),
                   groups={SG: stateless, SG2: [rule(stateful=True)]})
        ingress = self.chain(I_CHAIN)
        self.assertNotIn('-m state --state RELATED,ESTABLISHED -j RETURN', ingress)
        self.assertNotIn('-m state --state INVALID -j DROP', ingress)
        self.assertIn('-p icmp -j RETURN', ingress)
        self.assertIn('-m state --state RELATED,ESTABLISHED -j RETURN',
                      self.chain('neutron-openvswi-i' + PORT2[:10]))
        # NOTRACK first: the first CT target a packet meets decides.
        raw = self.chain('neutron-openvswi-PREROUTING', 4, 'raw')
        self.assertEqual('-m comment --comment "Untracked: stateless security group." '
                         '-m physdev --physdev-in %s -j CT --notrack' % TAP, raw[0])
        self.assertEqual('-i %s -j CT --notrack' % QBR, raw[1])  # its own bridge
        self.assertIn('--zone', raw[-1])
        self.assertIn('qbr' + PORT2[:11], raw[-1])

    def test_on_a_shared_bridge_only_what_the_stateless_vm_sends_is_untracked(self) -> None:
        brq = 'brq' + NET[:11]
        shared = [sg.PortFilter.from_rpc({
            'id': p, 'network_id': NET, 'mac_address': MAC, 'fixed_ips': [ip],
            'security_groups': [g], 'allowed_address_pairs': [{'ip_address': '0.0.0.0/0'}]},
            bridge=brq) for p, ip, g in ((PORT, '10.0.0.5', SG), (PORT2, '10.0.0.6', SG2))]
        self.fw.apply_port_filters(shared, info({SG: [rule(stateful=False)],
                                                 SG2: [rule(stateful=True)]}))
        raw = self.chain('neutron-openvswi-PREROUTING', 4, 'raw')
        self.assertEqual(['-m comment --comment "Untracked: stateless security group." '
                          '-m physdev --physdev-in %s -j CT --notrack' % TAP,
                          '-m comment --comment "zone of network %s" -i %s -j CT --zone 4097'
                          % (NET, brq)], raw)


class ZoneTest(FirewallTestCase):

    def test_each_network_has_its_zone_and_the_last_port_releases_it(self) -> None:
        self.apply(port(), port(PORT2, NET2, fixed_ips=['10.0.0.5']))
        zones = {line.split('network ')[1][:36]: int(line.rsplit(' ', 1)[1])
                 for line in self.chain('neutron-openvswi-PREROUTING', 4, 'raw')}
        self.assertEqual({4097, 4098}, set(zones.values()))
        self.fw.remove_port_filters([PORT2])
        # The whole zone is flushed: a later network may get its number.
        self.assertIn(conntrack.FlowFilter(ip_version=4, zone=zones[NET2]), self.flows)
        self.assertNotIn(conntrack.FlowFilter(ip_version=4, zone=zones[NET]), self.flows)
        self.assertNotIn(NET2, '\n'.join(self.chain('neutron-openvswi-PREROUTING', 4, 'raw')))

    def test_zones_are_recovered_from_the_kernel_at_start(self) -> None:
        self.fakes[4] = FakeIptables(
            '*raw\n:PREROUTING ACCEPT [0:0]\n:neutron-openvswi-PREROUTING - [0:0]\n'
            '-A PREROUTING -j neutron-openvswi-PREROUTING\n'
            '-A neutron-openvswi-PREROUTING -i qbrx -m comment --comment '
            '"zone of network %s" -j CT --zone 4321\nCOMMIT\n' % NET)
        with mock.patch.object(ih.ip_lib, 'get_sysctl', return_value='1'):
            self.fw.initialize()
        self.apply(port())
        self.assertIn('-j CT --zone 4321', self.chain('neutron-openvswi-PREROUTING', 4, 'raw')[0])


class ConntrackCleanupTest(FirewallTestCase):

    def test_a_removed_rule_deletes_exactly_the_connections_it_allowed(self) -> None:
        ssh = rule(protocol='tcp', port_range_min=22, port_range_max=22,
                   source_ip_prefix='10.9.0.0/16')
        self.apply(port(), groups={SG: [ssh, rule(protocol='icmp')]})
        self.assertEqual([], self.flows)
        self.apply(port(), groups={SG: [rule(protocol='icmp')]})
        self.assertEqual([conntrack.FlowFilter(
            ip_version=4, zone=4097, protocol=6, orig_src=ipaddress.ip_network('10.9.0.0/16'),
            orig_dst=ipaddress.ip_network('10.0.0.5/32'), dport_min=22, dport_max=22,
            either_direction=True)], self.flows)

    def test_a_member_leaving_deletes_its_connections_only(self) -> None:
        self.apply(port(), members={SG: ['10.0.0.7', '10.0.0.8']})
        self.apply(port(), members={SG: ['10.0.0.7']})
        self.assertEqual([conntrack.FlowFilter(
            ip_version=4, zone=4097, orig_src=ipaddress.ip_network('10.0.0.8/32'),
            orig_dst=ipaddress.ip_network('10.0.0.5/32'))], self.flows)

    def test_a_removed_remote_group_rule_deletes_connections_with_its_members(self) -> None:
        self.apply(port(), members={SG: ['10.0.0.7']})
        self.apply(port(), groups={SG: [rule(direction='egress')]}, members={SG: ['10.0.0.7']})
        self.assertEqual([conntrack.FlowFilter(
            ip_version=4, zone=4097, orig_src=ipaddress.ip_network('10.0.0.7/32'),
            orig_dst=ipaddress.ip_network('10.0.0.5/32'))], self.flows)

    def test_deleted_connections_are_deleted_once_more_a_moment_later(self) -> None:
        """A packet in flight at the first deletion lets conntrack pick the session up."""
        self.fw.recheck_delay = 0.01
        again = threading.Event()
        calls: list[list[conntrack.FlowFilter]] = []

        def delete(filters: list[conntrack.FlowFilter]) -> int:
            calls.append(list(filters))
            if len(calls) == 2:
                again.set()
            return 1
        ssh = rule(protocol='tcp', port_range_min=22, port_range_max=22)
        with mock.patch.object(ih.conntrack, 'delete_flows', side_effect=delete):
            self.apply(port(), groups={SG: [ssh, rule(protocol='icmp')]})
            self.apply(port(), groups={SG: [rule(protocol='icmp')]})
            self.assertTrue(again.wait(5))
        self.assertEqual(calls[0], calls[1])
        self.assertTrue(all(f.either_direction for f in calls[1]))

    def test_a_removed_port_loses_its_connections_in_its_zone(self) -> None:
        self.apply(port(), port(PORT2, fixed_ips=['10.0.0.6']))
        self.fw.remove_port_filters([PORT2])
        own = ipaddress.ip_network('10.0.0.6/32')
        self.assertEqual({conntrack.FlowFilter(ip_version=4, zone=4097, orig_src=own),
                          conntrack.FlowFilter(ip_version=4, zone=4097, orig_dst=own)},
                         {f for f in self.flows if f.ip_version == 4})

    def test_a_failed_cleanup_is_logged_and_the_rules_stay(self) -> None:
        self.apply(port(), groups={SG: [rule(protocol='icmp')]})
        with mock.patch.object(ih.conntrack, 'delete_flows', side_effect=OSError('x')):
            self.apply(port(), groups={SG: []})
        self.assertIn('Could not delete connections', self.log.output)
        self.assertNotIn('-p icmp -j RETURN', self.chain(I_CHAIN))


class InitializeTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.fw = ih.IptablesHybridFirewallDriver(self.conf, 'host', use_ipv6=True)

    def test_missing_br_netfilter_stops_the_agent(self) -> None:
        with mock.patch.object(ih.ip_lib, 'get_sysctl', side_effect=FileNotFoundError):
            err = self.assertRaises(RuntimeError, self.fw.initialize)
        self.assertIn('br_netfilter', str(err))

    def test_disabled_bridge_netfilter_is_switched_on(self) -> None:
        with mock.patch.object(ih.ip_lib, 'get_sysctl', side_effect=['0', '1']), \
                mock.patch.object(ih.ip_lib, 'set_sysctl') as set_sysctl, \
                mock.patch.object(self.fw.iptables, 'get_live_rules', return_value=''):
            self.fw.initialize()
        set_sysctl.assert_called_once_with('net.bridge.bridge-nf-call-iptables', 1)
        self.assertIn('setting it to 1', self.log.output)


class ManagerOptionsTest(base.TestCase):
    """The IptablesManager options added for a root-namespace owner."""

    def test_tables_and_filter_top(self) -> None:
        mgr = im.IptablesManager(None, binary_name='x', tables=('filter',),
                                 filter_top=False, use_ipv6=True)
        self.assertEqual(['filter'], list(mgr.ipv4))
        self.assertEqual(['filter'], list(mgr.ipv6))
        self.assertNotIn(im.FILTER_TOP, mgr.render())
        self.assertIn('-A FORWARD -j x-FORWARD', mgr.render())
        self.assertRaises(ValueError, im.IptablesManager, None, tables=('bogus',))
        self.assertRaises(ValueError, im.IptablesManager, None, tables=())

    def test_remove_all_refuses_the_shared_filter_top(self) -> None:
        self.assertRaises(ValueError, im.IptablesManager('ns').remove_all)

    def test_defaults_keep_the_l3_layout(self) -> None:
        mgr = im.IptablesManager('ns')
        self.assertEqual({'raw', 'mangle', 'nat', 'filter'}, set(mgr.ipv4))
        self.assertIn('-A FORWARD -j neutron-filter-top', mgr.render())
