"""agentkit-doctor against a real host: agentkit-l2 (openvswitch, a flat
provider network, noop or iptables_hybrid), agentkit-dhcp (dnsmasq) and
agentkit-l3 (namespace routers, haproxy) on a fake neutron-server over
RabbitMQ. A healthy port or router reports every hop; each hop broken on
purpose is named, and no other hop is: tap out of the bridge, wrong OVS
tag, host entry missing, dnsmasq killed, a security group rule dropping
DHCP, an interface address, the SNAT rule, a floating IP's DNAT, the
metadata proxy, the router's namespace. ``--probe`` gets an OFFER, the
gateway's answer and a connection to the metadata proxy, names the DHCP
hop when dnsmasq is stopped, and leaves nothing behind, also on Ctrl-C;
without it nothing on the host changes; what reaches the VM's interface is
exactly what the operator guide says (broadcast DISCOVER, OFFER with the
probe's xid, the gateway's ARP request). A br-int row with the probe mark
whose doctor is gone is reported and removed; a port only named like one
is neither."""

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

from oslo_config import cfg
from testtools import content

from agentkit.conf import metadata as metadata_conf
from agentkit.doctor import hosts_ovs
from agentkit.lib import external_process
from agentkit.lib import fileutils
from agentkit.lib import ip_lib
from agentkit.lib import naming
from agentkit.lib.ovs import connection as ovs_connection
from tests import reliability
from tests.functional import base
from tests.functional import fake_neutron
from tests.functional import frames
from tests.functional import ovs_host
from tests.functional import vm as fake_vm

STATE_ROOT = '/var/lib/agentkit-test'
PHYSNET = 'physnet1'
DOCTOR = os.path.join(os.path.dirname(sys.executable), 'agentkit-doctor')
HOPS = ['binding', 'vm-tap', 'bridge', 'local-vlan', 'uplink', 'dhcp-port',
        'dnsmasq', 'dnsmasq-host']


def shared_state_path(test):
    """A state_path the daemons that drop to "nobody" can read (dnsmasq,
    haproxy: every level traversable); what runs from it dies at cleanup."""
    os.makedirs(STATE_ROOT, exist_ok=True)
    path = tempfile.mkdtemp(prefix='doctor-', dir=STATE_ROOT)
    test.addCleanup(shutil.rmtree, path, True)
    for directory in (STATE_ROOT, path):
        os.chmod(directory, 0o755)
    test.addCleanup(base.kill_pids_with, path)
    return path


class DoctorTest(base.AgentTestCase):

    def setUp(self):
        super().setUp()
        self.configure(metadata_conf.register_metadata_opts, {})
        self.neutron = fake_neutron.FakeNeutron().start()
        self.addCleanup(self.neutron.stop)
        self.state_path = shared_state_path(self)
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

    def _l2_record(self, port, filtered=False):
        return {**port, 'device': port['id'], 'port_id': port['id'],
                'binding:host_id': self.host, 'network_type': 'flat',
                'physical_network': PHYSNET, 'segmentation_id': None,
                'port_security_enabled': filtered, 'security_groups': [],
                'allowed_address_pairs': []}

    def set_options(self, section, **options):
        """Add options to the agents' (and the doctor's) configuration file."""
        with open(self.config) as f:
            text = f.read()
        lines = ''.join(f'{k} = {v}\n' for k, v in options.items())
        if f'[{section}]\n' in text:
            text = text.replace(f'[{section}]\n', f'[{section}]\n{lines}', 1)
        else:
            text += f'\n[{section}]\n{lines}'
        with open(self.config, 'w') as f:
            f.write(text)

    def doctor(self, *args):
        proc = subprocess.run([DOCTOR, '--config-file', self.config, '--json', *args],
                              capture_output=True, text=True, timeout=60)
        self.assertIn(proc.returncode, (0, 1), proc.stderr)
        result = json.loads(proc.stdout)
        broken = [h['name'] for h in result['hops'] if h['status'] == 'broken']
        self.assertEqual(1 if broken else 0, proc.returncode, proc.stdout)
        return result, broken

    def build(self, hybrid=False):
        """A flat network, a VM port bound here, both agents serving them.

        ``hybrid``: the VM is plugged as os-vif's hybrid plug and filtered by
        iptables_hybrid (the port's security chains exist).
        """
        net = self.neutron.add_network(mtu=1450)
        subnet = self.neutron.add_subnet(net['id'], '10.251.0.0/24', '10.251.0.1')
        mac = 'fa:16:3e:%02x:%02x:%02x' % tuple(uuid.uuid4().bytes[:3])
        port = self.neutron.add_port(net['id'], mac, [(subnet['id'], '10.251.0.10')])
        with self.neutron.lock:
            port['binding:host_id'] = self.host
        self.neutron.port_details[port['id']] = self._l2_record(port, filtered=hybrid)
        vm = fake_vm.FakeVM(self.short_name('akdoc'), port['id'], mac)
        self.addCleanup(vm.destroy, self.br_int)
        if hybrid:
            self.addCleanup(vm.unplug_ovs_hybrid, self.br_int)
            vm.plug_ovs_hybrid(self.br_int)
        else:
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

    def test_security_group_dropping_dhcp(self):
        self.useFixture(base.HostFirewallChains(cfg.CONF))   # before the agent starts
        self.set_options('securitygroup', firewall_driver='iptables_hybrid',
                         enable_security_group='true')
        net, port, vm = self.build(hybrid=True)
        hops = ['binding', 'vm-tap', 'bridge', 'local-vlan', 'uplink', 'security-group',
                'dhcp-port', 'dnsmasq', 'dnsmasq-host']
        result, broken = self.doctor('port', port['id'])
        self.assertEqual([], broken, json.dumps(result, indent=1))
        self.assertEqual(hops, [h['name'] for h in result['hops']])
        self.assertEqual({'ok'}, {h['status'] for h in result['hops']}, result)
        self.assertIn('lets DHCP requests through', result['hops'][5]['evidence'])

        # A real rule in the port's egress chain drops its DHCP requests.
        chain = 'neutron-openvswi-o' + port['id'][:10]
        drop = ('-p', 'udp', '-m', 'udp', '--dport', '67', '-j', 'DROP')
        ovs_host.run('iptables', '-I', chain, '1', *drop)
        bad = self.assert_only_broken(port, 'security-group')
        self.assertIn(f'{chain} drops DHCP requests', bad['evidence'])
        ovs_host.run('iptables', '-D', chain, *drop)
        result, broken = self.doctor('port', port['id'])
        self.assertEqual([], broken, json.dumps(result, indent=1))

    def test_probe(self):
        """--probe: an OFFER to a probe port, the gateway, the metadata proxy;
        and nothing on the host changes without it."""
        self.set_options('DEFAULT', enable_isolated_metadata='true')
        net, port, vm = self.build()
        base.wait_until(lambda: any(
            'haproxy' in (external_process.read_cmdline(p) or [''])[0]
            for p in base.pids_with(net['id'])), timeout=15, message='the isolated proxy')
        # A stand-in router on the network's local VLAN answers for the gateway.
        vlan = self.br_int.get_port_tag(vm.tap)
        gateway = fake_vm.FakeVM(self.short_name('akdgw'), str(uuid.uuid4()),
                                 'fa:16:3e:00:0a:01')
        self.addCleanup(gateway.destroy, self.br_int)
        ovs_host.run('ethtool', '-K', gateway.tap, 'tx', 'off')
        self.br_int.add_port(gateway.tap, tag=vlan)
        gateway.set_ip('10.251.0.1/24')
        leases = os.path.join(self.state_path, 'dhcp', net['id'], 'leases')

        # Without --probe: the same report, and not a device, namespace or
        # OVS port more or less.
        before = self.host_state(net['id'])
        result, broken = self.doctor('port', port['id'])
        self.assertEqual(([], HOPS), (broken, [h['name'] for h in result['hops']]), result)
        self.assertEqual(before, self.host_state(net['id']))

        leases_before = fileutils.read_text(leases)
        at_vm = frames.PacketSocket(vm.name, 'eth0', capture=True)   # what the VM receives
        self.addCleanup(at_vm.close)
        started = time.monotonic()
        result, broken = self.doctor('--probe', 'port', port['id'])
        healthy_s = time.monotonic() - started
        self.assert_what_reaches_the_vm(at_vm.received(), port['mac_address'], '10.251.0.1')
        hops = {h['name']: h for h in result['hops']}
        self.assertEqual([], broken, json.dumps(result, indent=1))
        self.assertEqual(HOPS + ['dhcp-offer', 'gateway', 'metadata'], list(hops))
        self.assertEqual({'ok'}, {h['status'] for h in hops.values()}, result)
        self.assertIn(f"offered 10.251.0.10 to {port['mac_address']}",
                      hops['dhcp-offer']['evidence'])
        self.assertIn('10.251.0.1 answers ARP (fa:16:3e:00:0a:01), ping',
                      hops['gateway']['evidence'])
        self.assertIn('isolated proxy', hops['metadata']['evidence'])
        self.assertEqual(before, self.host_state(net['id']))    # the probe port is gone
        # DISCOVER/OFFER changes no lease (the DHCP driver wrote the VM's
        # entry; an ACK would renew its expiry).
        self.assertIn(port['mac_address'], leases_before)
        self.assertEqual(leases_before, fileutils.read_text(leases))

        # dnsmasq stopped (not dead: its pid and files are all there): only
        # the probe notices, and names the DHCP hop.
        pid = external_process.read_pid_file(
            os.path.join(self.state_path, 'dhcp', net['id'], 'pid'))
        os.kill(pid, signal.SIGSTOP)
        self.addCleanup(os.kill, pid, signal.SIGCONT)
        result, broken = self.doctor('--probe', 'port', port['id'])
        self.assertEqual(['dhcp-offer'], broken, json.dumps(result, indent=1))
        bad = next(h for h in result['hops'] if h['name'] == 'dhcp-offer')
        self.assertIn(f"no OFFER for {port['mac_address']}", bad['evidence'])
        self.assertTrue(bad['cause'] and bad['command'], bad)
        self.assertEqual(before, self.host_state(net['id']))

        # Ctrl-C at a terminal (SIGINT to the doctor's whole process group,
        # its privsep daemon included) while the probe waits for an OFFER:
        # the probe port goes too.
        proc = subprocess.Popen([DOCTOR, '--config-file', self.config, '--probe', 'port',
                                 port['id']], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        self.addCleanup(proc.kill)
        probe_ns = 'akprobe-%08x' % proc.pid
        base.wait_until(lambda: ip_lib.namespace_exists(probe_ns), timeout=30,
                        message='the probe port')
        base.wait_until(lambda: 'akp%08x' % proc.pid in self.br_int.get_port_names(),
                        timeout=10, message='the probe port on br-int')
        interrupted = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        exited_s = time.monotonic() - interrupted
        self.assertEqual(130, proc.returncode, stderr)
        self.assertIn('interrupted; the probe port akp%08x was removed' % proc.pid, stderr)
        self.assertEqual(before, self.host_state(net['id']))
        reliability.record(
            'doctor-probe-interrupted', kind='fault',
            fault='Ctrl-C at a terminal during agentkit-doctor --probe',
            injected='SIGINT to the doctor\'s process group (its privsep daemon '
                     'included) while the probe port waits for an OFFER',
            checked='exit 130; no akprobe- namespace, akp device or br-int port left, '
                    'the network\'s namespace and devices as before',
            result={'exited in s': round(exited_s, 1), 'probe ports left': 0})
        os.kill(pid, signal.SIGCONT)

        # br-int rows: one with the probe mark, its doctor and its namespace
        # gone (a doctor killed, its namespace deleted by hand), and one only
        # named like a probe port. The first is reported and removed; the
        # other is not the doctor's and stays.
        orphan, foreign = ('akp%08x' % p for p in unused_pids(2))
        self.br_int.add_port(orphan, external_ids={hosts_ovs.PROBE: str(int(orphan[3:], 16))})
        self.br_int.add_port(foreign)
        result, _ = self.doctor('host')
        probes = next(h for h in result['hops'] if h['name'] == 'probe-ports')
        self.assertEqual('broken', probes['status'], probes)
        self.assertIn(f'{orphan} on {self.br_int.name}', probes['evidence'])
        self.assertNotIn(foreign, probes['evidence'])
        result, broken = self.doctor('--probe', 'port', port['id'])
        self.assertEqual([], broken, json.dumps(result, indent=1))
        self.assertEqual([foreign], [p for p in self.br_int.get_port_names()
                                     if p in (orphan, foreign)])
        result, _ = self.doctor('host')
        probes = next(h for h in result['hops'] if h['name'] == 'probe-ports')
        self.assertEqual(('ok', 'none left behind'), (probes['status'], probes['evidence']))
        self.addDetail('figures', content.text_content(
            f'agentkit-doctor --probe port, healthy (process start to exit): '
            f'{healthy_s:.1f} s'))

    def assert_what_reaches_the_vm(self, received, vm_mac, gateway):
        """As the operator guide says: the probe's DISCOVERs and dnsmasq's OFFERs,
        broadcast, for the VM's MAC (the OFFERs with the probe's xid, which the
        VM's DHCP client ignores), and the broadcast ARP request for the
        gateway; nothing sent as the VM, no REQUEST or ACK."""
        dhcp = [d for d in map(dhcp_summary, received) if d]
        sent = {(d['type'], d['dst'], d['chaddr']) for d in dhcp}
        self.assertEqual({(1, BROADCAST, vm_mac), (2, BROADCAST, vm_mac)}, sent, dhcp)
        self.assertNotIn(vm_mac, {d['src'] for d in dhcp})
        self.assertLessEqual({d['xid'] for d in dhcp if d['type'] == 2},
                             {d['xid'] for d in dhcp if d['type'] == 1})
        arp = [f for f in received if f[12:14] == b'\x08\x06' and f[20:22] == b'\x00\x01'
               and f[38:42] == ipaddress.IPv4Address(gateway).packed]
        self.assertTrue(arp, 'no ARP request for the gateway reached the VM')
        self.assertEqual({BROADCAST}, {mac(f[0:6]) for f in arp})

    def host_state(self, network_id):
        """What a doctor run could leave behind: probe namespaces and devices,
        br-int's ports, the network's namespace and its devices."""
        return (sorted(ns for ns in ip_lib.list_namespaces() if ns.startswith('akprobe-')
                       or network_id in ns),
                sorted(link['name'] for link in ip_lib.list_links()
                       if link['name'].startswith('akp')),
                self.br_int.get_port_names(),
                sorted(link['name'] for link in
                       ip_lib.list_links(naming.dhcp_namespace(network_id))))

    def test_usage_errors_exit_2(self):
        for args in (['router-of-nothing', str(uuid.uuid4())], ['port', 'not-an-id'],
                     ['network', str(uuid.uuid4()).upper()], []):
            proc = subprocess.run([DOCTOR, '--config-file', self.config, *args],
                                  capture_output=True, text=True, timeout=60)
            self.assertEqual(2, proc.returncode, (args, proc.stdout, proc.stderr))

    def test_unknown_port_is_broken_at_the_server_hop(self):
        result, broken = self.doctor('port', str(uuid.uuid4()))
        self.assertEqual(['server'], broken)


BROADCAST = 'ff:ff:ff:ff:ff:ff'


def mac(raw):
    return ':'.join('%02x' % b for b in raw)


def dhcp_summary(frame):
    """{type, src, dst, xid, chaddr} of a DHCP frame (Ethernet/IPv4/UDP 67-68), else None."""
    if frame[12:14] != b'\x08\x00' or frame[23] != 17:
        return None
    udp = frame[14 + (frame[14] & 0x0f) * 4:]
    if {int.from_bytes(udp[0:2], 'big'), int.from_bytes(udp[2:4], 'big')} != {67, 68}:
        return None
    bootp = udp[8:]
    options, i = bootp[240:], 0
    message_type = None
    while i + 1 < len(options) and options[i] != 255:
        if options[i] == 0:
            i += 1
            continue
        if options[i] == 53:
            message_type = options[i + 2]
        i += 2 + options[i + 1]
    return {'type': message_type, 'src': mac(frame[6:12]), 'dst': mac(frame[0:6]),
            'xid': bootp[4:8].hex(), 'chaddr': mac(bootp[28:34])}


def unused_pids(count):
    """``count`` pids no process has now (from the top of the range)."""
    with open('/proc/sys/kernel/pid_max') as f:
        top = int(f.read())
    return [pid for pid in range(top - 1, top - 1000, -1)
            if not os.path.exists(f'/proc/{pid}')][:count]


class RouterDoctorTest(base.AgentTestCase):
    """``router``: agentkit-l3 (namespace driver, linuxbridge interfaces, haproxy)."""

    def setUp(self):
        self.useFixture(base.HostRouters())   # taken first, released last
        super().setUp()
        self.configure(metadata_conf.register_metadata_opts, {})
        self.neutron = fake_neutron.FakeNeutron().start()
        self.addCleanup(self.neutron.stop)
        self.state_path = shared_state_path(self)
        self.host = self.short_name('akdocr')
        self.addCleanup(self._cleanup_host)
        self.config = base.write_config(self.get_temp_path('l3.ini'), {
            'DEFAULT': {'transport_url': self.neutron.transport_url,
                        'host': self.host, 'state_path': self.state_path,
                        'interface_driver': 'linuxbridge', 'l3_driver': 'namespace'},
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

    def assert_router_healthy(self, router_id):
        hops, broken = self.doctor_router(router_id)
        self.assertEqual([], broken, hops)
        self.assertEqual(['server', 'l3-intent', 'namespace', 'interfaces', 'gateway', 'snat',
                          'floating-ips', 'routes', 'metadata-proxy'], list(hops))
        self.assertEqual({'ok'}, {h['status'] for h in hops.values()}, hops)
        return hops

    def assert_only(self, router_id, hop):
        hops, broken = self.doctor_router(router_id)
        self.assertEqual([hop], broken, hops)
        self.assertTrue(hops[hop]['cause'] and hops[hop]['command'], hops[hop])
        return hops[hop]

    def test_router_hops(self):
        ext = self.neutron.add_network(mtu=1500)
        self.neutron.add_subnet(ext['id'], '172.31.249.0/24', '172.31.249.1',
                                enable_dhcp=False)
        net = self.neutron.add_network()
        subnet = self.neutron.add_subnet(net['id'], '10.249.0.0/24', '10.249.0.1',
                                         enable_dhcp=False)
        vm = self.neutron.add_port(net['id'], 'fa:16:3e:00:02:49',
                                   [(subnet['id'], '10.249.0.10')])
        router = self.neutron.add_router(
            gateway_network=ext, interfaces=[subnet], floating_ips=[vm], host=self.host,
            routes=[{'destination': '10.98.0.0/24', 'nexthop': '10.249.0.7'}])
        fip = router['_floatingips'][0]
        agent = self.run_agent('agentkit-l3', self.config, self.host, self.neutron)
        self.neutron.wait_for_call(
            'update_floatingip_statuses',
            lambda kw: kw['router_id'] == router['id']
            and kw['fip_statuses'] == {fip['id']: 'ACTIVE'}, timeout=30)
        namespace = naming.router_namespace(router['id'])
        qr = naming.router_interface_name(router['_interfaces'][0]['id'])
        base.wait_until(lambda: base.pids_with(router['id']), timeout=15,
                        message='the router\'s metadata proxy')

        hops = self.assert_router_healthy(router['id'])
        self.assertIn(f"{fip['floating_ip_address']} -> 10.249.0.10",
                      hops['floating-ips']['evidence'])
        # The doctor's record of what agentkit-l3 was told is the agent's own file.
        record = os.path.join(self.state_path, 'l3-intent', router['id'] + '.json')
        self.assertIn(record, hops['l3-intent']['evidence'])
        self.assertEqual(0o600, os.stat(record).st_mode & 0o777)

        # The interface lost its address: that hop, and the extra route whose
        # next hop was on its subnet (the kernel drops it with the address).
        in_ns = ('ip', 'netns', 'exec', namespace)
        ovs_host.run(*in_ns, 'ip', 'address', 'flush', 'dev', qr)
        hops, broken = self.doctor_router(router['id'])
        self.assertEqual(['interfaces', 'routes'], broken, hops)
        self.assertIn('10.249.0.1', hops['interfaces']['evidence'])
        self.assertIn('no 10.98.0.0/24 via 10.249.0.7', hops['routes']['evidence'])
        ovs_host.run(*in_ns, 'ip', 'address', 'add', '10.249.0.1/24', 'dev', qr)
        ovs_host.run(*in_ns, 'ip', 'route', 'add', '10.98.0.0/24', 'via', '10.249.0.7')
        hops = self.assert_router_healthy(router['id'])
        self.assertIn('0.0.0.0/0 via 172.31.249.1, 10.98.0.0/24 via 10.249.0.7, as '
                      'agentkit-l3 was told', hops['routes']['evidence'])

        # The default route removed, then an extra route nobody asked for.
        ovs_host.run(*in_ns, 'ip', 'route', 'del', 'default')
        bad = self.assert_only(router['id'], 'routes')
        self.assertIn('no 0.0.0.0/0 via 172.31.249.1', bad['evidence'])
        ovs_host.run(*in_ns, 'ip', 'route', 'add', 'default', 'via', '172.31.249.1')
        ovs_host.run(*in_ns, 'ip', 'route', 'add', '10.97.0.0/24', 'via', '10.249.0.8')
        bad = self.assert_only(router['id'], 'routes')
        self.assertIn('10.97.0.0/24 via 10.249.0.8 agentkit-l3 was not told of',
                      bad['evidence'])
        ovs_host.run(*in_ns, 'ip', 'route', 'del', '10.97.0.0/24')
        self.assert_router_healthy(router['id'])

        # The SNAT rule removed although agentkit-l3 was told enable_snat true.
        snat = next(r for r in nat_rules(namespace) if '-j SNAT' in r and '-o qg-' in r)
        ovs_host.run(*in_ns, 'iptables', '-t', 'nat', '-D', *snat[3:].split())
        bad = self.assert_only(router['id'], 'snat')
        self.assertIn('told enable_snat true', bad['evidence'])
        ovs_host.run(*in_ns, 'iptables', '-t', 'nat', '-A', *snat[3:].split())
        self.assert_router_healthy(router['id'])

        # The floating IP's DNAT removed (inbound and from the router itself).
        dnat = [r for r in nat_rules(namespace) if '-j DNAT' in r
                and f"-d {fip['floating_ip_address']}/32" in r]
        self.assertEqual(2, len(dnat), dnat)
        for rule in dnat:
            ovs_host.run(*in_ns, 'iptables', '-t', 'nat', '-D', *rule[3:].split())
        bad = self.assert_only(router['id'], 'floating-ips')
        self.assertIn(f"{fip['floating_ip_address']} -> 10.249.0.10: no DNAT",
                      bad['evidence'])
        for rule in dnat:
            ovs_host.run(*in_ns, 'iptables', '-t', 'nat', '-A', *rule[3:].split())
        self.assert_router_healthy(router['id'])

        # The metadata proxy killed while no L3 agent runs to respawn it.
        agent.signal(signal.SIGTERM)
        self.assertEqual(0, agent.wait(15))
        for pid in base.pids_with(router['id']):
            os.kill(pid, signal.SIGKILL)
        base.wait_until(lambda: not base.pids_with(router['id']), timeout=10,
                        message='haproxy gone')
        bad = self.assert_only(router['id'], 'metadata-proxy')
        self.assertIn('haproxy', bad['evidence'])

        # The namespace gone (no agent to rebuild it): only that hop.
        ip_lib.delete_namespace(namespace)
        hops, broken = self.doctor_router(router['id'])
        self.assertEqual(['namespace'], broken, hops)


class LinuxbridgeProbeTest(base.AgentTestCase):
    """``--probe`` where the network's switch is its ``brq`` Linux bridge
    (agentkit-dhcp with the linuxbridge interface driver, which builds it)."""

    def test_probe_port_in_the_networks_bridge(self):
        self.configure(metadata_conf.register_metadata_opts, {})
        neutron = fake_neutron.FakeNeutron().start()
        self.addCleanup(neutron.stop)
        state_path = shared_state_path(self)
        host = self.short_name('akdocl')
        config = base.write_config(self.get_temp_path('dhcp.ini'), {
            'DEFAULT': {'transport_url': neutron.transport_url, 'host': host,
                        'state_path': state_path, 'interface_driver': 'linuxbridge',
                        'dhcp_driver': 'dnsmasq'},
            'agent': {'report_interval': 2},
            'l2': {'mechanism_driver': 'linuxbridge'},
        })
        net = neutron.add_network(mtu=1450)
        subnet = neutron.add_subnet(net['id'], '10.252.0.0/24', None)   # no gateway
        port = neutron.add_port(net['id'], 'fa:16:3e:00:02:52', [(subnet['id'], '10.252.0.10')])
        brq = naming.bridge_name(net['id'])
        self.addCleanup(lambda: ip_lib.device_exists(brq) and ip_lib.IPDevice(brq).delete())
        self.addCleanup(base.remove_dhcp_of, net['id'])
        mark = neutron.mark()
        self.run_agent('agentkit-dhcp', config, host, neutron)
        neutron.wait_for_call('dhcp_ready_on_ports', lambda kw: port['id'] in kw['port_ids'],
                              since=mark, timeout=30)
        members = sorted(link['name'] for link in ip_lib.list_links()
                         if link.get('master') == brq)

        proc = subprocess.Popen([DOCTOR, '--config-file', config, '--json', '--probe',
                                 'network', net['id']], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.addCleanup(proc.kill)
        stdout, stderr = proc.communicate(timeout=60)
        hops = {h['name']: h for h in json.loads(stdout)['hops']}
        self.assertEqual(0, proc.returncode, stdout + stderr)
        self.assertEqual(['server', 'dhcp-port', 'dnsmasq', 'dnsmasq-host', 'dhcp-offer',
                          'gateway', 'metadata'], list(hops))
        self.assertEqual('ok', hops['dhcp-offer']['status'], hops['dhcp-offer'])
        probe = 'akp%08x' % proc.pid
        self.assertIn('offered 10.252.0.10 to fa:16:3e:00:02:52',
                      hops['dhcp-offer']['evidence'])
        self.assertIn(f'{probe} in {brq}', hops['dhcp-offer']['evidence'])
        self.assertEqual('unknown', hops['metadata']['status'])   # no router, not isolated
        # The probe's veth left the bridge, and the host, again.
        self.assertEqual(members, sorted(link['name'] for link in ip_lib.list_links()
                                         if link.get('master') == brq))
        self.assertFalse(ip_lib.device_exists(probe))
        self.assertFalse(ip_lib.namespace_exists('akprobe-%08x' % proc.pid))


def nat_rules(namespace):
    out = subprocess.run(['ip', 'netns', 'exec', namespace, 'iptables-save', '-t', 'nat'],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.startswith('-A ')]
