"""agentkit-l2 with the openvswitch driver against real OVS (userspace datapath)."""

import signal
import time
import uuid

from agentkit.conf import metadata as metadata_conf
from agentkit.lib.ovs import connection as ovs_connection
from tests.functional import base
from tests.functional import fake_neutron
from tests.functional import vm as fake_vm


class L2AgentOVSHarness(base.AgentTestCase):
    """One agentkit-l2 (openvswitch) on a test bridge of this host's OVS;
    no test of its own (the fault suite builds on it too)."""

    def setUp(self):
        super().setUp()
        self.configure(metadata_conf.register_metadata_opts, {})
        self.neutron = fake_neutron.FakeNeutron().start()
        self.addCleanup(self.neutron.stop)
        self.ovs = ovs_connection.get_connection()
        self.br_name = self.short_name('akl2br')
        self.br = self.ovs.bridge(self.br_name, 'netdev')
        self.addCleanup(self.br.delete)
        self.host = self.short_name('akl2h')
        self.config = base.write_config(self.get_temp_path('l2.ini'), {
            'DEFAULT': {'transport_url': self.neutron.transport_url,
                        'host': self.host,
                        'state_path': self.get_temp_path('state')},
            'agent': {'report_interval': 2},
            'ovs': {'integration_bridge': self.br_name,
                    'datapath_type': 'netdev'},
            'l2': {'mechanism_driver': 'openvswitch',
                   'type_drivers': 'flat,vxlan', 'vni_ranges': '1000:1999'},
        })

    def start_agent(self, env=None):
        # The first report comes after the driver created the bridge.
        return self.run_agent('agentkit-l2', self.config, self.host, self.neutron, env=env)

    def add_vm(self, network_id, vni, cidr, network_type='vxlan', trunk_id=None):
        port_id = str(uuid.uuid4())
        mac = 'fa:16:3e:%02x:%02x:%02x' % tuple(uuid.uuid4().bytes[:3])
        if trunk_id is not None:
            with self.neutron.lock:
                self.neutron.trunks[port_id] = trunk_id
        self.neutron.port_details[port_id] = {
            'device': port_id, 'port_id': port_id, 'network_id': network_id,
            'mac_address': mac, 'admin_state_up': True,
            'network_type': network_type, 'physical_network': None,
            'segmentation_id': vni, 'fixed_ips': [],
            'port_security_enabled': False, 'device_owner': 'compute:nova'}
        vm = fake_vm.FakeVM(self.short_name('akvm'), port_id, mac)
        self.addCleanup(vm.destroy, self.br)
        vm.plug_ovs(self.br)
        vm.set_ip(cidr)
        return vm

    def wait_up(self, port_id):
        return self.neutron.wait_for_call(
            'update_device_list', lambda kw: port_id in kw['devices_up'])

    def wired_tag(self, tap, timeout=10):
        """The port's local VLAN once our OVSDB replica has caught up."""
        deadline = time.monotonic() + timeout
        while True:
            tag = self.br.get_port_tag(tap)
            if tag not in (None, [], 4095):
                return tag
            self.assertLess(time.monotonic(), deadline, f'{tap} never tagged')
            time.sleep(0.05)


class L2AgentOVSTest(L2AgentOVSHarness):

    def test_report_state_in_neutron_format(self):
        proc = self.start_agent()
        state = self.neutron.wait_for_call(
            'report_state',
            lambda kw: kw['agent_state']['agent_state']['host'] == self.host
        )['agent_state']['agent_state']
        self.assertEqual('Open vSwitch agent', state['agent_type'])
        self.assertEqual('agentkit-l2', state['binary'])
        self.assertEqual('N/A', state['topic'])
        self.assertTrue(state['start_flag'])
        conf = state['configurations']
        self.assertEqual('netdev', conf['datapath_type'])
        self.assertEqual(self.br_name, conf['integration_bridge'])
        self.assertEqual({}, conf['bridge_mappings'])
        self.assertEqual(['flat', 'vxlan'], conf['network_types'])
        # The versions of the objects it consumes: Port and Network (its
        # port cache); the noop firewall adds no AddressGroup, and nothing
        # agentkit does not implement (Trunk...) is claimed.
        self.assertEqual({'Port': '1.11', 'Network': '1.3'}, state['resource_versions'])
        # No firewall configured: the operator is told, once, at start.
        self.assertEqual(1, proc.output().count('VMs are unfiltered'))
        self.assertIs(False, conf['ovs_hybrid_plug'])
        self.assertTrue(self.br.exists())
        self.assertEqual('netdev', self.br.get_datapath_type())
        proc.signal(signal.SIGTERM)
        self.assertEqual(0, proc.wait(10))
        self.assertTrue(self.br.exists())  # host state stays after stop

    def test_ports_wired_isolated_and_kept_across_restart(self):
        net_a, net_b = str(uuid.uuid4()), str(uuid.uuid4())
        proc = self.start_agent()
        vm1 = self.add_vm(net_a, 1001, '10.252.0.1/24')
        vm2 = self.add_vm(net_a, 1001, '10.252.0.2/24')
        vm3 = self.add_vm(net_b, 1002, '10.252.0.3/24')
        for vm in (vm1, vm2, vm3):
            self.wait_up(vm.port_id)
        tag1 = self.wired_tag(vm1.tap)
        self.assertEqual(tag1, self.wired_tag(vm2.tap))
        tag3 = self.wired_tag(vm3.tap)
        self.assertNotIn(tag3, (tag1, None, 4095))
        self.assertEqual(net_a, self.br.get_port_other_config(vm1.tap)['net_uuid'])
        self.assertEqual('1001',
                         self.br.get_port_other_config(vm1.tap)['segmentation_id'])
        self.assertTrue(fake_vm.ping(vm1.name, '10.252.0.2'))
        self.assertFalse(fake_vm.ping(vm1.name, '10.252.0.3', count=1, wait=1))

        proc.signal(signal.SIGTERM)
        self.assertEqual(0, proc.wait(10))
        self.assertTrue(fake_vm.ping(vm1.name, '10.252.0.2'))  # agent down
        mark = self.neutron.mark()
        self.start_agent()
        self.neutron.wait_for_call(
            'update_device_list', lambda kw: vm1.port_id in kw['devices_up'],
            since=mark)
        self.assertEqual(tag1, self.br.get_port_tag(vm1.tap))  # not re-tagged
        self.assertEqual(tag3, self.br.get_port_tag(vm3.tap))
        self.assertTrue(fake_vm.ping(vm1.name, '10.252.0.2'))

    def test_trunk_parent_and_geneve_port_refused_and_isolated(self):
        proc = self.start_agent()
        trunk_id = str(uuid.uuid4())
        parent = self.add_vm(str(uuid.uuid4()), 1004, '10.252.2.1/24', trunk_id=trunk_id)
        self.neutron.wait_for_call('update_device_list',
                                   lambda kw: parent.port_id in kw['devices_down'])
        geneve = self.add_vm(str(uuid.uuid4()), 1005, '10.252.3.1/24', network_type='geneve')
        self.neutron.wait_for_call('update_device_list',
                                   lambda kw: geneve.port_id in kw['devices_down'])
        good = self.add_vm(str(uuid.uuid4()), 1003, '10.252.1.1/24')
        self.wait_up(good.port_id)
        for vm in (parent, geneve):
            self.assertIn(self.br.get_port_tag(vm.tap), (None, 4095, []))
        self.assertFalse(any({parent.port_id, geneve.port_id} & set(kw['devices_up'])
                             for kw in self.neutron.calls_of('update_device_list')))
        proc.wait_for_output('Port %s refused: it is the parent port of trunk %s'
                             % (parent.port_id, trunk_id))
        proc.wait_for_output('Port %s refused: its segment is geneve' % geneve.port_id)
        self.assertNotIn('ERROR agentkit.agent.l2', proc.output())

    def test_port_of_disabled_type_reported_failed(self):
        self.start_agent()
        port_id = str(uuid.uuid4())
        self.neutron.port_details[port_id] = {
            'device': port_id, 'port_id': port_id,
            'network_id': str(uuid.uuid4()), 'mac_address': 'fa:16:3e:00:00:99',
            'admin_state_up': True, 'network_type': 'gre',
            'physical_network': None, 'segmentation_id': 7}
        vm = fake_vm.FakeVM(self.short_name('akvm'), port_id, 'fa:16:3e:00:00:99')
        self.addCleanup(vm.destroy, self.br)
        vm.plug_ovs(self.br)
        self.neutron.wait_for_call('update_device_list',
                                   lambda kw: port_id in kw['devices_down'])
        good = self.add_vm(str(uuid.uuid4()), 1003, '10.252.1.1/24')
        self.wait_up(good.port_id)  # the bad one affected nothing else
        self.assertIn(self.br.get_port_tag(vm.tap), (None, 4095, []))
