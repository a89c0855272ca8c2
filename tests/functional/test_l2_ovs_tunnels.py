"""agentkit-l2 (openvswitch) tunnels between two simulated hosts, real OVS userspace datapath.

Host A is this machine's OVS (test bridges only); host B is an
:class:`ovs_host.OVSHost`: its own ovsdb-server/ovs-vswitchd in a network
namespace, with its own agentkit-l2 process pointed at its database. The
underlay is a veth between an OVS bridge on each host whose internal port
holds the tunnel endpoint address (198.18.0.0/15, the benchmarking range).
Host B runs with the default names (br-int, br-tun, patch-tun/patch-int):
they are private to its switch.
"""

import random
import re
import uuid

from agentkit.conf import metadata as metadata_conf
from agentkit.lib.ovs import connection as ovs_connection
from agentkit.lib.ovs import ports as ovs_ports
from drivers.openvswitch import tunnels
from tests.functional import agent_process
from tests.functional import base
from tests.functional import fake_neutron
from tests.functional import ovs_host
from tests.functional import vm as fake_vm

VXLAN_PORT = 4789
SUBNET = '10.254.0.{}/24'


class TwoTunnelHosts(base.AgentTestCase):
    """Host A (this machine's OVS, test bridges) and host B (an OVSHost)
    joined by an underlay, each with its own config for agentkit-l2;
    no test of its own (the fault suite builds on it too)."""

    def setUp(self) -> None:
        super().setUp()
        self.configure(metadata_conf.register_metadata_opts, {})
        self.neutron = fake_neutron.FakeNeutron().start()
        self.addCleanup(self.neutron.stop)
        self.prefix = ovs_host.random_prefix()
        net = random.randrange(0, 512)
        self.ip_a = f'198.{18 + net // 256}.{net % 256}.1'
        self.ip_b = f'198.{18 + net // 256}.{net % 256}.2'

        # Host A: the root namespace's switch, test bridges only.
        self.ovs_a = ovs_connection.get_connection()
        self.br_int_a = self.ovs_a.bridge(self.prefix + 'i', 'netdev')
        self.br_tun_a = self.ovs_a.bridge(self.prefix + 't', 'netdev')
        underlay_a = self.ovs_a.bridge(self.prefix + 'u', 'netdev')
        for br in (self.br_int_a, self.br_tun_a, underlay_a):
            self.addCleanup(br.delete)
        underlay_a.create(fail_mode='standalone')

        # Host B: its own switch in its own namespace.
        self.host_b = self.useFixture(ovs_host.OVSHost(self.prefix))
        self.br_int_b = self.host_b.bridge('br-int')
        self.br_tun_b = self.host_b.bridge('br-tun')
        underlay_b = self.host_b.bridge('br-phy')
        underlay_b.create(fail_mode='standalone')
        self.host_b.connect_underlay(underlay_a, f'{self.ip_a}/24',
                                     underlay_b, f'{self.ip_b}/24')

        self.neutron.tunnels.extend([
            {'ip_address': self.ip_a, 'udp_port': VXLAN_PORT, 'host': 'host-a'},
            {'ip_address': self.ip_b, 'udp_port': VXLAN_PORT, 'host': 'host-b'}])
        common_l2 = {'mechanism_driver': 'openvswitch',
                     'type_drivers': 'vxlan,gre', 'tunnel_types': 'vxlan,gre',
                     'vni_ranges': '1000:1999', 'tunnel_id_ranges': '1:9999',
                     'vxlan_udp_port': VXLAN_PORT}
        self.config_a = self._config('a', {
            'integration_bridge': self.br_int_a.name, 'datapath_type': 'netdev',
            'tunnel_bridge': self.br_tun_a.name,
            'int_peer_patch_port': self.prefix + 'pt',
            'tun_peer_patch_port': self.prefix + 'pi'},
            {**common_l2, 'local_ip': self.ip_a})
        self.config_b = self._config('b', {
            'ovsdb_connection': self.host_b.connection, 'datapath_type': 'netdev'},
            {**common_l2, 'local_ip': self.ip_b})

    def _config(self, side: str, ovs: dict, l2: dict) -> str:
        return base.write_config(self.get_temp_path(f'l2-{side}.ini'), {
            'DEFAULT': {'transport_url': self.neutron.transport_url,
                        'host': self.prefix + side,
                        'state_path': self.get_temp_path('state')},
            'agent': {'report_interval': 2},
            'ovs': ovs, 'l2': l2})

    # -- helpers ------------------------------------------------------------
    def start_agent(self, side: str) -> agent_process.AgentProcess:
        return self.run_agent('agentkit-l2', getattr(self, f'config_{side}'),
                              self.prefix + side, self.neutron, f'l2-{side}.log')

    def describe_port(self, port_id: str, network_id: str, mac: str, network_type: str,
                      key: int, device_owner: str = 'compute:nova') -> None:
        """The details the fake server gives the L2 agents for this port."""
        self.neutron.port_details[port_id] = {
            'device': port_id, 'port_id': port_id, 'network_id': network_id,
            'mac_address': mac, 'admin_state_up': True,
            'network_type': network_type, 'physical_network': None,
            'segmentation_id': key, 'fixed_ips': [],
            'port_security_enabled': False, 'device_owner': device_owner}

    def add_vm(self, side: str, network_id: str, network_type: str, key: int,
               ip_suffix: int) -> fake_vm.FakeVM:
        port_id = str(uuid.uuid4())
        mac = 'fa:16:3e:%02x:%02x:%02x' % tuple(uuid.uuid4().bytes[:3])
        self.describe_port(port_id, network_id, mac, network_type, key)
        vm = fake_vm.FakeVM(self.prefix + side + uuid.uuid4().hex[:4], port_id, mac)
        if side == 'a':
            self.addCleanup(vm.destroy, self.br_int_a)
            vm.plug_ovs(self.br_int_a)
        else:
            self.addCleanup(vm.destroy, self.br_int_b)
            self.host_b.plug_vm(vm, self.br_int_b)
        vm.set_ip(SUBNET.format(ip_suffix))
        return vm

    def wait_up(self, *vms: fake_vm.FakeVM) -> None:
        """Reported up, and tagged in this process's replica of that host's
        OVSDB (it receives the agent's commit independently, maybe later);
        the tunnel ports are in the same transaction as the tag."""
        for vm in vms:
            self.neutron.wait_for_call(
                'update_device_list', lambda kw: vm.port_id in kw['devices_up'])
            br = self.br_int_a if vm.name.startswith(self.prefix + 'a') else self.br_int_b
            ovs_host.wait_until(lambda: br.get_port_tag(vm.tap) not in (None, 4095),
                                10, f'{vm.tap} to be tagged')

    @staticmethod
    def ping_ok(vm: fake_vm.FakeVM, ip: str, timeout: float = 15.0) -> bool:
        """Until one ping gets through: OVS resolves the underlay next hop
        on the first encapsulated packet and drops that packet."""
        try:
            ovs_host.wait_until(lambda: fake_vm.ping(vm.name, ip, count=1, wait=1),
                                timeout, f'{vm.name} -> {ip}')
            return True
        except AssertionError:
            return False

    @staticmethod
    def ip_of(suffix: int) -> str:
        return SUBNET.format(suffix).split('/')[0]

    def tunnel_port(self, conn: ovs_connection.OvsdbConnection, tunnel_type: str, key: int,
                    remote_ip: str) -> ovs_ports.PortState:
        """The port, once it exists (a port wired before the agent's
        tunnel_sync returned gets its tunnel when the peer is reported)."""
        name = tunnels.tunnel_port_name(tunnel_type, key, remote_ip)
        return ovs_host.wait_until(  # type: ignore[return-value]
            lambda: ovs_ports.read_port(conn, name), 10, f'tunnel port {name}')

    def start_both(self) -> None:
        self.start_agent('a')
        self.start_agent('b')


class L2OVSTunnelTest(TwoTunnelHosts):

    def test_vxlan_and_gre_carry_each_network_to_the_other_host_only(self) -> None:
        self.start_both()
        vni1, vni2 = random.sample(range(1000, 2000), 2)
        gre_key = random.randrange(1, 10000)
        net1, net2, net3 = (str(uuid.uuid4()) for _ in range(3))
        a1 = self.add_vm('a', net1, 'vxlan', vni1, 1)
        b1 = self.add_vm('b', net1, 'vxlan', vni1, 2)
        a2 = self.add_vm('a', net2, 'vxlan', vni2, 3)
        b2 = self.add_vm('b', net2, 'vxlan', vni2, 4)
        a3 = self.add_vm('a', net3, 'gre', gre_key, 5)
        b3 = self.add_vm('b', net3, 'gre', gre_key, 6)
        self.wait_up(a1, b1, a2, b2, a3, b3)

        # OVSDB shape on host A: one protected access port per (network, peer).
        port = self.tunnel_port(self.ovs_a, 'vxlan', vni1, self.ip_b)
        self.assertEqual(self.br_tun_a.name, port.bridge)
        self.assertEqual('vxlan', port.type)
        self.assertEqual({'remote_ip': self.ip_b, 'local_ip': self.ip_a,
                          'key': str(vni1), 'dst_port': str(VXLAN_PORT)},
                         dict(port.options))
        self.assertEqual(self.br_int_a.get_port_tag(a1.tap), port.tag)
        self.assertTrue(port.protected)
        gre = self.tunnel_port(self.ovs_a, 'gre', gre_key, self.ip_b)
        self.assertEqual({'remote_ip': self.ip_b, 'local_ip': self.ip_a,
                          'key': str(gre_key)}, dict(gre.options))
        self.assertEqual(self.br_int_a.get_port_tag(a3.tap), gre.tag)
        self.assertTrue(gre.protected)
        # Host B mirrors it, and its trunk patch uses Neutron's default names.
        port_b = self.tunnel_port(self.host_b.ovs, 'vxlan', vni1, self.ip_a)
        self.assertEqual(self.br_int_b.get_port_tag(b1.tap), port_b.tag)
        self.assertEqual('br-tun', port_b.bridge)
        self.assertEqual({'peer': 'patch-int'},
                         dict(ovs_ports.read_port(self.host_b.ovs, 'patch-tun').options))

        self.assertTrue(self.ping_ok(a1, self.ip_of(2)), 'vxlan A->B')
        self.assertTrue(self.ping_ok(b2, self.ip_of(3)), 'vxlan B->A, 2nd network')
        self.assertTrue(self.ping_ok(a3, self.ip_of(6)), 'gre A->B')
        # One subnet for all: only the VNI/GRE key separates the networks.
        self.assertFalse(fake_vm.ping(a1.name, self.ip_of(4), count=2, wait=1))
        self.assertFalse(fake_vm.ping(a1.name, self.ip_of(6), count=2, wait=1))
        self.assertFalse(fake_vm.ping(b3.name, self.ip_of(2), count=2, wait=1))

        # Learning: host A's br-tun learnt B's VM behind the tunnel port.
        ofport = self.br_tun_a.get_ofport(port.name)
        fdb = ovs_host.run('ovs-appctl', 'fdb/show', self.br_tun_a.name).stdout
        self.assertRegex(fdb, rf'(?m)^\s*{ofport}\s+{port.tag}\s+{re.escape(b1.mac)}\s')

    def test_peer_removal_readdition_and_network_cleanup(self) -> None:
        self.start_both()
        vni1, vni2 = random.sample(range(1000, 2000), 2)
        net1, net2 = str(uuid.uuid4()), str(uuid.uuid4())
        a1 = self.add_vm('a', net1, 'vxlan', vni1, 1)
        b1 = self.add_vm('b', net1, 'vxlan', vni1, 2)
        a2 = self.add_vm('a', net2, 'vxlan', vni2, 3)
        b2 = self.add_vm('b', net2, 'vxlan', vni2, 4)
        self.wait_up(a1, b1, a2, b2)
        self.assertTrue(self.ping_ok(a1, self.ip_of(2)))
        name1 = tunnels.tunnel_port_name('vxlan', vni1, self.ip_b)
        name2 = tunnels.tunnel_port_name('vxlan', vni2, self.ip_b)

        # The server says host B's endpoint is gone: A drops every port to it.
        self.neutron.cast_to_agent('q-agent-notifier-tunnel-delete', None,
                                   'tunnel_delete', tunnel_ip=self.ip_b,
                                   tunnel_type='vxlan')
        ovs_host.wait_until(lambda: not {name1, name2} & set(self.br_tun_a.get_port_names()),
                            10, 'tunnel ports to B to be removed')
        self.assertFalse(fake_vm.ping(a1.name, self.ip_of(2), count=2, wait=1))

        # ... and back: every local network of that type gets its port again.
        self.neutron.cast_to_agent('q-agent-notifier-tunnel-update', None,
                                   'tunnel_update', tunnel_ip=self.ip_b,
                                   tunnel_type='vxlan')
        ovs_host.wait_until(lambda: {name1, name2} <= set(self.br_tun_a.get_port_names()),
                            10, 'tunnel ports to B to be re-created')
        self.assertTrue(self.ping_ok(a1, self.ip_of(2)))
        self.assertTrue(self.ping_ok(a2, self.ip_of(4)))

        # The last port of net2 leaves host A: its tunnel port goes, net1's stays.
        a2.destroy(self.br_int_a)
        ovs_host.wait_until(lambda: name2 not in self.br_tun_a.get_port_names(),
                            10, "net2's tunnel port to be removed")
        self.assertIn(name1, self.br_tun_a.get_port_names())
        self.assertTrue(self.ping_ok(a1, self.ip_of(2)))
