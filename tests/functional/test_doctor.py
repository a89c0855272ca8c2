"""agentkit-doctor against a real host: agentkit-l2 (openvswitch, a flat
provider network) and agentkit-dhcp (dnsmasq) on a fake neutron-server over
RabbitMQ. A healthy port reports every hop; each hop broken on purpose is
named, and no other hop is."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid

from agentkit.conf import metadata as metadata_conf
from agentkit.lib import external_process
from agentkit.lib import ip_lib
from agentkit.lib import naming
from agentkit.lib.ovs import connection as ovs_connection
from tests.functional import base
from tests.functional import fake_neutron
from tests.functional import ovs_host
from tests.functional import vm as fake_vm

STATE_ROOT = '/var/lib/agentkit-test'
PHYSNET = 'physnet1'
DOCTOR = os.path.join(os.path.dirname(sys.executable), 'agentkit-doctor')
HOPS = ['binding', 'vm-tap', 'bridge', 'local-vlan', 'uplink', 'dhcp-port',
        'dnsmasq', 'dnsmasq-host']


class DoctorTest(base.AgentTestCase):

    def setUp(self):
        super().setUp()
        self.configure(metadata_conf.register_metadata_opts, {})
        self.neutron = fake_neutron.FakeNeutron().start()
        self.addCleanup(self.neutron.stop)
        # dnsmasq reads its files as "nobody": every level must be traversable.
        os.makedirs(STATE_ROOT, exist_ok=True)
        self.state_path = tempfile.mkdtemp(prefix='doctor-', dir=STATE_ROOT)
        self.addCleanup(shutil.rmtree, self.state_path, True)
        for path in (STATE_ROOT, self.state_path):
            os.chmod(path, 0o755)
        self.addCleanup(base.kill_pids_with, self.state_path)
        self.ovs = ovs_connection.get_connection()
        prefix = ovs_host.random_prefix()
        self.br_int = self.ovs.bridge(prefix + 'i', 'netdev')
        self.br_x = self.ovs.bridge(prefix + 'x', 'netdev')   # created by the agent
        for br in (self.br_int, self.br_x):
            self.addCleanup(br.delete)
        self.br_int.create()
        self.host = prefix + 'host'
        self.config = base.write_config(self.get_temp_path('host.ini'), {
            'DEFAULT': {'transport_url': self.neutron.transport_url,
                        'host': self.host, 'state_path': self.state_path,
                        'interface_driver': 'openvswitch', 'dhcp_driver': 'dnsmasq',
                        'check_child_processes_interval': 1},
            'agent': {'report_interval': 2},
            'ovs': {'integration_bridge': self.br_int.name, 'datapath_type': 'netdev'},
            'l2': {'mechanism_driver': 'openvswitch', 'type_drivers': 'flat',
                   'bridge_mappings': f'{PHYSNET}:{self.br_x.name}',
                   'flat_networks': PHYSNET},
        })
        # Every port the DHCP agent creates is bound here on the flat
        # segment, so the L2 agent wires it as the server would have it.
        make_dhcp_port = self.neutron.make_dhcp_port

        def make_bound_dhcp_port(port, host=None):
            new = make_dhcp_port(port, host)
            self.neutron.port_details[new['id']] = self._l2_record(new)
            return new
        self.neutron.make_dhcp_port = make_bound_dhcp_port

    def _l2_record(self, port):
        return {**port, 'device': port['id'], 'port_id': port['id'],
                'binding:host_id': self.host, 'network_type': 'flat',
                'physical_network': PHYSNET, 'segmentation_id': None,
                'port_security_enabled': False}

    def doctor(self, *args):
        proc = subprocess.run([DOCTOR, '--config-file', self.config, '--json', *args],
                              capture_output=True, text=True, timeout=60)
        self.assertIn(proc.returncode, (0, 1), proc.stderr)
        result = json.loads(proc.stdout)
        broken = [h['name'] for h in result['hops'] if h['status'] == 'broken']
        self.assertEqual(1 if broken else 0, proc.returncode, proc.stdout)
        return result, broken

    def build(self):
        """A flat network, a VM port bound here, both agents serving them."""
        net = self.neutron.add_network(mtu=1450)
        subnet = self.neutron.add_subnet(net['id'], '10.251.0.0/24', '10.251.0.1')
        mac = 'fa:16:3e:%02x:%02x:%02x' % tuple(uuid.uuid4().bytes[:3])
        port = self.neutron.add_port(net['id'], mac, [(subnet['id'], '10.251.0.10')])
        with self.neutron.lock:
            port['binding:host_id'] = self.host
        self.neutron.port_details[port['id']] = self._l2_record(port)
        vm = fake_vm.FakeVM(self.short_name('akdoc'), port['id'], mac)
        self.addCleanup(vm.destroy, self.br_int)
        vm.plug_ovs(self.br_int)
        self.run_agent('agentkit-l2', self.config, self.host, self.neutron)
        mark = self.neutron.mark()
        self.dhcp = self.run_agent('agentkit-dhcp', self.config, self.host, self.neutron)
        self.addCleanup(self._remove_dhcp, net['id'])
        self.neutron.wait_for_call('dhcp_ready_on_ports',
                                   lambda kw: port['id'] in kw['port_ids'],
                                   since=mark, timeout=30)
        dhcp_port = next(p for p in self.neutron.networks[net['id']]['ports']
                         if p['device_owner'] == 'network:dhcp')
        for port_id in (port['id'], dhcp_port['id']):
            self.neutron.wait_for_call('update_device_list',
                                       lambda kw, p=port_id: p in kw['devices_up'],
                                       timeout=30)
        return net, port, vm

    def _remove_dhcp(self, network_id):
        pid = external_process.read_pid_file(
            os.path.join(self.state_path, 'dhcp', network_id, 'pid'))
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        ns = ip_lib.IPWrapper(f'qdhcp-{network_id}')
        if ns.namespace_exists():
            ns.delete_namespace()

    def assert_healthy(self, net, port):
        result, broken = self.doctor('port', port['id'])
        self.assertEqual([], broken, json.dumps(result, indent=1))
        self.assertEqual(HOPS, [h['name'] for h in result['hops']])
        self.assertEqual({'ok'}, {h['status'] for h in result['hops']}, result)
        result, broken = self.doctor('network', net['id'])
        self.assertEqual([], broken, json.dumps(result, indent=1))

    def assert_only_broken(self, port, hop):
        result, broken = self.doctor('port', port['id'])
        self.assertEqual([hop], broken, json.dumps(result, indent=1))
        bad = next(h for h in result['hops'] if h['name'] == hop)
        self.assertTrue(bad['cause'] and bad['command'], bad)
        return bad

    # -- tests ----------------------------------------------------------------
    def test_healthy_then_each_hop_broken_on_purpose(self):
        net, port, vm = self.build()
        self.assert_healthy(net, port)

        # Wrong OVS tag on the VM's port.
        tag = self.br_int.get_port_tag(vm.tap)
        ovs_host.run('ovs-vsctl', 'set', 'Port', vm.tap, f'tag={tag + 100}')
        bad = self.assert_only_broken(port, 'local-vlan')
        self.assertIn(f'tag {tag + 100}', bad['evidence'])
        ovs_host.run('ovs-vsctl', 'set', 'Port', vm.tap, f'tag={tag}')
        self.assert_healthy(net, port)

        # dnsmasq's host file lost the VM's entry.
        hosts = os.path.join(self.state_path, 'dhcp', net['id'], 'host')
        with open(hosts) as f:
            original = f.read()
        with open(hosts, 'w') as f:
            f.write(''.join(line for line in original.splitlines(keepends=True)
                            if port['mac_address'] not in line))
        bad = self.assert_only_broken(port, 'dnsmasq-host')
        self.assertIn(port['mac_address'], bad['evidence'])
        result, broken = self.doctor('network', net['id'])
        self.assertEqual(['dnsmasq-host'], broken, result)
        with open(hosts, 'w') as f:
            f.write(original)

        # The VM's tap taken out of the integration bridge.
        ovs_host.run('ovs-vsctl', 'del-port', self.br_int.name, vm.tap)
        self.assert_only_broken(port, 'bridge')
        mark = self.neutron.mark()
        vm.plug_ovs(self.br_int)
        self.neutron.wait_for_call('update_device_list',
                                   lambda kw: port['id'] in kw['devices_up'],
                                   since=mark, timeout=30)
        base.wait_until(lambda: self.br_int.get_port_tag(vm.tap) not in (None, [], 4095))
        self.assert_healthy(net, port)

        # host: the agents run, the bridges exist, a leftover namespace is named.
        leftover = naming.dhcp_namespace(str(uuid.uuid4()))
        ip_lib.create_namespace(leftover)
        self.addCleanup(ip_lib.delete_namespace, leftover)
        result, _ = self.doctor('host')
        hops = {h['name']: h for h in result['hops']}
        self.assertIn('agentkit-l2', hops['agents']['evidence'])
        self.assertIn('agentkit-dhcp', hops['agents']['evidence'])
        self.assertEqual('ok', hops['bridges']['status'], hops['bridges'])
        self.assertEqual('broken', hops['dhcp-namespaces']['status'])
        self.assertIn(leftover, hops['dhcp-namespaces']['evidence'])
        self.assertNotIn(naming.dhcp_namespace(net['id']), hops['dhcp-namespaces']['evidence'])

        # dnsmasq killed while no DHCP agent runs to respawn it.
        self.dhcp.signal(signal.SIGTERM)
        self.assertEqual(0, self.dhcp.wait(15))
        pid = external_process.read_pid_file(
            os.path.join(self.state_path, 'dhcp', net['id'], 'pid'))
        os.kill(pid, signal.SIGKILL)
        base.wait_until(lambda: external_process.read_cmdline(pid) is None)
        bad = self.assert_only_broken(port, 'dnsmasq')
        self.assertIn('agentkit-dhcp', bad['cause'])

    def test_usage_errors_exit_2(self):
        for args in (['router-of-nothing', str(uuid.uuid4())], ['port', 'not-an-id'],
                     ['network', str(uuid.uuid4()).upper()], []):
            proc = subprocess.run([DOCTOR, '--config-file', self.config, *args],
                                  capture_output=True, text=True, timeout=60)
            self.assertEqual(2, proc.returncode, (args, proc.stdout, proc.stderr))

    def test_unknown_port_is_broken_at_the_server_hop(self):
        result, broken = self.doctor('port', str(uuid.uuid4()))
        self.assertEqual(['server'], broken)


class RouterDoctorTest(base.AgentTestCase):
    """``router``: agentkit-l3 (namespace driver, linuxbridge interfaces)."""

    def setUp(self):
        self.useFixture(base.HostRouters())   # taken first, released last
        super().setUp()
        self.neutron = fake_neutron.FakeNeutron().start()
        self.addCleanup(self.neutron.stop)
        os.makedirs(STATE_ROOT, exist_ok=True)
        self.state_path = tempfile.mkdtemp(prefix='doctor-', dir=STATE_ROOT)
        self.addCleanup(shutil.rmtree, self.state_path, True)
        self.host = self.short_name('akdocr')
        self.addCleanup(self._cleanup_host)
        self.config = base.write_config(self.get_temp_path('l3.ini'), {
            'DEFAULT': {'transport_url': self.neutron.transport_url,
                        'host': self.host, 'state_path': self.state_path,
                        'interface_driver': 'linuxbridge', 'l3_driver': 'namespace',
                        'enable_metadata_proxy': False},
            'agent': {'report_interval': 1},
            'l2': {'mechanism_driver': 'linuxbridge'},
        })

    def _cleanup_host(self):
        for router_id in self.neutron.routers:
            if ip_lib.namespace_exists(naming.router_namespace(router_id)):
                ip_lib.delete_namespace(naming.router_namespace(router_id))
        for net_id in self.neutron.networks:
            if ip_lib.device_exists(naming.bridge_name(net_id)):
                ip_lib.IPDevice(naming.bridge_name(net_id)).delete()

    def doctor_router(self, router_id):
        proc = subprocess.run([DOCTOR, '--config-file', self.config, '--json', 'router',
                               router_id], capture_output=True, text=True, timeout=60)
        result = json.loads(proc.stdout)
        broken = [h['name'] for h in result['hops'] if h['status'] == 'broken']
        self.assertEqual(1 if broken else 0, proc.returncode, proc.stdout + proc.stderr)
        return {h['name']: h for h in result['hops']}, broken

    def test_router_hops(self):
        ext = self.neutron.add_network(mtu=1500)
        self.neutron.add_subnet(ext['id'], '172.31.249.0/24', '172.31.249.1',
                                enable_dhcp=False)
        net = self.neutron.add_network()
        subnet = self.neutron.add_subnet(net['id'], '10.249.0.0/24', '10.249.0.1',
                                         enable_dhcp=False)
        vm = self.neutron.add_port(net['id'], 'fa:16:3e:00:02:49',
                                   [(subnet['id'], '10.249.0.10')])
        router = self.neutron.add_router(gateway_network=ext, interfaces=[subnet],
                                         floating_ips=[vm], host=self.host)
        fip = router['_floatingips'][0]
        agent = self.run_agent('agentkit-l3', self.config, self.host, self.neutron)
        self.neutron.wait_for_call(
            'update_floatingip_statuses',
            lambda kw: kw['router_id'] == router['id']
            and kw['fip_statuses'] == {fip['id']: 'ACTIVE'}, timeout=30)
        namespace = naming.router_namespace(router['id'])
        qr = naming.router_interface_name(router['_interfaces'][0]['id'])

        hops, broken = self.doctor_router(router['id'])
        self.assertEqual([], broken, hops)
        self.assertEqual(['server', 'namespace', 'interfaces', 'gateway', 'snat',
                          'floating-ips'], list(hops))
        self.assertEqual('ok', hops['snat']['status'], hops['snat'])
        self.assertIn(f"{fip['floating_ip_address']} -> 10.249.0.10",
                      hops['floating-ips']['evidence'])

        # The interface lost its address: that hop, and only it.
        ovs_host.run('ip', 'netns', 'exec', namespace, 'ip', 'address', 'flush', 'dev', qr)
        hops, broken = self.doctor_router(router['id'])
        self.assertEqual(['interfaces'], broken, hops)
        self.assertIn('10.249.0.1', hops['interfaces']['evidence'])

        # The SNAT rule removed: shown, not judged (enable_snat has no
        # read-only source), so nothing is broken by it.
        snat = next(r for r in nat_rules(namespace) if '-j SNAT' in r and '-o qg-' in r)
        ovs_host.run('ip', 'netns', 'exec', namespace, 'iptables', '-t', 'nat',
                     '-D', *snat[3:].split())
        hops, broken = self.doctor_router(router['id'])
        self.assertEqual(['interfaces'], broken, hops)
        self.assertEqual('unknown', hops['snat']['status'])
        self.assertIn('enable_snat', hops['snat']['evidence'])

        # The namespace gone (no agent to rebuild it): only that hop.
        agent.signal(signal.SIGTERM)
        self.assertEqual(0, agent.wait(15))
        ip_lib.delete_namespace(namespace)
        hops, broken = self.doctor_router(router['id'])
        self.assertEqual(['namespace'], broken, hops)


def nat_rules(namespace):
    out = subprocess.run(['ip', 'netns', 'exec', namespace, 'iptables-save', '-t', 'nat'],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.startswith('-A ')]
