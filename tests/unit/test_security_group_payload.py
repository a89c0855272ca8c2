"""Security-group payloads: the server's shapes parsed once into agentkit.api types.

Rules and members are written the way neutron 29 sends them in
``security_group_info_for_devices`` (``source_ip_prefix``/``dest_ip_prefix``,
``stateful`` on every rule, members as ``[ip, mac]``); the captured replies
in ``tests/fixtures/neutron29/`` are parsed as they are.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from agentkit import exceptions
from agentkit.api import security_group as sg
from tests import base

SG = '5a1f0000-0000-4000-8000-000000000001'
AG = '5a1f0000-0000-4000-8000-0000000000a9'
PORT = '8cbd0e17-4b44-4b06-a0a4-2ef8e3f0a1b2'
NET = '0e7c0000-0000-4000-8000-000000000001'
MAC = 'fa:16:3e:12:34:56'
TAP = 'tap8cbd0e17-4b'


def rule(**kwargs: Any) -> dict[str, Any]:
    values: dict[str, Any] = {'direction': 'ingress', 'ethertype': 'IPv4'}
    values.update(kwargs)
    return values


def parse(**kwargs: Any) -> sg.SecurityGroupRule:
    return sg.SecurityGroupRule.from_rpc(rule(**kwargs))


def port(**kwargs: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        'id': PORT, 'device': PORT, 'network_id': NET, 'mac_address': MAC,
        'fixed_ips': ['10.0.0.5'], 'security_groups': [SG],
        'port_security_enabled': True, 'allowed_address_pairs': [],
        'device_owner': 'compute:nova'}
    values.update(kwargs)
    return values


class RuleTest(base.TestCase):

    def test_the_servers_prefix_keys_by_direction(self) -> None:
        self.assertEqual(ipaddress.ip_network('10.0.0.0/8'),
                         parse(source_ip_prefix='10.1.2.3/8').remote_prefix)
        self.assertEqual(ipaddress.ip_network('192.0.2.7/32'),
                         parse(direction='egress', dest_ip_prefix='192.0.2.7').remote_prefix)
        # The API's name is accepted too; "everyone" is no prefix at all.
        self.assertEqual(ipaddress.ip_network('10.0.0.0/8'),
                         parse(remote_ip_prefix='10.0.0.0/8').remote_prefix)
        self.assertIsNone(parse(source_ip_prefix='0.0.0.0/0').remote_prefix)
        # An egress rule restricts the destination: a source key is not its prefix.
        self.assertIsNone(parse(direction='egress', source_ip_prefix='10.0.0.0/8').remote_prefix)

    def test_protocols_ports_and_icmp(self) -> None:
        self.assertEqual((6, 22, 22), (lambda r: (r.protocol, r.port_min, r.port_max))(
            parse(protocol='tcp', port_range_min=22, port_range_max=22)))
        self.assertEqual((6, 80, 80), (lambda r: (r.protocol, r.port_min, r.port_max))(
            parse(protocol='6', port_range_min='80')))
        self.assertEqual(132, parse(protocol='132').protocol)
        self.assertIsNone(parse(protocol='any').protocol)
        icmp = parse(protocol='icmp', port_range_min=8, port_range_max=0)
        self.assertEqual((1, 8, 0), (icmp.protocol, icmp.port_min, icmp.port_max))
        self.assertEqual(58, parse(ethertype='IPv6', protocol='icmp').protocol)

    def test_remote_groups_and_address_groups(self) -> None:
        self.assertEqual(SG, parse(remote_group_id=SG).remote_id)
        by_ag = parse(remote_address_group_id=AG)
        self.assertEqual((None, AG, AG),
                         (by_ag.remote_group_id, by_ag.remote_address_group_id, by_ag.remote_id))

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
            rule(source_ip_prefix='10.0.0.0/8 -j ACCEPT'),       # would widen the rule
            rule(source_ip_prefix='2001:db8::/32'),              # IPv6 prefix, IPv4 rule
            rule(remote_group_id='../../etc'),
            rule(remote_address_group_id='x; -j ACCEPT'),
            rule(remote_group_id=SG, source_ip_prefix='10.0.0.0/8'),
            rule(remote_group_id=SG, remote_address_group_id=AG),
            'not a dict',
        ]
        for value in bad:
            self.assertRaises(sg.InvalidRule, sg.SecurityGroupRule.from_rpc, value)


class GroupTest(base.TestCase):

    def test_usable_rules_kept_unusable_logged_and_stateful_flag_read(self) -> None:
        group = sg.SecurityGroup.from_rpc(SG, [
            rule(protocol='tcp', port_range_min=-1, stateful=False),
            rule(protocol='udp', stateful=False), rule(protocol='udp', stateful=False)])
        self.assertEqual([17], [r.protocol for r in group.rules])  # duplicates folded
        self.assertFalse(group.stateful)
        self.assertIn('skipping rule', self.log.output)
        self.assertTrue(sg.SecurityGroup.from_rpc(SG, [rule(stateful=True)]).stateful)
        # A group without rules (the server sends []) is stateful and closed.
        self.assertEqual((), sg.SecurityGroup.from_rpc(SG, []).rules)
        self.assertEqual((), sg.SecurityGroup.from_rpc(SG, 'nope').rules)
        self.assertRaises(exceptions.InvalidIdentifier, sg.SecurityGroup.from_rpc, '../x', [])

    def test_members_in_every_shape_neutron_sends(self) -> None:
        expected = {ipaddress.ip_network('10.0.0.5/32'), ipaddress.ip_network('2001:db8::5/128'),
                    ipaddress.ip_network('10.1.0.0/28')}
        self.assertEqual(expected, sg.parse_members(SG, {
            'IPv4': [['10.0.0.5', None], ['10.1.0.0/28', MAC]],
            'IPv6': [['2001:db8::5', None]]}))
        # The 1.2 shape (plain strings), and a flat list.
        self.assertEqual(expected, sg.parse_members(
            SG, {'IPv4': ['10.0.0.5', '10.1.0.0/28'], 'IPv6': ['2001:db8::5']}))
        self.assertEqual(expected, sg.parse_members(
            SG, ['10.0.0.5', '10.1.0.0/28', '2001:db8::5']))
        self.assertEqual({ipaddress.ip_network('10.0.0.5/32')},
                         sg.parse_members(SG, {'IPv4': [['10.0.0.5', None], 'x; -j ACCEPT', 7],
                                               'IPX': ['10.9.9.9']}))
        self.assertEqual(frozenset(), sg.parse_members(SG, 'nope'))


class PortFilterTest(base.TestCase):

    def test_sources_are_fixed_ips_address_pairs_and_link_local(self) -> None:
        parsed = sg.PortFilter.from_rpc(port(
            fixed_ips=['10.0.0.5', {'ip_address': '2001:db8::5'}, 'bad'],
            allowed_address_pairs=[{'ip_address': '10.0.1.0/24', 'mac_address': MAC},
                                   {'ip_address': '10.0.2.9', 'mac_address': 'fa:16:3e:00:00:99'},
                                   {'ip_address': '10.0.3.1', 'mac_address': 'zz'}]),
            bridge='qbr8cbd0e17-4b')
        self.assertEqual((TAP, NET, 'qbr8cbd0e17-4b'),
                         (parsed.device, parsed.network_id, parsed.bridge))
        self.assertEqual([('10.0.0.5/32', MAC), ('2001:db8::5/128', MAC),
                          ('10.0.1.0/24', MAC), ('10.0.2.9/32', 'fa:16:3e:00:00:99'),
                          ('fe80::f816:3eff:fe12:3456/128', MAC)],
                         [(str(n), m) for n, m in parsed.sources])
        self.assertTrue(parsed.filtered)

    def test_trusted_and_unprotected_ports_are_not_filtered(self) -> None:
        self.assertFalse(sg.PortFilter.from_rpc(port(device_owner='network:dhcp')).filtered)
        self.assertFalse(sg.PortFilter.from_rpc(port(port_security_enabled=False)).filtered)
        # Details carry port_id, not id.
        details = port(port_id=PORT)
        del details['id']
        self.assertEqual(PORT, sg.PortFilter.from_rpc(details).port_id)

    def test_unusable_ids_raise_unusable_mac_allows_no_source(self) -> None:
        self.assertRaises(exceptions.InvalidIdentifier, sg.PortFilter.from_rpc,
                          port(id='8CBD0E17-4B44-4B06-A0A4-2EF8E3F0A1B2'))
        self.assertRaises(exceptions.InvalidIdentifier, sg.PortFilter.from_rpc,
                          port(network_id='../net'))
        self.assertRaises(exceptions.InvalidPayload, sg.PortFilter.from_rpc, ['x'])
        parsed = sg.PortFilter.from_rpc(port(mac_address='01:00:5e:00:00:01',
                                             security_groups=[SG, 'bad', SG]))
        self.assertIsNone(parsed.mac)
        self.assertEqual((), parsed.sources)
        self.assertEqual((SG,), parsed.security_groups)

    def test_eui64_link_local(self) -> None:
        self.assertEqual(ipaddress.IPv6Address('fe80::f816:3eff:fe12:3456'),
                         sg.eui64_link_local(MAC))


class InfoTest(base.TestCase):

    def test_reply_is_parsed_and_bad_parts_skipped(self) -> None:
        info, devices = sg.SecurityGroupInfo.from_rpc({
            'devices': {PORT: port(), 'bad': port()},
            'security_groups': {SG: [rule(remote_group_id=SG, stateful=True)],
                                '../x': []},
            'sg_member_ips': {SG: {'IPv4': [['10.0.0.5', None]]},
                              AG: {'IPv4': [['192.0.2.0/28', None]]}}})
        self.assertEqual([PORT], list(devices))
        self.assertEqual([SG], list(info.groups))
        self.assertEqual({SG, AG}, set(info.members))
        self.assertEqual({SG}, info.remote_ids([SG, 'unknown']))

    def test_a_reply_not_shaped_like_the_servers_is_refused(self) -> None:
        for bad in (None, [], {'security_groups': {}}, {'security_groups': [],
                                                        'sg_member_ips': {}}):
            self.assertRaises(exceptions.InvalidPayload, sg.SecurityGroupInfo.from_rpc, bad)
