"""agentkit-doctor's hop logic on fakes: which hop it names, and only that one."""

import dataclasses
import io
import json
import os
import signal
import uuid
from contextlib import redirect_stderr
from typing import Any
from unittest import mock

import fixtures
from oslo_config import cfg

from agentkit.agent import router_intent
from agentkit.api import l3 as l3_api
from agentkit.doctor import cli
from agentkit.doctor import host as host_view
from agentkit.doctor import hops
from agentkit.doctor import hosts_ovs
from agentkit.doctor import intent
from agentkit.doctor import probe as doctor_probe
from agentkit.doctor import report
from agentkit.privileged import probe as privileged_probe
from drivers.firewall import iptables_hybrid
from tests import base

HOST = 'compute1'
NET = str(uuid.uuid4())
SUBNET = str(uuid.uuid4())
VM = str(uuid.uuid4())
DHCP = str(uuid.uuid4())
VM_MAC = 'fa:16:3e:00:00:10'
SETTINGS = hops.Settings(host=HOST, integration_bridge='br-int',
                         physical_networks=frozenset({'physnet1'}))
TAP = 'tap' + VM[:11]
DHCP_TAP = 'tap' + DHCP[:11]
NS = 'qdhcp-' + NET
ROUTER = str(uuid.uuid4())
QR = str(uuid.uuid4())
QG = str(uuid.uuid4())
RNS = 'qrouter-' + ROUTER


def _port(port_id: str, mac: str, ip: str, owner: str = 'compute:nova',
          host: str = HOST) -> intent.PortIntent:
    return intent.PortIntent(port_id, NET, mac, ((SUBNET, ip),), host, owner, True, 'ACTIVE')


class FakeServer:
    def __init__(self) -> None:
        self.ports = {VM: _port(VM, VM_MAC, '10.0.0.10'),
                      DHCP: _port(DHCP, 'fa:16:3e:00:00:02', '10.0.0.2', 'network:dhcp')}
        self.segment_: intent.Segment | None = intent.Segment('flat', 'physnet1', None)
        self.unreachable = False
        self.router = {
            QR: intent.PortIntent(QR, NET, 'fa:16:3e:00:00:01', ((SUBNET, '10.0.0.1'),), HOST,
                                  'network:router_interface', True, 'ACTIVE'),
            QG: intent.PortIntent(QG, str(uuid.uuid4()), 'fa:16:3e:00:01:01',
                                  (('ext', '203.0.113.5'),), HOST, 'network:router_gateway',
                                  True, 'ACTIVE')}

    def _check(self) -> None:
        if self.unreachable:
            raise intent.ServerUnreachable('timed out')

    def port(self, port_id: str) -> intent.PortIntent | None:
        self._check()
        return self.ports.get(port_id)

    def network(self, network_id: str) -> intent.NetworkIntent | None:
        self._check()
        return intent.NetworkIntent(NET, (intent.Subnet(SUBNET, '10.0.0.0/24', 4, True,
                                                        '10.0.0.1'),),
                                    tuple(self.ports.values()))

    def segment(self, port_id: str) -> intent.Segment | None:
        return self.segment_

    def router_ports(self, router_id: str) -> list[intent.PortIntent]:
        self._check()
        return list(self.router.values()) if router_id == ROUTER else []


class FakeHost:
    """A healthy host: tap on br-int on VLAN 3, patch, qdhcp, dnsmasq."""

    def __init__(self) -> None:
        wired = {'net_uuid': NET, 'tag': '3'}
        self.links: dict[tuple[str, str | None], dict[str, Any]] = {
            (TAP, None): {'name': TAP, 'state': 'up', 'master': None}}
        self.ovs = {
            VM: hosts_ovs.OvsPort(TAP, 'br-int', 3, dict(wired), VM),
            DHCP: hosts_ovs.OvsPort(DHCP_TAP, 'br-int', 3, dict(wired), DHCP)}
        self.patches = [hosts_ovs.OvsPort('int-' + NET[:11], 'br-int', 3, dict(wired))]
        self.namespaces = {NS, RNS}
        self.ns_addresses = {NS: {DHCP_TAP: ['10.0.0.2']},
                             RNS: {'qr-' + QR[:11]: ['10.0.0.1'],
                                   'qg-' + QG[:11]: ['203.0.113.5']}}
        self.nat = [f'-A neutron-l3-agent-snat -o qg-{QG[:11]} -j SNAT '
                    '--to-source 203.0.113.5 --random-fully',
                    '-A neutron-l3-agent-PREROUTING -d 203.0.113.9/32 -j DNAT '
                    '--to-destination 10.0.0.10',
                    '-A neutron-l3-agent-OUTPUT -d 203.0.113.9/32 -j DNAT '
                    '--to-destination 10.0.0.10',
                    '-A neutron-l3-agent-float-snat -s 10.0.0.10/32 -j SNAT '
                    '--to-source 203.0.113.9 --random-fully']
        self.state_path = '/s'
        self.routes_in = {RNS: [('0.0.0.0/0', '203.0.113.1')]}
        self.recorded: router_intent.Recorded | None = None
        self.marked_ports: list[str] = []     # OVS ports with the probe mark
        # --probe: what the active checks find, and every call made to them
        self.offers = [{'address': '10.0.0.10', 'server': '10.0.0.2',
                        'server_mac': 'fa:16:3e:00:00:02'}]
        self.gateway_answer: dict[str, Any] = {'source': '10.0.0.2',
                                               'mac': 'fa:16:3e:00:00:01', 'rtt_ms': 0.4}
        self.connect_error: str | None = None
        self.probe_calls: list[tuple[Any, ...]] = []
        self.proxy = host_view.ProcessState('/s/r.pid', 77, ('haproxy', '-f', ROUTER))
        self.filter = port_chains(VM)
        self.dnsmasq_state = host_view.DnsmasqState(
            '/s/pid', '/s/host', 42, ('dnsmasq', '--pid-file=/s/' + NET), {
                '10.0.0.10': VM_MAC, '10.0.0.2': 'fa:16:3e:00:00:02'}, running=True)

    def link(self, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return self.links.get((name, namespace))

    def namespace_exists(self, namespace: str) -> bool:
        return namespace in self.namespaces

    def addresses(self, namespace: str) -> dict[str, list[str]]:
        return dict(self.ns_addresses[namespace]) if namespace in self.namespaces else {}

    def list_namespaces(self) -> list[str]:
        return sorted(self.namespaces)

    def bridges(self) -> list[str]:
        return ['br-int', 'br-ex']

    def probe_ports(self, bridge: str) -> list[str]:
        return list(self.marked_ports) if bridge == 'br-int' else []

    def processes(self, names: frozenset[str]) -> dict[str, list[int]]:
        return {'agentkit-l2': [10], 'agentkit-dhcp': [11]}

    def filter_rules(self) -> list[str]:
        return list(self.filter)

    def nat_rules(self, namespace: str) -> list[str]:
        return list(self.nat)

    def routes(self, namespace: str) -> list[tuple[str, str]]:
        return list(self.routes_in.get(namespace, []))

    def metadata_proxy(self, router_id: str) -> host_view.ProcessState:
        return self.proxy

    def router_intent(self, router_id: str) -> router_intent.Recorded | None:
        return self.recorded

    def probe_dhcp(self, network_id: str, vlan: int | None,
                   mac: str) -> tuple[str, list[dict[str, str]]]:
        self.probe_calls.append(('dhcp', network_id, vlan, mac))
        return 'akp00000001 on br-int VLAN 3', list(self.offers)

    def probe_gateway(self, namespace: str, device: str, gateway: str) -> dict[str, Any]:
        self.probe_calls.append(('gateway', namespace, device, gateway))
        return dict(self.gateway_answer)

    def probe_connect(self, namespace: str, address: str, port: int) -> str | None:
        self.probe_calls.append(('connect', namespace, address, port))
        return self.connect_error

    def dnsmasq(self, network_id: str) -> host_view.DnsmasqState:
        return self.dnsmasq_state

    def ovs_port_of(self, port_id: str) -> hosts_ovs.OvsPort | None:
        return self.ovs.get(port_id)

    def ovs_network_ports(self, network_id: str) -> list[hosts_ovs.OvsPort]:
        return [p for p in [*self.ovs.values(), *self.patches]
                if p.other_config.get('net_uuid') == network_id]


def port_chains(port_id: str, rules: tuple[str, ...] = ()) -> list[str]:
    """The port's chains as iptables-save shows what iptables_hybrid builds."""
    driver = iptables_hybrid.IptablesHybridFirewallDriver
    prefix, suffix = 'neutron-openvswi-', port_id[:10]

    def chain(name: str, specs: list[str]) -> list[str]:
        return [f'-A {prefix}{name} ' + spec.replace('$', prefix) for spec in specs]
    return (chain('i' + suffix, driver._ingress(4, True, rules))
            + chain('o' + suffix, driver._egress(4, True, prefix + 's' + suffix, rules))
            + chain('s' + suffix, [f'-s 10.0.0.10/32 -m mac --mac-source {VM_MAC} -j RETURN',
                                   '-j DROP']))


class _PortHopsCase(base.TestCase):
    """The VM's port checked against a fake server and host."""

    settings = SETTINGS

    def setUp(self) -> None:
        super().setUp()
        self.server = FakeServer()
        self.host = FakeHost()

    def check(self, settings: hops.Settings | None = None) -> report.Report:
        return hops.check_port(VM, self.server, self.host,  # type: ignore[arg-type]
                               settings or self.settings)


class PortHopsTest(_PortHopsCase):

    def assert_broken(self, expected: list[str]) -> report.Report:
        result = self.check()
        self.assertEqual(expected, [h.name for h in result.broken_hops], result.to_text())
        self.assertEqual(report.EXIT_BROKEN, result.exit_code)
        for hop in result.broken_hops:
            self.assertTrue(hop.cause and hop.command, hop)
        return result

    def test_healthy(self) -> None:
        result = self.check()
        self.assertEqual(['binding', 'vm-tap', 'bridge', 'local-vlan', 'uplink',
                          'dhcp-port', 'dnsmasq', 'dnsmasq-host'],
                         [h.name for h in result.hops])
        self.assertEqual({report.OK}, {h.status for h in result.hops}, result.to_text())
        self.assertEqual(report.EXIT_OK, result.exit_code)
        self.assertIn('all hops hold', result.to_text())
        self.assertTrue(json.loads(result.to_json())['healthy'])

    def test_unknown_port(self) -> None:
        del self.server.ports[VM]
        result = self.assert_broken(['server'])
        self.assertEqual(1, len(result.hops))

    def test_server_unreachable(self) -> None:
        self.server.unreachable = True
        self.assertIn('transport_url', self.assert_broken(['server']).hops[0].cause)

    def test_bound_elsewhere_stops_before_host_hops(self) -> None:
        self.server.ports[VM] = dataclasses.replace(self.server.ports[VM], host='other')
        result = self.assert_broken(['binding'])
        self.assertIn('other', result.hops[0].evidence)
        self.assertEqual(1, len(result.hops))

    def test_tap_missing(self) -> None:
        self.host.links.clear()
        self.assert_broken(['vm-tap'])

    def test_tap_not_in_bridge(self) -> None:
        del self.host.ovs[VM]
        result = self.assert_broken(['bridge'])
        self.assertIn(VM, result.hops[2].command)
        self.assertEqual(report.UNKNOWN, result.hops[3].status)

    def test_wrong_tag(self) -> None:
        self.host.ovs[VM] = dataclasses.replace(self.host.ovs[VM], tag=7)
        result = self.assert_broken(['local-vlan'])
        self.assertIn('tag 7', result.hops[3].evidence)
        self.assertIn('local VLAN 3', result.hops[3].evidence)

    def test_dead_vlan_means_not_wired(self) -> None:
        self.host.ovs[VM] = hosts_ovs.OvsPort(TAP, 'br-int', hops.DEAD_VLAN, {}, VM)
        self.assertIn('agentkit-l2', self.assert_broken(['local-vlan']).hops[3].cause)

    def test_hybrid_plug_tap_out_of_qbr(self) -> None:
        qvo, qvb, qbr = 'qvo' + VM[:11], 'qvb' + VM[:11], 'qbr' + VM[:11]
        self.host.ovs[VM] = dataclasses.replace(self.host.ovs[VM], name=qvo)
        self.host.links[(qvb, None)] = {'name': qvb, 'state': 'up', 'master': qbr}
        self.host.links[(TAP, None)]['master'] = qbr
        self.assertEqual([], self.check().broken_hops)
        self.host.links[(TAP, None)]['master'] = None
        self.assertIn(qbr, self.assert_broken(['bridge']).hops[2].evidence)

    def test_no_provider_patch(self) -> None:
        self.host.patches.clear()
        self.assert_broken(['uplink'])

    def test_unmapped_physical_network(self) -> None:
        self.server.segment_ = intent.Segment('flat', 'physnet9', None)
        self.assertIn('bridge_mappings', self.assert_broken(['uplink']).hops[4].evidence)

    def test_tunnel_without_peers_is_unknown_not_broken(self) -> None:
        self.server.segment_ = intent.Segment('vxlan', None, 1001)
        settings = dataclasses.replace(SETTINGS, tunnel_types=frozenset({'vxlan'}))
        result = self.check(settings)
        self.assertEqual([], result.broken_hops)
        self.assertEqual(report.UNKNOWN, result.hops[4].status)
        self.host.patches = [hosts_ovs.OvsPort('vxlan-1', 'br-tun', 3, {'net_uuid': NET})]
        self.assertEqual(report.OK, self.check(settings).hops[4].status)

    def test_no_dhcp_port(self) -> None:
        del self.server.ports[DHCP]
        self.assert_broken(['dhcp-port'])

    def test_dhcp_served_elsewhere_is_unknown(self) -> None:
        self.server.ports[DHCP] = dataclasses.replace(self.server.ports[DHCP], host='net1')
        result = self.check()
        self.assertEqual([], result.broken_hops)
        self.assertIn('net1', result.hops[-1].evidence)

    def test_qdhcp_namespace_missing(self) -> None:
        self.host.namespaces.clear()
        self.assert_broken(['dhcp-port'])

    def test_dhcp_device_without_address(self) -> None:
        self.host.ns_addresses[NS] = {DHCP_TAP: []}
        self.assert_broken(['dhcp-port'])

    def test_dhcp_port_on_another_vlan(self) -> None:
        self.host.ovs[DHCP] = dataclasses.replace(self.host.ovs[DHCP], tag=9)
        self.assert_broken(['dhcp-port'])

    def test_dnsmasq_dead(self) -> None:
        self.host.dnsmasq_state = dataclasses.replace(
            self.host.dnsmasq_state, argv=None, running=False)
        self.assertIn('/s/pid', self.assert_broken(['dnsmasq']).hops[-2].command)

    def test_host_entry_missing(self) -> None:
        self.host.dnsmasq_state = dataclasses.replace(
            self.host.dnsmasq_state, hosts={'10.0.0.2': 'fa:16:3e:00:00:02'})
        hop = self.assert_broken(['dnsmasq-host']).hops[-1]
        self.assertIn(VM_MAC, hop.evidence)
        self.assertIn('port_create_end', hop.cause)

    def test_ports_without_host_entry_are_not_expected_in_dnsmasq(self) -> None:
        self.server.ports[VM] = dataclasses.replace(self.server.ports[VM],
                                                    device_owner='network:floatingip')
        self.host.dnsmasq_state = dataclasses.replace(self.host.dnsmasq_state, hosts={})
        result = self.check()
        self.assertEqual([], result.broken_hops, result.to_text())

    def test_no_dhcp_subnet_nothing_to_serve(self) -> None:
        self.server.ports[VM] = dataclasses.replace(self.server.ports[VM], fixed_ips=())
        result = self.check()
        self.assertEqual([], result.broken_hops)
        self.assertEqual('dhcp-port', result.hops[-1].name)

    def test_linuxbridge_tap_must_be_in_brq(self) -> None:
        settings = dataclasses.replace(SETTINGS, mechanism=hops.LINUXBRIDGE)
        brq = 'brq' + NET[:11]
        self.host.links[(TAP, None)]['master'] = brq
        result = self.check(settings)
        self.assertEqual([], result.broken_hops, result.to_text())
        self.host.links[(TAP, None)]['master'] = None
        self.assertEqual(['bridge'], [h.name for h in self.check(settings).broken_hops])


class SecurityGroupHopTest(base.TestCase):
    """With iptables_hybrid the hop reads the chains the driver builds."""

    def setUp(self) -> None:
        super().setUp()
        self.server, self.host = FakeServer(), FakeHost()
        self.settings = dataclasses.replace(SETTINGS, iptables_firewall=True)

    def hop(self) -> report.Hop:
        result = hops.check_port(VM, self.server, self.host,
                                 self.settings)  # type: ignore[arg-type]
        return next(h for h in result.hops if h.name == 'security-group')

    def test_driver_chains_let_dhcp_through(self) -> None:
        hop = self.hop()
        self.assertEqual(report.OK, hop.status, hop)
        self.assertIn('neutron-openvswi-o' + VM[:10] + ' lets DHCP requests through',
                      hop.evidence)
        self.assertIn('neutron-openvswi-i' + VM[:10] + ' lets DHCP replies through',
                      hop.evidence)
        self.assertNotIn('security-group', [h.name for h in hops.check_port(
            VM, self.server, self.host, SETTINGS).hops])  # type: ignore[arg-type]

    def test_a_rule_dropping_dhcp_is_named(self) -> None:
        egress = f'neutron-openvswi-o{VM[:10]}'
        self.host.filter.insert(0, f'-A {egress} -p udp -m udp --dport 67 -j DROP')
        hop = self.hop()
        self.assertEqual(report.BROKEN, hop.status)
        self.assertIn('--dport 67 -j DROP', hop.evidence)

    def test_dropped_replies(self) -> None:
        ingress = f'neutron-openvswi-i{VM[:10]}'
        self.host.filter = [r for r in self.host.filter
                            if not (r.startswith(f'-A {ingress} ') and '--sport 67' in r)]
        hop = self.hop()
        self.assertEqual(report.BROKEN, hop.status)
        self.assertIn('sg-fallback', hop.evidence)

    def test_other_rules_do_not_decide(self) -> None:
        self.host.filter = port_chains(VM, ('-p tcp -m tcp --dport 22 -j RETURN',
                                            '-s 10.9.0.0/16 -j RETURN'))
        self.assertEqual(report.OK, self.hop().status)

    def test_unfiltered_port_and_missing_chains(self) -> None:
        self.host.filter = [f'-A neutron-openvswi-FORWARD -m physdev --physdev-out {TAP} '
                            '--physdev-is-bridged -j ACCEPT']
        self.assertEqual(report.OK, self.hop().status)
        self.host.filter = []
        self.assertEqual(report.BROKEN, self.hop().status)


PROBE = dataclasses.replace(SETTINGS, probe=True, isolated_metadata=True)


class ProbeHopsTest(_PortHopsCase):
    """--probe: the active checks' verdicts, and none without --probe."""

    settings = PROBE

    def hops(self) -> tuple[dict[str, report.Hop], list[str]]:
        result = self.check()
        return {h.name: h for h in result.hops}, [h.name for h in result.broken_hops]

    def test_healthy(self) -> None:
        hops_, broken = self.hops()
        self.assertEqual([], broken)
        self.assertEqual(['dhcp-offer', 'gateway', 'metadata'], list(hops_)[-3:])
        self.assertEqual({report.OK}, {h.status for h in hops_.values()}, hops_)
        self.assertIn('10.0.0.2 (fa:16:3e:00:00:02) offered 10.0.0.10', hops_['dhcp-offer']
                      .evidence)
        # The probe asks for the VM's MAC on the VM's local VLAN; the gateway is
        # asked from the DHCP port's device.
        self.assertEqual([('dhcp', NET, 3, VM_MAC), ('gateway', NS, DHCP_TAP, '10.0.0.1'),
                          ('connect', NS, '169.254.169.254', 80)], self.host.probe_calls)

    def test_read_only_without_probe(self) -> None:
        result = self.check(SETTINGS)
        self.assertEqual([], self.host.probe_calls)
        self.assertNotIn('dhcp-offer', [h.name for h in result.hops])
        # The same host with --probe: the checks are made (the fake does record them).
        self.check()
        self.assertEqual(3, len(self.host.probe_calls))

    def test_no_offer_is_the_dhcp_hop(self) -> None:
        self.host.offers = []
        hops_, broken = self.hops()
        self.assertEqual(['dhcp-offer'], broken)
        self.assertIn(f'no OFFER for {VM_MAC}', hops_['dhcp-offer'].evidence)
        self.assertIn('dnsmasq does not answer', hops_['dhcp-offer'].cause or '')

    def test_no_offer_after_a_broken_hop_is_not_a_second_culprit(self) -> None:
        self.host.offers = []
        self.host.dnsmasq_state = dataclasses.replace(self.host.dnsmasq_state, running=False)
        hops_, broken = self.hops()
        self.assertEqual(['dnsmasq'], broken)
        self.assertEqual(report.UNKNOWN, hops_['dhcp-offer'].status)
        self.assertIn('as expected with dnsmasq broken', hops_['dhcp-offer'].evidence)

    def test_offer_of_another_address(self) -> None:
        self.host.offers = [dict(self.host.offers[0], address='10.0.0.99')]
        self.assertEqual(['dhcp-offer'], self.hops()[1])

    def test_gateway_silent(self) -> None:
        self.host.gateway_answer = {'source': '10.0.0.2', 'mac': None, 'rtt_ms': None}
        hops_, broken = self.hops()
        self.assertEqual(['gateway'], broken)
        self.assertIn('no ARP or ping reply from 10.0.0.1', hops_['gateway'].evidence)

    def test_gateway_answering_arp_only_holds(self) -> None:
        self.host.gateway_answer['rtt_ms'] = None
        hops_, broken = self.hops()
        self.assertEqual([], broken)
        self.assertIn('no ping reply', hops_['gateway'].evidence)

    def test_metadata_refused(self) -> None:
        self.host.connect_error = '[Errno 111] Connection refused'
        hops_, broken = self.hops()
        self.assertEqual(['metadata'], broken)
        self.assertIn('isolated proxy', hops_['metadata'].evidence)

    def test_no_metadata_service_expected(self) -> None:
        settings = dataclasses.replace(PROBE, isolated_metadata=False)
        result = self.check(settings)
        self.assertEqual(report.UNKNOWN, result.hops[-1].status)
        self.assertNotIn(('connect', NS, '169.254.169.254', 80), self.host.probe_calls)

    def test_probe_that_cannot_run_is_unknown(self) -> None:
        def fail(*args: Any) -> None:
            raise RuntimeError('no bridge')
        self.host.probe_dhcp = fail  # type: ignore[method-assign,assignment]
        hops_, broken = self.hops()
        self.assertEqual([], broken)
        self.assertIn('could not run: no bridge', hops_['dhcp-offer'].evidence)

    def test_router_metadata_through_a_network_behind_it(self) -> None:
        result = hops.check_router(ROUTER, self.server, self.host, PROBE)  # type: ignore
        self.assertEqual('metadata', result.hops[-1].name)
        self.assertEqual(report.OK, result.hops[-1].status)
        self.assertIn('router', result.hops[-1].evidence)


class ProberCleanupTest(base.TestCase):
    """The probe port goes whatever happens while it exists."""

    def setUp(self) -> None:
        super().setUp()
        self.priv = self.useFixture(fixtures.MockPatchObject(doctor_probe, 'priv_probe')).mock
        self.priv.PROBE_NS_PREFIX = 'akprobe-'
        self.priv.PROBE_HOST_PREFIX = 'akp'
        self.priv.probe_host_device.side_effect = lambda i: 'akp' + i
        self.useFixture(fixtures.MockPatchObject(doctor_probe.ip_lib, 'list_namespaces',
                                                 return_value=[]))
        self.ovs = mock.Mock()
        self.ovs.probe_ports.return_value = {}
        self.prober = doctor_probe.Prober(self.ovs, 'br-int')

    def assert_removed(self) -> None:
        self.priv.remove_probe.assert_called_once_with(self.prober.id)
        self.ovs.delete_port.assert_called_once_with('br-int', 'akp' + self.prober.id)

    def test_removed_after_use(self) -> None:
        self.priv.dhcp_discover.return_value = []
        self.assertEqual(('akp%s on br-int VLAN 3' % self.prober.id, []),
                         self.prober.dhcp_offers(NET, 3, VM_MAC))
        self.ovs.add_probe_port.assert_called_once_with('br-int', 'akp' + self.prober.id, 3)
        self.assert_removed()

    def test_removed_on_failure_and_on_ctrl_c(self) -> None:
        for error in (OSError('socket'), KeyboardInterrupt()):
            self.priv.reset_mock()
            self.ovs.reset_mock()
            self.priv.dhcp_discover.side_effect = error
            self.assertRaises(type(error), self.prober.dhcp_offers, NET, 3, VM_MAC)
            self.assert_removed()

    def test_a_second_ctrl_c_cannot_stop_the_removal(self) -> None:
        during = []
        self.priv.remove_probe.side_effect = lambda i: during.append(
            signal.getsignal(signal.SIGINT))
        before = signal.getsignal(signal.SIGINT)
        self.priv.dhcp_discover.side_effect = KeyboardInterrupt()
        self.assertRaises(KeyboardInterrupt, self.prober.dhcp_offers, NET, 3, VM_MAC)
        self.assertEqual([signal.SIG_IGN], during)
        self.assertEqual(before, signal.getsignal(signal.SIGINT))

    def test_removed_when_attaching_fails(self) -> None:
        self.ovs.add_probe_port.side_effect = RuntimeError('ovsdb')
        self.assertRaises(RuntimeError, self.prober.dhcp_offers, NET, 3, VM_MAC)
        self.assert_removed()

    def test_namespace_removed_even_when_ovsdb_refuses(self) -> None:
        self.ovs.delete_port.side_effect = RuntimeError('ovsdb down')
        # Ended normally: the failed removal is the error.
        self.priv.dhcp_discover.return_value = []
        self.assertRaises(RuntimeError, self.prober.dhcp_offers, NET, 3, VM_MAC)
        self.assert_removed()
        self.assertIn('could not be removed (ovsdb down)', self.prober.outcome())
        # Ended by Ctrl-C: that stays what the caller sees; the failure is noted.
        self.priv.reset_mock()
        self.ovs.delete_port.reset_mock()
        self.priv.dhcp_discover.side_effect = KeyboardInterrupt()
        self.assertRaises(KeyboardInterrupt, self.prober.dhcp_offers, NET, 3, VM_MAC)
        self.assert_removed()
        self.assertEqual('the probe port akp%s could not be removed (ovsdb down); the next '
                         '--probe run removes it' % self.prober.id, self.prober.outcome())

    def test_outcome(self) -> None:
        self.assertEqual('no probe port had been created', self.prober.outcome())
        self.priv.dhcp_discover.return_value = []
        self.prober.dhcp_offers(NET, 3, VM_MAC)
        self.assertEqual('the probe port akp%s was removed' % self.prober.id,
                         self.prober.outcome())

    def test_leftovers_of_dead_doctors_only(self) -> None:
        mine, alive, dead = self.prober.id, '%08x' % 1, 'ffffff00'
        doctor_probe.ip_lib.list_namespaces.return_value = [   # type: ignore[attr-defined]
            'akprobe-' + i for i in (mine, alive, dead)] + ['qdhcp-' + NET]
        self.priv.check_probe_id.side_effect = lambda i: i
        with mock.patch.object(doctor_probe.Prober, '_doctor_alive',
                               side_effect=lambda i: i == alive):
            self.assertEqual([dead], self.prober.remove_stale())
        self.priv.remove_probe.assert_called_once_with(dead)
        # Its namespace, but no port with the probe mark: no OVS port is deleted
        # (one merely named akp<id> is not the doctor's).
        self.ovs.delete_port.assert_not_called()

    def test_marked_ports_of_dead_doctors_whose_namespace_is_gone(self) -> None:
        alive, dead = '%08x' % 1, 'ffffff00'
        self.ovs.probe_ports.return_value = {'akp' + alive: '1', 'akp' + dead: '4294967040',
                                             'akp-odd': '7'}
        self.priv.check_probe_id.side_effect = privileged_probe.check_probe_id
        with mock.patch.object(doctor_probe.Prober, '_doctor_alive',
                               side_effect=lambda i: i == alive):
            self.assertEqual([dead], self.prober.remove_stale())
        self.ovs.probe_ports.assert_called_once_with('br-int')
        self.ovs.delete_port.assert_called_once_with('br-int', 'akp' + dead)
        self.priv.remove_probe.assert_called_once_with(dead)


class NetworkHopsTest(base.TestCase):

    def test_healthy_then_port_off_vlan(self) -> None:
        server, host = FakeServer(), FakeHost()
        result = hops.check_network(NET, server, host, SETTINGS)  # type: ignore[arg-type]
        self.assertEqual([], result.broken_hops, result.to_text())
        host.ovs[VM] = dataclasses.replace(host.ovs[VM], tag=7)
        result = hops.check_network(NET, server, host, SETTINGS)  # type: ignore[arg-type]
        self.assertEqual(['local-vlan'], [h.name for h in result.broken_hops])


class RouterHopsTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.server = FakeServer()
        self.host = FakeHost()

    def check(self) -> report.Report:
        return hops.check_router(ROUTER, self.server, self.host, SETTINGS)  # type: ignore

    def test_healthy(self) -> None:
        result = self.check()
        self.assertEqual(['server', 'l3-intent', 'namespace', 'interfaces', 'gateway', 'snat',
                          'floating-ips', 'routes', 'metadata-proxy'],
                         [h.name for h in result.hops])
        self.assertEqual([], result.broken_hops, result.to_text())
        self.assertIn('203.0.113.9 -> 10.0.0.10', result.hops[6].evidence)
        self.assertIn('0.0.0.0/0 via 203.0.113.1', result.hops[7].evidence)
        # No record of what agentkit-l3 was told: nothing to compare with.
        self.assertEqual([report.UNKNOWN] * 3, [result.hops[1].status, result.hops[6].status,
                                                result.hops[7].status])

    def test_unknown_router(self) -> None:
        result = hops.check_router(str(uuid.uuid4()), self.server, self.host,
                                   SETTINGS)  # type: ignore[arg-type]
        self.assertEqual(['server'], [h.name for h in result.broken_hops])

    def test_hosted_elsewhere(self) -> None:
        self.server.router = {k: dataclasses.replace(p, host='net2')
                              for k, p in self.server.router.items()}
        result = self.check()
        self.assertEqual([], result.broken_hops)
        self.assertIn('net2', result.hops[0].evidence)

    def test_namespace_missing(self) -> None:
        self.host.namespaces.discard(RNS)
        self.assertEqual(['namespace'], [h.name for h in self.check().broken_hops])

    def test_interface_address_missing(self) -> None:
        self.host.ns_addresses[RNS]['qr-' + QR[:11]] = []
        self.assertEqual(['interfaces'], [h.name for h in self.check().broken_hops])

    def test_gateway_device_missing(self) -> None:
        del self.host.ns_addresses[RNS]['qg-' + QG[:11]]
        self.assertEqual(['gateway'], [h.name for h in self.check().broken_hops])

    def test_missing_snat_is_shown_but_cannot_be_judged(self) -> None:
        self.host.nat = self.host.nat[1:]
        result = self.check()
        self.assertEqual([], result.broken_hops)
        self.assertIn('enable_snat', result.hops[5].evidence)
        self.assertEqual(report.UNKNOWN, result.hops[5].status)

    def test_metadata_proxy_down(self) -> None:
        self.host.proxy = host_view.ProcessState('/s/r.pid', 77, None)
        self.assertEqual(['metadata-proxy'], [h.name for h in self.check().broken_hops])
        settings = dataclasses.replace(SETTINGS, metadata_proxy=False)
        result = hops.check_router(ROUTER, self.server, self.host, settings)  # type: ignore
        self.assertNotIn('metadata-proxy', [h.name for h in result.hops])


def recorded(enable_snat: bool = True, fips: tuple[tuple[str, str], ...] = (
        ('203.0.113.9', '10.0.0.10'),), interface: str = QR,
        routes: tuple[tuple[str, str], ...] = ()) -> router_intent.Recorded:
    """What agentkit-l3 would have recorded for FakeServer's router."""
    def port(port_id: str, ip: str, subnet: dict[str, Any] | None = None) -> dict[str, Any]:
        return {'id': port_id, 'network_id': NET, 'mac_address': 'fa:16:3e:00:00:01',
                'fixed_ips': [{'subnet_id': subnet['id'] if subnet else SUBNET,
                               'ip_address': ip, 'prefixlen': 24}],
                'subnets': [subnet] if subnet else []}
    external = {'id': str(uuid.uuid4()), 'cidr': '203.0.113.0/24',
                'gateway_ip': '203.0.113.1'}
    router = l3_api.Router.from_rpc({
        'id': ROUTER, 'enable_snat': enable_snat,
        'gw_port': port(QG, '203.0.113.5', external),
        'routes': [{'destination': dst, 'nexthop': via} for dst, via in routes],
        '_interfaces': [port(interface, '10.0.0.1')],
        '_floatingips': [{'id': str(uuid.uuid4()), 'floating_ip_address': fip,
                          'fixed_ip_address': fixed} for fip, fixed in fips]})
    return router_intent.Recorded(l3_api.Router.from_record(router.to_record()),
                                  '2026-12-07T10:00:00+00:00', 'sync_routers',
                                  '/s/l3-intent/' + ROUTER + '.json')


class RouterIntentHopsTest(RouterHopsTest):
    """With agentkit-l3's record of what it was told, SNAT and floating IPs are judged."""

    def setUp(self) -> None:
        super().setUp()
        self.host.recorded = recorded()

    def hops(self) -> tuple[dict[str, report.Hop], list[str]]:
        result = self.check()
        return {h.name: h for h in result.hops}, [h.name for h in result.broken_hops]

    def test_healthy(self) -> None:
        hops_, broken = self.hops()
        self.assertEqual([], broken)
        self.assertEqual({report.OK}, {h.status for h in hops_.values()}, hops_)
        self.assertIn('enable_snat true, 1 floating IP(s)', hops_['l3-intent'].evidence)
        self.assertIn('sync_routers at 2026-12-07', hops_['snat'].evidence)
        self.assertIn('203.0.113.9 -> 10.0.0.10', hops_['floating-ips'].evidence)

    def test_missing_snat_is_shown_but_cannot_be_judged(self) -> None:
        """(Overrides the case without a record:) with one, it is judged."""
        self.host.nat = self.host.nat[1:]
        hops_, broken = self.hops()
        self.assertEqual(['snat'], broken)
        self.assertIn('told enable_snat true', hops_['snat'].evidence)

    def test_snat_off_as_told(self) -> None:
        self.host.recorded = recorded(enable_snat=False)
        self.assertEqual(['snat'], self.hops()[1])   # FakeHost has the SNAT rule
        self.host.nat = self.host.nat[1:]
        hops_, broken = self.hops()
        self.assertEqual([], broken)
        self.assertIn('enable_snat false', hops_['snat'].evidence)

    def test_floating_ip_without_dnat(self) -> None:
        self.host.nat = [r for r in self.host.nat if 'PREROUTING' not in r]
        hops_, broken = self.hops()
        self.assertEqual(['floating-ips'], broken)
        self.assertIn('203.0.113.9 -> 10.0.0.10: no DNAT', hops_['floating-ips'].evidence)

    def test_dnat_agentkit_was_not_told_of(self) -> None:
        self.host.recorded = recorded(fips=())
        hops_, broken = self.hops()
        self.assertEqual(['floating-ips'], broken)
        self.assertIn('DNAT 203.0.113.9 -> 10.0.0.10 agentkit-l3 was not told of',
                      hops_['floating-ips'].evidence)

    def test_routes_as_told(self) -> None:
        self.host.recorded = recorded(routes=(('10.50.0.0/24', '10.0.0.7'),))
        self.host.routes_in[RNS].append(('10.50.0.0/24', '10.0.0.7'))
        hops_, broken = self.hops()
        self.assertEqual([], broken)
        self.assertIn('10.50.0.0/24 via 10.0.0.7, as agentkit-l3 was told',
                      hops_['routes'].evidence)

    def test_missing_default_and_extra_route(self) -> None:
        self.host.recorded = recorded(routes=(('10.50.0.0/24', '10.0.0.7'),))
        self.host.routes_in[RNS] = []
        hops_, broken = self.hops()
        self.assertEqual(['routes'], broken)
        self.assertIn('no 0.0.0.0/0 via 203.0.113.1; no 10.50.0.0/24 via 10.0.0.7',
                      hops_['routes'].evidence)

    def test_an_extra_default_route_is_named_as_never_installed(self) -> None:
        self.host.recorded = recorded(routes=(('0.0.0.0/0', '10.0.0.254'),))
        hops_, broken = self.hops()
        self.assertEqual([], broken)
        self.assertIn('0.0.0.0/0 via 10.0.0.254 not installed', hops_['routes'].evidence)

    def test_route_agentkit_was_not_told_of(self) -> None:
        self.host.routes_in[RNS].append(('10.60.0.0/24', '10.0.0.8'))
        hops_, broken = self.hops()
        self.assertEqual(['routes'], broken)
        self.assertIn('10.60.0.0/24 via 10.0.0.8 agentkit-l3 was not told of',
                      hops_['routes'].evidence)

    def test_record_older_than_the_servers_ports(self) -> None:
        old = str(uuid.uuid4())
        self.host.recorded = recorded(interface=old)
        hops_, broken = self.hops()
        self.assertEqual(['l3-intent'], broken)
        self.assertIn(old, hops_['l3-intent'].evidence)


class HostRoutesTest(base.TestCase):

    def test_routes_learned_from_router_advertisements_are_left_out(self) -> None:
        listed = [
            {'dst': '0.0.0.0/0', 'gateway': '203.0.113.1', 'protocol': 'boot'},
            {'dst': '10.0.0.0/24', 'gateway': None, 'protocol': 'kernel'},
            {'dst': '::/0', 'gateway': 'fe80::1', 'protocol': 'ra'}]
        with mock.patch.object(host_view.ip_lib, 'list_routes', return_value=listed):
            self.assertEqual([('0.0.0.0/0', '203.0.113.1')], host_view.HostView.routes(RNS))


class UnreadableIntentTest(base.TestCase):
    """agentkit-l3's record read from a real state_path: a record that cannot
    be read is an unknown hop with the reason, and the other hops still run."""

    def setUp(self) -> None:
        super().setUp()
        self.server, self.host = FakeServer(), FakeHost()
        self.state_path = self.useFixture(fixtures.TempDir()).path
        real = host_view.HostView(None, mock.Mock(), mock.Mock(), self.state_path)
        self.host.router_intent = real.router_intent   # type: ignore[method-assign]
        self.host.state_path = self.state_path

    def intent_hop(self) -> tuple[report.Hop, list[str]]:
        result = hops.check_router(ROUTER, self.server, self.host, SETTINGS)  # type: ignore
        self.assertEqual(['server', 'l3-intent', 'namespace', 'interfaces', 'gateway', 'snat',
                          'floating-ips', 'routes', 'metadata-proxy'],
                         [h.name for h in result.hops])
        return result.hops[1], [h.name for h in result.broken_hops]

    def test_a_directory_where_the_record_should_be(self) -> None:
        os.makedirs(router_intent.path(self.state_path, ROUTER))
        hop, broken = self.intent_hop()
        self.assertEqual((report.UNKNOWN, []), (hop.status, broken))
        self.assertIn('unreadable: [Errno 21] Is a directory', hop.evidence)

    def test_a_record_root_may_not_read(self) -> None:
        # Root reads any mode, so the refusal itself comes from a patched open.
        with mock.patch('builtins.open', side_effect=PermissionError(13, 'Permission denied')):
            hop, broken = self.intent_hop()
        self.assertEqual((report.UNKNOWN, []), (hop.status, broken))
        self.assertIn('unreadable: [Errno 13] Permission denied', hop.evidence)

    def test_a_readable_record_positive_control(self) -> None:
        router_intent.write(self.state_path, recorded().router)
        hop, broken = self.intent_hop()
        self.assertEqual((report.OK, []), (hop.status, broken))
        self.assertIn('enable_snat true, 1 floating IP(s)', hop.evidence)


class HostCheckTest(base.TestCase):

    def test_healthy_then_leftovers_and_missing_bridge(self) -> None:
        server, host = FakeServer(), FakeHost()
        settings = dataclasses.replace(SETTINGS, physical_bridges=frozenset({'br-ex'}))
        result = hops.check_host(server, host, settings)  # type: ignore[arg-type]
        self.assertEqual(['agents', 'bridges', 'dhcp-namespaces', 'router-namespaces',
                          'probe-ports'], [h.name for h in result.hops])
        self.assertEqual([], result.broken_hops, result.to_text())
        self.assertIn('agentkit-dhcp (pid 11)', result.hops[0].evidence)
        gone = str(uuid.uuid4())
        host.namespaces |= {'qrouter-' + gone, 'qdhcp-not-an-id'}
        settings = dataclasses.replace(settings, physical_bridges=frozenset({'br-phys'}))
        result = hops.check_host(server, host, settings)  # type: ignore[arg-type]
        self.assertEqual(['bridges', 'router-namespaces'],
                         [h.name for h in result.broken_hops])
        self.assertIn(gone, result.hops[3].evidence)

    def test_probe_ports_of_killed_doctors(self) -> None:
        server, host = FakeServer(), FakeHost()
        dead = 'akprobe-%08x' % 0x3ffffe            # no such pid
        mine = 'akprobe-%08x' % os.getpid()        # of a doctor that runs
        host.namespaces |= {dead}
        # br-int rows with the probe mark, their namespaces gone.
        orphan, running = 'akp%08x' % 0x3ffffd, 'akp%08x' % os.getpid()
        host.marked_ports = [orphan, running]
        with mock.patch.object(doctor_probe, 'doctor_alive',
                               side_effect=lambda i: i == '%08x' % os.getpid()):
            host.namespaces |= {mine}
            result = hops.check_host(server, host, SETTINGS)  # type: ignore[arg-type]
        self.assertEqual(['probe-ports'], [h.name for h in result.broken_hops])
        self.assertIn(dead, result.hops[-1].evidence)
        self.assertIn(f'{orphan} on br-int', result.hops[-1].evidence)
        self.assertNotIn(mine, result.hops[-1].evidence)
        self.assertNotIn(running, result.hops[-1].evidence)
        self.assertIn('agentkit-doctor-probe', result.hops[-1].command)
        self.assertFalse(doctor_probe.doctor_alive('%08x' % 0x3ffffe))
        self.assertFalse(doctor_probe.doctor_alive('%08x' % os.getpid()))  # a test runner

    def test_processes_found_by_name(self) -> None:
        proc = self.useFixture(fixtures.TempDir()).path
        for pid, argv in ((5, b'/usr/bin/python3\0/usr/bin/agentkit-l2\0--config-file'),
                          (6, b'dnsmasq\0--no-hosts'), (7, b'agentkit-dhcp\0')):
            os.makedirs(os.path.join(proc, str(pid)))
            with open(os.path.join(proc, str(pid), 'cmdline'), 'wb') as f:
                f.write(argv)
        self.assertEqual({'agentkit-l2': [5], 'agentkit-dhcp': [7]},
                         host_view.HostView.processes(hops.AGENTS, proc))


class SegmentOfTest(base.TestCase):

    def test_bottom_level_segment(self) -> None:
        def ovo(data: dict[str, Any]) -> dict[str, Any]:
            return {'versioned_object.data': data}
        obj = ovo({'binding_levels': [
            ovo({'level': 0, 'segment': ovo({'network_type': 'vxlan', 'segmentation_id': 5})}),
            ovo({'level': 1, 'segment': ovo({'network_type': 'vlan', 'physical_network': 'p',
                                             'segmentation_id': 100})})]})
        self.assertEqual(intent.Segment('vlan', 'p', 100), intent.segment_of(obj))
        self.assertIsNone(intent.segment_of(ovo({'binding_levels': []})))


class UsageTest(base.TestCase):

    def run_cli(self, *argv: str) -> int:
        with redirect_stderr(io.StringIO()):
            return cli.run(list(argv), cfg.ConfigOpts())

    def test_usage_errors_exit_2(self) -> None:
        self.assertEqual(2, self.run_cli('hosts', str(uuid.uuid4())))
        self.assertEqual(2, self.run_cli('host', str(uuid.uuid4())))
        self.assertEqual(2, self.run_cli('router', 'qrouter-1'))
        self.assertEqual(2, self.run_cli('port', 'tap1234'))
        self.assertEqual(2, self.run_cli('network', str(uuid.uuid4()).upper()))
        self.assertEqual(2, self.run_cli())
        self.assertEqual(2, self.run_cli('--rpc_timeout', '0', 'port', str(uuid.uuid4())))

    def test_a_driver_that_cannot_be_loaded_is_a_usage_error(self) -> None:
        conf_file = self.useFixture(fixtures.TempDir()).join('doctor.conf')
        with open(conf_file, 'w') as f:
            f.write('[DEFAULT]\ndhcp_driver = no-such-driver\n')
        stderr = io.StringIO()
        with redirect_stderr(stderr), mock.patch.object(cli.privsep_setup, 'setup_privsep'):
            code = cli.run(['--config-file', conf_file, 'port', str(uuid.uuid4())],
                           cfg.ConfigOpts())
        self.assertEqual(2, code)
        self.assertIn('no-such-driver', stderr.getvalue())

    def run_with(self, config: str) -> tuple[int, str, mock.Mock, mock.Mock]:
        """(exit code, stderr, privsep setup, examine) of ``--probe port <id>``
        with ``config``; the probe's signal handlers are not installed here."""
        conf_file = self.useFixture(fixtures.TempDir()).join('doctor.conf')
        with open(conf_file, 'w') as f:
            f.write(config)
        stderr = io.StringIO()
        with redirect_stderr(stderr), \
                mock.patch.object(cli.privsep_setup, 'setup_privsep') as setup, \
                mock.patch.object(cli.doctor_probe, 'prepare_interrupts'), \
                mock.patch.object(cli, 'examine',
                                  return_value=report.Report('port', VM, HOST)) as examine:
            code = cli.run(['--config-file', conf_file, '--probe', 'port', VM],
                           cfg.ConfigOpts())
        return code, stderr.getvalue(), setup, examine

    def test_options_it_reads_are_checked_before_anything_runs(self) -> None:
        for config, named in (
                ('[l2]\nbridge_mappings = physnet1:br-ex,bogus\n', '[l2] bridge_mappings'),
                ('[l2]\nbridge_mappings = physnet1:br-ex,physnet2:br-ex\n',
                 '[l2] bridge_mappings'),
                ('[l2]\nbridge_mappings = physnet1:br/../ex\n', '[l2] bridge_mappings'),
                ('[ovs]\nintegration_bridge = br-integration-0\n', '[ovs] integration_bridge'),
                ('[ovs]\nintegration_bridge = br int\n', '[ovs] integration_bridge'),
                ('[ovs]\novsdb_timeout = soon\n', '[ovs] ovsdb_timeout')):
            code, stderr, setup, examine = self.run_with(config)
            self.assertEqual(2, code, config)
            self.assertIn(named, stderr)
            setup.assert_not_called()        # no privsep daemon, no OVSDB write
            examine.assert_not_called()
        # Positive control: valid values pass, and the mappings are parsed as the agent does.
        code, stderr, setup, examine = self.run_with(
            '[l2]\nbridge_mappings = physnet1 : br-ex, physnet2:br-eth2\n'
            '[ovs]\nintegration_bridge = br-int2\n')
        self.assertEqual((0, ''), (code, stderr))
        setup.assert_called_once()
        conf = examine.call_args[0][0]
        self.assertEqual([], cli.option_problems(conf))   # every READ_OPTIONS is registered
        settings = cli._settings(conf)
        self.assertEqual((frozenset({'physnet1', 'physnet2'}), frozenset({'br-ex', 'br-eth2'}),
                          'br-int2'),
                         (settings.physical_networks, settings.physical_bridges,
                          settings.integration_bridge))


class InterruptedTest(base.TestCase):
    """What ``agentkit-doctor --probe`` says when interrupted: what became of
    its probe port (the examination runs on fakes; the probe's privileged
    calls are mocked)."""

    def setUp(self) -> None:
        super().setUp()
        self.priv = self.useFixture(fixtures.MockPatchObject(doctor_probe, 'priv_probe')).mock
        self.priv.PROBE_NS_PREFIX = 'akprobe-'
        self.priv.probe_host_device.side_effect = lambda i: 'akp' + i
        self.priv.dhcp_discover.side_effect = KeyboardInterrupt('SIGINT')
        self.useFixture(fixtures.MockPatchObject(doctor_probe.ip_lib, 'list_namespaces',
                                                 return_value=[]))
        self.ovs = self.useFixture(fixtures.MockPatchObject(cli.hosts_ovs, 'OvsView')
                                   ).mock.return_value
        self.ovs.probe_ports.return_value = {}
        for target, name in ((cli, '_service_drivers'), (cli.rpc_transport, 'get_transport'),
                             (cli.intent, 'ServerView'), (cli.privsep_setup, 'setup_privsep'),
                             (cli.doctor_probe, 'prepare_interrupts')):
            self.useFixture(fixtures.MockPatchObject(target, name))
        cli._service_drivers.return_value = (mock.Mock(), mock.Mock())  # type: ignore

    def run_port(self, check: Any) -> tuple[int, str]:
        stderr = io.StringIO()
        with redirect_stderr(stderr), mock.patch.object(cli.hops, 'check_port', check):
            code = cli.run(['--probe', 'port', VM], cfg.ConfigOpts())
        return code, stderr.getvalue().strip()

    @staticmethod
    def probing(port_id: str, server: Any, host: host_view.HostView,
                settings: hops.Settings) -> report.Report:
        host.probe_dhcp(NET, 3, VM_MAC)      # interrupted in dhcp_discover
        raise AssertionError('not interrupted')

    def test_interrupted_while_probing(self) -> None:
        code, said = self.run_port(self.probing)
        self.assertEqual(130, code)
        self.assertEqual('agentkit-doctor: interrupted; the probe port akp%s was removed'
                         % doctor_probe.probe_id(), said)
        self.priv.remove_probe.assert_called_once_with(doctor_probe.probe_id())

    def test_interrupted_while_probing_and_ovsdb_refuses_the_removal(self) -> None:
        self.ovs.delete_port.side_effect = RuntimeError('ovsdb down')
        code, said = self.run_port(self.probing)
        self.assertEqual(130, code)
        self.assertEqual('agentkit-doctor: interrupted; the probe port akp%s could not be '
                         'removed (ovsdb down); the next --probe run removes it'
                         % doctor_probe.probe_id(), said)
        self.priv.remove_probe.assert_called_once_with(doctor_probe.probe_id())

    def test_interrupted_before_any_probe_port(self) -> None:
        code, said = self.run_port(mock.Mock(side_effect=KeyboardInterrupt('SIGINT')))
        self.assertEqual((130, 'agentkit-doctor: interrupted; no probe port had been created'),
                         (code, said))
        self.priv.create_probe.assert_not_called()
