"""The fake server's L3 side over RabbitMQ: agentkit's q-l3-plugin client
against it, and the messages it sends an L3 agent's queues.

The shapes themselves are pinned against the real server's captures in
tests/unit/test_neutron29_l3_contract.py; this checks the wiring.
"""

import threading
import time

import oslo_messaging
from oslo_config import cfg

from agentkit.rpc import l3_api
from agentkit.rpc import transport as rpc_transport
from tests.functional import base
from tests.functional import fake_neutron


class _AgentEndpoint:
    """Records what arrives on l3_agent, as an L3 agent's callbacks would."""

    target = oslo_messaging.Target(version='1.5')

    def __init__(self) -> None:
        self.received = []
        self.event = threading.Event()

    def _got(self, method, **kwargs):
        self.received.append((method, kwargs))
        self.event.set()

    def routers_updated(self, context, routers):
        self._got('routers_updated', routers=routers)

    def router_deleted(self, context, router_id):
        self._got('router_deleted', router_id=router_id)

    def router_added_to_agent(self, context, payload):
        self._got('router_added_to_agent', payload=payload)
        return 'answered'

    def router_removed_from_agent(self, context, payload):
        self._got('router_removed_from_agent', payload=payload)

    def network_update(self, context, **kwargs):
        self._got('network_update', **kwargs)


class FakeNeutronL3Test(base.FunctionalTestCase):

    def setUp(self):
        super().setUp()
        self.neutron = fake_neutron.FakeNeutron().start()
        self.addCleanup(self.neutron.stop)
        rpc_transport.set_defaults(cfg.CONF)
        self.transport = oslo_messaging.get_rpc_transport(
            cfg.CONF, url=self.neutron.transport_url)
        self.addCleanup(self.transport.cleanup)
        self.host = self.short_name('akl3')
        n = self.neutron
        self.ext = n.add_network(mtu=1500)
        n.add_subnet(self.ext['id'], '198.18.0.0/24', '198.18.0.1', enable_dhcp=False)
        net = n.add_network()
        v4 = n.add_subnet(net['id'], '10.0.0.0/24', '10.0.0.1')
        v6 = n.add_subnet(net['id'], 'fd00:1::/64', 'fd00:1::1', ipv6_ra_mode='slaac',
                          ipv6_address_mode='slaac')
        vm = n.add_port(net['id'], 'fa:16:3e:00:00:05', [(v4['id'], '10.0.0.5')])
        self.router = n.add_router(self.ext, interfaces=[v4, v6], floating_ips=[vm],
                                   routes=[{'destination': '192.0.2.0/24',
                                            'nexthop': '10.0.0.254'}])
        self.down = n.add_router(self.ext, admin_state_up=False)

    def test_plugin_calls(self):
        api = l3_api.L3PluginApi(self.transport, self.host, timeout=20)
        self.assertEqual({self.router['id'], self.down['id']}, set(api.get_router_ids()))
        routers = api.sync_routers([self.router['id'], self.down['id']])
        self.assertEqual([self.router['id']], [r['id'] for r in routers])
        router = routers[0]
        self.assertEqual(self.host, router['gw_port']['binding:host_id'])
        self.assertEqual(2, len(router['_interfaces']))
        self.assertEqual(0, api.get_host_ha_router_count())
        fip = router['_floatingips'][0]
        self.assertIsNone(api.update_floatingip_statuses(router['id'], {fip['id']: 'ACTIVE'}))
        self.assertEqual({'router_id': router['id'], 'fip_statuses': {fip['id']: 'ACTIVE'}},
                         {k: v for k, v in
                          self.neutron.wait_for_call('update_floatingip_statuses').items()
                          if k != '_received'})
        self.assertEqual('ACTIVE',
                         api.sync_routers([router['id']])[0]['_floatingips'][0]['status'])

    def test_messages_to_the_agent(self):
        endpoint = _AgentEndpoint()
        servers = [oslo_messaging.get_rpc_server(
            self.transport, oslo_messaging.Target(topic=topic, server=self.host),
            [endpoint], executor='threading')
            for topic in (fake_neutron.L3_AGENT_TOPIC, fake_neutron.NETWORK_UPDATE_TOPIC)]
        for server in servers:
            server.start()
            self.addCleanup(server.wait)
            self.addCleanup(server.stop)
        time.sleep(0.5)  # the fanout queues are bound
        n, rid = fake_neutron.L3Notifications, self.router['id']
        self.neutron.send_to_agent(n.routers_updated(self.host, [rid]))
        self.assertEqual('answered', self.neutron.send_to_agent(
            n.router_added_to_agent(self.host, [rid])))
        self.neutron.send_to_agent(n.router_removed_from_agent(self.host, rid))
        self.neutron.send_to_agent(n.router_deleted(rid))
        self.neutron.networks[self.ext['id']]['mtu'] = 1400
        self.neutron.send_network_update(self.ext['id'], external=True,
                                         network_type='flat', physical_network='physnet1')
        deadline = time.monotonic() + 10
        while len(endpoint.received) < 5 and time.monotonic() < deadline:
            endpoint.event.wait(0.2)
            endpoint.event.clear()
        received = dict(endpoint.received)
        self.assertEqual({'routers': [rid]}, received['routers_updated'])
        self.assertEqual({'payload': [rid]}, received['router_added_to_agent'])
        self.assertEqual({'payload': {'router_id': rid}}, received['router_removed_from_agent'])
        self.assertEqual({'router_id': rid}, received['router_deleted'])
        self.assertEqual(1400, received['network_update']['network']['mtu'])
        self.assertTrue(received['network_update']['network']['router:external'])
