"""agentkit.api.l3: a sync_routers entry validated once, into frozen types.

Each refusal, and what a bad part leaves behind for the driver (ids of
ports whose devices it keeps, floating IPs it reports ERROR). The entries
start from the shape neutron 29 sends (tests/fixtures/neutron29/).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from agentkit import exceptions
from agentkit.api import l3
from tests import base

ROUTER_ID = 'b7dde512-1b73-4b3d-bbf1-35380657d253'
NET = '7e2406d6-a34a-4a47-b52a-c780dad5bee6'
EXT_NET = '048fed21-5368-44b6-8ea7-342f13819932'
PORT = '6f6af7d9-620e-480a-97e7-6331bbd35d3a'
GW = '517f485b-3437-4467-b435-6017762daaeb'
FIP = '0937eca6-41fc-4abe-967f-97d2130b863f'
OTHER = 'abcdef01-2345-4678-9abc-def012345678'
SUBNET = '6a5bf06b-075c-4dc8-b64d-f8baf028ca22'
EXT_SUBNET = '26672171-03e5-4811-93d9-2062143619b6'


def port(port_id: str = PORT, network_id: str = NET, ip: str = '10.108.161.1',
         subnet_id: str = SUBNET, cidr: str = '10.108.161.0/24',
         gateway_ip: str | None = '10.108.161.1', **attrs: Any) -> dict[str, Any]:
    return {'id': port_id, 'network_id': network_id, 'mac_address': 'fa:16:3e:29:3a:6c',
            'mtu': 1450, 'device_owner': 'network:router_interface',
            'fixed_ips': [{'subnet_id': subnet_id, 'ip_address': ip, 'prefixlen': 24}],
            'subnets': [{'id': subnet_id, 'cidr': cidr, 'gateway_ip': gateway_ip,
                         'dns_nameservers': [], 'ipv6_ra_mode': None,
                         'subnetpool_id': None}],
            'extra_subnets': [], **attrs}


def entry(**attrs: Any) -> dict[str, Any]:
    return {
        'id': ROUTER_ID, 'admin_state_up': True, 'enable_snat': True, 'ha': False,
        'distributed': False,
        'routes': [{'destination': '192.0.2.0/24', 'nexthop': '10.108.161.254'}],
        '_interfaces': [port()],
        'gw_port': port(GW, EXT_NET, '198.18.145.23', EXT_SUBNET, '198.18.145.0/24',
                        '198.18.145.1', mtu=1500),
        '_floatingips': [{'id': FIP, 'floating_ip_address': '198.18.145.170',
                          'fixed_ip_address': '10.108.161.248', 'status': 'DOWN',
                          'port_id': '47408d11-9c2b-4c97-8640-55589fafb696',
                          'router_id': ROUTER_ID, 'floating_network_id': EXT_NET}],
        **attrs}


class RouterTest(base.TestCase):

    def test_good_entry(self) -> None:
        router = l3.Router.from_rpc(entry())
        self.assertEqual(ROUTER_ID, router.id)
        self.assertTrue(router.admin_state_up and router.enable_snat)
        self.assertFalse(router.ha or router.distributed)
        self.assertEqual((l3.RouterPort(
            PORT, NET, 'fa:16:3e:29:3a:6c', ('10.108.161.1/24',), ('10.108.161.1',), 1450,
            (l3.Subnet(SUBNET, '10.108.161.0/24', '10.108.161.1'),)),), router.interfaces)
        self.assertEqual('198.18.145.23', router.gateway.ipv4_address)
        self.assertEqual(('198.18.145.1',), router.gateway.gateways)
        self.assertEqual((l3.FloatingIP(FIP, '198.18.145.170', '10.108.161.248', 'DOWN',
                                        '47408d11-9c2b-4c97-8640-55589fafb696'),),
                         router.floating_ips)
        self.assertEqual((l3.Route('192.0.2.0/24', '10.108.161.254'),), router.routes)
        self.assertEqual(frozenset({NET, EXT_NET}), router.network_ids)
        self.assertTrue(router.has_gateway)
        self.assertFalse(router.gateway_unusable)
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, router, 'id', OTHER)

    def test_flags_as_neutron_means_them(self) -> None:
        router = l3.Router.from_rpc(entry(admin_state_up=False, enable_snat=False, ha=True,
                                          distributed=True))
        self.assertEqual((False, False, True, True), (router.admin_state_up,
                                                      router.enable_snat, router.ha,
                                                      router.distributed))
        # Absent keys: Neutron's defaults.
        bare = l3.Router.from_rpc({'id': ROUTER_ID})
        self.assertEqual((True, True, False, False, None, False),
                         (bare.admin_state_up, bare.enable_snat, bare.ha, bare.distributed,
                          bare.gateway, bare.has_gateway))

    def test_unusable_entries_are_refused_as_a_whole(self) -> None:
        for bad, why in (('junk', 'not a dict'),
                         (entry(id='../../etc'), 'invalid router id'),
                         (entry(id=None), 'invalid router id'),
                         (entry(_interfaces='junk'), '_interfaces must be a list'),
                         (entry(_floatingips={'id': FIP}), '_floatingips must be a list'),
                         (entry(routes='10.0.0.0/8'), 'routes must be a list')):
            err = self.assertRaises(ValueError, l3.Router.from_rpc, bad)
            self.assertIsInstance(err, (exceptions.InvalidPayload,
                                        exceptions.InvalidIdentifier))
            self.assertIn(why, str(err))

    def test_bad_interfaces_are_left_out_and_their_ids_kept(self) -> None:
        bad = [port(OTHER, ip='10.9.9.9'),  # outside its subnet
               dict(port(OTHER.replace('a', 'b')), mac_address='zz'),
               dict(port(OTHER.replace('a', 'c')), mtu=-1),
               dict(port(OTHER.replace('a', 'd')), fixed_ips=[]),
               port(OTHER.replace('a', 'e'), cidr='nonsense'),
               dict(port('NOT-A-UUID')), 'junk']
        router = l3.Router.from_rpc(entry(_interfaces=[port()] + bad))
        self.assertEqual([PORT], [p.id for p in router.interfaces])
        self.assertEqual({OTHER, OTHER.replace('a', 'b'), OTHER.replace('a', 'c'),
                          OTHER.replace('a', 'd'), OTHER.replace('a', 'e')},
                         set(router.unusable_interface_ids))
        for message in ('is not in its subnet', 'has no fixed IPs', 'invalid subnet cidr'):
            self.assertIn(message, self.log.output)

    def test_prefix_from_prefixlen_without_subnet_and_unused_bad_subnet(self) -> None:
        raw = port()
        raw['subnets'] = [{'id': 'other', 'cidr': 'nonsense'}]
        parsed = l3.RouterPort.from_rpc(raw)
        self.assertEqual(('10.108.161.1/24',), parsed.cidrs)
        self.assertEqual((), parsed.gateways)
        self.assertEqual((), parsed.subnets)
        raw['fixed_ips'][0]['prefixlen'] = 33
        self.assertRaises(exceptions.InvalidPayload, l3.RouterPort.from_rpc, raw)

    def test_bad_gateway_is_remembered(self) -> None:
        gw = entry()['gw_port']
        gw['fixed_ips'][0]['ip_address'] = 'nonsense'
        router = l3.Router.from_rpc(entry(gw_port=gw))
        self.assertIsNone(router.gateway)
        self.assertTrue(router.gateway_unusable and router.has_gateway)
        self.assertEqual(GW, router.unusable_gateway_id)
        self.assertIn(EXT_NET, router.network_ids)  # still refreshed by its network
        self.assertIn('ignoring the external gateway', self.log.output)

    def test_bad_floating_ips_are_left_out_with_their_status(self) -> None:
        good = entry()['_floatingips'][0]
        v6 = dict(good, id=OTHER, floating_ip_address='fd00::5', status='ACTIVE')
        dup = dict(good, id=OTHER.replace('a', 'b'), fixed_ip_address='10.108.161.99')
        bad = dict(good, id=OTHER.replace('a', 'c'), fixed_ip_address='10.108.161.999',
                   status=None)
        fips = [good, v6, dup, bad, dict(good, id=None), 7]
        router = l3.Router.from_rpc(entry(_floatingips=fips))
        self.assertEqual([FIP], [f.id for f in router.floating_ips])
        self.assertEqual({OTHER: 'ACTIVE', OTHER.replace('a', 'b'): 'DOWN',
                          OTHER.replace('a', 'c'): None}, router.unusable_floating_ips)
        self.assertIn('is not IPv4', self.log.output)
        self.assertIn('duplicates another floating IP', self.log.output)

    def test_floating_ips_in_address_order(self) -> None:
        first = entry()['_floatingips'][0]
        second = dict(first, id=OTHER, floating_ip_address='198.18.145.9',
                      fixed_ip_address='10.108.161.9')
        router = l3.Router.from_rpc(entry(_floatingips=[first, second]))
        self.assertEqual(['198.18.145.9', '198.18.145.170'],
                         [f.floating_ip for f in router.floating_ips])

    def test_bad_routes_are_skipped_and_duplicates_dropped(self) -> None:
        routes = [{'destination': '10.50.0.0/24', 'nexthop': '192.168.10.7'},
                  {'destination': '10.50.0.0/24', 'nexthop': '192.168.10.7'},
                  {'destination': '10.50.0.1/24', 'nexthop': '192.168.10.7'},  # host bits
                  {'destination': '10.60.0.0/24', 'nexthop': 'fd00::1'},
                  'garbage']
        router = l3.Router.from_rpc(entry(routes=routes))
        self.assertEqual((l3.Route('10.50.0.0/24', '192.168.10.7'),), router.routes)
        self.assertIn('mixes IP versions', self.log.output)

    def test_ipv6_subnets_keep_their_ra_mode_and_dns_servers(self) -> None:
        raw = copy.deepcopy(entry())['_interfaces'][0]
        raw['fixed_ips'].append({'subnet_id': 'v6', 'ip_address': 'fd00:10::1'})
        raw['subnets'].append({'id': 'v6', 'cidr': 'fd00:10::/64', 'gateway_ip': 'fd00:10::1',
                               'ipv6_ra_mode': 'slaac',
                               'dns_nameservers': ['fd00:53::1', 7]})
        parsed = l3.RouterPort.from_rpc(raw)
        self.assertEqual(('10.108.161.1/24', 'fd00:10::1/64'), parsed.cidrs)
        self.assertEqual(('10.108.161.1', 'fd00:10::1'), parsed.gateways)
        self.assertEqual(l3.Subnet('v6', 'fd00:10::/64', 'fd00:10::1', 'slaac',
                                   ('fd00:53::1',)), parsed.subnets[1])
