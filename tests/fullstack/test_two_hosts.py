"""Two hosts under the real neutron-server 29: VMs on different hosts over vxlan.

Host A is this machine's root namespace with agentkit's four agents
(``iptables_hybrid``); host B is a network namespace in which a second
``agentkit-l2`` runs (``ip netns exec``), so its privsep daemons, bridges,
taps and iptables live there, as on another machine. For linuxbridge a veth
is the underlay between the two (each host's ``local_ip``); for openvswitch
host B also has its own ovsdb-server and ovs-vswitchd (``ovs_host.OVSHost``)
and the underlay joins an OVS bridge on each host whose internal port holds
the tunnel address, as OVS's userspace tunnelling needs. Host B reaches
RabbitMQ over the underlay. The server learns both tunnel
endpoints from the agents' ``tunnel_sync`` and tells each about the other;
nothing is given to the agents by hand.

What crosses the underlay is checked in packets: host B's VM gets its lease
from host A's dnsmasq, reaches the VM on host A, its router and the metadata
proxy on host A; a VM of another network on host B reaches its own DHCP
server but nothing on the first network; host B's firewall keeps a host
outside the security group out. After the teardown neither host holds
anything of the test.
"""

import os
import random
import shutil
import time
import urllib.parse

from agentkit.lib import ip_lib
from agentkit.lib.ovs import ports as ovs_ports
from tests.fullstack import base
from tests.functional import agent_process
from tests.functional import base as functional_base
from tests.functional import fake_nova
from tests.functional import ovs_host
from tests.functional import vm as fake_vm

EVENT_TIMEOUT = base.EVENT_TIMEOUT
wait_until = base.wait_until


class TwoHostsScenario:
    """The scenario; the class it is mixed with builds host B for its mechanism."""

    # -- host B --------------------------------------------------------------
    def transport_url_via_underlay(self):
        """The server's transport URL as host B must use it: over the underlay."""
        url = urllib.parse.urlsplit(self.server.transport_url)
        credentials, _, hostport = url.netloc.rpartition('@')
        hostport = hostport.replace(url.hostname, self.ip_a, 1)
        return urllib.parse.urlunsplit(url._replace(netloc=f'{credentials}@{hostport}'))

    def start_host_b(self):
        state_path = os.path.join(self.state_path, 'hostb')
        os.makedirs(state_path, mode=0o755)
        config = functional_base.write_config(os.path.join(self.logdir, 'l2-hostb.ini'), {
            'DEFAULT': {'transport_url': self.transport_url_via_underlay(),
                        'host': self.host_b, 'state_path': state_path},
            'agent': {'report_interval': 5},
            'securitygroup': {'firewall_driver': 'iptables_hybrid'},
            **self.host_b_sections(),
        })
        proc = agent_process.AgentProcess(
            shutil.which('ip') or '/usr/sbin/ip', 'netns', 'exec', self.ns_b,
            os.path.join(agent_process.BIN_DIR, 'agentkit-l2'), '--config-file', config,
            log_path=os.path.join(self.logdir, 'l2-hostb-1.log'))
        proc.name = 'l2-hostb'
        self.all_procs.append(proc)
        self.addCleanup(self._forget_host_b)
        self.addCleanup(proc.kill)
        return proc

    def _forget_host_b(self):
        for agent in self.api.list_agents(host=self.host_b):
            self.api.delete('agents', agent['id'])

    def underlay_packets(self):
        """Packets host A received on the underlay (the only way between the hosts)."""
        with open(f'/sys/class/net/{self.underlay_a}/statistics/rx_packets') as f:
            return int(f.read())

    # -- the scenario -----------------------------------------------------------
    def run_two_hosts(self):
        t0 = time.monotonic()
        self.start_agent('l2', {**self.l2_sections(),
                                'securitygroup': {'firewall_driver': 'iptables_hybrid'}})
        self.start_agent('dhcp', {'DEFAULT': {'interface_driver': self.interface_driver,
                                              'dhcp_driver': 'dnsmasq'}})
        self.start_agent('l3', {'DEFAULT': {'interface_driver': self.interface_driver,
                                            'l3_driver': 'namespace'}})
        secret = os.urandom(8).hex()
        nova = fake_nova.FakeNova(secret).start()
        self.addCleanup(nova.stop)
        self.start_agent('metadata', {'DEFAULT': {
            'nova_metadata_host': '127.0.0.1', 'nova_metadata_port': nova.port,
            'metadata_proxy_shared_secret': secret}})
        agent_b = self.start_host_b()
        self.wait_agents_alive([self.agent_type, 'DHCP agent', 'L3 agent', 'Metadata agent'])

        def host_b_alive():
            if agent_b.proc.poll() is not None:
                raise AssertionError(f'agentkit-l2 on host B exited ({agent_b.proc.returncode})')
            return next((a for a in self.api.list_agents(host=self.host_b) if a['alive']), None)
        record_b = wait_until(host_b_alive, base.AGENT_TIMEOUT, 'host B\'s L2 agent alive',
                              interval=0.5)
        self.timings['agents of both hosts alive'] = time.monotonic() - t0
        self.assertEqual((self.agent_type, 'agentkit-l2'),
                         (record_b['agent_type'], record_b['binary']))
        self.assertEqual(self.ip_b, record_b['configurations'].get('tunneling_ip'))

        # -- a tenant network; its DHCP server on host A ------------------------
        net = self.create_network()
        vni = net['provider:segmentation_id']
        subnet = self.api.create_subnet(network_id=net['id'], cidr='10.77.1.0/24',
                                        enable_dhcp=True, name=f'{self.prefix}-sub')
        wait_until(lambda: self.dnsmasq_pid(net['id']), EVENT_TIMEOUT, 'dnsmasq on host A')
        dhcp_port = self.api.list_ports(network_id=net['id'], device_owner='network:dhcp')[0]
        dhcp_ip = dhcp_port['fixed_ips'][0]['ip_address']

        # -- one VM on each host -----------------------------------------------------
        vm_a, port_a = self.add_vm(net, 'a')
        vm_b, port_b = self.add_vm(net, 'b', host=self.host_b, host_ns=self.ns_b,
                                   plug=self.plug_on_b)
        # The server told each host about the other (tunnel_sync/tunnel_update).
        self.wait_tunnels(vni)
        rx_before = self.underlay_packets()
        t_lease = time.monotonic()
        lease_b = fake_vm.DhcpClient(vm_b, self.get_temp_dir()).request(timeout=20)
        self.timings['host B VM lease from host A\'s dnsmasq'] = time.monotonic() - t_lease
        self.assertIsNotNone(lease_b, 'the VM on host B got no lease over vxlan')
        self.assertEqual(port_b['fixed_ips'][0]['ip_address'], lease_b['new_ip_address'])
        self.assertGreater(self.underlay_packets(), rx_before,
                           'the lease did not cross the underlay')
        lease_a = fake_vm.DhcpClient(vm_a, self.get_temp_dir()).request(timeout=20)
        self.assertIsNotNone(lease_a, 'the VM on host A got no lease')
        ip_a = lease_a['new_ip_address']
        ip_b = lease_b['new_ip_address']
        vm_a.set_ip(f'{ip_a}/24')
        vm_b.set_ip(f'{ip_b}/24')
        self.assertTrue(self.reaches(vm_a.name, ip_b), 'host A VM cannot reach host B VM')
        self.assertTrue(self.reaches(vm_b.name, ip_a), 'host B VM cannot reach host A VM')
        # Host B's firewall is in force in host B: the DHCP namespace (not a
        # member of the default group) is kept out, as on host A.
        chain = self.firewall_chain_name('i', port_b['id'])
        self.assertIn('--match-set', fake_vm.run_in(self.ns_b, 'iptables', '-S', chain).stdout)
        qdhcp = f'qdhcp-{net["id"]}'
        self.assertTrue(fake_vm.ping(vm_b.name, dhcp_ip), 'host B VM cannot reach DHCP port')
        self.assertFalse(fake_vm.ping(qdhcp, ip_b, count=2, wait=1),
                         'a host outside the group pings the VM on host B')

        # -- its router (on host A) and metadata through it ------------------------
        router = self.api.create_router(name=f'{self.prefix}-r')
        self.addCleanup(self.cleanup_router, router['id'])
        self.api.add_router_interface(router['id'], subnet['id'])
        gateway = subnet['gateway_ip']
        self.assertTrue(self.reaches(vm_b.name, gateway, timeout=EVENT_TIMEOUT),
                        'host B VM cannot reach its router on host A')
        nova.instances[port_b['device_id']] = port_b['project_id']
        self.route_metadata(vm_b, gateway)
        wait_until(lambda: self.proxy_pid(router['id']), EVENT_TIMEOUT, 'router proxy')
        self.assertEqual(port_b['device_id'], wait_until(
            lambda: self.instance_id(vm_b, check=False), EVENT_TIMEOUT,
            'metadata for host B\'s VM through the router on host A'))

        # -- another network: host B serves it too, and keeps it apart -------------
        net2 = self.create_network()
        self.api.create_subnet(network_id=net2['id'], cidr='10.77.1.0/24',
                               enable_dhcp=True, name=f'{self.prefix}-sub2')
        wait_until(lambda: self.dnsmasq_pid(net2['id']), EVENT_TIMEOUT, 'dnsmasq of net 2')
        vm_c, port_c = self.add_vm(net2, 'c', host=self.host_b, host_ns=self.ns_b,
                                   plug=self.plug_on_b)
        lease_c = fake_vm.DhcpClient(vm_c, self.get_temp_dir()).request(timeout=20)
        self.assertIsNotNone(lease_c, 'the second network\'s VM on host B got no lease')
        vm_c.set_ip(f'{lease_c["new_ip_address"]}/24')
        dhcp2_ip = self.api.list_ports(network_id=net2['id'], device_owner='network:dhcp')[
            0]['fixed_ips'][0]['ip_address']
        self.assertTrue(fake_vm.ping(vm_c.name, dhcp2_ip), 'net 2 VM cannot reach its DHCP')
        for address in {ip_a, ip_b, gateway} - {lease_c['new_ip_address'], dhcp2_ip}:
            self.assertFalse(fake_vm.ping(vm_c.name, address, count=1, wait=1),
                             f'net 2 VM reaches {address} of the other network')

        # -- teardown: neither host keeps anything ------------------------------------
        self.api.remove_router_interface(router['id'], subnet['id'])
        self.api.delete('routers', router['id'], missing_ok=False)
        for vm, port in ((vm_a, port_a), (vm_b, port_b), (vm_c, port_c)):
            if vm.host_ns is None:
                self.unplug(vm)
            else:
                self.unplug_on_b(vm)
            vm.destroy()
            self.api.delete('ports', port['id'], missing_ok=False)
        dhcp2 = self.api.list_ports(network_id=net2['id'], device_owner='network:dhcp')[0]
        for network in (net, net2):
            self.api.delete('networks', network['id'], missing_ok=False)
        ids = [net['id'], net2['id'], router['id'], port_a['id'], port_b['id'],
               port_c['id'], dhcp_port['id'], dhcp2['id']]
        self.assert_host_clean(ids)
        self.assert_host_clean(ids, namespace=self.ns_b)
        self.assert_switches_clean(ids, [vni, net2['provider:segmentation_id']])
        self.assertIsNone(agent_b.proc.poll(), 'agentkit-l2 on host B exited')
        self.report_timings()
        self.assert_logs_clean()


class LinuxbridgeTwoHostsTest(TwoHostsScenario, base.LinuxbridgeHost):

    def setUp(self):
        super().setUp()
        self.host_b = self.prefix + '-hostb'
        self.ns_b = self.prefix + 'hb'
        ip_lib.IPWrapper(self.ns_b).ensure_namespace()
        self.addCleanup(ip_lib.IPWrapper(self.ns_b).delete_namespace)
        ip_lib.IPDevice('lo', self.ns_b).link.set_up()
        self.ip_a, self.ip_b = functional_base.random_underlay()
        underlay_a = self.prefix + 'ua'
        ip_lib.IPWrapper().add_veth(underlay_a, 'underlay0', peer_namespace=self.ns_b)
        self.addCleanup(lambda: ip_lib.device_exists(underlay_a)
                        and ip_lib.IPDevice(underlay_a).delete())
        for dev, ns, ip in ((underlay_a, None, self.ip_a), ('underlay0', self.ns_b, self.ip_b)):
            ip_lib.IPDevice(dev, ns).addr.add(f'{ip}/30')
            ip_lib.IPDevice(dev, ns).link.set_up()
        self.underlay_a = underlay_a

    def l2_sections(self):
        sections = super().l2_sections()
        sections['l2']['local_ip'] = self.ip_a
        return sections

    def flood_peers(self, vni, namespace=None):
        """The remote VTEPs in the flood (all-zeros) FDB entries of ``vxlan-<vni>``."""
        return {e['dst'] for e in ip_lib.list_fdb_entries(f'vxlan-{vni}', namespace)
                if e['self'] and e['mac'] == ip_lib.ZERO_MAC}

    def host_b_sections(self):
        return {'l2': {'mechanism_driver': 'linuxbridge', 'tunnel_types': 'vxlan',
                       'local_ip': self.ip_b}}

    def plug_on_b(self, vm, port):
        pass  # the agent on host B puts the tap in its brq by itself

    def unplug_on_b(self, vm):
        pass

    def wait_tunnels(self, vni):
        self.assertTrue(ip_lib.device_exists(f'vxlan-{vni}', self.ns_b),
                        'no vxlan device for the network on host B')
        wait_until(lambda: self.ip_b in self.flood_peers(vni), EVENT_TIMEOUT,
                   'host A floods the network to host B')
        wait_until(lambda: self.ip_a in self.flood_peers(vni, self.ns_b), EVENT_TIMEOUT,
                   'host B floods the network to host A')

    def assert_switches_clean(self, ids, vnis):
        for vni in vnis:
            self.assertFalse(ip_lib.device_exists(f'vxlan-{vni}', self.ns_b),
                             f'vxlan-{vni} left on host B')
            self.assertFalse(ip_lib.device_exists(f'vxlan-{vni}'), f'vxlan-{vni} left on host A')

    def test_vms_on_two_hosts_over_vxlan(self):
        self.run_two_hosts()


class OpenvswitchTwoHostsTest(TwoHostsScenario, base.OpenvswitchHost):

    def setUp(self):
        super().setUp()
        self.host_b = self.prefix + '-hostb'
        # The benchmarking range, as the functional OVS tunnel tests use.
        net = random.randrange(0, 512)
        self.ip_a = f'198.{18 + net // 256}.{net % 256}.1'
        self.ip_b = f'198.{18 + net // 256}.{net % 256}.2'
        underlay_a = self.ovs.bridge(self.prefix + 'u', 'netdev')
        self.addCleanup(underlay_a.delete)
        underlay_a.create(fail_mode='standalone')
        self.switch_b = self.useFixture(ovs_host.OVSHost(self.prefix))
        self.ns_b = self.switch_b.netns
        underlay_b = self.switch_b.bridge('br-phy')
        underlay_b.create(fail_mode='standalone')
        self.switch_b.connect_underlay(underlay_a, f'{self.ip_a}/24',
                                       underlay_b, f'{self.ip_b}/24')
        self.underlay_a = self.prefix + 'ua'  # connect_underlay's veth, root end
        self.integration_bridges = {self.host_b: 'br-int'}

    def l2_sections(self):
        sections = super().l2_sections()
        sections['l2']['local_ip'] = self.ip_a
        return sections

    def host_b_sections(self):
        return {'ovs': {'ovsdb_connection': self.switch_b.connection,
                        'datapath_type': 'netdev'},
                'l2': {'mechanism_driver': 'openvswitch', 'tunnel_types': 'vxlan',
                       'local_ip': self.ip_b}}

    def plug_on_b(self, vm, port):
        """os-vif's hybrid plug, inside host B: tap in qbr, qvb/qvo to its br-int."""
        ns, suffix = self.ns_b, port['id'][:11]
        qbr, qvb, qvo = f'qbr{suffix}', f'qvb{suffix}', f'qvo{suffix}'
        host = ip_lib.IPWrapper(ns)
        host.add_bridge(qbr).disable_ipv6()
        host.add_veth(qvb, qvo, mtu=vm.mtu)
        for device in (vm.tap, qvb, qvo):
            fake_vm.run_in(ns, 'ethtool', '-K', device, 'tx', 'off')
        fake_vm.run_in(vm.name, 'ethtool', '-K', 'eth0', 'tx', 'off')
        for device in (vm.tap, qvb):
            ip_lib.IPDevice(device, ns).link.set_master(qbr)
        for device in (qbr, qvb, qvo):
            ip_lib.IPDevice(device, ns).link.set_up()
        br_int = self.switch_b.bridge('br-int')
        wait_until(br_int.exists, EVENT_TIMEOUT, 'br-int on host B')
        br_int.add_port(qvo, external_ids={
            'iface-id': port['id'], 'attached-mac': port['mac_address'],
            'iface-status': 'active', 'vm-uuid': port['device_id']})

    def unplug_on_b(self, vm):
        suffix = vm.port_id[:11]
        self.switch_b.bridge('br-int').delete_port(f'qvo{suffix}', if_exists=True)
        for name in (f'qvo{suffix}', f'qbr{suffix}'):  # qvb goes with qvo
            device = ip_lib.IPDevice(name, self.ns_b)
            if device.exists():
                device.delete()

    @staticmethod
    def tunnel_peers(conn, bridge):
        return {p.options.get('remote_ip') for p in ovs_ports.read_ports(conn, bridge)}

    def wait_tunnels(self, vni):
        wait_until(lambda: self.ip_b in self.tunnel_peers(self.ovs, self.br_tun),
                   EVENT_TIMEOUT, 'host A\'s tunnel port to host B')
        wait_until(lambda: self.ip_a in self.tunnel_peers(self.switch_b.ovs, 'br-tun'),
                   EVENT_TIMEOUT, 'host B\'s tunnel port to host A')

    def assert_switches_clean(self, ids, vnis):
        tokens = {i[:10] for i in ids}
        left = [f'{br}: {p}' for br in ('br-int', 'br-tun') for p in self.switch_b.vsctl(
            'list-ports', br, check=False).stdout.split() if any(t in p for t in tokens)]
        self.assertEqual([], left, 'ports left on host B\'s switch')

    def test_vms_on_two_hosts_over_vxlan(self):
        self.run_two_hosts()
