"""agentkit-l3 end to end against the fake server over RabbitMQ.

The agent runs as a process; routers come from ``sync_routers`` of the fake
server, whose replies and messages are shaped as neutron-server 29's
(tests/fixtures/neutron29/sync_routers.json, casts-l3.json). What is
checked is on the host: ``qrouter-`` namespaces, their devices and NAT
rules. The router data plane itself (packets through SNAT and floating
IPs) is proven in test_l3_namespace.py and, under the real server, in
tests/fullstack/test_seed_scenario.py.
"""

import os
import shutil
import subprocess
import uuid

import testtools.content

from agentkit.lib import ip_lib
from agentkit.lib import naming
from tests.functional import base
from tests.functional import fake_neutron

STATE_ROOT = '/var/lib/agentkit-test'
L3 = fake_neutron.L3Notifications


def _mac():
    return 'fa:16:3e:%02x:%02x:%02x' % tuple(uuid.uuid4().bytes[:3])


def nat_rules(namespace):
    out = subprocess.run(['ip', 'netns', 'exec', namespace, 'iptables-save', '-t', 'nat'],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.startswith('-A ')]


class L3AgentTest(base.AgentTestCase):

    def setUp(self):
        # Taken first, released last: after the agent was killed.
        self.useFixture(base.HostRouters())
        super().setUp()
        self.neutron = fake_neutron.FakeNeutron().start()
        self.addCleanup(self.neutron.stop)
        os.makedirs(STATE_ROOT, mode=0o755, exist_ok=True)
        self.state_path = os.path.join(STATE_ROOT, uuid.uuid4().hex[:12])
        os.makedirs(self.state_path, mode=0o755)
        self.addCleanup(shutil.rmtree, self.state_path, True)
        self.host = self.short_name('akl3')
        self.bridges = set()
        self.addCleanup(self.cleanup_host)

    def write_config(self, **default):
        return base.write_config(self.get_temp_path('l3.ini'), {
            'DEFAULT': {'transport_url': self.neutron.transport_url,
                        'host': self.host, 'state_path': self.state_path,
                        'interface_driver': 'linuxbridge', 'l3_driver': 'namespace',
                        'enable_metadata_proxy': False, **default},
            'agent': {'report_interval': 1},
        })

    def start_agent(self, **default):
        proc = self.run_agent('agentkit-l3', self.write_config(**default), self.host,
                              self.neutron)
        self.addOnException(lambda exc_info: self.addDetail(
            'agentkit-l3.log', testtools.content.text_content(proc.output())))
        return proc

    def cleanup_host(self):
        """Runs after the agent was killed: remove what it built."""
        for ns in ip_lib.list_namespaces():
            router_id = ns[len(naming.ROUTER_NS_PREFIX):]
            if ns.startswith(naming.ROUTER_NS_PREFIX) and (
                    router_id in self.neutron.routers or router_id in self.extra_routers):
                ip_lib.delete_namespace(ns)
        for net_id in self.neutron.networks:
            bridge = naming.bridge_name(net_id)
            if ip_lib.device_exists(bridge):
                ip_lib.IPDevice(bridge).delete()

    extra_routers = ()

    # -- building the server's view ---------------------------------------------------
    def network(self, cidr, gateway):
        net = self.neutron.add_network()
        return net, self.neutron.add_subnet(net['id'], cidr, gateway, enable_dhcp=False)

    def vm_port(self, net, subnet, ip):
        return self.neutron.add_port(net['id'], _mac(), [(subnet['id'], ip)])

    def namespace_devices(self, router_id):
        """qr-/qg- devices of the router's namespace; None if there is none."""
        try:
            links = ip_lib.list_links(naming.router_namespace(router_id))
        except ip_lib.NetworkNamespaceNotFound:  # also: deleted while we looked
            return None
        return {link['name'] for link in links if link['name'].startswith(('qr-', 'qg-'))}

    def wait_statuses(self, router_id, statuses, since):
        return self.neutron.wait_for_call(
            'update_floatingip_statuses',
            lambda kw: kw['router_id'] == router_id and kw['fip_statuses'] == statuses,
            since=since, timeout=30)

    def wait_configurations(self, predicate, since):
        return self.neutron.wait_for_call(
            'report_state',
            lambda kw: (kw['agent_state']['agent_state']['host'] == self.host
                        and predicate(kw['agent_state']['agent_state']['configurations'])),
            since=since, timeout=30)

    # -- tests ---------------------------------------------------------------------------
    def test_routers_follow_the_server_messages(self):
        ext, ext_subnet = self.network('172.31.250.0/24', '172.31.250.1')
        net, subnet = self.network('10.250.0.0/24', '10.250.0.1')
        net2, subnet2 = self.network('10.251.0.0/24', '10.251.0.1')
        vm = self.vm_port(net, subnet, '10.250.0.10')
        self.start_agent()

        # Created and added to this agent (a call: the API waits for us).
        mark = self.neutron.mark()
        router = self.neutron.add_router(gateway_network=ext, interfaces=[subnet],
                                         floating_ips=[vm], host=self.host)
        fip = router['_floatingips'][0]
        self.assertIsNone(self.neutron.send_to_agent(
            L3.router_added_to_agent(self.host, [router['id']])))
        self.wait_statuses(router['id'], {fip['id']: 'ACTIVE'}, mark)
        qr = naming.router_interface_name(router['_interfaces'][0]['id'])
        qg = naming.router_gateway_name(router['gw_port']['id'])
        self.assertEqual({qr, qg}, self.namespace_devices(router['id']))
        ns = naming.router_namespace(router['id'])
        self.assertIn('-A neutron-l3-agent-PREROUTING -d %s/32 -j DNAT --to-destination '
                      '10.250.0.10' % fip['floating_ip_address'], nat_rules(ns))

        # An interface added: routers_updated, as the server casts it.
        with self.neutron.lock:
            port2 = self.neutron.l3.add_router_interface(router['id'], subnet2)
        self.neutron.send_to_agent(L3.routers_updated(self.host, [router['id']]))
        qr2 = naming.router_interface_name(port2['id'])
        base.wait_until(lambda: qr2 in (self.namespace_devices(router['id']) or ()),
                        20, 'the second interface')

        # A network update reaches only the router attached to that network.
        other = self.neutron.add_router(interfaces=[], host=self.host)
        self.neutron.send_to_agent(L3.routers_updated(self.host, [other['id']]))
        base.wait_until(lambda: self.namespace_devices(other['id']) is not None, 20,
                        'the port-less router')
        mark = self.neutron.mark()
        self.neutron.send_network_update(net2['id'])
        asked = self.neutron.wait_for_call('sync_routers', since=mark, timeout=20)
        self.assertEqual([router['id']], asked['router_ids'])

        # An HA router is scheduled here by the real server: refused, its
        # floating IP in ERROR, the reason in the agent's configurations.
        vm2 = self.vm_port(net, subnet, '10.250.0.11')
        mark = self.neutron.mark()
        ha = self.neutron.add_router(gateway_network=ext, interfaces=[], ha=True,
                                     floating_ips=[vm2], host=self.host)
        self.neutron.send_to_agent(L3.routers_updated(self.host, [ha['id']]))
        self.wait_statuses(ha['id'], {ha['_floatingips'][0]['id']: 'ERROR'}, mark)
        self.assertIsNone(self.namespace_devices(ha['id']))
        conf = self.wait_configurations(lambda c: c.get('unsupported_routers') == 1, mark)
        reasons = conf['agent_state']['agent_state']['configurations'][
            'unsupported_router_reasons']
        self.assertIn('HA routers', reasons[ha['id']])

        # Removed from this agent, then deleted: the host follows.
        with self.neutron.lock:
            self.neutron.l3.unschedule_router(router['id'], self.host)
        self.neutron.send_to_agent(L3.router_removed_from_agent(self.host, router['id']))
        base.wait_until(lambda: self.namespace_devices(router['id']) is None, 20,
                        'the removed router\'s namespace gone')
        self.assertFalse(ip_lib.device_exists('tap' + router['gw_port']['id'][:11]))
        mark = self.neutron.mark()
        with self.neutron.lock:
            self.neutron.l3.delete_router(ha['id'])
            self.neutron.l3.delete_router(other['id'])
        self.neutron.send_to_agent(L3.router_deleted(ha['id']))
        self.neutron.send_to_agent(L3.router_deleted(other['id']))
        base.wait_until(lambda: self.namespace_devices(other['id']) is None, 20,
                        'the deleted router\'s namespace gone')
        self.wait_configurations(lambda c: 'unsupported_routers' not in c, mark)

    def test_full_sync_chunks_and_removes_stale_and_admin_down_routers(self):
        # Left on the host by an earlier run: one router the server no
        # longer has, one that was set administratively down meanwhile.
        stale = str(uuid.uuid4())
        down = self.neutron.add_router(admin_state_up=False, host=self.host)
        self.extra_routers = (stale,)
        for router_id in (stale, down['id']):
            ip_lib.create_namespace(naming.router_namespace(router_id))
        routers = [self.neutron.add_router(host=self.host) for _ in range(150)]
        # Asked for more than 64 routers the server answers too late.
        self.neutron.slow_sync_routers = (64, 4.0)
        # oslo.messaging's call timeout, as in Neutron's agents ([DEFAULT]).
        proc = self.start_agent(rpc_response_timeout=2)
        proc.wait_for_output('Full sync (agent start) done', 90)
        wanted = {naming.router_namespace(r['id']) for r in routers}
        gone = {naming.router_namespace(r) for r in (stale, down['id'])}

        def converged():
            existing = set(ip_lib.list_namespaces())
            return wanted <= existing and not gone & existing
        base.wait_until(converged, 120, '150 routers built, stale and admin-down removed')
        asked = [len(kw['router_ids']) for kw in self.neutron.calls_of('sync_routers')
                 if kw['router_ids'] and len(kw['router_ids']) > 1]
        # 151 ids (the admin-down one is scheduled): 256 -> 128 -> 64 a call.
        # (A periodic resync may follow if the host is slow; not counted.)
        self.assertEqual([151, 128, 64, 64, 23], asked[:5])
        self.assertIn('asking for 64 at a time', proc.output())
