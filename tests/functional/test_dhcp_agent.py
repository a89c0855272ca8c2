"""agentkit-dhcp end to end: fake neutron-server on RabbitMQ, the agent as a
process, real namespaces, dnsmasq and dhclient, both interface drivers."""

import os
import shutil
import signal
import time
import uuid

from agentkit.conf import metadata as metadata_conf
from agentkit.lib import external_process
from agentkit.lib import ip_lib
from agentkit.lib.ovs import connection as ovs_connection
from tests.functional import base
from tests.functional import fake_neutron
from tests.functional import vm as fake_vm

STATE_ROOT = '/var/lib/agentkit-test'


def _mac():
    return 'fa:16:3e:%02x:%02x:%02x' % tuple(uuid.uuid4().bytes[:3])


class DhcpAgentFixture:
    """A fake server, the agent's config and state, networks and VMs; the
    switch comes from the test class (OvsSwitch or the linuxbridge one)."""

    interface_driver = ''
    restart_networks = 20

    def setUp(self):
        super().setUp()
        self.configure(metadata_conf.register_metadata_opts, {})
        self.neutron = fake_neutron.FakeNeutron().start()
        self.addCleanup(self.neutron.stop)
        # dnsmasq reads its files as "nobody": keep state world-traversable.
        os.makedirs(STATE_ROOT, mode=0o755, exist_ok=True)
        os.chmod(STATE_ROOT, 0o755)
        self.state_path = os.path.join(STATE_ROOT, uuid.uuid4().hex[:12])
        os.makedirs(self.state_path, mode=0o755)
        self.addCleanup(shutil.rmtree, self.state_path, True)
        # Runs after the agent is killed (cleanups are LIFO), so its process
        # monitor cannot respawn them: any dnsmasq or metadata haproxy the
        # test's agent left (cleanup_networks kills the dnsmasq it knows of).
        self.addCleanup(self._kill_daemons_of_this_test)
        self.host = self.short_name('akdh')
        self.br_name = self.short_name('akdhbr')
        self.setup_switch()
        self.config = base.write_config(self.get_temp_path('dhcp.ini'), {
            'DEFAULT': {'transport_url': self.neutron.transport_url,
                        'host': self.host, 'state_path': self.state_path,
                        'interface_driver': self.interface_driver,
                        'dhcp_driver': 'dnsmasq',
                        'check_child_processes_interval': 1},
            'agent': {'report_interval': 5},
            'ovs': {'integration_bridge': self.br_name,
                    'datapath_type': 'netdev'},
        })
        self.workdir = self.get_temp_path('vms')
        os.makedirs(self.workdir)
        self.procs = []

    def start_agent(self, env=None):
        proc = self.run_agent('agentkit-dhcp', self.config, self.host, self.neutron, env=env)
        self.addCleanup(self.cleanup_networks)  # runs before the kill
        return proc

    def cleanup_networks(self):
        for net_id in list(self.neutron.networks):
            pid_dir = os.path.join(self.state_path, 'dhcp', net_id)
            pid = external_process.read_pid_file(os.path.join(pid_dir, 'pid'))
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.unplug_all(net_id)
            ns = ip_lib.IPWrapper(f'qdhcp-{net_id}')
            if ns.namespace_exists():
                ns.delete_namespace()

    def _kill_daemons_of_this_test(self):
        base.kill_pids_with(self.state_path)

    def make_network(self, cidr='10.254.0.0/24', gateway='10.254.0.1', mtu=1450):
        net = self.neutron.add_network(mtu=mtu)
        subnet = self.neutron.add_subnet(net['id'], cidr, gateway)
        return net, subnet

    def make_vm(self, net, subnet, ip):
        mac = _mac()
        port = self.neutron.add_port(net['id'], mac, [(subnet['id'], ip)])
        vm = fake_vm.FakeVM(self.short_name('akdvm'), port['id'], mac,
                            mtu=net['mtu'])
        self.addCleanup(vm.destroy, self.ovs_bridge())
        self.attach(vm, net)
        return port, vm, fake_vm.DhcpClient(vm, self.workdir)

    def add_served_network(self, third_octet):
        """A network with a VM created on the server after the agent started,
        announced as neutron-server does: (network, VM port, its DHCP client,
        the call-log mark before the announcement)."""
        net, subnet = self.make_network(f'10.254.{third_octet}.0/24',
                                        f'10.254.{third_octet}.1')
        port, _vm, client = self.make_vm(net, subnet, f'10.254.{third_octet}.11')
        mark = self.neutron.mark()
        self.neutron.cast_to_agent('dhcp_agent', self.host, 'network_create_end',
                                   payload={'network': {'id': net['id']}})
        return net, port, client, mark

    def dnsmasq_pid(self, net_id):
        return external_process.read_pid_file(
            os.path.join(self.state_path, 'dhcp', net_id, 'pid'))

    def wait_dhcp_ready(self, port_id, since=0):
        self.neutron.wait_for_call('dhcp_ready_on_ports',
                                   lambda kw: port_id in kw['port_ids'],
                                   since=since, timeout=30)


class DhcpAgentTestMixin(DhcpAgentFixture):

    def test_vm_gets_lease_and_later_port_uses_same_dnsmasq(self):
        net, subnet = self.make_network()
        port1, vm1, client1 = self.make_vm(net, subnet, '10.254.0.11')
        self.start_agent()
        self.wait_dhcp_ready(port1['id'])
        lease = client1.request()
        self.assertIsNotNone(lease, 'no DHCP lease for the first VM')
        self.assertEqual('10.254.0.11', lease['new_ip_address'])
        self.assertEqual('10.254.0.1', lease['new_routers'])
        self.assertEqual('1450', lease['new_interface_mtu'])
        pid = self.dnsmasq_pid(net['id'])
        self.assertIsNotNone(pid)
        ns = f'qdhcp-{net["id"]}'
        self.assertIn(ns, ip_lib.list_namespaces())

        # A port added later is served by the same dnsmasq after SIGHUP.
        mark = self.neutron.mark()
        port2, vm2, client2 = self.make_vm(net, subnet, '10.254.0.12')
        self.neutron.cast_to_agent('dhcp_agent', self.host, 'port_create_end',
                                   payload={'port': port2, 'priority': 0})
        self.wait_dhcp_ready(port2['id'], since=mark)
        lease = client2.request()
        self.assertIsNotNone(lease, 'no DHCP lease for the later VM')
        self.assertEqual('10.254.0.12', lease['new_ip_address'])
        self.assertEqual(pid, self.dnsmasq_pid(net['id']))

        # A deleted port is refused afterwards.
        self.neutron.delete_port(net['id'], port2['id'])
        self.neutron.cast_to_agent('dhcp_agent', self.host, 'port_delete_end',
                                   payload={'port_id': port2['id'],
                                            'network_id': net['id']})
        deadline = time.monotonic() + 10
        hosts = os.path.join(self.state_path, 'dhcp', net['id'], 'host')
        while port2['mac_address'] in open(hosts).read():
            self.assertLess(time.monotonic(), deadline, 'host entry not removed')
            time.sleep(0.1)
        os.unlink(client2.leases) if os.path.exists(client2.leases) else None
        self.assertIsNone(client2.request(timeout=6))
        self.assertEqual(pid, self.dnsmasq_pid(net['id']))

    def test_network_delete_removes_everything(self):
        net, subnet = self.make_network('10.254.1.0/24', '10.254.1.1')
        port1, vm1, client1 = self.make_vm(net, subnet, '10.254.1.11')
        self.start_agent()
        self.wait_dhcp_ready(port1['id'])
        pid = self.dnsmasq_pid(net['id'])
        self.assertIsNotNone(pid)
        del self.neutron.networks[net['id']]
        self.neutron.cast_to_agent('dhcp_agent', None, 'network_delete_end',
                                   payload={'network_id': net['id']})
        self.neutron.wait_for_call('release_dhcp_port',
                                   lambda kw: kw['network_id'] == net['id'])
        ns = f'qdhcp-{net["id"]}'
        deadline = time.monotonic() + 10
        while ns in ip_lib.list_namespaces() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertNotIn(ns, ip_lib.list_namespaces())
        self.assertFalse(os.path.exists(f'/proc/{pid}/cmdline') and
                         net['id'] in open(f'/proc/{pid}/cmdline').read())

    def test_restart_adopts_dnsmasq_and_respawns_killed_one(self):
        nets = []
        for i in range(self.restart_networks):
            net, subnet = self.make_network(f'10.254.{100 + i}.0/24',
                                            f'10.254.{100 + i}.1')
            port, vm, client = self.make_vm(net, subnet, f'10.254.{100 + i}.11')
            nets.append((net, port, client))
        proc = self.start_agent()
        for net, port, _ in nets:
            self.wait_dhcp_ready(port['id'])
        pids = {net['id']: self.dnsmasq_pid(net['id']) for net, _, _ in nets}
        self.assertTrue(all(pids.values()))
        self.assertIsNotNone(nets[0][2].request())

        proc.signal(signal.SIGTERM)
        self.assertEqual(0, proc.wait(10))
        mark = self.neutron.mark()
        self.start_agent()
        self.neutron.wait_for_call('get_active_networks_info', since=mark)
        time.sleep(2)  # the sync has been applied by now
        self.assertEqual(pids, {n['id']: self.dnsmasq_pid(n['id'])
                                for n, _, _ in nets})  # adopted, not respawned
        for _, _, client in nets:
            self.assertIsNotNone(client.request(), 'VM could not renew')

        # kill -9 one dnsmasq: the monitor brings it back.
        victim = nets[1][0]['id']
        os.kill(pids[victim], signal.SIGKILL)
        deadline = time.monotonic() + 15
        while self.dnsmasq_pid(victim) in (None, pids[victim]):
            self.assertLess(time.monotonic(), deadline, 'dnsmasq not respawned')
            time.sleep(0.2)
        self.assertIsNotNone(nets[1][2].request())

    def test_subnet_added_and_removed(self):
        net, subnet = self.make_network('10.254.3.0/24', '10.254.3.1')
        port1, vm1, client1 = self.make_vm(net, subnet, '10.254.3.11')
        self.start_agent()
        self.wait_dhcp_ready(port1['id'])
        pid = self.dnsmasq_pid(net['id'])
        # A second DHCP subnet: the DHCP port gets an address on it and
        # dnsmasq is restarted with the new range (argv changed).
        subnet2 = self.neutron.add_subnet(net['id'], '10.254.4.0/24', '10.254.4.1')
        mark = self.neutron.mark()
        port2, vm2, client2 = self.make_vm(net, subnet2, '10.254.4.11')
        self.neutron.cast_to_agent('dhcp_agent', self.host, 'subnet_create_end',
                                   payload={'subnet': subnet2, 'priority': 0})
        self.wait_dhcp_ready(port2['id'], since=mark)
        self.assertTrue(self.neutron.calls_of('update_dhcp_port'))
        lease = client2.request()
        self.assertIsNotNone(lease, 'no lease on the added subnet')
        self.assertEqual('10.254.4.11', lease['new_ip_address'])
        self.assertEqual('10.254.4.1', lease['new_routers'])
        self.assertNotEqual(pid, self.dnsmasq_pid(net['id']))
        self.assertIsNotNone(client1.request(), 'first subnet no longer served')
        # Removing it again: its range is gone, the first subnet still served.
        with self.neutron.lock:
            net['subnets'] = [s for s in net['subnets'] if s['id'] != subnet2['id']]
            net['ports'] = [p for p in net['ports'] if p['id'] != port2['id']]
        pid2 = self.dnsmasq_pid(net['id'])
        self.neutron.cast_to_agent('dhcp_agent', self.host, 'subnet_delete_end',
                                   payload={'subnet_id': subnet2['id'],
                                            'network_id': net['id']})
        deadline = time.monotonic() + 15
        while self.dnsmasq_pid(net['id']) in (None, pid2):
            self.assertLess(time.monotonic(), deadline, 'dnsmasq not restarted')
            time.sleep(0.1)
        cmdline = open(f'/proc/{self.dnsmasq_pid(net["id"])}/cmdline').read()
        self.assertNotIn(subnet2['id'], cmdline)
        self.assertIn(subnet['id'], cmdline)
        self.assertIsNotNone(client1.request())

    def test_malformed_payload_does_not_affect_other_networks(self):
        net, subnet = self.make_network('10.254.2.0/24', '10.254.2.1')
        port1, vm1, client1 = self.make_vm(net, subnet, '10.254.2.11')
        proc = self.start_agent()
        self.wait_dhcp_ready(port1['id'])
        self.neutron.cast_to_agent('dhcp_agent', self.host, 'port_create_end',
                                   payload={'port': {'network_id': '../../etc'}})
        self.neutron.cast_to_agent('dhcp_agent', self.host, 'network_create_end',
                                   payload='garbage')
        mark = self.neutron.mark()
        port2, vm2, client2 = self.make_vm(net, subnet, '10.254.2.12')
        self.neutron.cast_to_agent('dhcp_agent', self.host, 'port_create_end',
                                   payload={'port': port2, 'priority': 0})
        self.wait_dhcp_ready(port2['id'], since=mark)
        self.assertIsNotNone(client2.request())
        proc.wait_for_output('Rejected port_create_end RPC with malformed payload')
        proc.wait_for_output('Rejected network_create_end RPC with malformed payload')


class OvsSwitch:
    """VMs plugged into an OVS bridge of the test's (netdev datapath)."""

    def setup_switch(self):
        self._ovs = ovs_connection.get_connection()
        self._ovs.bridge(self.br_name, 'netdev').create()
        self.addCleanup(self._ovs.bridge(self.br_name).delete)

    def ovs_bridge(self):
        return self._ovs.bridge(self.br_name)

    def attach(self, vm, net):
        vm.plug_ovs(self.ovs_bridge())

    def unplug_all(self, net_id):
        pass


class OVSDhcpAgentTest(OvsSwitch, DhcpAgentTestMixin, base.AgentTestCase):
    interface_driver = 'openvswitch'
    restart_networks = 5  # the 20-network case runs with linuxbridge


class LinuxbridgeSwitch:
    """The switch of a linuxbridge DHCP agent test: one ``brq`` per network."""

    interface_driver = 'linuxbridge'

    def setup_switch(self):
        pass

    def ovs_bridge(self):
        return None

    def attach(self, vm, net):
        # Plays the L2 agent: the network's bridge with the VM's tap in it.
        brq = 'brq' + net['id'][:11]
        ip_lib.IPWrapper().add_bridge(brq, exist_ok=True).link.set_up()
        self.addCleanup(lambda: ip_lib.device_exists(brq)
                        and ip_lib.IPDevice(brq).delete())
        ip_lib.IPDevice(vm.tap).link.set_master(brq)

    def unplug_all(self, net_id):
        pass


class LinuxbridgeDhcpAgentTest(LinuxbridgeSwitch, DhcpAgentTestMixin, base.AgentTestCase):

    def test_isolated_metadata_address_and_route(self):
        with open(self.config) as f:
            text = f.read()
        with open(self.config, 'w') as f:
            f.write(text.replace('[DEFAULT]\n',
                                 '[DEFAULT]\nenable_isolated_metadata = true\n', 1))
        net, subnet = self.make_network('10.254.5.0/24', '10.254.5.1')
        port1, vm1, client1 = self.make_vm(net, subnet, '10.254.5.11')
        self.start_agent()
        self.wait_dhcp_ready(port1['id'])
        dhcp_port = next(p for p in self.neutron.networks[net['id']]['ports']
                         if p['device_owner'] == 'network:dhcp')
        dhcp_ip = dhcp_port['fixed_ips'][0]['ip_address']
        device = ip_lib.IPDevice('ns-' + dhcp_port['id'][:11], f'qdhcp-{net["id"]}')
        self.assertEqual({f'{dhcp_ip}/24', '169.254.169.254/16'},
                         {a['cidr'] for a in device.addr.list(scope='global')})
        lease = client1.request()
        self.assertIsNotNone(lease)
        # No router on this subnet: VMs reach metadata through the DHCP port.
        routes = lease.get('new_rfc3442_classless_static_routes', '')
        self.assertIn('32 169 254 169 254 ' + dhcp_ip.replace('.', ' '), routes)
