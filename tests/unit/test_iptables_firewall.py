"""iptables_hybrid: rule translation, input checks, cache and apply behaviour.

The kernel side is :class:`tests.unit.test_iptables_manager.FakeIptables`
(an in-memory iptables-save/-restore), one per IP version, so what the
driver sends is checked the way the kernel would take it: chains must
exist before jumps, referenced chains cannot be deleted, and foreign rules
must survive.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from unittest import mock

from agentkit import exceptions
from agentkit.lib import iptables_manager as im
from drivers.firewall import iptables_hybrid as ih
from drivers.firewall import sg_rules
from tests import base
from tests.unit.test_iptables_manager import FakeIptables

SG = '5a1f0000-0000-4000-8000-000000000001'
SG2 = '5a1f0000-0000-4000-8000-000000000002'
PORT = '8cbd0e17-4b44-4b06-a0a4-2ef8e3f0a1b2'
PORT2 = '1f2e3d4c-0000-4000-8000-00000000abcd'
MAC = 'fa:16:3e:12:34:56'
TAP = 'tap8cbd0e17-4b'
I_CHAIN = 'neutron-openvswi-i8cbd0e17-4'
O_CHAIN = 'neutron-openvswi-o8cbd0e17-4'
S_CHAIN = 'neutron-openvswi-s8cbd0e17-4'


def rule(**kwargs: Any) -> dict[str, Any]:
    values: dict[str, Any] = {'direction': 'ingress', 'ethertype': 'IPv4'}
    values.update(kwargs)
    return values


def specs(members: list[str] | None = None, **kwargs: Any) -> list[str]:
    nets = [ipaddress.ip_network(m) for m in members or []]
    return sg_rules.SecurityGroupRule.from_dict(rule(**kwargs)).to_iptables(nets)


def port(port_id: str = PORT, **kwargs: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        'id': port_id, 'device': 'tap' + port_id[:11], 'mac_address': MAC,
        'fixed_ips': [{'ip_address': '10.0.0.5', 'subnet_id': SG2}],
        'security_groups': [SG], 'port_security_enabled': True,
        'allowed_address_pairs': []}
    values.update(kwargs)
    return values


def default_group(sg_id: str = SG) -> list[dict[str, Any]]:
    return [rule(direction=d, ethertype=e, remote_group_id=sg_id if d == 'ingress' else None)
            for d in ('ingress', 'egress') for e in ('IPv4', 'IPv6')]


class RuleTranslationTest(base.TestCase):
    """Every kind of Neutron rule becomes the iptables text Neutron would write."""

    def test_protocols_and_ports(self) -> None:
        self.assertEqual(['-j RETURN'], specs())
        self.assertEqual(['-p tcp -m tcp --dport 22 -j RETURN'],
                         specs(protocol='tcp', port_range_min=22, port_range_max=22))
        self.assertEqual(['-p udp -m udp --dport 1000:2000 -j RETURN'],
                         specs(protocol='udp', port_range_min=1000, port_range_max=2000))
        self.assertEqual(['-p tcp -m tcp --dport 80 -j RETURN'],
                         specs(protocol='6', port_range_min='80'))
        self.assertEqual(['-p sctp -m sctp --dport 5 -j RETURN'],
                         specs(protocol='sctp', port_range_min=5, port_range_max=5))
        self.assertEqual(['-p 47 -j RETURN'], specs(protocol='gre'))
        self.assertEqual(['-p 112 -j RETURN'], specs(protocol=112))
        self.assertEqual(['-j RETURN'], specs(protocol='any'))

    def test_icmp_type_and_code(self) -> None:
        self.assertEqual(['-p icmp -j RETURN'], specs(protocol='icmp'))
        self.assertEqual(['-p icmp -m icmp --icmp-type 8 -j RETURN'],
                         specs(protocol='icmp', port_range_min=8))
        self.assertEqual(['-p icmp -m icmp --icmp-type 3/4 -j RETURN'],
                         specs(protocol='icmp', port_range_min=3, port_range_max=4))
        # Neutron lets an IPv6 rule say "icmp": it means ICMPv6 there.
        self.assertEqual(['-p ipv6-icmp -m icmp6 --icmpv6-type 128 -j RETURN'],
                         specs(ethertype='IPv6', protocol='icmp', port_range_min=128))

    def test_remote_prefix_direction_and_group_members(self) -> None:
        self.assertEqual(['-s 10.0.0.0/8 -p tcp -j RETURN'],
                         specs(protocol='tcp', remote_ip_prefix='10.1.2.3/8'))
        self.assertEqual(['-d 192.0.2.7/32 -j RETURN'],
                         specs(direction='egress', remote_ip_prefix='192.0.2.7'))
        self.assertEqual(['-j RETURN'], specs(remote_ip_prefix='0.0.0.0/0'))
        self.assertEqual(['-s 10.0.0.5/32 -p tcp -m tcp --dport 22 -j RETURN',
                          '-s 10.0.0.6/32 -p tcp -m tcp --dport 22 -j RETURN'],
                         specs(['10.0.0.6', '10.0.0.5', '2001:db8::1'], remote_group_id=SG,
                               protocol='tcp', port_range_min=22, port_range_max=22))
        # A remote group without members allows no one yet.
        self.assertEqual([], specs([], remote_group_id=SG))

    def test_rules_that_cannot_be_enforced_exactly_are_refused(self) -> None:
        bad = [
            rule(direction='sideways'), rule(ethertype='IPX'), rule(ethertype=['IPv4']),
            rule(protocol='hopopt'), rule(protocol=0), rule(protocol='bogus'),
            rule(protocol='ipv6-icmp'),                          # in an IPv4 rule
            rule(protocol='tcp', port_range_min=0),
            rule(protocol='tcp', port_range_min=70000),
            rule(protocol='tcp', port_range_min=30, port_range_max=20),
            rule(protocol='tcp', port_range_max=20),
            rule(protocol='tcp', port_range_min=True),
            rule(protocol='icmp', port_range_max=3),
            rule(protocol='gre', port_range_min=1),
            rule(remote_ip_prefix='10.0.0.0/8 -j ACCEPT'),       # would widen the rule
            rule(remote_ip_prefix='2001:db8::/32'),              # IPv6 prefix, IPv4 rule
            rule(remote_group_id='../../etc'),
            rule(remote_group_id=SG, remote_ip_prefix='10.0.0.0/8'),
            rule(remote_address_group_id=SG),
            'not a dict',
        ]
        for value in bad:
            self.assertRaises(sg_rules.InvalidRule, sg_rules.SecurityGroupRule.from_dict,
                              value)
        # parse_rules keeps the good ones and says which it skipped.
        parsed = sg_rules.parse_rules(SG, [rule(protocol='tcp', port_range_min=-1),
                                           rule(protocol='udp')])
        self.assertEqual([17], [r.protocol for r in parsed])
        self.assertIn('skipping rule', self.log.output)
        self.assertEqual([], sg_rules.parse_rules(SG, 'nope'))

    def test_members_in_every_shape_neutron_sends(self) -> None:
        expected = {ipaddress.ip_network('10.0.0.5/32'), ipaddress.ip_network('2001:db8::5/128')}
        self.assertEqual(expected, sg_rules.parse_members(SG, ['10.0.0.5', '2001:db8::5']))
        self.assertEqual(expected, sg_rules.parse_members(
            SG, {'IPv4': [['10.0.0.5', MAC]], 'IPv6': [('2001:db8::5', MAC)]}))
        self.assertEqual({ipaddress.ip_network('10.0.0.5/32')},
                         sg_rules.parse_members(SG, ['10.0.0.5', 'x; -j ACCEPT', 7]))
        self.assertEqual(frozenset(), sg_rules.parse_members(SG, 'nope'))


class PortParsingTest(base.TestCase):

    def test_sources_are_fixed_ips_address_pairs_and_link_local(self) -> None:
        parsed = sg_rules.PortFilter.from_dict(port(
            fixed_ips=[{'ip_address': '10.0.0.5'}, '2001:db8::5', {'ip_address': 'bad'},
                       {'ip_address': '10.0.0.0/24'}],
            allowed_address_pairs=[{'ip_address': '10.0.1.0/24'},
                                   {'ip_address': '10.0.2.9', 'mac_address': 'fa:16:3e:00:00:99'},
                                   {'ip_address': '10.0.3.1', 'mac_address': 'zz'}]))
        self.assertEqual(TAP, parsed.device)
        self.assertEqual('8cbd0e17-4', parsed.chain_suffix)
        self.assertEqual([('10.0.0.5/32', MAC), ('2001:db8::5/128', MAC),
                          ('10.0.1.0/24', MAC), ('10.0.2.9/32', 'fa:16:3e:00:00:99'),
                          ('fe80::f816:3eff:fe12:3456/128', MAC)],
                         [(str(n), m) for n, m in parsed.sources])

    def test_details_use_port_id_and_the_tap_is_derived_from_it(self) -> None:
        details = port(device=PORT)
        del details['id']
        details['port_id'] = PORT
        self.assertEqual(TAP, sg_rules.PortFilter.from_dict(details).device)

    def test_unusable_id_raises_unusable_mac_allows_no_source(self) -> None:
        self.assertRaises(exceptions.InvalidIdentifier, sg_rules.PortFilter.from_dict,
                          port(port_id='8CBD0E17-4B44-4B06-A0A4-2EF8E3F0A1B2'))
        parsed = sg_rules.PortFilter.from_dict(port(mac_address='01:00:5e:00:00:01'))
        self.assertIsNone(parsed.mac)
        self.assertEqual((), parsed.sources)

    def test_eui64_link_local(self) -> None:
        self.assertEqual(ipaddress.IPv6Address('fe80::f816:3eff:fe12:3456'),
                         sg_rules.eui64_link_local(MAC))


class FirewallTestCase(base.TestCase):
    """A driver on fake IPv4 and IPv6 kernels."""

    use_ipv6 = True

    def setUp(self) -> None:
        super().setUp()
        self.fakes = {4: FakeIptables(), 6: FakeIptables()}
        self._patch()
        self.fw = ih.IptablesHybridFirewallDriver(self.conf, 'host', use_ipv6=self.use_ipv6)

    def _patch(self) -> None:
        def save(namespace: str | None, version: int, *args: Any) -> tuple[int, str, str]:
            assert namespace is None, 'the firewall lives in the root namespace'
            return self.fakes[version].save(namespace, version, *args)

        def restore(namespace: str | None, version: int, rules: str) -> tuple[int, str, str]:
            return self.fakes[version].restore(namespace, version, rules)

        for name, func in (('save', save), ('restore', restore)):
            patcher = mock.patch.object(im.priv, name, side_effect=func)
            patcher.start()
            self.addCleanup(patcher.stop)

    def restores(self) -> int:
        return sum(len(f.restores) for f in self.fakes.values())

    def chain(self, name: str, version: int = 4) -> list[str]:
        return [line.split(' ', 2)[2] for line in self.fakes[version].lines('filter')
                if line.startswith('-A %s ' % name)]


class DriverTest(FirewallTestCase):

    def test_layout_is_neutrons_and_scoped_to_the_tap(self) -> None:
        self.fw.update_security_group_rules(SG, default_group())
        self.fw.update_security_group_members(SG, ['10.0.0.5', '10.0.0.6'])
        self.fw.prepare_port_filter(port())
        self.assertEqual(['-j neutron-openvswi-FORWARD'], self.chain('FORWARD'))
        self.assertEqual(['-j neutron-openvswi-INPUT'], self.chain('INPUT'))
        forward = self.chain('neutron-openvswi-FORWARD')
        self.assertEqual(2, len(forward))
        for spec, direction in zip(forward, ('out', 'in')):
            self.assertIn('-m physdev --physdev-%s %s --physdev-is-bridged -j '
                          'neutron-openvswi-sg-chain' % (direction, TAP), spec)
        self.assertEqual(
            ['-m physdev --physdev-out %s --physdev-is-bridged -j %s' % (TAP, I_CHAIN),
             '-m physdev --physdev-in %s --physdev-is-bridged -j %s' % (TAP, O_CHAIN),
             '-j ACCEPT'], self.chain('neutron-openvswi-sg-chain'))
        self.assertTrue(self.chain('neutron-openvswi-INPUT')[0].endswith(
            '-m physdev --physdev-in %s -j %s' % (TAP, O_CHAIN)))
        self.assertEqual([
            '-m state --state RELATED,ESTABLISHED -j RETURN',
            '-p udp -m udp --sport 67 --dport 68 -j RETURN',
            '-m state --state INVALID -j DROP',
            '-s 10.0.0.5/32 -j RETURN', '-s 10.0.0.6/32 -j RETURN',
            '-j neutron-openvswi-sg-fallback'], self.chain(I_CHAIN))
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
        # IPv6: neighbour discovery in, router advertisements not out,
        # the link-local address of the MAC allowed as a source.
        self.assertIn('-p ipv6-icmp -m icmp6 --icmpv6-type 136 -j RETURN',
                      self.chain(I_CHAIN, 6))
        self.assertIn('-p ipv6-icmp -m icmp6 --icmpv6-type 134 -j DROP',
                      self.chain(O_CHAIN, 6))
        self.assertEqual('-s fe80::f816:3eff:fe12:3456/128 -m mac --mac-source %s -j RETURN'
                         % MAC, self.chain(S_CHAIN, 6)[0])

    def test_group_without_known_rules_is_closed_and_logged_once(self) -> None:
        self.fw.prepare_port_filter(port())
        self.fw.prepare_port_filter(port(PORT2))
        self.assertEqual(['-m state --state RELATED,ESTABLISHED -j RETURN',
                          '-p udp -m udp --sport 67 --dport 68 -j RETURN',
                          '-m state --state INVALID -j DROP',
                          '-j neutron-openvswi-sg-fallback'], self.chain(I_CHAIN))
        self.assertNotIn('-j RETURN', self.chain(O_CHAIN)[-2])
        self.assertEqual(1, self.log.output.count('No rules known for security group'))

    def test_rules_and_members_changes_reach_the_kernel_only_when_they_matter(self) -> None:
        self.fw.update_security_group_rules(SG, default_group())
        self.fw.prepare_port_filter(port())
        before = self.restores()
        with mock.patch.object(self.fw.iptables, 'reset',
                               side_effect=AssertionError('rendered')):
            self.fw.update_security_group_rules(SG2, [rule(protocol='tcp')])  # unused
            self.fw.update_security_group_members(SG2, ['10.0.0.9'])
            self.fw.prepare_port_filter(port())  # the agent re-wiring an unchanged port
            self.fw.update_security_group_rules(SG, default_group())
        self.assertEqual(before, self.restores())
        self.fw.update_security_group_members(SG, ['10.0.0.9'])
        self.assertEqual(before + 1, self.restores())  # only IPv4 changed
        self.assertIn('-s 10.0.0.9/32 -j RETURN', self.chain(I_CHAIN))

    def test_port_security_off_removes_the_filter_and_accepts(self) -> None:
        self.fw.prepare_port_filter(port())
        self.fw.update_port_filter(port(port_security_enabled=False))
        self.assertEqual([], self.fw.filtered_ports)
        for version in (4, 6):
            self.assertNotIn(I_CHAIN, self.fakes[version].tables['filter'].chains)
            self.assertEqual(
                ['-m comment --comment "Accept all packets when port security is '
                 'disabled." -m physdev --physdev-%s %s --physdev-is-bridged -j ACCEPT'
                 % (d, TAP) for d in ('out', 'in')],
                [r for r in self.chain('neutron-openvswi-FORWARD', version) if TAP in r])
        self.fw.remove_port_filter(PORT)
        self.assertFalse([r for r in self.fakes[4].lines('filter') if TAP in r])

    def test_network_ports_are_accepted_after_every_filtered_port(self) -> None:
        # PORT2 sorts first; its ACCEPT must still come after PORT's jumps,
        # or a VM could send spoofed traffic to the router unchecked.
        self.fw.prepare_port_filter(port(PORT2, device_owner='network:router_interface'))
        self.fw.prepare_port_filter(port(device_owner='compute:nova'))
        forward = self.chain('neutron-openvswi-FORWARD')
        self.assertEqual([TAP, TAP, 'tap' + PORT2[:11], 'tap' + PORT2[:11]],
                         [spec.split('--physdev-')[1].split()[1] for spec in forward])
        self.assertTrue(forward[-1].endswith('-j ACCEPT'))
        self.assertIn('Accept all packets when port is trusted.', forward[-1])
        self.assertEqual([PORT], self.fw.filtered_ports)
        self.assertNotIn('neutron-openvswi-i' + PORT2[:10],
                         self.fakes[4].tables['filter'].chains)

    def test_remove_port_filter_by_id_or_tap_and_is_idempotent(self) -> None:
        self.fw.prepare_port_filter(port())
        self.fw.prepare_port_filter(port(PORT2))
        self.fw.remove_port_filter(TAP)
        self.assertEqual([PORT2], self.fw.filtered_ports)
        for version in (4, 6):
            text = self.fakes[version].render()
            self.assertNotIn('8cbd0e17-4', text)
            self.assertIn(PORT2[:10], text)
        before = self.restores()
        self.fw.remove_port_filter(PORT)
        self.assertEqual(before, self.restores())

    def test_defer_apply_and_security_group_info_batch_into_one_apply(self) -> None:
        with self.fw.defer_apply():
            self.fw.prepare_port_filter(port())
            self.fw.prepare_port_filter(port(PORT2, security_groups=[SG, SG2]))
            self.fw.update_security_group_info({
                'security_groups': {SG: default_group(), SG2: [rule(protocol='icmp')]},
                'sg_member_ips': {SG: {'IPv4': [['10.0.0.5', MAC]], 'IPv6': []}},
                'devices': {PORT: {}}})
            self.assertEqual(0, self.restores())
        self.assertEqual(2, self.restores())  # one per IP version
        p2_ingress = self.chain('neutron-openvswi-i' + PORT2[:10])
        self.assertIn('-s 10.0.0.5/32 -j RETURN', p2_ingress)
        self.assertIn('-p icmp -j RETURN', p2_ingress)

    def test_remove_all_leaves_foreign_rules_alone(self) -> None:
        self.fakes[4] = FakeIptables(
            '*filter\n:FORWARD ACCEPT [0:0]\n:DOCKER - [0:0]\n-A FORWARD -j DOCKER\n'
            '-A FORWARD -o br0 -j ACCEPT\nCOMMIT\n')
        self.fw.prepare_port_filter(port())
        self.assertEqual(['-j neutron-openvswi-FORWARD', '-j DOCKER', '-o br0 -j ACCEPT'],
                         self.chain('FORWARD'))
        self.fw.remove_all()
        for version in (4, 6):
            text = self.fakes[version].render()
            self.assertNotIn('neutron-openvswi', text)
        self.assertEqual(['-j DOCKER', '-o br0 -j ACCEPT'], self.chain('FORWARD'))
        self.assertEqual([], self.fw.filtered_ports)

    def test_failed_restore_raises_and_the_retry_applies(self) -> None:
        self.fakes[4].fail_restore = True
        self.assertRaises(im.IptablesError, self.fw.prepare_port_filter, port())
        self.fakes[4].fail_restore = False
        # The agent retries the same port: equal to the cache, yet applied.
        self.fw.prepare_port_filter(port())
        self.assertIn(I_CHAIN, self.fakes[4].tables['filter'].chains)

    def test_bad_group_ids_and_payloads_are_refused(self) -> None:
        self.assertRaises(exceptions.InvalidIdentifier,
                          self.fw.update_security_group_rules, 'x; -F', [])
        self.assertRaises(exceptions.InvalidIdentifier,
                          self.fw.update_security_group_members, '../x', [])
        for bad in (None, [], {'security_groups': []}, {'security_groups': {}}):
            self.assertRaises(exceptions.InvalidPayload,
                              self.fw.update_security_group_info, bad)
        # One bad id in a reply does not cost the good groups their update.
        self.fw.prepare_port_filter(port())
        self.fw.update_security_group_info({
            'security_groups': {'bad id': [], SG: [rule(protocol='icmp')]},
            'sg_member_ips': {}})
        self.assertIn('-p icmp -j RETURN', self.chain(I_CHAIN))
        self.assertIn("invalid id 'bad id'", self.log.output)

    def test_rules_per_port(self) -> None:
        """The figure quoted in the design notes: rules one default-group port adds."""
        self.fw.update_security_group_rules(SG, default_group())
        self.fw.update_security_group_members(SG, {'IPv4': ['10.0.0.5'], 'IPv6': []})
        self.fw.prepare_port_filter(port())
        self.fw.remove_port_filter(PORT)
        empty = sum(len(self.fakes[v].lines('filter')) for v in (4, 6))
        self.assertEqual(2 * 5, empty)  # 3 builtin jumps, sg-chain ACCEPT, fallback DROP
        self.fw.prepare_port_filter(port())
        per_port = sum(len(self.fakes[v].lines('filter')) for v in (4, 6)) - empty
        # IPv4: 5 jumps + ingress 5 (one member) + egress 8 + spoofing 2;
        # IPv6: 5 jumps + ingress 8 (ND, DHCPv6) + egress 12 + spoofing 2.
        self.assertEqual(20 + 27, per_port)


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
                mock.patch.object(ih.ip_lib, 'set_sysctl') as set_sysctl:
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
