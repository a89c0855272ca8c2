"""NamespaceRouterDriver against an in-memory host.

``FakeHost`` stands in for ip_lib (namespaces, links, addresses, routes,
sysctls) and the interface driver; iptables is the simulator from
test_iptables_manager. The router dicts follow the ``sync_routers`` reply
recorded from Neutron 29 (neutron-observed/wire-samples.jsonl), and the
expected NAT rules are that run's ``iptables-save`` of the qrouter
namespace, so rendering is checked against what Neutron really produced.
"""

from __future__ import annotations

import copy
import os
import ipaddress
from typing import Any
from unittest import mock

import fixtures
from oslo_config import cfg

from agentkit.api import interface as interface_api
from agentkit.api import l3 as l3_api
from agentkit.conf import common as common_conf
from agentkit.conf import l3 as l3_conf
from agentkit.lib import ip_lib
from agentkit.lib import iptables_manager
from drivers.l3 import namespace as l3ns
from tests import base
from tests.unit.test_iptables_manager import FakeIptables

ROUTER_ID = '083c141f-408c-4691-aa72-a1c831175723'
NS = 'qrouter-' + ROUTER_ID
INT_PORT = '5f2022b4-0201-4daa-a098-b8ea6f9514cd'
GW_PORT = '168e667f-2c3e-4b0a-9d6e-1f3a2b4c5d6e'
FIP_ID = '2a9e3b4c-5d6e-4f70-8192-a3b4c5d6e7f8'
QR = 'qr-5f2022b4-02'
QG = 'qg-168e667f-2c'

# nat table of the reference qrouter (neutron-observed/qrouter-iptables-save.txt).
REFERENCE_NAT = {
    '-A PREROUTING -j neutron-l3-agent-PREROUTING',
    '-A OUTPUT -j neutron-l3-agent-OUTPUT',
    '-A POSTROUTING -j neutron-l3-agent-POSTROUTING',
    '-A POSTROUTING -j neutron-postrouting-bottom',
    '-A neutron-l3-agent-OUTPUT -d 172.24.4.43/32 -j DNAT --to-destination 192.168.10.207',
    '-A neutron-l3-agent-POSTROUTING ! -o qg-168e667f-2c -m conntrack ! --ctstate DNAT '
    '-j ACCEPT',
    '-A neutron-l3-agent-PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 '
    '-j REDIRECT --to-ports 9697',
    '-A neutron-l3-agent-PREROUTING -d 172.24.4.43/32 -j DNAT --to-destination 192.168.10.207',
    '-A neutron-l3-agent-float-snat -s 192.168.10.207/32 -j SNAT --to-source 172.24.4.43 '
    '--random-fully',
    '-A neutron-l3-agent-snat -j neutron-l3-agent-float-snat',
    '-A neutron-l3-agent-snat -o qg-168e667f-2c -j SNAT --to-source 172.24.4.81 '
    '--random-fully',
    '-A neutron-l3-agent-snat -m mark ! --mark 0x2/0xffff -m conntrack --ctstate DNAT '
    '-j SNAT --to-source 172.24.4.81 --random-fully',
    '-A neutron-postrouting-bottom -m comment --comment "Perform source NAT on outgoing '
    'traffic." -j neutron-l3-agent-snat',
}
# The rest of the reference that a router without address scopes needs.
REFERENCE_MANGLE = {
    '-A neutron-l3-agent-PREROUTING -j neutron-l3-agent-mark',
    '-A neutron-l3-agent-PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 '
    '-j MARK --set-xmark 0x1/0xffff',
    '-A neutron-l3-agent-mark -i qg-168e667f-2c -j MARK --set-xmark 0x2/0xffff',
}
REFERENCE_FILTER = {
    '-A neutron-l3-agent-INPUT -m mark --mark 0x1/0xffff -j ACCEPT',
    '-A neutron-l3-agent-INPUT -p tcp -m tcp --dport 9697 -j DROP',
}


def reference_router(fip: bool = True) -> dict[str, Any]:
    """The reference router: one interface, a gateway, one floating IP."""
    router = {
        'id': ROUTER_ID, 'name': 'nq-router', 'admin_state_up': True, 'status': 'ACTIVE',
        'enable_snat': True, 'routes': [], 'distributed': False, 'ha': False,
        'gw_port_id': GW_PORT,
        '_interfaces': [{
            'id': INT_PORT, 'network_id': 'bd7193ec-9fb6-4ad4-bdd2-4282a7195a69',
            'mac_address': 'fa:16:3e:3d:a8:1c', 'admin_state_up': True,
            'device_owner': 'network:router_interface',
            'fixed_ips': [{'subnet_id': '548da180-0348-443b-b446-4d6a969f9288',
                           'ip_address': '192.168.10.1', 'prefixlen': 24}],
            'subnets': [{'id': '548da180-0348-443b-b446-4d6a969f9288',
                         'cidr': '192.168.10.0/24', 'gateway_ip': '192.168.10.1',
                         'dns_nameservers': [], 'ipv6_ra_mode': None,
                         'subnetpool_id': None}],
            'extra_subnets': [], 'address_scopes': {'4': None, '6': None}, 'mtu': 1450}],
        'gw_port': {
            'id': GW_PORT, 'network_id': 'c2d3e4f5-0617-4829-8a3b-4c5d6e7f8091',
            'mac_address': 'fa:16:3e:20:02:c8', 'device_owner': 'network:router_gateway',
            'fixed_ips': [{'subnet_id': 'd3e4f506-1728-493a-8b4c-5d6e7f809102',
                           'ip_address': '172.24.4.81', 'prefixlen': 24}],
            'subnets': [{'id': 'd3e4f506-1728-493a-8b4c-5d6e7f809102',
                         'cidr': '172.24.4.0/24', 'gateway_ip': '172.24.4.1'}],
            'extra_subnets': [], 'mtu': 1500},
        'external_gateway_info': {
            'network_id': 'c2d3e4f5-0617-4829-8a3b-4c5d6e7f8091', 'enable_snat': True,
            'external_fixed_ips': [{'subnet_id': 'd3e4f506-1728-493a-8b4c-5d6e7f809102',
                                    'ip_address': '172.24.4.81'}]},
        '_floatingips': [],
    }
    if fip:
        router['_floatingips'].append({
            'id': FIP_ID, 'floating_ip_address': '172.24.4.43',
            'fixed_ip_address': '192.168.10.207', 'status': 'DOWN',
            'port_id': 'e1f20314-2536-4748-9a0b-1c2d3e4f5061', 'router_id': ROUTER_ID,
            'floating_network_id': 'c2d3e4f5-0617-4829-8a3b-4c5d6e7f8091'})
    return router


def typed(router: dict[str, Any]) -> l3_api.Router:
    """What the agent hands the driver: the entry validated at the edge."""
    return l3_api.Router.from_rpc(router)


class FakeHost(interface_api.InterfaceDriver):
    """ip_lib + interface driver over dicts, recording what changes."""

    def __init__(self) -> None:
        super().__init__(None, 'host')  # type: ignore[arg-type]
        self.namespaces: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.fail_plug: set[str] = set()
        self.fail_conntrack = False
        # Devices the switch re-created elsewhere (remove_stale_devices).
        self.recreated: set[str] = set()
        self.stale_queries: list[list[str]] = []  # reads: not in calls

    def ns(self, name: str) -> dict[str, Any]:
        if name not in self.namespaces:
            raise ip_lib.NetworkNamespaceNotFound(name)
        return self.namespaces[name]

    # -- ip_lib ----------------------------------------------------------------
    def create_namespace(self, name: str) -> bool:
        if name in self.namespaces:
            return False
        self.calls.append(('create_namespace', name))
        self.namespaces[name] = {'links': {'lo': {'name': 'lo', 'address': None,
                                                  'mtu': 65536, 'state': 'up'}},
                                 'addrs': {}, 'routes': [], 'sysctls': {}}
        return True

    def delete_namespace(self, name: str) -> bool:
        self.calls.append(('delete_namespace', name))
        return self.namespaces.pop(name, None) is not None

    def list_namespaces(self) -> list[str]:
        return list(self.namespaces)

    def namespace_exists(self, name: str) -> bool:
        return name in self.namespaces

    def list_addresses(self, namespace: str) -> list[dict[str, Any]]:
        return [{'device': device, 'cidr': cidr, 'scope': 'global'}
                for device, cidrs in self.ns(namespace)['addrs'].items() for cidr in cidrs]

    def list_links(self, namespace: str) -> list[dict[str, Any]]:
        return [dict(link) for link in self.ns(namespace)['links'].values()]

    def set_sysctl(self, key: Any, value: Any, namespace: str) -> None:
        key = key if isinstance(key, str) else '.'.join(key)
        self.calls.append(('set_sysctl', key, value))
        self.ns(namespace)['sysctls'][key] = str(value)

    def get_sysctl(self, key: Any, namespace: str) -> str:
        key = key if isinstance(key, str) else '.'.join(key)
        return self.ns(namespace)['sysctls'].get(key, 'kernel default')

    def get_sysctls(self, keys: Any, namespace: str) -> list[str]:
        return [self.get_sysctl(k, namespace) for k in keys]

    def announce(self, device: str, address: str, namespace: str, count: int) -> None:
        self.calls.append(('announce', device, address, count))

    def delete_flows(self, filters: Any, namespace: str) -> int:
        self.calls.append(('delete_flows', namespace, sorted(
            (str(f.orig_dst), str(f.reply_dst)) for f in filters)))
        if self.fail_conntrack:
            raise RuntimeError('conntrack failed')
        return 1

    def list_routes(self, namespace: str, ip_version: int | None = None
                    ) -> list[dict[str, Any]]:
        # A connected route (no gateway) that the driver must leave alone.
        routes = [{'dst': '192.168.10.0/24', 'gateway': None, 'device': QR, 'metric': 0}]
        return routes + [dict(r) for r in self.ns(namespace)['routes']] + [
            dict(r) for r in self.ns(namespace).get('learned', [])]

    def add_route(self, dst: str, namespace: str, gateway: str | None = None,
                  device: str | None = None, onlink: bool = False) -> bool:
        self.calls.append(('add_route', dst, gateway, device))
        if dst == 'default':
            dst = '0.0.0.0/0' if ipaddress.ip_address(gateway).version == 4 else '::/0'
        routes = self.ns(namespace)['routes']
        routes[:] = [r for r in routes if r['dst'] != dst]
        routes.append({'dst': dst, 'gateway': gateway, 'device': device, 'metric': 0})
        return True

    def delete_route(self, dst: str, namespace: str, gateway: str | None = None,
                     device: str | None = None, metric: int | None = None) -> bool:
        self.calls.append(('delete_route', dst, gateway))
        routes = self.ns(namespace)['routes']
        routes[:] = [r for r in routes if (r['dst'], r['gateway']) != (dst, gateway)]
        return True

    def IPDevice(self, name: str, namespace: str) -> Any:  # noqa: N802 - mirrors ip_lib
        host = self
        device = mock.Mock()
        device.addr.list.side_effect = lambda scope=None: [
            {'cidr': c} for c in sorted(host.ns(namespace)['addrs'].get(name, ()))]
        return device

    # -- interface driver ------------------------------------------------------
    def get_device_name(self, port_id: str) -> str:
        return 'tap' + port_id[:11]

    def plug(self, network_id: str, port_id: str, device_name: str,
             mac_address: str, namespace: str, mtu: int | None = None,
             bridge: str | None = None) -> None:
        self.calls.append(('plug', device_name, network_id, mac_address, mtu, bridge))
        if port_id in self.fail_plug:
            raise RuntimeError('plug failed')
        self.ns(namespace)['links'][device_name] = {
            'name': device_name, 'address': mac_address, 'mtu': mtu or 1500, 'state': 'up'}

    def remove_stale_devices(self, namespace: str, device_names: Any) -> set[str]:
        self.stale_queries.append(sorted(device_names))
        stale = self.recreated & set(device_names)
        ns = self.ns(namespace)
        for name in stale:  # the device goes, and all it held with it
            ns['links'].pop(name)
            ns['addrs'].pop(name, None)
            ns['routes'][:] = [r for r in ns['routes'] if r['device'] != name]
        self.recreated -= stale
        return stale

    def unplug(self, device_name: str, namespace: str, bridge: str | None = None) -> None:
        self.calls.append(('unplug', device_name))
        ns = self.namespaces.get(namespace)
        if ns is not None:
            ns['links'].pop(device_name, None)
            ns['addrs'].pop(device_name, None)
            ns['routes'][:] = [r for r in ns['routes'] if r['device'] != device_name]

    def set_addresses(self, device_name: str, namespace: str, cidrs: list[str]) -> None:
        self.calls.append(('set_addresses', device_name, sorted(cidrs)))
        self.ns(namespace)['addrs'][device_name] = set(cidrs)

    # -- helpers ---------------------------------------------------------------
    def changes(self, kind: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == kind]


class NamespaceRouterDriverTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        # A private ConfigOpts: the DHCP options (registered on cfg.CONF by
        # other tests) define their own interface_driver and would clash.
        self.conf = cfg.ConfigOpts()
        common_conf.register_common_opts(self.conf)
        l3_conf.register_l3_opts(self.conf)
        self.conf([], project='agentkit', default_config_files=[])
        # radvd's files; world-traversable, as radvd re-reads them as its user.
        state_path = self.useFixture(fixtures.TempDir()).path
        os.chmod(state_path, 0o755)
        self.conf.set_override('state_path', state_path)
        self.host = FakeHost()
        for name in ('create_namespace', 'delete_namespace', 'list_namespaces',
                     'namespace_exists', 'list_links', 'list_addresses', 'set_sysctl',
                     'get_sysctl',
                     'get_sysctls', 'list_routes', 'add_route', 'delete_route', 'IPDevice'):
            patcher = mock.patch.object(ip_lib, name, getattr(self.host, name))
            patcher.start()
            self.addCleanup(patcher.stop)
        for module, name in ((l3ns.arp, 'announce'), (l3ns.conntrack, 'delete_flows')):
            patcher = mock.patch.object(module, name, getattr(self.host, name))
            patcher.start()
            self.addCleanup(patcher.stop)
        self.iptables = FakeIptables()
        for name in ('save', 'restore', 'ruleset_generation'):
            patcher = mock.patch.object(iptables_manager.priv, name,
                                        side_effect=getattr(self.iptables, name))
            patcher.start()
            self.addCleanup(patcher.stop)
        self.driver = self.new_driver()

    def new_driver(self) -> l3ns.NamespaceRouterDriver:
        return l3ns.NamespaceRouterDriver(self.conf, 'host', self.host)

    def links(self) -> set[str]:
        return set(self.host.namespaces[NS]['links'])

    def addrs(self, device: str) -> set[str]:
        return self.host.namespaces[NS]['addrs'].get(device, set())

    # -- building a router -------------------------------------------------------
    def test_reference_router_matches_neutron(self) -> None:
        statuses = self.driver.process_router(typed(reference_router()))
        self.assertEqual({FIP_ID: 'ACTIVE'}, statuses)
        self.assertEqual({'lo', QR, QG}, self.links())
        self.assertEqual([
            ('plug', QR, 'bd7193ec-9fb6-4ad4-bdd2-4282a7195a69', 'fa:16:3e:3d:a8:1c',
             1450, None),
            ('plug', QG, 'c2d3e4f5-0617-4829-8a3b-4c5d6e7f8091', 'fa:16:3e:20:02:c8',
             1500, None)], self.host.changes('plug'))
        self.assertEqual({'192.168.10.1/24'}, self.addrs(QR))
        self.assertEqual({'172.24.4.81/24', '172.24.4.43/32'}, self.addrs(QG))
        self.assertEqual([{'dst': '0.0.0.0/0', 'gateway': '172.24.4.1', 'device': QG,
                           'metric': 0}], self.host.namespaces[NS]['routes'])
        sysctls = self.host.namespaces[NS]['sysctls']
        self.assertEqual('1', sysctls['net.ipv4.ip_forward'])
        self.assertEqual('0', sysctls['net.ipv4.conf.all.rp_filter'])
        self.assertNotIn('net.ipv6.conf.all.forwarding', sysctls)
        self.assertEqual(REFERENCE_NAT, set(self.iptables.lines('nat')))
        self.assertLessEqual(REFERENCE_MANGLE, set(self.iptables.lines('mangle')))
        self.assertLessEqual(REFERENCE_FILTER, set(self.iptables.lines('filter')))
        self.assertEqual(1, len(self.iptables.restores))

    def test_rule_order_within_chains_matches_neutron(self) -> None:
        self.driver.process_router(typed(reference_router()))
        nat = self.iptables.lines('nat')
        self.assertEqual([
            '-A neutron-l3-agent-PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp '
            '--dport 80 -j REDIRECT --to-ports 9697',
            '-A neutron-l3-agent-PREROUTING -d 172.24.4.43/32 -j DNAT --to-destination '
            '192.168.10.207'], [r for r in nat if r.startswith('-A neutron-l3-agent-PRE')])
        snat = [r for r in nat if r.startswith('-A neutron-l3-agent-snat ')]
        self.assertEqual(3, len(snat))
        self.assertEqual('-A neutron-l3-agent-snat -j neutron-l3-agent-float-snat', snat[0])
        self.assertTrue(snat[1].startswith('-A neutron-l3-agent-snat -o qg-168e667f-2c '))
        self.assertTrue(snat[2].startswith('-A neutron-l3-agent-snat -m mark ! --mark 0x2'))

    def test_metadata_port_comes_from_the_configuration(self) -> None:
        self.conf.set_override('metadata_port', 19697)
        self.driver.process_router(typed(reference_router()))
        self.assertIn('-A neutron-l3-agent-PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp '
                      '-m tcp --dport 80 -j REDIRECT --to-ports 19697',
                      self.iptables.lines('nat'))
        self.assertIn('-A neutron-l3-agent-INPUT -p tcp -m tcp --dport 19697 -j DROP',
                      self.iptables.lines('filter'))

    def test_enable_snat_false_drops_only_the_snat_rule(self) -> None:
        router = reference_router()
        router['enable_snat'] = False
        self.driver.process_router(typed(router))
        nat = set(self.iptables.lines('nat'))
        self.assertEqual(REFERENCE_NAT - {
            '-A neutron-l3-agent-snat -o qg-168e667f-2c -j SNAT --to-source 172.24.4.81 '
            '--random-fully'}, nat)

    def test_router_without_gateway_has_no_nat_and_fips_error(self) -> None:
        router = reference_router()
        router['gw_port'] = None
        self.assertEqual({FIP_ID: 'ERROR'}, self.driver.process_router(typed(router)))
        self.assertEqual({'lo', QR}, self.links())
        self.assertFalse([r for r in self.iptables.lines('nat') if 'SNAT' in r or 'DNAT' in r])
        self.assertEqual([], self.host.namespaces[NS]['routes'])

    def test_ipv6_subnet_enables_ipv6_forwarding(self) -> None:
        router = reference_router(fip=False)
        port = router['_interfaces'][0]
        port['fixed_ips'].append({'subnet_id': 'aaaaaaaa-0348-443b-b446-4d6a969f9288',
                                  'ip_address': 'fd00:10::1'})
        port['subnets'].append({'id': 'aaaaaaaa-0348-443b-b446-4d6a969f9288',
                                'cidr': 'fd00:10::/64', 'gateway_ip': 'fd00:10::1'})
        self.driver.process_router(typed(router))
        self.assertEqual({'192.168.10.1/24', 'fd00:10::1/64'}, self.addrs(QR))
        self.assertEqual('1', self.host.namespaces[NS]['sysctls'][
            'net.ipv6.conf.all.forwarding'])

    def test_ipv6_subnets_with_ra_mode_are_advertised(self) -> None:
        self.driver.radvd = mock.Mock()
        router = reference_router(fip=False)
        port = router['_interfaces'][0]
        for n, mode in enumerate(('slaac', 'dhcpv6-stateful', None)):
            subnet_id = 'aaaaaaa%d-0348-443b-b446-4d6a969f9288' % n
            port['fixed_ips'].append({'subnet_id': subnet_id,
                                      'ip_address': 'fd00:1%d::1' % n})
            port['subnets'].append({'id': subnet_id, 'cidr': 'fd00:1%d::/64' % n,
                                    'gateway_ip': 'fd00:1%d::1' % n, 'ipv6_ra_mode': mode,
                                    'dns_nameservers': ['fd00:53::1']})
        port['subnets'].append({'id': 'bad', 'cidr': 'fd00:99::/48', 'gateway_ip': None,
                                'ipv6_ra_mode': 'slaac'})  # SLAAC needs a /64
        self.driver.process_router(typed(router))
        self.driver.radvd.update.assert_called_once_with(ROUTER_ID, NS, [
            l3ns.radvd.RaInterface(QR, (
                l3ns.radvd.RaPrefix('fd00:10::/64', 'slaac', ('fd00:53::1',)),
                l3ns.radvd.RaPrefix('fd00:11::/64', 'dhcpv6-stateful')), 1450)])
        self.assertIn('subnet bad not advertised', self.log.output)
        self.driver.delete_router(ROUTER_ID)
        self.driver.radvd.disable.assert_called_once_with(ROUTER_ID)

    def test_router_without_ra_subnets_runs_no_radvd(self) -> None:
        self.driver.radvd = mock.Mock()
        self.driver.process_router(typed(reference_router()))
        # Once (a radvd of an earlier run is stopped), then no more bookkeeping.
        self.driver.radvd.update.assert_called_once_with(ROUTER_ID, NS, [])
        self.driver.process_router(typed(reference_router()))
        self.assertEqual(1, self.driver.radvd.update.call_count)

    # -- incremental behaviour -----------------------------------------------------
    def test_second_identical_call_changes_nothing(self) -> None:
        router = reference_router()
        self.driver.process_router(typed(router))
        self.host.calls.clear()
        restores, saves = len(self.iptables.restores), self.iptables.saves
        router['_floatingips'][0]['status'] = 'ACTIVE'
        self.assertEqual({}, self.driver.process_router(typed(router)))
        self.assertEqual([], self.host.calls)
        self.assertEqual(restores, len(self.iptables.restores))
        self.assertEqual(saves, self.iptables.saves)

    def test_removed_fip_and_interface_are_cleaned_up(self) -> None:
        self.driver.process_router(typed(reference_router()))
        router = reference_router(fip=False)
        router['_interfaces'] = []
        self.assertEqual({FIP_ID: 'DOWN'}, self.driver.process_router(typed(router)))
        self.assertEqual({'lo', QG}, self.links())
        self.assertEqual({'172.24.4.81/24'}, self.addrs(QG))
        self.assertFalse([r for r in self.iptables.lines('nat') if '172.24.4.43' in r])
        self.assertEqual([('unplug', QR)], self.host.changes('unplug'))
        # DOWN is reported once only.
        self.assertEqual({}, self.driver.process_router(typed(router)))

    def test_new_fip_and_changed_gateway(self) -> None:
        self.driver.process_router(typed(reference_router(fip=False)))
        router = reference_router()
        new_gw = '9b8c7d6e-5f40-4321-8a9b-0c1d2e3f4a5b'
        router['gw_port']['id'] = new_gw
        router['gw_port']['fixed_ips'][0]['ip_address'] = '172.24.4.90'
        self.assertEqual({FIP_ID: 'ACTIVE'}, self.driver.process_router(typed(router)))
        new_qg = 'qg-9b8c7d6e-5f'
        self.assertEqual({'lo', QR, new_qg}, self.links())
        self.assertEqual({'172.24.4.90/24', '172.24.4.43/32'}, self.addrs(new_qg))
        self.assertEqual([('0.0.0.0/0', '172.24.4.1', new_qg)],
                         [(r['dst'], r['gateway'], r['device'])
                          for r in self.host.namespaces[NS]['routes']])
        nat = self.iptables.lines('nat')
        self.assertIn('-A neutron-l3-agent-snat -o %s -j SNAT --to-source 172.24.4.90 '
                      '--random-fully' % new_qg, nat)
        self.assertFalse([r for r in nat if QG in r or '172.24.4.81' in r])

    def test_mac_or_mtu_change_replugs(self) -> None:
        self.driver.process_router(typed(reference_router()))
        router = reference_router()
        router['_interfaces'][0]['mtu'] = 1400
        self.host.calls.clear()
        self.driver.process_router(typed(router))
        self.assertEqual([QR], [c[1] for c in self.host.changes('plug')])

    def test_devices_the_switch_recreated_are_plugged_again(self) -> None:
        # ovs-vswitchd restarted on the userspace datapath: both devices
        # look fine in the namespace but carry nothing any more.
        self.driver.process_router(typed(reference_router()))
        self.host.recreated = {QR, QG}
        self.host.calls.clear()
        self.assertEqual({FIP_ID: 'ACTIVE'}, self.driver.process_router(typed(reference_router())))
        self.assertEqual([sorted([QR, QG])], self.host.stale_queries[-1:])
        self.assertEqual([QR, QG], [c[1] for c in self.host.changes('plug')])
        self.assertEqual({'192.168.10.1/24'}, self.addrs(QR))
        self.assertEqual({'172.24.4.81/24', '172.24.4.43/32'}, self.addrs(QG))
        self.assertEqual([('0.0.0.0/0', '172.24.4.1', QG)],
                         [(r['dst'], r['gateway'], r['device'])
                          for r in self.host.namespaces[NS]['routes']])
        self.assertIn(('announce', QG, '172.24.4.43', 3), self.host.calls)

    def test_a_failed_stale_device_check_fails_only_that_step(self) -> None:
        self.driver.process_router(typed(reference_router()))

        def remove_qg_then_fail(namespace: str, names: Any) -> set[str]:
            self.host.ns(namespace)['links'].pop(QG)  # removed, then the error
            raise RuntimeError('privsep gone')

        with mock.patch.object(self.host, 'remove_stale_devices',
                               side_effect=remove_qg_then_fail), \
                self.assertLogs(l3ns.LOG, 'ERROR'):
            err = self.assertRaises(l3ns.RouterProcessingError, self.driver.process_router,
                                    typed(reference_router()))
        self.assertIn('stale device check: privsep gone', str(err))
        self.assertEqual({'192.168.10.1/24'}, self.addrs(QR))  # the rest still applied
        self.assertIn(QG, self.links())  # the one removed before the error: plugged anew
        self.assertEqual(REFERENCE_NAT, set(self.iptables.lines('nat')))

    def test_a_router_in_place_is_not_plugged_again(self) -> None:
        self.driver.process_router(typed(reference_router()))
        self.host.calls.clear()
        self.driver.process_router(typed(reference_router()))
        self.assertEqual([sorted([QR, QG])], self.host.stale_queries[-1:])
        self.assertEqual([], self.host.changes('plug'))

    def test_routes_learned_from_router_advertisements_are_left_alone(self) -> None:
        # An IPv4-only router on an external network with an IPv6 router:
        # the kernel learns a default route on qg- (Neutron leaves it too).
        self.driver.process_router(typed(reference_router()))
        self.host.namespaces[NS]['learned'] = [
            {'dst': '::/0', 'gateway': 'fe80::1', 'device': QG, 'metric': 1024,
             'protocol': 'ra'}]
        self.host.calls.clear()
        self.driver.process_router(typed(reference_router()))
        self.assertEqual([], self.host.changes('delete_route'))

    def test_extra_routes_added_and_removed(self) -> None:
        router = reference_router(fip=False)
        router['routes'] = [{'destination': '10.50.0.0/24', 'nexthop': '192.168.10.7'},
                            {'destination': '10.50.0.1/24', 'nexthop': '192.168.10.7'},
                            {'destination': '0.0.0.0/0', 'nexthop': '192.168.10.7'},
                            {'destination': '10.60.0.0/24', 'nexthop': 'fd00::1'},
                            'garbage']
        self.driver.process_router(typed(router))

        def extra() -> set[tuple[str, str]]:
            return {(r['dst'], r['gateway']) for r in self.host.namespaces[NS]['routes']
                    if r['dst'] != '0.0.0.0/0'}

        self.assertEqual({('10.50.0.0/24', '192.168.10.7')}, extra())
        router['routes'] = [{'destination': '10.70.0.0/24', 'nexthop': '192.168.10.8'}]
        self.driver.process_router(typed(router))
        self.assertEqual({('10.70.0.0/24', '192.168.10.8')}, extra())
        # A restarted driver still removes routes it did not add in this run.
        router['routes'] = []
        self.new_driver().process_router(typed(router))
        self.assertEqual(set(), extra())

    def test_restart_removes_stale_devices_and_keeps_others(self) -> None:
        self.driver.process_router(typed(reference_router()))
        links = self.host.namespaces[NS]['links']
        links['qr-deadbeef-00'] = {'name': 'qr-deadbeef-00', 'address': 'fa:16:3e:00:00:01',
                                   'mtu': 1500, 'state': 'up'}
        links['ha-12345678-9a'] = {'name': 'ha-12345678-9a', 'address': 'fa:16:3e:00:00:02',
                                   'mtu': 1500, 'state': 'up'}
        self.host.calls.clear()
        driver = self.new_driver()
        router = reference_router()
        router['_floatingips'][0]['status'] = 'ACTIVE'
        self.assertEqual({}, driver.process_router(typed(router)))
        self.assertEqual([('unplug', 'qr-deadbeef-00')], self.host.changes('unplug'))
        self.assertIn('ha-12345678-9a', self.links())
        self.assertEqual([], self.host.changes('plug'))
        # The sysctls are checked after a restart, and already right.
        self.assertEqual([], self.host.changes('set_sysctl'))

    def test_restart_on_an_unchanged_router_writes_nothing(self) -> None:
        self.driver.process_router(typed(reference_router()))
        self.host.calls.clear()
        restores = len(self.iptables.restores)
        router = reference_router()
        router['_floatingips'][0]['status'] = 'ACTIVE'
        self.assertEqual({}, self.new_driver().process_router(typed(router)))
        self.assertEqual([], self.host.calls)  # no plug, address, route, sysctl, ARP
        self.assertEqual(restores, len(self.iptables.restores))

    # -- gratuitous ARP and conntrack ---------------------------------------------
    def test_gained_ipv4_addresses_are_announced(self) -> None:
        self.driver.process_router(typed(reference_router(fip=False)))
        self.assertEqual([('announce', QR, '192.168.10.1', 3),
                          ('announce', QG, '172.24.4.81', 3)], self.host.changes('announce'))
        self.assertEqual('1', self.host.namespaces[NS]['sysctls'][
            'net.ipv4.conf.%s.arp_notify' % QG])
        self.host.calls.clear()
        self.conf.set_override('send_arp_for_ha', 1)
        self.driver.process_router(typed(reference_router()))  # the FIP is associated
        self.assertEqual([('announce', QG, '172.24.4.43', 1)], self.host.changes('announce'))
        self.host.calls.clear()
        self.driver.process_router(typed(reference_router()))
        self.assertEqual([], self.host.changes('announce'))

    def test_failed_announcement_does_not_fail_the_router(self) -> None:
        with mock.patch.object(l3ns.arp, 'announce', side_effect=OSError(6, 'ENXIO')):
            self.assertEqual({FIP_ID: 'ACTIVE'},
                             self.driver.process_router(typed(reference_router())))

    def test_disassociated_fip_ends_its_sessions(self) -> None:
        self.driver.process_router(typed(reference_router()))
        self.assertEqual([], self.host.changes('delete_flows'))
        self.driver.process_router(typed(reference_router(fip=False)))
        self.assertEqual([('delete_flows', NS, [('172.24.4.43/32', 'None'),
                                                ('None', '172.24.4.43/32')])],
                         self.host.changes('delete_flows'))

    def test_moved_fip_ends_the_sessions_of_the_old_mapping(self) -> None:
        self.driver.process_router(typed(reference_router()))
        router = reference_router()
        router['_floatingips'][0]['fixed_ip_address'] = '192.168.10.208'
        self.driver.process_router(typed(router))
        self.assertEqual([('delete_flows', NS, [('172.24.4.43/32', 'None'),
                                                ('None', '172.24.4.43/32')])],
                         self.host.changes('delete_flows'))
        dnat = {r for r in self.iptables.lines('nat') if '-j DNAT' in r}
        self.assertEqual({'-A neutron-l3-agent-PREROUTING -d 172.24.4.43/32 -j DNAT '
                          '--to-destination 192.168.10.208',
                          '-A neutron-l3-agent-OUTPUT -d 172.24.4.43/32 -j DNAT '
                          '--to-destination 192.168.10.208'}, dnat)

    def test_gateway_ip_change_ends_snat_sessions(self) -> None:
        self.driver.process_router(typed(reference_router(fip=False)))
        router = reference_router(fip=False)
        router['gw_port']['fixed_ips'][0]['ip_address'] = '172.24.4.82'
        self.driver.process_router(typed(router))
        self.assertEqual([('delete_flows', NS, [('172.24.4.81/32', 'None'),
                                                ('None', '172.24.4.81/32')])],
                         self.host.changes('delete_flows'))

    def test_removed_fip_found_after_restart_ends_its_sessions(self) -> None:
        self.driver.process_router(typed(reference_router()))
        self.new_driver().process_router(typed(reference_router(fip=False)))
        self.assertEqual([('delete_flows', NS, [('172.24.4.43/32', 'None'),
                                                ('None', '172.24.4.43/32')])],
                         self.host.changes('delete_flows'))

    def test_refused_extra_route_fails_the_router_and_is_retried(self) -> None:
        router = reference_router()
        router['routes'] = [{'destination': '10.50.0.0/24', 'nexthop': '192.168.10.7'},
                            {'destination': '10.60.0.0/24', 'nexthop': '10.99.0.1'}]
        real_add = self.host.add_route

        def add_route(dst: str, namespace: str, **kw: Any) -> bool:
            if kw.get('gateway') == '10.99.0.1':
                raise ip_lib.NetlinkOperationError(101, 'Network is unreachable')
            return real_add(dst, namespace, **kw)

        with mock.patch.object(ip_lib, 'add_route', add_route):
            err = self.assertRaises(l3ns.RouterProcessingError,
                                    self.driver.process_router, typed(router))
        self.assertEqual(['extra route 10.60.0.0/24 via 10.99.0.1: ' + str(
            ip_lib.NetlinkOperationError(101, 'Network is unreachable'))], err.failures)
        # Everything else is in place, and the statuses travel with the error.
        self.assertEqual({FIP_ID: 'ACTIVE'}, err.fip_statuses)
        self.assertIn(('10.50.0.0/24', '192.168.10.7'), {
            (r['dst'], r['gateway']) for r in self.host.namespaces[NS]['routes']})
        # Retried: once the kernel accepts it, the router is complete.
        self.driver.process_router(typed(router))
        self.assertIn(('10.60.0.0/24', '10.99.0.1'), {
            (r['dst'], r['gateway']) for r in self.host.namespaces[NS]['routes']})

    def test_failed_conntrack_cleanup_is_retried(self) -> None:
        self.driver.process_router(typed(reference_router()))
        self.host.fail_conntrack = True
        err = self.assertRaises(l3ns.RouterProcessingError, self.driver.process_router,
                                typed(reference_router(fip=False)))
        self.assertIn('conntrack', str(err))
        self.host.fail_conntrack = False
        self.host.calls.clear()
        self.driver.process_router(typed(reference_router(fip=False)))
        self.assertEqual(1, len(self.host.changes('delete_flows')))
        self.host.calls.clear()
        self.driver.process_router(typed(reference_router(fip=False)))
        self.assertEqual([], self.host.changes('delete_flows'))

    def test_recreated_namespace_is_rebuilt_completely(self) -> None:
        self.driver.process_router(typed(reference_router()))
        del self.host.namespaces[NS]
        self.iptables.tables.clear()
        self.driver.process_router(typed(reference_router()))
        self.assertEqual({'lo', QR, QG}, self.links())
        self.assertEqual(REFERENCE_NAT, set(self.iptables.lines('nat')))

    # -- bad data and failures -------------------------------------------------------
    def test_bad_interfaces_and_fips_are_skipped(self) -> None:
        router = reference_router()
        good_fip = router['_floatingips'][0]
        other = copy.deepcopy(router['_interfaces'][0])
        bad_id = dict(other, id='NOT-A-UUID')
        outside = copy.deepcopy(other)
        outside['id'] = 'abcdef01-2345-4678-9abc-def012345678'
        outside['fixed_ips'][0]['ip_address'] = '10.9.9.9'
        router['_interfaces'] += [bad_id, outside, 'junk']
        bad_fip = dict(good_fip, id='7c7c7c7c-2536-4748-9a0b-1c2d3e4f5061',
                       floating_ip_address='172.24.4.999', status='ACTIVE')
        v6_fip = dict(good_fip, id='8d8d8d8d-2536-4748-9a0b-1c2d3e4f5061',
                      floating_ip_address='fd00::5', fixed_ip_address='192.168.10.9')
        dup_fip = dict(good_fip, id='9e9e9e9e-2536-4748-9a0b-1c2d3e4f5061',
                       fixed_ip_address='192.168.10.99')
        router['_floatingips'] += [bad_fip, v6_fip, dup_fip, dict(good_fip, id=None), 7]
        statuses = self.driver.process_router(typed(router))
        self.assertEqual({FIP_ID: 'ACTIVE', bad_fip['id']: 'ERROR', v6_fip['id']: 'ERROR',
                          dup_fip['id']: 'ERROR'}, statuses)
        self.assertEqual({'lo', QR, QG}, self.links())
        self.assertEqual({'172.24.4.81/24', '172.24.4.43/32'}, self.addrs(QG))
        self.assertIn('skipping interface', self.log.output)
        # An existing device of a port whose data went bad is left as it is.
        self.host.namespaces[NS]['links']['qr-abcdef01-23'] = {
            'name': 'qr-abcdef01-23', 'address': 'fa:16:3e:00:00:03', 'mtu': 1450,
            'state': 'up'}
        self.driver.process_router(typed(router))
        self.assertIn('qr-abcdef01-23', self.links())

    def test_invalid_gateway_leaves_nat_and_default_route(self) -> None:
        self.driver.process_router(typed(reference_router()))
        router = reference_router()
        router['gw_port']['fixed_ips'][0]['ip_address'] = 'nonsense'
        restores = len(self.iptables.restores)
        self.assertEqual({FIP_ID: 'ERROR'}, self.driver.process_router(typed(router)))
        self.assertIn(QG, self.links())
        self.assertEqual(restores, len(self.iptables.restores))
        self.assertEqual(1, len(self.host.namespaces[NS]['routes']))

    def test_plug_failure_is_isolated_and_reported(self) -> None:
        router = reference_router()
        second = copy.deepcopy(router['_interfaces'][0])
        second['id'] = 'abcdef01-2345-4678-9abc-def012345678'
        second['fixed_ips'] = [{'subnet_id': 's', 'ip_address': '192.168.20.1',
                                'prefixlen': 24}]
        router['_interfaces'].insert(0, second)
        self.host.fail_plug.add(second['id'])
        err = self.assertRaises(l3ns.RouterProcessingError,
                                self.driver.process_router, typed(router))
        self.assertIn('interface abcdef01', str(err))
        self.assertEqual({FIP_ID: 'ACTIVE'}, err.fip_statuses)
        self.assertEqual({'lo', QR, QG}, self.links())
        self.assertEqual(REFERENCE_NAT, set(self.iptables.lines('nat')))

    def test_iptables_failure_puts_fips_in_error(self) -> None:
        self.iptables.fail_restore = True
        err = self.assertRaises(l3ns.RouterProcessingError,
                                self.driver.process_router, typed(reference_router()))
        self.assertEqual({FIP_ID: 'ERROR'}, err.fip_statuses)
        self.iptables.fail_restore = False
        self.assertEqual({FIP_ID: 'ACTIVE'}, self.driver.process_router(typed(reference_router())))

    def test_invalid_router_id_is_refused(self) -> None:
        router = reference_router()
        router['id'] = '../../etc'
        # Refused at the edge (the agent parses): no driver ever sees it.
        self.assertRaises(ValueError, typed, router)
        self.assertEqual({}, self.host.namespaces)

    # -- delete and discovery ----------------------------------------------------------
    def test_delete_router_unplugs_then_removes_namespace(self) -> None:
        self.driver.process_router(typed(reference_router()))
        self.host.calls.clear()
        self.driver.delete_router(ROUTER_ID)
        self.assertEqual([('unplug', QG), ('unplug', QR), ('delete_namespace', NS)],
                         self.host.calls)
        self.assertEqual({}, self.host.namespaces)
        self.driver.delete_router(ROUTER_ID)  # idempotent

    def test_delete_router_unplugs_known_devices_when_namespace_is_gone(self) -> None:
        self.driver.process_router(typed(reference_router()))
        del self.host.namespaces[NS]
        self.host.calls.clear()
        self.driver.delete_router(ROUTER_ID)
        self.assertEqual({('unplug', QG), ('unplug', QR)}, set(self.host.changes('unplug')))

    def test_existing_routers_only_valid_qrouter_namespaces(self) -> None:
        for name in (NS, 'qrouter-NOT-A-UUID', 'qdhcp-' + ROUTER_ID,
                     'qrouter-5f2022b4-0201-4daa-a098-b8ea6f9514cd'):
            self.host.namespaces[name] = {}
        self.assertEqual({ROUTER_ID, INT_PORT}, self.driver.existing_routers())
