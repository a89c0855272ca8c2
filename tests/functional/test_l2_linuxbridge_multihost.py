"""Two hosts running agentkit-l2 with the linuxbridge driver.

Host A is the root network namespace; host B is a namespace in which a
second ``agentkit-l2`` runs (``ip netns exec``), so its privsep daemons,
bridges, VXLAN devices and taps all live there. A veth is the underlay
between them (each host's ``local_ip``) and host B reaches RabbitMQ over it.
A third namespace is the "physical switch": a bridge joining both hosts'
provider NICs (and itself holding an address, as a physical host would).

This is the only way to see VXLAN unicast flooding work: the FDB entries the
driver writes must carry a VM's ARP and ICMP to the other host, and nothing
else must (another VNI stays isolated).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.parse
import uuid
from typing import Any

from agentkit.conf import metadata as metadata_conf
from agentkit.lib import ip_lib
from drivers.linuxbridge import mech_driver
from tests.functional import agent_process
from tests.functional import base
from tests.functional import fake_neutron
from tests.functional import vm as fake_vm

VXLAN_PORT = 4789
PHYSNET = 'provider'


wait_until = base.wait_until


class QuietVM:
    """``eth0`` in its own namespace, the tap on host A (None) or B.

    IPv4 only: a VM's IPv6 chatter (DAD, router and MLD solicitations) is
    sent at times of its own, and would let VXLAN devices learn MACs again
    while a test checks that forgetting a peer stops all traffic.
    """

    def __init__(self, name: str, host_ns: str | None, port_id: str, mac: str,
                 mtu: int) -> None:
        self.name = name
        self.host_ns = host_ns
        self.port_id = port_id
        self.tap = 'tap' + port_id[:11]
        self.mac = mac
        vm = ip_lib.IPWrapper(name)
        vm.ensure_namespace()
        vm.set_sysctl('net.ipv6.conf.default.disable_ipv6', 1)
        if host_ns is None:
            ip_lib.IPWrapper().add_veth(self.tap, 'eth0', peer_namespace=name,
                                        mtu=mtu, peer_mac=mac)
        else:
            vm.add_veth('eth0', self.tap, peer_namespace=host_ns, mtu=mtu, mac=mac)
        ip_lib.IPDevice(self.tap, host_ns).link.set_up()
        ip_lib.IPDevice('eth0', name).link.set_up()

    def set_ip(self, cidr: str) -> None:
        ip_lib.IPDevice('eth0', self.name).addr.add(cidr)

    def pin_neighbour(self, ip: str, mac: str) -> None:
        """A permanent ARP entry: the VM never probes ``ip`` again."""
        ip_lib.IPDevice('eth0', self.name).neigh.add(ip, mac)

    def destroy(self) -> None:
        ip_lib.IPWrapper(self.name).delete_namespace()  # the veth goes with it
        if self.host_ns is None and ip_lib.device_exists(self.tap):
            ip_lib.IPDevice(self.tap).delete()


class TwoHostLinuxbridgeTestBase(base.AgentTestCase):
    """Host A (root namespace) and host B (a namespace), one fake server."""

    #: ``[vxlan] vxlan_group`` of both agents; None: unicast flooding.
    vxlan_group: str | None = None

    def setUp(self) -> None:
        super().setUp()
        self.configure(metadata_conf.register_metadata_opts, {})
        self.neutron = fake_neutron.FakeNeutron().start()
        self.addCleanup(self.neutron.stop)
        tag = uuid.uuid4().hex[:8]
        self.tag = tag
        # Root-namespace objects the agent on host A creates (bridges, VXLAN
        # devices); removed after the agents are killed (cleanups run LIFO).
        self.root_leftovers: list[str] = []
        self.addCleanup(self._delete_root_leftovers)

        self.ns_b = f'aklhb{tag}'
        self.ns_switch = f'aklsw{tag}'
        for ns in (self.ns_b, self.ns_switch):
            ip_lib.IPWrapper(ns).ensure_namespace()
            self.addCleanup(ip_lib.IPWrapper(ns).delete_namespace)

        # Underlay: host A's end in the root namespace, host B's in B.
        self.ip_a, self.ip_b = base.random_underlay()
        self.underlay_a = f'akl{tag}u'
        ip_lib.IPWrapper().add_veth(self.underlay_a, 'underlay0',
                                    peer_namespace=self.ns_b)
        self.addCleanup(self._delete_root_device, self.underlay_a)
        for dev, ns, ip in ((self.underlay_a, None, self.ip_a),
                            ('underlay0', self.ns_b, self.ip_b)):
            ip_lib.IPDevice(dev, ns).addr.add(f'{ip}/30')
            ip_lib.IPDevice(dev, ns).link.set_up()

        # Provider NICs, joined by the switch's bridge.
        self.nic_a = f'akl{tag}p'
        self.nic_b = 'provider0'
        ip_lib.IPWrapper().add_veth(self.nic_a, 'porta', peer_namespace=self.ns_switch)
        self.addCleanup(self._delete_root_device, self.nic_a)
        ip_lib.IPWrapper(self.ns_b).add_veth(self.nic_b, 'portb',
                                             peer_namespace=self.ns_switch)
        switch = ip_lib.IPWrapper(self.ns_switch).add_bridge('br0')
        for port in ('porta', 'portb'):
            ip_lib.IPDevice(port, self.ns_switch).link.set_master('br0')
            ip_lib.IPDevice(port, self.ns_switch).link.set_up()
        switch.link.set_up()
        switch.addr.add('10.253.20.254/24')  # the provider network's "router"

        self.host_a = f'aklha{tag}'
        self.host_b = f'aklhb{tag}'
        with self.neutron.lock:
            self.neutron.tunnels[:] = [
                {'ip_address': self.ip_a, 'udp_port': VXLAN_PORT, 'host': self.host_a},
                {'ip_address': self.ip_b, 'udp_port': VXLAN_PORT, 'host': self.host_b}]
        self.agent_a = self._start_agent(self.host_a, self.ip_a, self.nic_a,
                                         self.neutron.transport_url, None)
        self.agent_b = self._start_agent(self.host_b, self.ip_b, self.nic_b,
                                         self._url_via(self.ip_a), self.ns_b)
        for host in (self.host_a, self.host_b):
            self.neutron.wait_for_call(
                'report_state',
                lambda kw, h=host: kw['agent_state']['agent_state']['host'] == h,
                timeout=60)

    # -- set-up helpers -----------------------------------------------------
    def _url_via(self, address: str) -> str:
        """The transport URL as host B must use it: over the underlay."""
        url = urllib.parse.urlsplit(self.neutron.transport_url)
        host = url.hostname or ''
        if host not in ('127.0.0.1', 'localhost', '::1'):
            return self.neutron.transport_url  # already a routable address
        netloc = url.netloc.rsplit('@', 1)
        hostport = netloc[-1].replace(host, address, 1)
        netloc[-1] = hostport
        return urllib.parse.urlunsplit(url._replace(netloc='@'.join(netloc)))

    def _start_agent(self, host: str, local_ip: str, nic: str, url: str,
                     namespace: str | None) -> agent_process.AgentProcess:
        config = base.write_config(self.get_temp_path(f'{host}.ini'), {
            'DEFAULT': {'transport_url': url, 'host': host,
                        'state_path': self.get_temp_path('state')},
            'agent': {'report_interval': 2, 'resync_max_retries': 1},
            'l2': {'mechanism_driver': 'linuxbridge',
                   'type_drivers': 'flat,vlan,vxlan', 'tunnel_types': 'vxlan',
                   'local_ip': local_ip, 'vxlan_udp_port': VXLAN_PORT,
                   'network_vlan_ranges': PHYSNET},
            'linux_bridge': {'physical_interface_mappings': f'{PHYSNET}:{nic}'},
            'vxlan': {'vxlan_group': self.vxlan_group} if self.vxlan_group else {},
        })
        agent_cmd = os.path.join(agent_process.BIN_DIR, 'agentkit-l2')
        log = self.get_temp_path(f'{host}.log')
        if namespace is None:
            proc = agent_process.AgentProcess(
                'agentkit-l2', '--config-file', config, log_path=log)
        else:
            # An absolute command is used as is (os.path.join semantics).
            proc = agent_process.AgentProcess(
                shutil.which('ip') or '/usr/sbin/ip', 'netns', 'exec', namespace,
                agent_cmd, '--config-file', config, log_path=log)
        self.addCleanup(proc.kill)
        return proc

    def _delete_root_device(self, name: str) -> None:
        if ip_lib.device_exists(name):
            ip_lib.IPDevice(name).delete()

    def _delete_root_leftovers(self) -> None:
        for name in self.root_leftovers:
            self._delete_root_device(name)

    def network(self, network_type: str = 'vxlan', seg: int | None = None,
                mtu: int = 1450) -> dict[str, Any]:
        net = {'id': str(uuid.uuid4()), 'network_type': network_type,
               'segmentation_id': seg, 'mtu': mtu,
               'physical_network': None if network_type == 'vxlan' else PHYSNET}
        if network_type == 'vxlan' and seg is None:
            net['segmentation_id'] = 1000 + uuid.uuid4().int % 1000000
        self.root_leftovers.append('brq' + net['id'][:11])
        if network_type == 'vxlan':
            self.root_leftovers.append(f'vxlan-{net["segmentation_id"]}')
        return net

    def add_vm(self, host: str, net: dict[str, Any], cidr: str) -> QuietVM:
        """Plug a VM on ``host`` (A or B) and tell the server about its port."""
        port_id = str(uuid.uuid4())
        mac = 'fa:16:3e:%02x:%02x:%02x' % tuple(uuid.uuid4().bytes[:3])
        tap = 'tap' + port_id[:11]
        with self.neutron.lock:
            self.neutron.port_details[tap] = {
                'device': tap, 'port_id': port_id, 'network_id': net['id'],
                'mac_address': mac, 'admin_state_up': True,
                'network_type': net['network_type'],
                'physical_network': net['physical_network'],
                'segmentation_id': net['segmentation_id'], 'mtu': net['mtu'],
                'port_security_enabled': False}
        vm = QuietVM(f'aklvm{uuid.uuid4().hex[:9]}',
                     None if host == 'A' else self.ns_b, port_id, mac, net['mtu'])
        self.addCleanup(vm.destroy)
        vm.set_ip(cidr)
        return vm

    def wait_up(self, *vms: QuietVM) -> None:
        for vm in vms:
            self.neutron.wait_for_call(
                'update_device_list', lambda kw, p=vm.port_id: p in kw['devices_up'],
                timeout=30)

    def flood_peers(self, vni: int, namespace: str | None) -> set[str]:
        """Peers in the all-zeros (flood) FDB entries of ``vxlan-<vni>``."""
        return {e['dst'] for e in ip_lib.list_fdb_entries(f'vxlan-{vni}', namespace)
                if e['self'] and e['mac'] == ip_lib.ZERO_MAC}

    def assertPings(self, vm: QuietVM, address: str) -> None:
        self.assertTrue(fake_vm.ping(vm.name, address, count=3),
                        f'{vm.name} cannot reach {address}')

    def assertNoPing(self, vm: QuietVM, address: str) -> None:
        self.assertFalse(fake_vm.ping(vm.name, address, count=2, wait=1),
                         f'{vm.name} reaches {address} but must not')


class TwoHostLinuxbridgeTest(TwoHostLinuxbridgeTestBase):
    """Unicast VXLAN (the default), flat and vlan between the two hosts."""

    # -- tests ----------------------------------------------------------------
    def test_vxlan_between_hosts_and_isolation_of_other_vni(self):
        net1 = self.network(mtu=1400)
        net2 = self.network()
        a1 = self.add_vm('A', net1, '10.253.21.1/24')
        b1 = self.add_vm('B', net1, '10.253.21.2/24')
        a2 = self.add_vm('A', net2, '10.253.21.3/24')
        b2 = self.add_vm('B', net2, '10.253.21.4/24')
        self.wait_up(a1, b1, a2, b2)

        # Peers learnt through tunnel_sync, on devices created after it.
        for net in (net1, net2):
            vni = net['segmentation_id']
            self.assertEqual({self.ip_b}, self.flood_peers(vni, None))
            self.assertEqual({self.ip_a}, self.flood_peers(vni, self.ns_b))
        vx = ip_lib.get_link(f'vxlan-{net1["segmentation_id"]}', self.ns_b)
        self.assertEqual(self.ip_b, vx['vxlan']['local'])
        self.assertEqual(1400, vx['mtu'])
        self.assertEqual('brq' + net1['id'][:11], vx['master'])

        self.assertPings(a1, '10.253.21.2')
        self.assertPings(b2, '10.253.21.3')
        # Same subnet, other VNI: the frames must not cross.
        self.assertNoPing(a1, '10.253.21.4')
        self.assertNoPing(b1, '10.253.21.3')

    def test_tunnel_delete_and_update_rewrite_existing_devices(self):
        net = self.network()
        vni = net['segmentation_id']
        a1 = self.add_vm('A', net, '10.253.22.1/24')
        b1 = self.add_vm('B', net, '10.253.22.2/24')
        self.wait_up(a1, b1)
        self.assertPings(a1, '10.253.22.2')
        # The ping left stale ARP entries the kernel re-probes ~5 s later:
        # pinned entries keep both VMs silent from here on.
        a1.pin_neighbour('10.253.22.2', b1.mac)
        b1.pin_neighbour('10.253.22.1', a1.mac)
        learnt = {ns: [e for e in ip_lib.list_fdb_entries(f'vxlan-{vni}', ns)
                       if e['dst'] == peer and e['mac'] != ip_lib.ZERO_MAC]
                  for ns, peer in ((None, self.ip_b), (self.ns_b, self.ip_a))}
        self.assertTrue(all(learnt.values()), f'the ping taught no MAC: {learnt}')

        # Each host forgets the other as if it had gone away: while both
        # agents handle the deletes, no VXLAN packet crosses. Otherwise a
        # frame the other host still floods (its bridge's own IPv6 router
        # and MLD solicitations) teaches a VXLAN device a MAC again after
        # the agent removed it, and learnt entries live for 300 s.
        self._drop_vxlan_between_hosts()
        for ip in (self.ip_a, self.ip_b):
            self.neutron.cast_to_agent('q-agent-notifier-tunnel-delete', None,
                                       'tunnel_delete', tunnel_ip=ip,
                                       tunnel_type='vxlan')
        wait_until(lambda: not self.flood_peers(vni, None)
                   and not self.flood_peers(vni, self.ns_b),
                   message='flood entries removed on both hosts')
        # Learnt entries pointing at the gone peer went too.
        for ns, peer in ((None, self.ip_b), (self.ns_b, self.ip_a)):
            wait_until(lambda ns=ns, peer=peer: not [
                e for e in ip_lib.list_fdb_entries(f'vxlan-{vni}', ns)
                if e['dst'] == peer], message=f'learnt entries for {peer} removed')
        # With the underlay open again nothing is sent: no entry leads there.
        self._allow_vxlan_between_hosts()
        self.assertNoPing(a1, '10.253.22.2')

        for ip in (self.ip_a, self.ip_b):
            self.neutron.cast_to_agent('q-agent-notifier-tunnel-update', None,
                                       'tunnel_update', tunnel_ip=ip,
                                       tunnel_type='vxlan')
        wait_until(lambda: self.flood_peers(vni, None) == {self.ip_b}
                   and self.flood_peers(vni, self.ns_b) == {self.ip_a},
                   message='flood entries back on both hosts')
        self.assertPings(a1, '10.253.22.2')

    def _vxlan_drop_rules(self) -> list[tuple[str | None, list[str]]]:
        """(namespace, iptables rule) dropping each host's VXLAN to the other."""
        return [(None, ['OUTPUT', '-d', self.ip_b, '-p', 'udp', '--dport',
                        str(VXLAN_PORT), '-j', 'DROP']),
                (self.ns_b, ['OUTPUT', '-d', self.ip_a, '-p', 'udp', '--dport',
                             str(VXLAN_PORT), '-j', 'DROP'])]

    @staticmethod
    def _iptables(namespace: str | None, *args: str, check: bool = True) -> None:
        argv = ['iptables', '-w', *args]
        if namespace is not None:
            argv = ['ip', 'netns', 'exec', namespace, *argv]
        subprocess.run(argv, check=check, capture_output=True, timeout=30)

    def _drop_vxlan_between_hosts(self) -> None:
        for ns, rule in self._vxlan_drop_rules():
            self._iptables(ns, '-I', *rule)
        self.addCleanup(self._allow_vxlan_between_hosts)

    def _allow_vxlan_between_hosts(self) -> None:
        for ns, rule in self._vxlan_drop_rules():
            if ns is None or ip_lib.namespace_exists(ns):
                self._iptables(ns, '-D', *rule, check=False)

    def test_flat_between_hosts_through_the_physical_switch(self):
        net = self.network('flat', mtu=1500)
        a = self.add_vm('A', net, '10.253.20.1/24')
        b = self.add_vm('B', net, '10.253.20.2/24')
        self.wait_up(a, b)
        brq = 'brq' + net['id'][:11]
        self.assertEqual(brq, ip_lib.get_link(self.nic_a)['master'])
        self.assertEqual(brq, ip_lib.get_link(self.nic_b, self.ns_b)['master'])
        self.assertPings(a, '10.253.20.2')
        self.assertPings(b, '10.253.20.254')

    def test_vlan_port_fails_clearly_without_8021q(self):
        if _kernel_has_8021q(self.ns_switch):
            self.skipTest('this kernel has 8021q: the missing-support path '
                          'cannot be exercised')
        net = self.network('vlan', seg=100)
        vm = self.add_vm('A', net, '10.253.23.1/24')
        self.agent_a.wait_for_output('8021q', timeout=30)
        self.assertIn(repr(mech_driver.vlan_subinterface_name(self.nic_a, 100)),
                      self.agent_a.output())
        self.assertFalse(ip_lib.device_exists('brq' + net['id'][:11]))
        # Reported failed (down) once, not retried forever.
        self.neutron.wait_for_call('update_device_list',
                                   lambda kw: vm.port_id in kw['devices_down'])
        self.assertFalse(any(vm.port_id in kw['devices_up']
                             for kw in self.neutron.calls_of('update_device_list')))


class TwoHostMulticastVxlanTest(TwoHostLinuxbridgeTestBase):
    """``[vxlan] vxlan_group``: floods reach the other host through a group.

    A CIDR, so each VNI gets its own group; random, so tests running at the
    same time in the root namespace never share one.
    """

    vxlan_group = f'239.{1 + uuid.uuid4().int % 254}.0.0/16'

    def test_vxlan_between_hosts_through_multicast_groups(self):
        net1 = self.network(mtu=1400)
        net2 = self.network()
        a1 = self.add_vm('A', net1, '10.253.24.1/24')
        b1 = self.add_vm('B', net1, '10.253.24.2/24')
        a2 = self.add_vm('A', net2, '10.253.24.3/24')
        b2 = self.add_vm('B', net2, '10.253.24.4/24')
        self.wait_up(a1, b1, a2, b2)

        groups = mech_driver.parse_vxlan_group(self.vxlan_group, self.ip_a)
        for net in (net1, net2):
            vni = net['segmentation_id']
            group = mech_driver.vxlan_group_for(groups, vni)
            for ns, dev, local in ((None, self.underlay_a, self.ip_a),
                                   (self.ns_b, 'underlay0', self.ip_b)):
                vx = ip_lib.get_link(f'vxlan-{vni}', ns)
                self.assertEqual((group, dev, local),
                                 (vx['vxlan']['group'], vx['vxlan']['dev'],
                                  vx['vxlan']['local']))
                self.assertEqual('brq' + net['id'][:11], vx['master'])
                # The server reported both endpoints, yet nothing is
                # flooded by unicast: only the group can carry the ARP.
                self.assertEqual(set(), self.flood_peers(vni, ns))
        self.assertEqual(1400, ip_lib.get_link(
            f'vxlan-{net1["segmentation_id"]}', self.ns_b)['mtu'])

        self.assertPings(a1, '10.253.24.2')
        self.assertPings(b2, '10.253.24.3')
        # Same subnet, other VNI: the frames must not cross.
        self.assertNoPing(a1, '10.253.24.4')
        self.assertNoPing(b1, '10.253.24.3')


def _kernel_has_8021q(namespace: str) -> bool:
    """Whether a VLAN device can be created, tried in a scratch namespace."""
    ip_lib.IPWrapper(namespace).add_veth('aklprobe0', 'aklprobe1')
    try:
        ip_lib.IPWrapper(namespace).add_vlan('aklprobe0.9', 'aklprobe0', 9)
        return True
    except ip_lib.VlanNotSupported:
        return False
    finally:
        ip_lib.IPDevice('aklprobe0', namespace).delete()


class FdbAndVlanIpLibTest(base.FunctionalTestCase):
    """The ip_lib calls the driver relies on, on a real VXLAN device."""

    def setUp(self) -> None:
        super().setUp()
        self.ns = f'aklfdb{uuid.uuid4().hex[:8]}'
        ip_lib.IPWrapper(self.ns).ensure_namespace()
        self.addCleanup(ip_lib.IPWrapper(self.ns).delete_namespace)
        ip_lib.IPWrapper(self.ns).add_vxlan('vxlan-77', 77, local_ip='127.0.0.1')

    def own(self) -> list[tuple[str, str]]:
        return sorted((e['mac'], e['dst']) for e in
                      ip_lib.list_fdb_entries('vxlan-77', self.ns) if e['self'])

    def test_append_list_delete(self):
        zero = ip_lib.ZERO_MAC
        for peer in ('192.0.2.2', '192.0.2.3', '192.0.2.3'):  # idempotent
            ip_lib.add_fdb_entry('vxlan-77', zero, peer, self.ns)
        self.assertEqual([(zero, '192.0.2.2'), (zero, '192.0.2.3')], self.own())
        self.assertTrue(all(e['permanent'] for e in
                            ip_lib.list_fdb_entries('vxlan-77', self.ns)))
        self.assertTrue(ip_lib.delete_fdb_entry('vxlan-77', zero, '192.0.2.2', self.ns))
        self.assertFalse(ip_lib.delete_fdb_entry('vxlan-77', zero, '192.0.2.2', self.ns))
        self.assertEqual([(zero, '192.0.2.3')], self.own())

    def test_replace_keeps_one_remote_per_mac(self):
        mac = 'fa:16:3e:00:00:01'
        ip_lib.add_fdb_entry('vxlan-77', mac, '192.0.2.2', self.ns, append=False)
        ip_lib.add_fdb_entry('vxlan-77', mac, '192.0.2.3', self.ns, append=False)
        self.assertEqual([(mac, '192.0.2.3')], self.own())

    def test_bad_values_never_reach_the_kernel(self):
        self.assertRaises(ip_lib.InvalidNetworkValue, ip_lib.add_fdb_entry,
                          'vxlan-77', 'zz:00', '192.0.2.2', self.ns)
        self.assertRaises(ip_lib.InvalidNetworkValue, ip_lib.add_fdb_entry,
                          'vxlan-77', ip_lib.ZERO_MAC, '192.0.2.300', self.ns)
        self.assertRaises(ip_lib.NetworkInterfaceNotFound, ip_lib.list_fdb_entries,
                          'vxlan-78', self.ns)

    def test_vlan_device_or_a_clear_error(self):
        ip_lib.IPWrapper(self.ns).add_veth('nic0', 'nic1')
        try:
            dev = ip_lib.IPWrapper(self.ns).add_vlan('nic0.100', 'nic0', 100)
        except ip_lib.VlanNotSupported as exc:
            self.assertIn('8021q', str(exc))
            self.assertIn('nic0.100', str(exc))
            self.assertFalse(ip_lib.device_exists('nic0.100', self.ns))
        else:
            self.assertEqual('vlan', dev.link.kind)
