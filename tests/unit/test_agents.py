"""Agent logic with drivers and RPC mocked: validation, queueing, decisions."""

import threading
import uuid
from unittest import mock

from agentkit import exceptions
from agentkit.agent import dhcp
from agentkit.agent import l2
from agentkit.agent import l3
from agentkit.agent import work_queue
from agentkit.api import dhcp_payload
from tests import base


def _uuid():
    return str(uuid.uuid4())


class DhcpCallbacksTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.agent = mock.Mock()
        self.cb = dhcp.DhcpRpcCallbacks(self.agent)

    def test_events_queue_a_refresh_of_the_network(self):
        net = _uuid()
        self.cb.network_create_end({}, payload={'network': {'id': net}})
        self.cb.subnet_create_end({}, payload={'subnet': {'network_id': net}})
        self.cb.port_update_end({}, payload={'port': {'network_id': net}})
        self.cb.port_delete_end({}, payload={'port_id': _uuid(), 'network_id': net})
        self.assertEqual([mock.call(net)] * 4, self.agent.refresh.call_args_list)
        self.cb.network_delete_end({}, payload={'network_id': net})
        self.agent.enqueue.assert_called_once_with(net, dhcp.DISABLE)

    def test_unsafe_or_malformed_payloads_are_dropped(self):
        for payload in (None, {}, {'network': {'id': '../../etc'}},
                        {'network': {'id': 5}}, {'network': 'x'},
                        {'network': {'id': 'qdhcp-x; rm -rf'}}):
            self.cb.network_create_end({}, payload=payload)
        self.agent.refresh.assert_not_called()
        self.agent.on_error.assert_not_called()  # rejected, not a bug


class ValidateNetworkTest(base.TestCase):
    """The DHCP agent's edge: server dicts into api.dhcp's typed network."""

    def test_accepts_server_shape(self):
        net = {'id': _uuid(), 'mtu': 1450, 'subnets': [
            {'id': _uuid(), 'cidr': '192.168.10.0/24', 'enable_dhcp': True}],
            'ports': []}
        parsed = dhcp_payload.parse_network(net)
        self.assertEqual((net['id'], 1450, net['subnets'][0]['id']),
                         (parsed.id, parsed.mtu, parsed.subnets[0].id))

    def test_rejects(self):
        good_subnet = {'id': _uuid(), 'cidr': '10.0.0.0/24', 'enable_dhcp': True}
        for bad in ({'id': 'nope'}, {'id': _uuid(), 'subnets': 'x'},
                    {'id': _uuid(), 'subnets': [{'id': _uuid(), 'cidr': '10.0.0.300/24'}]},
                    {'id': _uuid(), 'subnets': [good_subnet], 'mtu': '1500'},
                    {'id': _uuid(), 'mtu': True}, {'id': _uuid(), 'admin_state_up': 'yes'},
                    {'id': _uuid(), 'project_id': 5}):
            self.assertRaises(exceptions.InvalidPayload, dhcp_payload.parse_network, bad)

    def test_bad_port_is_left_out_with_its_reason(self):
        subnet = {'id': _uuid(), 'cidr': '10.0.0.0/24', 'enable_dhcp': True}
        good = {'id': _uuid(), 'mac_address': 'fa:16:3e:00:00:01',
                'fixed_ips': [{'subnet_id': subnet['id'], 'ip_address': '10.0.0.5'}]}
        bad = dict(good, id='../etc', mac_address='fa:16:3e:00:00:02')
        parsed = dhcp_payload.parse_network({'id': _uuid(), 'subnets': [subnet],
                                             'ports': [good, bad]})
        self.assertEqual([good['id']], [p.id for p in parsed.ports])
        self.assertEqual(1, len(parsed.skipped_ports))


class L3CallbacksTest(base.TestCase):

    def test_routers_updated_queues_each(self):
        agent = mock.Mock()
        cb = l3.L3RpcCallbacks(agent)
        r1, r2 = _uuid(), _uuid()
        cb.routers_updated({}, routers=[r1, r2])
        self.assertEqual([mock.call(r1, l3.REFRESH), mock.call(r2, l3.REFRESH)],
                         agent.enqueue.call_args_list)
        cb.router_deleted({}, router_id=r1)
        agent.enqueue.assert_called_with(r1, l3.DELETE)

    def test_one_bad_id_rejects_the_message(self):
        agent = mock.Mock()
        l3.L3RpcCallbacks(agent).routers_updated({}, routers=[_uuid(), 'x/../y'])
        agent.enqueue.assert_not_called()


class L2DeviceTest(base.TestCase):

    def test_validate_device(self):
        port = _uuid()
        self.assertEqual(port, l2.validate_device(port))
        self.assertEqual('tap' + port[:11], l2.validate_device('tap' + port[:11]))
        for bad in ('tap../../x', 'eth0', 'tap' + port, '', None):
            self.assertRaises(exceptions.InvalidIdentifier, l2.validate_device, bad)


class L2TunnelPeerTest(base.TestCase):
    """Which endpoints the server names become tunnel peers."""

    def agent(self, local_ip):
        agent = l2.L2Agent.__new__(l2.L2Agent)
        agent.conf = mock.Mock()
        agent.conf.l2.tunnel_types = ['vxlan']
        agent.conf.l2.local_ip = local_ip
        agent.mech = mock.Mock()
        agent._ignored_peers = set()
        return agent

    def peers(self, agent, *ips):
        for ip in ips:
            agent.add_tunnel(ip, 'vxlan')
        return [c.args[0] for c in agent.mech.tunnel_update.call_args_list]

    def test_remote_hosts_only(self):
        agent = self.agent('10.0.0.1')
        self.assertEqual(['10.0.0.2'], self.peers(
            agent, '10.0.0.2', '10.0.0.1', '127.0.0.1', '::1', 'not-an-ip', '10.0.0.2/24'))
        agent.add_tunnel('10.0.0.3', 'gre')  # a type this host does not tunnel
        self.assertEqual(1, agent.mech.tunnel_update.call_count)

    def test_loopback_peers_on_a_loopback_host(self):
        # A single-node setup (local_ip 127.0.0.1) may have loopback peers.
        self.assertEqual(['127.0.0.2'], self.peers(self.agent('127.0.0.1'), '127.0.0.2'))


class DhcpSyncTest(base.TestCase):
    """sync_state: wanted networks applied at sync priority, stale ones disabled."""

    def test_sync_enqueues_and_cleans_stale(self):
        agent = dhcp.DhcpAgent.__new__(dhcp.DhcpAgent)
        agent.queue = mock.Mock()
        agent.networks = {}
        agent._lock = threading.Lock()
        agent._release_pending = set()
        agent.rpc_seen = {}
        agent.metadata = None
        agent.dhcp = mock.Mock()
        stale, good = _uuid(), _uuid()
        agent.dhcp.active_networks.return_value = {stale}
        agent.plugin = mock.Mock()
        agent.plugin.get_active_networks_info.return_value = [
            {'id': good, 'subnets': [], 'ports': []}, {'id': 'bad id'}]
        agent.sync_state()
        updates = [c.args[0] for c in agent.queue.put.call_args_list]
        self.assertEqual({(good, dhcp.APPLY), (stale, dhcp.DISABLE)},
                         {(u.resource_id, u.action) for u in updates})
        self.assertEqual({work_queue.PRIORITY_SYNC}, {u.priority for u in updates})
        self.assertIn('Skipping malformed network', self.log.output)


class DhcpPortRaceTest(base.TestCase):
    """A DHCP port asked for while the server deletes the network."""

    def test_delete_races_are_conflicts_other_errors_are_not(self):
        import oslo_messaging
        agent = dhcp.DhcpAgent.__new__(dhcp.DhcpAgent)
        agent.host = 'host1'
        agent.plugin = mock.Mock()
        network = dhcp_payload.parse_network(
            {'id': _uuid(), 'project_id': 'p', 'ports': [],
             'subnets': [{'id': _uuid(), 'cidr': '10.0.0.0/24', 'enable_dhcp': True}]})
        agent.plugin.create_dhcp_port.side_effect = oslo_messaging.RemoteError(
            'SubnetInUse', 'This subnet is being modified by another concurrent operation.')
        self.assertRaises(exceptions.Conflict, agent._ensure_dhcp_port, network)
        agent.plugin.create_dhcp_port.side_effect = oslo_messaging.RemoteError(
            'OverQuota', 'no')
        self.assertRaises(oslo_messaging.RemoteError, agent._ensure_dhcp_port, network)


class EndpointVersionTest(base.TestCase):
    """The versions neutron-server casts with must be accepted
    (neutron-reference.md: server -> agent RPC table)."""

    def test_versions_neutron_sends(self):
        from oslo_messaging import _utils as messaging_utils
        sent = {l2.L2RpcCallbacks: ['1.0', '1.1', '1.4'],   # port/SG/network
                l3.L3RpcCallbacks: ['1.0', '1.1', '1.4'],   # deleted/updated/network
                dhcp.DhcpRpcCallbacks: ['1.0']}
        for endpoint, versions in sent.items():
            for version in versions:
                self.assertTrue(messaging_utils.version_is_compatible(
                    endpoint.target.version, version), (endpoint, version))
