"""agentkit-l2 (openvswitch) with provider networks on real OVS (userspace datapath).

The "physical network" is a second OVS bridge (a stand-in for the physical
switch) joined to the provider bridge by a veth, the host's NIC. Hosts on
it sit in namespaces on access ports: untagged (flat) or VLAN 100. The
kernel here has no 8021q, so OVS does the tagging on that side too.
"""

import re
import signal
import subprocess
import time
import uuid

from ovsdbapp.backend.ovs_idl import event as ovs_event

from agentkit.conf import metadata as metadata_conf
from agentkit.lib.ovs import connection as ovs_connection
from agentkit.lib.ovs import ports as ovs_ports
from drivers.openvswitch import provider
from tests.functional import agent_process
from tests.functional import base
from tests.functional import fake_neutron
from tests.functional import ovs_host
from tests.functional import vm as fake_vm

PHYSNET = 'physnet1'
SUBNET = '10.253.0.{}/24'
FLAT_HOST, VLAN_HOST = '10.253.0.101', '10.253.0.102'
VLAN_ID, OTHER_VLAN_ID = 100, 101
# Columns the agent writes; other Interface updates are ovs-vswitchd's.
OWNED_COLUMNS = {'Port': {'tag', 'other_config', 'interfaces', 'protected', 'trunks',
                          'vlan_mode'},
                 'Interface': {'type', 'options', 'external_ids'}}


class RowChanges(ovs_event.RowEvent):
    """Records changes of named Port/Interface rows in agent-owned columns."""

    def __init__(self, table: str, names: set[str]) -> None:
        super().__init__((self.ROW_CREATE, self.ROW_UPDATE, self.ROW_DELETE), table, None)
        self.names = names
        self.seen: list[tuple[str, str, list[str]]] = []

    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other

    def _changed(self, old) -> list[str]:  # type: ignore[no-untyped-def]
        # On updates ``old`` carries only the columns that changed.
        return sorted(c for c in OWNED_COLUMNS[self.table] if hasattr(old, c))

    def match_fn(self, event, row, old) -> bool:  # type: ignore[no-untyped-def]
        if row.name not in self.names:
            return False
        return event != self.ROW_UPDATE or bool(self._changed(old))

    def run(self, event, row, old) -> None:  # type: ignore[no-untyped-def]
        changed = self._changed(old) if event == self.ROW_UPDATE else []
        self.seen.append((event, row.name, changed))


def dump_flows(bridge: str) -> list[str]:
    """Flow table without counters (they change with traffic)."""
    out = subprocess.run(['ovs-ofctl', '--no-stats', 'dump-flows', bridge],
                         capture_output=True, text=True, check=True).stdout
    return sorted(line.strip() for line in out.splitlines() if line.strip())


class L2OVSProviderTest(base.AgentTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.configure(metadata_conf.register_metadata_opts, {})
        self.neutron = fake_neutron.FakeNeutron().start()
        self.addCleanup(self.neutron.stop)
        self.ovs = ovs_connection.get_connection()
        self.prefix = ovs_host.random_prefix()
        self.br_int = self.ovs.bridge(self.prefix + 'i', 'netdev')
        self.br_x = self.ovs.bridge(self.prefix + 'x', 'netdev')    # agent-created
        self.br_phys = self.ovs.bridge(self.prefix + 'p', 'netdev')  # "the world"
        for br in (self.br_int, self.br_x, self.br_phys):
            self.addCleanup(br.delete)
        self.host = self.prefix + 'host'
        self.config = base.write_config(self.get_temp_path('l2.ini'), {
            'DEFAULT': {'transport_url': self.neutron.transport_url,
                        'host': self.host,
                        'state_path': self.get_temp_path('state')},
            'agent': {'report_interval': 2},
            'ovs': {'integration_bridge': self.br_int.name,
                    'datapath_type': 'netdev'},
            'l2': {'mechanism_driver': 'openvswitch',
                   'type_drivers': 'flat,vlan',
                   'bridge_mappings': f'{PHYSNET}:{self.br_x.name}',
                   'network_vlan_ranges': f'{PHYSNET}:100:199',
                   'flat_networks': PHYSNET},
        })

    # -- helpers ------------------------------------------------------------
    def start_agent(self) -> agent_process.AgentProcess:
        return self.run_agent('agentkit-l2', self.config, self.host, self.neutron)

    def build_physical_network(self) -> None:
        """br-x <-veth-> physical switch; a flat host and a VLAN 100 host."""
        self.br_phys.create(fail_mode='standalone')
        nic, wire = self.prefix + 'w1', self.prefix + 'w2'
        self.addCleanup(ovs_host.delete_link, nic)
        ovs_host.run('ip', 'link', 'add', nic, 'type', 'veth', 'peer', 'name', wire)
        for dev in (nic, wire):
            ovs_host.run('ip', 'link', 'set', dev, 'up')
            ovs_host.run('ethtool', '-K', dev, 'tx', 'off')
        self.br_x.add_port(nic)            # trunk: the host's physical NIC
        self.br_phys.add_port(wire)        # trunk: the switch's port
        for ns_suffix, dev_suffix, ip, tag in (('nf', 'f', FLAT_HOST, 0),
                                               ('nv', 'v', VLAN_HOST, VLAN_ID)):
            dev = self.prefix + dev_suffix
            ovs_host.add_veth_namespace(self.addCleanup, self.prefix + ns_suffix,
                                        dev, f'{ip}/24')
            self.br_phys.add_port(dev, tag=tag)

    def add_vm(self, network_id: str, network_type: str, vlan: int | None,
               ip_suffix: int) -> fake_vm.FakeVM:
        port_id = str(uuid.uuid4())
        mac = 'fa:16:3e:%02x:%02x:%02x' % tuple(uuid.uuid4().bytes[:3])
        self.neutron.port_details[port_id] = {
            'device': port_id, 'port_id': port_id, 'network_id': network_id,
            'mac_address': mac, 'admin_state_up': True,
            'network_type': network_type, 'physical_network': PHYSNET,
            'segmentation_id': vlan, 'fixed_ips': [],
            'port_security_enabled': False, 'device_owner': 'compute:nova'}
        vm = fake_vm.FakeVM(self.prefix + 'm' + uuid.uuid4().hex[:4], port_id, mac,
                            mtu=1500)
        self.addCleanup(vm.destroy, self.br_int)
        vm.plug_ovs(self.br_int)
        vm.set_ip(SUBNET.format(ip_suffix))
        return vm

    def wait_up(self, port_id: str, since: int = 0) -> dict:
        return self.neutron.wait_for_call(
            'update_device_list', lambda kw: port_id in kw['devices_up'], since=since)

    def wired_tag(self, vm: fake_vm.FakeVM) -> int:
        """The VM port's local VLAN, once this process's OVSDB replica shows it.

        The agent reports a port up after ITS commit; this test process's
        replica receives the update independently and may lag under load.
        The network's patch ports are in the same transaction as the tag.
        """
        return ovs_host.wait_until(  # type: ignore[return-value]
            lambda: self.br_int.get_port_tag(vm.tap) not in (None, 4095)
            and self.br_int.get_port_tag(vm.tap), 10, f'{vm.tap} to be tagged')

    def wait_ports_gone(self, names: list[str], timeout: float = 10.0) -> None:
        ovs_host.wait_until(
            lambda: all(ovs_ports.read_port(self.ovs, n) is None for n in names),
            timeout, f'ports {names} to be removed')

    def ping_ok(self, vm: fake_vm.FakeVM, ip: str, timeout: float = 10.0) -> bool:
        """Pings until one gets through (the first may wait for ARP)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if fake_vm.ping(vm.name, ip, count=1, wait=1):
                return True
        return False

    def set_up_vms(self) -> tuple[fake_vm.FakeVM, fake_vm.FakeVM, fake_vm.FakeVM,
                                  list[str]]:
        """A flat VM, a VLAN 100 VM and a VLAN 101 VM, all wired."""
        nets = [str(uuid.uuid4()) for _ in range(3)]
        vm_flat = self.add_vm(nets[0], 'flat', None, 1)
        vm_vlan = self.add_vm(nets[1], 'vlan', VLAN_ID, 2)
        vm_other = self.add_vm(nets[2], 'vlan', OTHER_VLAN_ID, 3)
        for vm in (vm_flat, vm_vlan, vm_other):
            self.wait_up(vm.port_id)
            self.wired_tag(vm)
        return vm_flat, vm_vlan, vm_other, nets

    # -- tests --------------------------------------------------------------
    def test_flat_and_vlan_reach_their_physical_network_only(self) -> None:
        self.start_agent()
        self.assertTrue(self.br_x.exists())                  # created if missing
        self.assertEqual('netdev', self.br_x.get_datapath_type())
        state = self.neutron.calls_of('report_state')[-1]['agent_state']['agent_state']
        self.assertEqual({PHYSNET: self.br_x.name},
                         state['configurations']['bridge_mappings'])
        self.build_physical_network()
        vm_flat, vm_vlan, vm_other, nets = self.set_up_vms()

        # OVSDB shape: br-int end on the local VLAN, br-x end on the provider one.
        for vm, net, provider_tag in ((vm_flat, nets[0], 0), (vm_vlan, nets[1], VLAN_ID),
                                      (vm_other, nets[2], OTHER_VLAN_ID)):
            int_name, phy_name = provider.patch_names(net)
            int_end = ovs_ports.read_port(self.ovs, int_name)
            phy_end = ovs_ports.read_port(self.ovs, phy_name)
            self.assertEqual(self.br_int.name, int_end.bridge)
            self.assertEqual(self.br_x.name, phy_end.bridge)
            self.assertEqual(self.br_int.get_port_tag(vm.tap), int_end.tag)
            self.assertEqual(provider_tag, phy_end.tag)
            self.assertEqual({'peer': phy_name}, dict(int_end.options))
            self.assertEqual(net, phy_end.other_config['net_uuid'])
        self.assertEqual(3, len({self.br_int.get_port_tag(v.tap)
                                 for v in (vm_flat, vm_vlan, vm_other)}))

        self.assertTrue(self.ping_ok(vm_flat, FLAT_HOST))
        self.assertTrue(self.ping_ok(vm_vlan, VLAN_HOST))
        # Same subnet everywhere: only the L2 segments separate them.
        self.assertFalse(fake_vm.ping(vm_other.name, VLAN_HOST, count=2, wait=1))
        self.assertFalse(fake_vm.ping(vm_other.name, FLAT_HOST, count=2, wait=1))
        self.assertFalse(fake_vm.ping(vm_flat.name, VLAN_HOST, count=2, wait=1))
        self.assertFalse(fake_vm.ping(vm_vlan.name, FLAT_HOST, count=2, wait=1))

    def test_restart_loses_no_traffic_and_rewrites_nothing(self) -> None:
        proc = self.start_agent()
        self.build_physical_network()
        vm_flat, vm_vlan, vm_other, nets = self.set_up_vms()
        self.assertTrue(self.ping_ok(vm_vlan, VLAN_HOST))
        self.assertTrue(self.ping_ok(vm_flat, FLAT_HOST))
        names = {v.tap for v in (vm_flat, vm_vlan, vm_other)}
        names |= {n for net in nets for n in provider.patch_names(net)}
        uuids = {n: self._port_uuid(n) for n in names}
        flows = {br: dump_flows(br) for br in (self.br_int.name, self.br_x.name)}
        watchers = [RowChanges('Port', names), RowChanges('Interface', names)]
        for watcher in watchers:
            self.ovs.handler.watch_event(watcher)
            self.addCleanup(self.ovs.handler.unwatch_event, watcher)
        pinger = subprocess.Popen(
            ['ip', 'netns', 'exec', vm_vlan.name, 'ping', '-i', '0.05', '-W', '1',
             VLAN_HOST], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.addCleanup(pinger.kill)
        time.sleep(0.5)

        proc.signal(signal.SIGTERM)
        self.assertEqual(0, proc.wait(15))
        mark = self.neutron.mark()
        self.start_agent()
        for vm in (vm_flat, vm_vlan, vm_other):
            self.wait_up(vm.port_id, since=mark)  # the new agent wired them again
        time.sleep(1.0)
        pinger.send_signal(signal.SIGINT)
        out, _ = pinger.communicate(timeout=10)
        sent, received = map(int, re.search(
            r'(\d+) packets transmitted, (\d+) received', out).groups())
        self.addDetail('ping', _text(out.splitlines()[-2]))
        self.assertGreater(sent, 40)
        # At most ~1 s of pings (20 x 50 ms) may be lost; none is expected.
        self.assertLessEqual(sent - received, 20, out.splitlines()[-2])

        self.assertEqual([], watchers[0].seen + watchers[1].seen)
        self.assertEqual(uuids, {n: self._port_uuid(n) for n in names})
        self.assertEqual(flows, {br: dump_flows(br)
                                 for br in (self.br_int.name, self.br_x.name)})
        self.assertTrue(self.ping_ok(vm_flat, FLAT_HOST))

    def test_last_port_leaving_removes_network_wiring_only(self) -> None:
        self.start_agent()
        self.build_physical_network()
        net, other_net = str(uuid.uuid4()), str(uuid.uuid4())
        vm1 = self.add_vm(net, 'vlan', VLAN_ID, 1)
        vm2 = self.add_vm(net, 'vlan', VLAN_ID, 2)
        vm3 = self.add_vm(other_net, 'vlan', OTHER_VLAN_ID, 3)
        for vm in (vm1, vm2, vm3):
            self.wait_up(vm.port_id)
            self.wired_tag(vm)
        other_ports = list(provider.patch_names(other_net))
        self.assertIsNotNone(ovs_ports.read_port(self.ovs, other_ports[1]))

        vm3.destroy(self.br_int)       # the only port of other_net leaves
        self.wait_ports_gone(other_ports)
        self.assertTrue(self.ping_ok(vm1, VLAN_HOST))   # others unaffected

        vm1.destroy(self.br_int)       # net keeps vm2: its patch stays
        self.neutron.wait_for_call('update_device_list',
                                   lambda kw: vm1.port_id in kw['devices_down'])
        for name in provider.patch_names(net):
            self.assertIsNotNone(ovs_ports.read_port(self.ovs, name))
        self.assertTrue(self.ping_ok(vm2, VLAN_HOST))

    def test_start_removes_only_wiring_of_networks_left_while_down(self) -> None:
        proc = self.start_agent()
        self.build_physical_network()
        kept_net, gone_net = str(uuid.uuid4()), str(uuid.uuid4())
        vm_kept = self.add_vm(kept_net, 'vlan', VLAN_ID, 1)
        vm_gone = self.add_vm(gone_net, 'vlan', OTHER_VLAN_ID, 2)
        for vm in (vm_kept, vm_gone):
            self.wait_up(vm.port_id)
            self.wired_tag(vm)
        kept_ports = provider.patch_names(kept_net)
        kept_uuids = [self._port_uuid(n) for n in kept_ports]
        proc.signal(signal.SIGTERM)
        self.assertEqual(0, proc.wait(15))
        vm_gone.destroy(self.br_int)   # its network's last port leaves meanwhile

        mark = self.neutron.mark()
        self.start_agent()
        self.wait_ports_gone(list(provider.patch_names(gone_net)))
        self.wait_up(vm_kept.port_id, since=mark)
        self.assertEqual(kept_uuids, [self._port_uuid(n) for n in kept_ports])
        self.assertTrue(self.ping_ok(vm_kept, VLAN_HOST))

    def test_unbound_ports_are_isolated_not_trunks(self) -> None:
        self.start_agent()
        self.build_physical_network()
        vm_flat = self.add_vm(str(uuid.uuid4()), 'flat', None, 1)
        self.wait_up(vm_flat.port_id)
        self.wired_tag(vm_flat)
        # Ports the server does not bind here: never wired. Untagged, each
        # would be a trunk into every network's VLAN on br-int; on the dead
        # VLAN alone they would still reach each other (NORMAL forwards 4095).
        strays = []
        for i in (9, 10):
            port_id = str(uuid.uuid4())
            stray = fake_vm.FakeVM(self.prefix + 'z' + uuid.uuid4().hex[:4], port_id,
                                   'fa:16:3e:00:00:%02x' % i, mtu=1500)
            self.addCleanup(stray.destroy, self.br_int)
            stray.plug_ovs(self.br_int)
            stray.set_ip(SUBNET.format(i))
            strays.append(stray)
        for stray in strays:
            ovs_host.wait_until(lambda: self.br_int.get_port_tag(stray.tap) == 4095, 10,
                                f'{stray.tap} to be put on the dead VLAN')
            self.neutron.wait_for_call('get_devices_details_list_and_failed_devices',
                                       lambda kw: stray.port_id in kw['devices'])
            port = ovs_ports.read_port(self.ovs, stray.tap)
            self.assertEqual((4095, True), (port.tag, port.protected))
        self.assertFalse(fake_vm.ping(strays[0].name, FLAT_HOST, count=2, wait=1))
        self.assertFalse(fake_vm.ping(strays[0].name, SUBNET.format(10)[:-3],
                                      count=2, wait=1))
        self.assertTrue(self.ping_ok(vm_flat, FLAT_HOST))
        self.assertFalse(ovs_ports.read_port(self.ovs, vm_flat.tap).protected)

    def _port_uuid(self, name: str) -> str:
        with self.ovs.lock:
            row = next(r for r in self.ovs.api.tables['Port'].rows.values()
                       if r.name == name)
            return str(row.uuid)


def _text(value: str):  # type: ignore[no-untyped-def]
    from testtools import content
    return content.text_content(value)
