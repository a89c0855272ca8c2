"""agentkit-l2 with the linuxbridge driver: brq bridges, taps enslaved on
netlink events, a flat provider network reaching a 'physical' host."""

import uuid

from oslo_config import cfg

from agentkit.conf import metadata as metadata_conf
from agentkit.lib import ip_lib
from tests.functional import agent_process
from tests.functional import base
from tests.functional import fake_neutron
from tests.functional import spoofing
from tests.functional import vm as fake_vm


class LinuxbridgeAgentTestBase(base.AgentTestCase):
    firewall_driver = 'noop'

    def setUp(self):
        super().setUp()
        self.configure(metadata_conf.register_metadata_opts, {})
        self.neutron = fake_neutron.FakeNeutron().start()
        self.addCleanup(self.neutron.stop)
        # The "physical" NIC: a veth whose far end is a provider-side host.
        self.nic = self.short_name('aklbnic')
        self.phys_ns = self.short_name('aklbphy')
        ip_lib.IPWrapper(self.phys_ns).ensure_namespace()
        self.addCleanup(ip_lib.IPWrapper(self.phys_ns).delete_namespace)
        ip_lib.IPWrapper().add_veth(self.nic, 'eth0', peer_namespace=self.phys_ns)
        self.addCleanup(lambda: ip_lib.device_exists(self.nic)
                        and ip_lib.IPDevice(self.nic).delete())
        ip_lib.IPDevice('eth0', self.phys_ns).link.set_up()
        ip_lib.IPDevice('eth0', self.phys_ns).addr.add('10.253.0.254/24')
        self.host = self.short_name('aklbh')
        self.config = base.write_config(self.get_temp_path('l2.ini'), {
            'DEFAULT': {'transport_url': self.neutron.transport_url,
                        'host': self.host,
                        'state_path': self.get_temp_path('state')},
            'agent': {'report_interval': 2},
            'l2': {'mechanism_driver': 'linuxbridge',
                   'type_drivers': 'flat,vxlan', 'local_ip': '127.0.0.1'},
            'linux_bridge': {'physical_interface_mappings':
                             f'provider:{self.nic}'},
            'securitygroup': {'firewall_driver': self.firewall_driver},
        })
        proc = agent_process.AgentProcess(
            'agentkit-l2', '--config-file', self.config,
            log_path=self.get_temp_path('l2.log'))
        self.addCleanup(proc.kill)
        self.proc = proc

    def add_vm(self, network_id, cidr, network_type='flat', seg=None,
               security_groups=None):
        port_id = str(uuid.uuid4())
        mac = 'fa:16:3e:%02x:%02x:%02x' % tuple(uuid.uuid4().bytes[:3])
        tap = 'tap' + port_id[:11]
        self.neutron.port_details[tap] = {
            'device': tap, 'port_id': port_id, 'network_id': network_id,
            'mac_address': mac, 'admin_state_up': True,
            'network_type': network_type,
            'physical_network': 'provider' if network_type == 'flat' else None,
            'segmentation_id': seg, 'device_owner': 'compute:nova',
            'fixed_ips': [{'ip_address': cidr.split('/')[0],
                           'subnet_id': str(uuid.uuid4())}],
            'security_groups': list(security_groups or []),
            'allowed_address_pairs': [],
            'port_security_enabled': security_groups is not None}
        vm = fake_vm.FakeVM(self.short_name('aklbvm'), port_id, mac)
        self.addCleanup(vm.destroy)
        self.addCleanup(self.proc.kill)  # first, so it cannot recreate devices
        vm.set_ip(cidr)
        return vm


class L2AgentLinuxbridgeTest(LinuxbridgeAgentTestBase):

    def test_reports_linuxbridge_agent_type(self):
        state = self.neutron.wait_for_call(
            'report_state',
            lambda kw: kw['agent_state']['agent_state']['host'] == self.host
        )['agent_state']['agent_state']
        self.assertEqual('Linux bridge agent', state['agent_type'])
        self.assertEqual({'provider': self.nic},
                         state['configurations']['interface_mappings'])

    def test_flat_network_reaches_physical_host(self):
        net = str(uuid.uuid4())
        self.neutron.wait_for_call('report_state')
        vm = self.add_vm(net, '10.253.0.10/24')
        self.neutron.wait_for_call('update_device_list',
                                   lambda kw: vm.port_id in kw['devices_up'])
        brq = 'brq' + net[:11]
        self.addCleanup(lambda: ip_lib.device_exists(brq)
                        and ip_lib.IPDevice(brq).delete())
        self.addCleanup(self.proc.kill)
        self.assertEqual(brq, ip_lib.IPDevice(vm.tap).link.attributes['master'])
        self.assertEqual(brq, ip_lib.IPDevice(self.nic).link.attributes['master'])
        self.assertTrue(fake_vm.ping(vm.name, '10.253.0.254'))

    def test_vxlan_network_gets_vxlan_uplink(self):
        net = str(uuid.uuid4())
        self.neutron.wait_for_call('report_state')
        vni = 1000 + uuid.uuid4().int % 8000
        vm1 = self.add_vm(net, '10.253.1.1/24', 'vxlan', vni)
        vm2 = self.add_vm(net, '10.253.1.2/24', 'vxlan', vni)
        for vm in (vm1, vm2):
            self.neutron.wait_for_call('update_device_list',
                                       lambda kw, p=vm.port_id: p in kw['devices_up'])
        brq = 'brq' + net[:11]
        self.addCleanup(lambda: ip_lib.device_exists(brq)
                        and ip_lib.IPDevice(brq).delete())
        self.addCleanup(lambda: ip_lib.device_exists(f'vxlan-{vni}')
                        and ip_lib.IPDevice(f'vxlan-{vni}').delete())
        self.addCleanup(self.proc.kill)
        vx = ip_lib.IPDevice(f'vxlan-{vni}').link.attributes
        self.assertEqual('vxlan', vx['kind'])
        self.assertEqual(brq, vx['master'])
        self.assertTrue(fake_vm.ping(vm1.name, '10.253.1.2'))


def _rule(sg, direction, ethertype='IPv4', **kw):
    rule = {'id': str(uuid.uuid4()), 'security_group_id': sg,
            'direction': direction, 'ethertype': ethertype, 'protocol': None,
            'port_range_min': None, 'port_range_max': None,
            'remote_ip_prefix': None, 'remote_group_id': None}
    rule.update(kw)
    return rule


class L2AgentSecurityGroupTest(LinuxbridgeAgentTestBase):
    """The default group's behaviour through agentkit-l2 + iptables_hybrid."""

    firewall_driver = 'iptables_hybrid'

    def setUp(self):
        # Taken first, so it is released last: after the agent was killed.
        self.useFixture(base.HostFirewallChains(cfg.CONF))
        super().setUp()

    def test_default_group_rules_and_anti_spoofing(self):
        net = str(uuid.uuid4())
        sg1, sg2 = str(uuid.uuid4()), str(uuid.uuid4())
        self.neutron.sg_rules[sg1] = [
            _rule(sg1, 'egress'), _rule(sg1, 'egress', 'IPv6'),
            _rule(sg1, 'ingress', remote_group_id=sg1)]
        self.neutron.sg_rules[sg2] = [_rule(sg2, 'egress'),
                                      _rule(sg2, 'egress', 'IPv6')]
        self.neutron.wait_for_call('report_state')
        vm1 = self.add_vm(net, '10.253.0.51/24', security_groups=[sg1])
        vm2 = self.add_vm(net, '10.253.0.52/24', security_groups=[sg2])
        for vm in (vm1, vm2):
            self.neutron.wait_for_call('update_device_list',
                                       lambda kw, p=vm.port_id: p in kw['devices_up'])
        brq = 'brq' + net[:11]
        self.addCleanup(lambda: ip_lib.device_exists(brq)
                        and ip_lib.IPDevice(brq).delete())
        self.addCleanup(self.proc.kill)
        # Ingress only from the same group: vm2 (other group) is blocked.
        self.assertFalse(fake_vm.ping(vm2.name, '10.253.0.51', count=1, wait=1))
        # The operator adds ICMP to sg1 (seed 000): allowed after the update.
        self.neutron.sg_rules[sg1].append(_rule(sg1, 'ingress', protocol='icmp'))
        mark = self.neutron.mark()
        self.neutron.cast_to_agent('q-agent-notifier-security_group-update', None,
                                   'security_groups_rule_updated', version='1.1',
                                   security_groups=[sg1])
        self.neutron.wait_for_call('security_group_info_for_devices', since=mark)
        deadline = __import__('time').monotonic() + 10
        while not fake_vm.ping(vm2.name, '10.253.0.51', count=1, wait=1):
            self.assertLess(__import__('time').monotonic(), deadline,
                            'ICMP still blocked after the rule was added')
        # All egress allowed: vm1 reaches the provider-side host.
        self.assertTrue(fake_vm.ping(vm1.name, '10.253.0.254'))
        # Anti-spoofing: vm2 sending from an address that is not its own.
        added = fake_vm.run_in(vm2.name, 'ip', 'addr', 'add', '10.253.0.59/24',
                               'dev', 'eth0')
        self.assertEqual(0, added.returncode, added.stderr)
        spoofed = fake_vm.run_in(vm2.name, 'ping', '-c', '1', '-W', '1',
                                 '-I', '10.253.0.59', '10.253.0.51')
        self.assertNotEqual(0, spoofed.returncode)
        self.assertTrue(fake_vm.ping(vm2.name, '10.253.0.51'))
        fake_vm.run_in(vm2.name, 'ip', 'addr', 'del', '10.253.0.59/24', 'dev', 'eth0')

        # ARP and MAC anti-spoofing: vm2 claims the provider host's address
        # towards vm1, which keeps reaching the real one.
        gateway = '10.253.0.254'
        spoof = spoofing.Spoofer(vm2, '10.253.0.52', vm1, '10.253.0.51')
        self.addCleanup(spoof.close)
        gateway_mac = spoof.neighbour_mac(gateway)
        self.assertIsNotNone(gateway_mac)
        self.assertTrue(spoof.arrives(*spoof.arp_claiming('10.253.0.52')))
        self.assertFalse(spoof.arrives(*spoof.arp_claiming(gateway)))
        self.assertFalse(spoof.arrives(*spoof.from_forged_mac('fa:16:3e:de:ad:02')))
        self.assertFalse(spoof.arrives(*spoof.other_ethertype()))
        self.assertEqual(gateway_mac, spoof.neighbour_mac(gateway))
        self.assertTrue(fake_vm.ping(vm1.name, gateway))
