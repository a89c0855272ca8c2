"""The namespace router driver routes, NATs and cleans up for real.

Topology (all names prefixed ``akr`` + random hex, except what the driver
names from ids: ``qrouter-<id>``, ``qr-``/``qg-`` and the linuxbridge
``tap`` ends)::

    [vm ns] 10.231.0.10 --veth-- (int bridge) --tap/qr-- [qrouter-]
    [qrouter-] --qg-/tap-- (ext bridge) --veth-- 172.31.231.1 [ext ns]

The linuxbridge interface driver plugs the router ports; a thin wrapper
maps each network to this test's bridge (instead of ``brq<net-id>``) so
nothing outside the test is touched. Reachability is checked with ping,
and *who the peer saw* with a tiny UDP service that answers with the
source address it observed, which proves SNAT/DNAT without tcpdump.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from typing import Any, Callable
from unittest import mock

import fixtures
from oslo_config import cfg

from agentkit import loader
from agentkit.api import interface as interface_api
from agentkit.api import l3 as l3_api
from agentkit.conf import common as common_conf
from agentkit.conf import l3 as l3_conf
from agentkit.lib import ip_lib
from agentkit.lib import iptables_manager
from agentkit.lib import naming
from tests.functional import base
from tests.functional import traffic
from tests.functional import vm as fake_vm

INT_CIDR = '10.231.0.0/24'
ROUTER_INT_IP = '10.231.0.1'
VM_IP = '10.231.0.10'
EXT_CIDR = '172.31.231.0/24'
EXT_GW_IP = '172.31.231.1'  # the "upstream" host, gateway_ip of the external subnet
ROUTER_GW_IP = '172.31.231.5'
FIP = '172.31.231.20'
MTU = 1450


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0,
               message: str = 'condition') -> None:
    base.wait_until(predicate, timeout, message, interval=0.2)


def ns_exec(namespace: str, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(['ip', 'netns', 'exec', namespace, *argv],
                          capture_output=True, text=True, timeout=timeout)


def can_ping(namespace: str, ip: str, count: int = 1) -> bool:
    return ns_exec(namespace, 'ping', '-n', '-c', str(count), '-W', '1', ip).returncode == 0


class _BridgePerNetwork(interface_api.InterfaceDriver):
    """The real linuxbridge driver, plugging each network into a test bridge."""

    def __init__(self, real: interface_api.InterfaceDriver,
                 bridges: dict[str, str]) -> None:
        super().__init__(real.conf, real.host)
        self.real = real
        self.bridges = bridges

    def get_device_name(self, port_id: str) -> str:
        return self.real.get_device_name(port_id)

    def plug(self, network_id: str, port_id: str, device_name: str,
             mac_address: str, namespace: str, mtu: int | None = None,
             bridge: str | None = None) -> None:
        assert bridge is None, 'the router driver must not pick bridges'
        self.real.plug(network_id, port_id, device_name, mac_address, namespace,
                       mtu=mtu, bridge=self.bridges[network_id])

    def unplug(self, device_name: str, namespace: str,
               bridge: str | None = None) -> None:
        self.real.unplug(device_name, namespace, bridge)

    def set_addresses(self, device_name: str, namespace: str,
                      cidrs: list[str]) -> None:
        self.real.set_addresses(device_name, namespace, cidrs)


class NamespaceRouterDriverTest(base.FunctionalTestCase):

    def setUp(self) -> None:
        # An L3 agent of another test would remove this test's qrouter- namespace.
        self.useFixture(base.HostRouters())
        super().setUp()
        # A private ConfigOpts: the DHCP options other tests register on
        # cfg.CONF define their own interface_driver and would clash.
        self.conf = cfg.ConfigOpts()
        common_conf.register_common_opts(self.conf)
        l3_conf.register_l3_opts(self.conf)
        self.conf([], project='agentkit', default_config_files=[])
        # radvd's files; world-traversable, as radvd re-reads them as its user.
        state_path = self.useFixture(fixtures.TempDir()).path
        os.chmod(state_path, 0o755)
        self.conf.set_override('state_path', state_path)
        self.conf.set_override('interface_driver', 'linuxbridge')
        self.int_net = self.unique_id()
        self.ext_net = self.unique_id()
        self.int_bridge = self._bridge()
        self.ext_bridge = self._bridge()
        real = loader.load_driver(loader.INTERFACE_DRIVERS, 'linuxbridge',
                                  interface_api.InterfaceDriver,
                                  conf=self.conf, host='akr-host')
        real.initialize()
        self.interface = _BridgePerNetwork(
            real, {self.int_net: self.int_bridge, self.ext_net: self.ext_bridge})
        self.driver = self._load_driver()
        self.router_id = self.unique_id()
        self.ns = naming.router_namespace(self.router_id)
        self.addCleanup(self._delete_router)
        self.vm_ns = self._host(self.int_bridge, VM_IP + '/24', ROUTER_INT_IP)
        self.ext_ns = self._host(self.ext_bridge, EXT_GW_IP + '/24', None)
        self.int_port = self.unique_id()
        self.gw_port = self.unique_id()
        self.fip_id = self.unique_id()

    # -- fixtures ------------------------------------------------------------
    def _load_driver(self) -> l3_api.RouterDriver:
        driver = loader.load_driver(loader.L3_DRIVERS, 'namespace', l3_api.RouterDriver,
                                    conf=self.conf, host='akr-host',
                                    interface_driver=self.interface)
        driver.initialize()
        return driver

    def _delete_router(self) -> None:
        try:
            self.driver.delete_router(self.router_id)
        finally:
            if ip_lib.namespace_exists(self.ns):
                ip_lib.delete_namespace(self.ns)

    def _bridge(self) -> str:
        name = self.short_name('akr')
        bridge = ip_lib.IPWrapper().add_bridge(name)
        self.addCleanup(bridge.delete)
        bridge.link.set_up()
        return name

    def _host(self, bridge: str, cidr: str, gateway: str | None) -> str:
        """A namespace with one veth leg on ``bridge`` (a VM or an upstream host)."""
        ns = self.short_name('akr')
        ip_lib.create_namespace(ns)
        self.addCleanup(ip_lib.delete_namespace, ns)
        outside = fake_vm.attach_host(ns, self.short_name('akr'), bridge, cidr, gateway,
                                      mtu=MTU)
        self.addCleanup(outside.delete)
        return ns

    def peer_seen_by(self, server_ns: str, client_ns: str, address: str) -> str:
        """Source address ``server_ns`` sees for a datagram from ``client_ns``."""
        reporter = traffic.PeerReporter(server_ns, 20000 + uuid.uuid4().int % 20000)
        self.addCleanup(reporter.stop)
        seen = traffic.peer_seen(client_ns, address, reporter.port)
        self.assertIsNotNone(seen, 'no UDP answer from %s' % address)
        return seen

    # -- routers shaped like sync_routers replies, validated as the agent does ---
    def router(self, interface: bool = True, gateway: bool = True, fip: bool = False,
               enable_snat: bool = True, routes: list[dict[str, str]] | None = None,
               fip_status: str = 'DOWN') -> l3_api.Router:
        int_subnet = self.unique_id()
        ext_subnet = self.unique_id()
        router: dict[str, Any] = {
            'id': self.router_id, 'admin_state_up': True, 'enable_snat': enable_snat,
            'routes': routes or [], 'distributed': False, 'ha': False,
            '_interfaces': [], '_floatingips': [], 'gw_port': None,
        }
        if interface:
            router['_interfaces'].append({
                'id': self.int_port, 'network_id': self.int_net,
                'mac_address': 'fa:16:3e:31:00:01', 'mtu': MTU,
                'device_owner': 'network:router_interface',
                'fixed_ips': [{'subnet_id': int_subnet, 'ip_address': ROUTER_INT_IP,
                               'prefixlen': 24}],
                'subnets': [{'id': int_subnet, 'cidr': INT_CIDR,
                             'gateway_ip': ROUTER_INT_IP}],
            })
        if gateway:
            router['gw_port'] = {
                'id': self.gw_port, 'network_id': self.ext_net,
                'mac_address': 'fa:16:3e:31:00:02', 'mtu': MTU,
                'device_owner': 'network:router_gateway',
                'fixed_ips': [{'subnet_id': ext_subnet, 'ip_address': ROUTER_GW_IP,
                               'prefixlen': 24}],
                'subnets': [{'id': ext_subnet, 'cidr': EXT_CIDR, 'gateway_ip': EXT_GW_IP}],
            }
            router['external_gateway_info'] = {
                'network_id': self.ext_net, 'enable_snat': enable_snat,
                'external_fixed_ips': [{'subnet_id': ext_subnet,
                                        'ip_address': ROUTER_GW_IP}]}
        if fip:
            router['_floatingips'].append({
                'id': self.fip_id, 'floating_ip_address': FIP,
                'fixed_ip_address': VM_IP, 'port_id': self.unique_id(),
                'router_id': self.router_id, 'status': fip_status,
                'floating_network_id': self.ext_net})
        return l3_api.Router.from_rpc(router)

    # -- checks ------------------------------------------------------------------
    def addresses(self, device: str) -> set[str]:
        return {a['cidr'] for a in ip_lib.IPDevice(device, self.ns).addr.list(scope='global')}

    def nat_rules(self) -> set[str]:
        out = ns_exec(self.ns, 'iptables-save', '-t', 'nat')
        self.assertEqual(0, out.returncode, out.stderr)
        return {line for line in out.stdout.splitlines() if line.startswith('-A ')}

    # -- tests -------------------------------------------------------------------
    def test_snat_floating_ip_and_cleanup(self) -> None:
        qr = naming.router_interface_name(self.int_port)
        qg = naming.router_gateway_name(self.gw_port)

        self.assertEqual({}, self.driver.process_router(self.router()))
        self.assertIn(self.router_id, self.driver.existing_routers())
        self.assertEqual({ROUTER_INT_IP + '/24'}, self.addresses(qr))
        self.assertEqual({ROUTER_GW_IP + '/24'}, self.addresses(qg))
        self.assertEqual(MTU, ip_lib.IPDevice(qr, self.ns).link.mtu)
        self.assertEqual('1', ip_lib.get_sysctl('net.ipv4.ip_forward', self.ns))
        gw_route = ip_lib.IPDevice(qg, self.ns).route.get_gateway()
        self.assertEqual(EXT_GW_IP, gw_route and gw_route['gateway'])
        rules = self.nat_rules()
        self.assertIn('-A neutron-l3-agent-snat -o %s -j SNAT --to-source %s --random-fully'
                      % (qg, ROUTER_GW_IP), rules)
        self.assertIn('-A neutron-l3-agent-POSTROUTING ! -o %s -m conntrack ! --ctstate '
                      'DNAT -j ACCEPT' % qg, rules)
        self.assertIn('-A neutron-l3-agent-PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp '
                      '-m tcp --dport 80 -j REDIRECT --to-ports 9697', rules)

        wait_until(lambda: can_ping(self.vm_ns, EXT_GW_IP), message='VM -> external ping')
        self.assertEqual(ROUTER_GW_IP, self.peer_seen_by(self.ext_ns, self.vm_ns, EXT_GW_IP))

        # Floating IP: reachable from outside, and the VM leaves with it.
        self.assertEqual({self.fip_id: 'ACTIVE'},
                         self.driver.process_router(self.router(fip=True)))
        self.assertEqual({ROUTER_GW_IP + '/24', FIP + '/32'}, self.addresses(qg))
        rules = self.nat_rules()
        dnat = '-d %s/32 -j DNAT --to-destination %s' % (FIP, VM_IP)
        self.assertIn('-A neutron-l3-agent-PREROUTING ' + dnat, rules)
        self.assertIn('-A neutron-l3-agent-OUTPUT ' + dnat, rules)
        self.assertIn('-A neutron-l3-agent-float-snat -s %s/32 -j SNAT --to-source %s '
                      '--random-fully' % (VM_IP, FIP), rules)
        wait_until(lambda: can_ping(self.ext_ns, FIP), message='external -> FIP ping')
        self.assertEqual(EXT_GW_IP, self.peer_seen_by(self.vm_ns, self.ext_ns, FIP))
        self.assertEqual(FIP, self.peer_seen_by(self.ext_ns, self.vm_ns, EXT_GW_IP))

        # Same router again (the server now shows the FIP ACTIVE): nothing to do,
        # and iptables-restore is not run.
        with mock.patch.object(iptables_manager.priv, 'restore') as restore:
            self.assertEqual({}, self.driver.process_router(
                self.router(fip=True, fip_status='ACTIVE')))
        restore.assert_not_called()

        # FIP removed: address, rules and reachability go; SNAT is back to the gw IP.
        self.assertEqual({self.fip_id: 'DOWN'},
                         self.driver.process_router(self.router()))
        self.assertEqual({ROUTER_GW_IP + '/24'}, self.addresses(qg))
        self.assertFalse([r for r in self.nat_rules() if FIP in r])
        self.assertFalse(can_ping(self.ext_ns, FIP))
        self.assertEqual(ROUTER_GW_IP, self.peer_seen_by(self.ext_ns, self.vm_ns, EXT_GW_IP))

        # Interface removed: qr- and its tap are gone, the VM is cut off.
        self.assertEqual({}, self.driver.process_router(self.router(interface=False)))
        self.assertFalse(ip_lib.device_exists(qr, self.ns))
        self.assertFalse(ip_lib.device_exists('tap' + self.int_port[:11]))
        self.assertFalse(can_ping(self.vm_ns, EXT_GW_IP))

        self.driver.delete_router(self.router_id)
        self.assertFalse(ip_lib.namespace_exists(self.ns))
        self.assertFalse(ip_lib.device_exists('tap' + self.gw_port[:11]))
        self.assertNotIn(self.router_id, self.driver.existing_routers())
        self.driver.delete_router(self.router_id)  # idempotent

    def test_enable_snat_false_routes_without_nat(self) -> None:
        qg = naming.router_gateway_name(self.gw_port)
        self.driver.process_router(self.router(enable_snat=False))
        self.assertFalse([r for r in self.nat_rules() if '-o %s -j SNAT' % qg in r])
        # The upstream host needs a route back, then sees the VM's own address.
        ip_lib.add_route(INT_CIDR, self.ext_ns, gateway=ROUTER_GW_IP)
        wait_until(lambda: can_ping(self.vm_ns, EXT_GW_IP), message='VM -> external ping')
        self.assertEqual(VM_IP, self.peer_seen_by(self.ext_ns, self.vm_ns, EXT_GW_IP))
        # Turning SNAT on again takes effect for new flows.
        self.driver.process_router(self.router(enable_snat=True))
        self.assertEqual(ROUTER_GW_IP, self.peer_seen_by(self.ext_ns, self.vm_ns, EXT_GW_IP))

    def test_extra_routes_follow_the_router(self) -> None:
        route = {'destination': '10.232.0.0/24', 'nexthop': VM_IP}

        def extra_routes() -> set[tuple[str, str | None]]:
            return {(r['dst'], r['gateway']) for r in ip_lib.list_routes(self.ns, 4)
                    if r['dst'] == route['destination']}

        self.driver.process_router(self.router(routes=[route]))
        self.assertEqual({(route['destination'], VM_IP)}, extra_routes())
        self.driver.process_router(self.router())
        self.assertEqual(set(), extra_routes())

    def test_restarted_driver_removes_what_changed_meanwhile(self) -> None:
        """A new driver instance (agent restart) cleans stale ports and rules."""
        qr = naming.router_interface_name(self.int_port)
        self.driver.process_router(self.router(fip=True))
        self.assertTrue(ip_lib.device_exists(qr, self.ns))
        foreign = '-A PREROUTING -s 192.0.2.1/32 -j ACCEPT'
        self.assertEqual(0, ns_exec(self.ns, 'iptables', '-t', 'nat',
                                    *foreign.split()).returncode)

        self.driver = self._load_driver()
        self.assertEqual({}, self.driver.process_router(self.router(interface=False)))
        self.assertFalse(ip_lib.device_exists(qr, self.ns))
        rules = self.nat_rules()
        self.assertFalse([r for r in rules if FIP in r])
        self.assertIn(foreign, rules)  # not ours: left alone
        self.assertEqual(1, sum(1 for r in rules
                                if r == '-A PREROUTING -j neutron-l3-agent-PREROUTING'))

    # -- NAT sessions, gratuitous ARP, restart ---------------------------------------
    def test_disassociated_fip_cuts_running_sessions(self) -> None:
        echo = traffic.EchoServer(self.vm_ns, 5002)
        self.addCleanup(echo.stop)
        ext_echo = traffic.EchoServer(self.ext_ns, 5003)
        self.addCleanup(ext_echo.stop)
        self.driver.process_router(self.router(fip=True))
        wait_until(lambda: can_ping(self.ext_ns, FIP), message='external -> FIP ping')
        inbound = traffic.TcpSession(self.ext_ns, FIP, 5002)
        self.addCleanup(inbound.close)
        outbound = traffic.TcpSession(self.vm_ns, EXT_GW_IP, 5003)
        self.addCleanup(outbound.close)
        self.assertEqual(('connected', 'ok'), (inbound.state, inbound.exchange()))
        self.assertEqual(('connected', 'ok'), (outbound.state, outbound.exchange()))

        self.assertEqual({self.fip_id: 'DOWN'}, self.driver.process_router(self.router()))
        # Both sessions of the old mapping end (without the cleanup conntrack
        # would keep NATing them through the removed floating IP).
        self.assertNotEqual('ok', inbound.exchange())
        self.assertNotEqual('ok', outbound.exchange())
        # New connections through the gateway IP are not affected.
        self.assertTrue(traffic.tcp_connects(self.vm_ns, EXT_GW_IP, 5003))

    def test_associated_fip_is_announced_with_gratuitous_arp(self) -> None:
        sniffer = traffic.ArpSniffer(self.ext_ns)
        self.addCleanup(sniffer.stop)
        qg = naming.router_gateway_name(self.gw_port)
        self.driver.process_router(self.router())
        mac = ip_lib.IPDevice(qg, self.ns).link.address
        wait_until(lambda: mac in sniffer.gratuitous(ROUTER_GW_IP),
                   message='gratuitous ARP for the gateway IP')
        self.driver.process_router(self.router(fip=True))
        wait_until(lambda: len(sniffer.gratuitous(FIP)) >= 3, timeout=10,
                   message='three gratuitous ARPs for the floating IP')
        self.assertEqual({mac}, set(sniffer.gratuitous(FIP)))
        self.assertEqual('1', ip_lib.get_sysctl(('net', 'ipv4', 'conf', qg, 'arp_notify'),
                                                self.ns))

    def test_restarted_driver_writes_nothing_when_nothing_changed(self) -> None:
        self.driver.process_router(self.router(fip=True))
        wait_until(lambda: can_ping(self.ext_ns, FIP), message='external -> FIP ping')
        before = base.netfilter_snapshot(self.ns)
        self.driver = self._load_driver()  # an agent restart
        with mock.patch.object(iptables_manager.priv, 'restore') as restore, \
                mock.patch.object(iptables_manager.priv, 'save') as save, \
                mock.patch.object(ip_lib, 'set_sysctl') as set_sysctl, \
                mock.patch.object(self.interface, 'plug') as plug, \
                mock.patch.object(self.interface, 'set_addresses') as set_addresses, \
                mock.patch.object(ip_lib, 'add_route') as add_route, \
                mock.patch.object(ip_lib, 'delete_route') as delete_route:
            self.assertEqual({}, self.driver.process_router(
                self.router(fip=True, fip_status='ACTIVE')))
        # Not even read back: the nf_tables generation shows no commit since.
        for call in (restore, save, set_sysctl, plug, set_addresses, add_route,
                     delete_route):
            call.assert_not_called()
        self.assertEqual(before, base.netfilter_snapshot(self.ns))
        self.assertTrue(can_ping(self.ext_ns, FIP))

    def test_a_foreign_change_is_seen_and_undone_after_a_restart(self) -> None:
        """Reading changes nothing; anyone's commit makes the next restart compare."""
        generation = iptables_manager.priv.ruleset_generation
        self.driver.process_router(self.router(fip=True))
        first = generation(self.ns)
        ns_exec(self.ns, 'iptables-save')
        self.assertEqual(first, generation(self.ns))
        # Someone deletes the floating IP's DNAT while the agent is down.
        rule = '-d %s/32 -j DNAT --to-destination %s' % (FIP, VM_IP)
        self.assertEqual(0, ns_exec(self.ns, 'iptables', '-t', 'nat', '-D',
                                    'neutron-l3-agent-PREROUTING', *rule.split()).returncode)
        self.assertNotEqual(first, generation(self.ns))
        self.driver = self._load_driver()
        self.driver.process_router(self.router(fip=True, fip_status='ACTIVE'))
        self.assertIn('-A neutron-l3-agent-PREROUTING ' + rule, self.nat_rules())
