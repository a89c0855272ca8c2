"""The DHCP agent's conversation with the server at rest, on events and in races.

RPC goes to a fake server that keeps the networks as neutron-server 29's
``get_active_networks_info(enable_dhcp_filter=False)`` answers them (every
scheduled network, all subnets, all ports) and records every call; the DHCP
driver builds namespaces and ports as the real ones do (a set of namespace
names, a mock interface driver) around a fake server that remembers what it
serves.
"""

from __future__ import annotations

import copy
import threading
import uuid
from typing import Any
from unittest import mock

import fixtures

from agentkit.agent import dhcp
from agentkit.agent import ready_ports
from agentkit.agent import work_queue
from agentkit.api import device_owner
from agentkit.api import dhcp as dhcp_api
from agentkit.lib import ip_lib
from drivers.dhcp import namespaced
from tests import base


def _uuid() -> str:
    return str(uuid.uuid4())


class FakeServer:
    """The q-plugin methods of the DHCP agent over a dict of networks."""

    def __init__(self) -> None:
        self.networks: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.on_active: Any = None
        self.release_errors = 0
        self._macs = iter(range(1, 10000))

    def methods(self) -> list[str]:
        return [m for m, _ in self.calls]

    def add_network(self, dhcp_subnet: bool = True, ports: int = 1) -> dict[str, Any]:
        net_id = _uuid()
        subnet = {'id': _uuid(), 'cidr': '10.0.0.0/24',
                  'enable_dhcp': dhcp_subnet, 'ip_version': 4, 'gateway_ip': None}
        net = {'id': net_id, 'admin_state_up': True, 'mtu': 1450, 'project_id': 'p',
               'subnets': [subnet], 'ports': []}
        self.networks[net_id] = net
        for i in range(ports):
            self.add_port(net_id, '10.0.0.%d' % (10 + i))
        return net

    def add_port(self, net_id: str, ip: str, **attrs: Any) -> dict[str, Any]:
        net = self.networks[net_id]
        port = {'id': _uuid(), 'network_id': net_id, 'device_owner': 'compute:nova',
                'mac_address': 'fa:16:3e:00:00:%02x' % next(self._macs),
                'fixed_ips': [{'subnet_id': net['subnets'][0]['id'], 'ip_address': ip}],
                'status': 'DOWN', **attrs}
        net['ports'].append(port)
        return port

    def get_active_networks_info(self, enable_dhcp_filter: bool = True) -> list[Any]:
        self.calls.append(('get_active_networks_info', enable_dhcp_filter))
        answer = copy.deepcopy(list(self.networks.values()))
        if self.on_active is not None:
            self.on_active()
        return answer

    def get_network_info(self, network_id: str) -> dict[str, Any] | None:
        self.calls.append(('get_network_info', network_id))
        return copy.deepcopy(self.networks.get(network_id))

    def create_dhcp_port(self, port: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(('create_dhcp_port', port))
        body = port['port']
        new = {'id': _uuid(), 'network_id': body['network_id'],
               'device_id': body['device_id'], 'device_owner': device_owner.DHCP,
               'mac_address': 'fa:16:3e:ff:00:%02x' % next(self._macs),
               'fixed_ips': [{'subnet_id': ip['subnet_id'], 'ip_address': '10.0.0.2'}
                             for ip in body['fixed_ips']]}
        self.networks[body['network_id']]['ports'].append(new)
        return copy.deepcopy(new)

    def update_dhcp_port(self, port_id: str, port: dict[str, Any]) -> Any:
        raise AssertionError('not expected')

    def release_dhcp_port(self, network_id: str, device_id: str) -> None:
        self.calls.append(('release_dhcp_port', network_id))
        if self.release_errors:
            self.release_errors -= 1
            raise RuntimeError('server unreachable')
        net = self.networks.get(network_id)
        if net is not None:
            net['ports'] = [p for p in net['ports'] if p.get('device_id') != device_id]

    def dhcp_ready_on_ports(self, port_ids: list[str]) -> None:
        self.calls.append(('dhcp_ready_on_ports', sorted(port_ids)))


class FakeDhcpDriver(namespaced.NamespacedDhcpDriver):
    """Serves what it was enabled for; ``dead`` networks' servers died.

    ``actions``: ``enable`` when a server starts, ``reload`` when a served
    network's server is reconfigured, ``disable`` when it stops.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.served: set[str] = set()
        self.dead: set[str] = set()
        self.actions: list[tuple[str, str]] = []

    def serve(self, network: dhcp_api.Network, namespace: str, device: str) -> None:
        action = 'reload' if network.id in self.served else 'enable'
        self.actions.append((action, network.id))
        self.served.add(network.id)
        self.dead.discard(network.id)

    def stop_serving(self, network_id: str) -> None:
        self.actions.append(('disable', network_id))
        self.served.discard(network_id)

    def active_networks(self) -> set[str]:
        return self.served - self.dead


class FakeNamespaces:
    """``ip_lib.IPWrapper`` over a set of namespace names."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.writes = 0

    def __call__(self, namespace: str) -> Any:
        ns = mock.Mock()
        ns.namespace_exists.side_effect = lambda: namespace in self.names

        def ensure() -> None:
            self.writes += namespace not in self.names
            self.names.add(namespace)

        def delete() -> None:
            self.writes += 1
            self.names.discard(namespace)
        ns.ensure_namespace.side_effect = ensure
        ns.delete_namespace.side_effect = delete
        ns.get_devices.return_value = []
        ns.device.return_value.route.get_gateway.return_value = None
        return ns

    def read_device_state(self, device: str, namespace: str) -> Any:
        """What ``InterfaceDriver.read_state`` reads: None for a namespace
        not made yet."""
        if namespace not in self.names:
            return None
        return ip_lib.DeviceState(loopback_up=True, link=None, addresses=(), routes=())


class DhcpAgentTestCase(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.namespaces = FakeNamespaces()
        self.useFixture(fixtures.MockPatch('drivers.dhcp.namespaced.ip_lib.IPWrapper',
                                           self.namespaces))
        agent = dhcp.DhcpAgent.__new__(dhcp.DhcpAgent)
        agent.conf = mock.Mock(enable_isolated_metadata=False,
                               dhcp_reload_coalesce_seconds=0)
        agent.host = 'host1'
        agent.queue = work_queue.WorkQueue(agent.process_update)
        agent._lock = threading.Lock()
        agent.networks = {}
        agent._ready_ports = {}
        agent._applied = {}
        agent._release_pending = set()
        agent.rpc_seen = {}
        agent.metadata = None
        agent.interface = mock.Mock()
        agent.interface.get_device_name.side_effect = lambda port_id: 'tap' + port_id[:11]
        agent.interface.read_state.side_effect = (
            lambda network_id, device, namespace: self.namespaces.read_device_state(
                device, namespace))
        self.driver = FakeDhcpDriver(agent.conf, agent.host, agent.interface)
        agent.dhcp = self.driver
        self.server = FakeServer()
        agent.plugin = self.server
        # Not started: drain() flushes it in the test's thread.
        agent.ready_reports = ready_ports.ReadyPortsReporter(self.server.dhcp_ready_on_ports)
        self.agent = agent
        self.callbacks = dhcp.DhcpRpcCallbacks(agent)

    def drain(self) -> None:
        """Run what is queued, one update at a time, in this thread."""
        while True:
            update = self.pop()
            if update is None:
                self.agent.ready_reports.flush()  # what its thread would send
                return
            try:
                self.agent.process_update(update)
            except Exception as exc:
                self.agent.queue._failed(update, RuntimeError('test: %r' % exc))

    def pop(self) -> work_queue.ResourceUpdate | None:
        q = self.agent.queue
        with q._cond:
            if not q._pending:
                return None
            rid = min(q._pending, key=lambda r: (q._pending[r][1].priority, q._pending[r][0]))
            return q._pending.pop(rid)[1]

    def settle(self) -> None:
        self.agent.sync_state()
        self.drain()
        self.server.calls.clear()
        self.driver.actions.clear()
        self.agent.interface.reset_mock()
        self.namespaces.writes = 0


class QuietAtRestTest(DhcpAgentTestCase):

    def test_first_sync_builds_and_reports_each_port_once(self) -> None:
        nets = [self.server.add_network(ports=2) for _ in range(3)]
        self.agent.sync_state()
        self.drain()
        self.assertEqual(1, self.server.methods().count('get_active_networks_info'))
        self.assertEqual(3, self.server.methods().count('create_dhcp_port'))
        reported = [ids for m, ids in self.server.calls if m == 'dhcp_ready_on_ports']
        # All three networks' ports in one call.
        self.assertEqual([sorted(p['id'] for n in nets for p in n['ports']
                                 if p['device_owner'] != device_owner.DHCP)],
                         reported)
        self.assertNotIn('release_dhcp_port', self.server.methods())
        self.assertNotIn('get_network_info', self.server.methods())

    def test_audit_at_rest_is_one_call_and_touches_nothing(self) -> None:
        for _ in range(5):
            self.server.add_network(ports=2)
        self.server.add_network(dhcp_subnet=False)  # e.g. the external network
        self.settle()
        for _ in range(2):
            self.agent.audit_state()
            self.drain()
        self.assertEqual(['get_active_networks_info'] * 2, self.server.methods())
        self.assertEqual([], self.driver.actions)
        self.agent.interface.plug.assert_not_called()
        self.assertEqual(0, self.namespaces.writes)

    def test_full_sync_again_sends_nothing_but_the_query(self) -> None:
        for _ in range(3):
            self.server.add_network()
        self.server.add_network(dhcp_subnet=False)
        self.settle()
        self.agent.sync_state()  # e.g. after the server revived the agent
        self.drain()
        self.assertEqual(['get_active_networks_info'], self.server.methods())

    def test_port_status_change_alone_is_not_a_difference(self) -> None:
        net = self.server.add_network()
        self.settle()
        for port in self.server.networks[net['id']]['ports']:
            port.update(status='ACTIVE', revision_number=3)
        self.agent.audit_state()
        self.drain()
        self.assertEqual(['get_active_networks_info'], self.server.methods())
        self.assertEqual([], self.driver.actions)

    def test_network_without_dhcp_subnet_is_never_released(self) -> None:
        net = self.server.add_network(dhcp_subnet=False)
        for _ in range(2):
            self.agent.sync_state()
            self.drain()
            self.agent.audit_state()
            self.drain()
        self.assertNotIn('release_dhcp_port', self.server.methods())
        self.assertEqual([], self.driver.actions)
        self.assertNotIn(net['id'], self.agent.networks)

    def test_dhcp_subnet_disabled_releases_the_port_once(self) -> None:
        net = self.server.add_network()
        self.settle()
        self.server.networks[net['id']]['subnets'][0]['enable_dhcp'] = False
        self.callbacks.subnet_update_end({}, payload={'subnet': {'network_id': net['id']}})
        self.drain()
        self.assertEqual(['get_network_info', 'release_dhcp_port'], self.server.methods())
        self.assertEqual([('disable', net['id'])], self.driver.actions)
        self.server.calls.clear()
        self.agent.audit_state()
        self.drain()
        self.agent.sync_state()
        self.drain()
        self.assertEqual(['get_active_networks_info'] * 2, self.server.methods())

    def test_port_of_ours_listed_in_a_network_we_do_not_serve_is_released(self) -> None:
        """A DHCP subnet removed while the agent was away: its port is freed."""
        net = self.server.add_network(dhcp_subnet=False, ports=0)
        self.server.networks[net['id']]['ports'].append({
            'id': _uuid(), 'device_id': dhcp_api.dhcp_port_device_id(self.agent.host, net['id']),
            'device_owner': device_owner.DHCP, 'mac_address': 'fa:16:3e:ff:ff:01',
            'fixed_ips': []})
        for _ in range(3):
            self.agent.sync_state()
            self.drain()
        self.assertEqual(1, self.server.methods().count('release_dhcp_port'))

    def test_delete_of_a_network_never_served_here_releases_nothing(self) -> None:
        served = self.server.add_network()
        self.settle()
        other = _uuid()
        self.callbacks.network_delete_end({}, payload={'network_id': other})
        self.drain()
        self.assertEqual([], self.server.methods())
        del self.server.networks[served['id']]
        self.callbacks.network_delete_end({}, payload={'network_id': served['id']})
        self.drain()
        self.assertEqual([('release_dhcp_port', served['id'])], self.server.calls)
        self.assertEqual(set(), self.namespaces.names)

    def test_failed_release_is_retried_after_the_teardown(self) -> None:
        net = self.server.add_network()
        self.settle()
        self.server.release_errors = 1
        del self.server.networks[net['id']]
        self.callbacks.network_delete_end({}, payload={'network_id': net['id']})
        self.drain()  # fails once, retried from the queue
        self.assertEqual(['release_dhcp_port'] * 2, self.server.methods())
        self.assertEqual(set(), self.agent._release_pending)


class AuditDifferencesTest(DhcpAgentTestCase):

    def test_audit_rebuilds_only_the_network_that_changed(self) -> None:
        nets = [self.server.add_network() for _ in range(4)]
        self.settle()
        new_port = self.server.add_port(nets[2]['id'], '10.0.0.50')
        self.agent.audit_state()
        self.drain()
        self.assertEqual(['get_active_networks_info',
                          ('dhcp_ready_on_ports', [new_port['id']])],
                         [m if m != 'dhcp_ready_on_ports' else (m, a)
                          for m, a in self.server.calls])
        self.assertEqual([('reload', nets[2]['id'])], self.driver.actions)

    def test_audit_restores_a_network_whose_dhcp_server_died(self) -> None:
        nets = [self.server.add_network() for _ in range(3)]
        self.settle()
        self.driver.dead.add(nets[1]['id'])
        self.agent.audit_state()
        self.drain()
        self.assertEqual([('reload', nets[1]['id'])], self.driver.actions)
        self.assertEqual(['get_active_networks_info'], self.server.methods())
        self.assertIn('its DHCP server is not running', self.log.output)

    def test_audit_disables_a_network_no_longer_scheduled_here(self) -> None:
        keep, gone = self.server.add_network(), self.server.add_network()
        self.settle()
        del self.server.networks[gone['id']]
        self.agent.audit_state()
        self.drain()
        self.assertEqual(['get_active_networks_info', 'release_dhcp_port'],
                         self.server.methods())
        self.assertEqual([('disable', gone['id'])], self.driver.actions)
        self.assertIn(keep['id'], self.agent.networks)

    def test_readiness_is_reported_again_when_a_ports_address_changes(self) -> None:
        net = self.server.add_network(ports=3)
        self.settle()
        port = self.server.networks[net['id']]['ports'][1]
        port['fixed_ips'][0]['ip_address'] = '10.0.0.99'
        self.callbacks.port_update_end({}, payload={'port': port})
        self.drain()
        self.assertEqual([('get_network_info', net['id']),
                          ('dhcp_ready_on_ports', [port['id']])], self.server.calls)


class EventsTouchTheirNetworkTest(DhcpAgentTestCase):

    def test_each_event_refreshes_only_its_network(self) -> None:
        nets = [self.server.add_network() for _ in range(5)]
        self.settle()
        target = nets[3]['id']
        port = self.server.networks[target]['ports'][0]
        for event, payload in (
                ('network_update_end', {'network': {'id': target}}),
                ('subnet_update_end', {'subnet': {'network_id': target}}),
                ('port_update_end', {'port': port}),
                ('port_delete_end', {'port_id': port['id'], 'network_id': target})):
            getattr(self.callbacks, event)({}, payload=payload)
            self.drain()
        self.assertEqual([('get_network_info', target)] * 4, self.server.calls)
        self.assertEqual({target}, {net_id for _, net_id in self.driver.actions})


class SyncRaceTest(DhcpAgentTestCase):

    def test_network_scheduled_during_the_sync_is_not_torn_down(self) -> None:
        """The host is looked at before the server is asked."""
        new = self.server.add_network()
        answer_without_it = {}

        def meanwhile() -> None:
            # Scheduled and built from its RPC event while the call runs;
            # the answer was computed before.
            self.callbacks.network_create_end({}, payload={'network': {'id': new['id']}})
            self.agent.process_update(self.pop())
        self.server.networks, answer_without_it = answer_without_it, self.server.networks
        self.server.on_active = lambda: (
            setattr(self.server, 'networks', answer_without_it), meanwhile())
        self.agent.sync_state()
        self.drain()
        self.assertNotIn('release_dhcp_port', self.server.methods())
        self.assertIn(new['id'], self.agent.networks)
        self.assertNotIn(('disable', new['id']), self.driver.actions)

    def test_snapshot_older_than_a_handled_delete_does_not_rebuild(self) -> None:
        net = self.server.add_network()
        self.settle()

        def meanwhile() -> None:
            del self.server.networks[net['id']]
            self.callbacks.network_delete_end({}, payload={'network_id': net['id']})
            self.agent.process_update(self.pop())
        self.server.on_active = meanwhile
        self.agent.sync_state()
        self.drain()
        self.assertNotIn(net['id'], self.agent.networks)
        # The snapshot (taken before the delete) would have enabled it again.
        self.assertEqual([('disable', net['id'])], self.driver.actions)

    def test_sync_snapshot_does_not_replace_a_pending_rpc_update(self) -> None:
        net = self.server.add_network()
        self.settle()
        self.callbacks.port_create_end({}, payload={'port': {'network_id': net['id']}})
        self.agent.sync_state()
        update = self.pop()
        self.assertEqual((dhcp.REFRESH, work_queue.PRIORITY_RPC),
                         (update.action, update.priority))
        self.assertIsNone(self.pop())

    def test_a_newer_sync_replaces_an_older_syncs_pending_update(self) -> None:
        net = self.server.add_network()
        self.agent.enqueue(net['id'], dhcp.DISABLE, dhcp.SyncSnapshot(None, 0.0),
                           work_queue.PRIORITY_SYNC)  # e.g. a retry of the last sync
        self.agent.sync_state()
        self.drain()
        self.assertIn(net['id'], self.agent.networks)
        self.assertEqual([('enable', net['id'])], self.driver.actions)


class OwnDhcpPortTest(DhcpAgentTestCase):
    """This host's DHCP port is never created twice because of its payload."""

    def own_port(self, net: dict[str, Any]) -> dict[str, Any]:
        return next(p for p in net['ports'] if p['device_owner'] == device_owner.DHCP)

    def test_names_and_options_that_only_a_host_entry_uses_do_not_refuse_it(self) -> None:
        net = self.server.add_network(ports=1)
        self.settle()
        port = self.own_port(self.server.networks[net['id']])
        port['dns_assignment'] = [{'ip_address': '10.0.0.2', 'hostname': 'bad name!',
                                   'fqdn': 'bad name!.'}]
        port['extra_dhcp_opts'] = [{'opt_name': 'bogus\nname', 'opt_value': 'x'}]
        self.agent.sync_state()
        self.drain()
        self.assertNotIn('create_dhcp_port', self.server.methods())

    def test_a_malformed_own_port_is_not_created_again(self) -> None:
        net = self.server.add_network(ports=1)
        self.settle()
        self.own_port(self.server.networks[net['id']])['mac_address'] = 'not-a-mac'
        for _ in range(3):
            self.agent.sync_state()
            self.drain()
        self.assertNotIn('create_dhcp_port', self.server.methods())
        self.assertEqual(1, sum(p['device_owner'] == device_owner.DHCP
                                for p in self.server.networks[net['id']]['ports']))
