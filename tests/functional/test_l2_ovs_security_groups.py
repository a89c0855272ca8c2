"""agentkit-l2 with openvswitch + iptables_hybrid: security groups on OVS hosts.

This is Neutron's "hybrid" plug (``OVSHybridIptablesFirewallDriver``): nova
(os-vif) puts the VM's ``tap`` in a per-port Linux bridge ``qbr`` joined to
br-int by the veth ``qvb``/``qvo``, because iptables only sees frames that
cross a Linux bridge. The agent wires ``qvo`` (it carries the iface-id) and
filters ``tap`` (``-m physdev``) in the root namespace, where the VM's
frames cross ``qbr``. The agent must also tell neutron-server to ask nova
for that plug (``ovs_hybrid_plug`` in its configurations).

The firewall's chains (prefix ``neutron-openvswi``) are the root
namespace's, like :class:`test_l2_agent_linuxbridge.L2AgentSecurityGroupTest`'s:
a lock file keeps two tests that use that prefix from running at once.
"""

from __future__ import annotations

import signal
import uuid
from typing import Any

from oslo_config import cfg
from testtools import content

from agentkit.conf import metadata as metadata_conf
from agentkit.lib import ip_lib
from agentkit.lib.ovs import connection as ovs_connection
from tests.functional import agent_process
from tests.functional import base
from tests.functional import fake_neutron
from tests.functional import ovs_host
from tests.functional import spoofing
from tests.functional import traffic
from tests.functional import vm as fake_vm

SUBNET = '10.250.7.{}/24'
VNI = 1777
# Held while a test owns the root namespace's neutron-openvswi-* chains:
# the agent deletes chains of its prefix that it does not know.
FIREWALL_TIMEOUT = 15.0


def _rule(sg: str, direction: str, ethertype: str = 'IPv4', **kw: Any) -> dict[str, Any]:
    """A security group rule as neutron-server's API shows it."""
    rule = {'id': str(uuid.uuid4()), 'security_group_id': sg,
            'direction': direction, 'ethertype': ethertype, 'protocol': None,
            'port_range_min': None, 'port_range_max': None,
            'remote_ip_prefix': None, 'remote_group_id': None}
    rule.update(kw)
    return rule


def _ip(suffix: int) -> str:
    return SUBNET.format(suffix).split('/')[0]


class L2OVSHybridSecurityGroupTest(base.AgentTestCase):
    """Hybrid-plugged VMs on one vxlan network of a netdev br-int."""

    def setUp(self) -> None:
        # Taken first, so it is released last: after the agent was killed.
        self.useFixture(base.HostFirewallChains(cfg.CONF))
        super().setUp()
        self.configure(metadata_conf.register_metadata_opts, {})
        self.neutron = fake_neutron.FakeNeutron().start()
        self.addCleanup(self.neutron.stop)
        self.ovs = ovs_connection.get_connection()
        self.br = self.ovs.bridge(self.short_name('akhybr'), 'netdev')
        self.addCleanup(self.br.delete)
        self.host = self.short_name('akhyh')
        self.config = base.write_config(self.get_temp_path('l2.ini'), {
            'DEFAULT': {'transport_url': self.neutron.transport_url,
                        'host': self.host,
                        'state_path': self.get_temp_path('state')},
            # No periodic resync in the middle: the test counts RPC calls.
            'agent': {'report_interval': 2, 'resync_interval': 600},
            'ovs': {'integration_bridge': self.br.name, 'datapath_type': 'netdev'},
            'l2': {'mechanism_driver': 'openvswitch', 'type_drivers': 'vxlan',
                   'vni_ranges': '1000:1999'},
            'securitygroup': {'firewall_driver': 'iptables_hybrid',
                              'enable_security_group': True},
        })
        self.proc = agent_process.AgentProcess(
            'agentkit-l2', '--config-file', self.config,
            log_path=self.get_temp_path('l2.log'))
        self.addCleanup(self.proc.kill)
        self.addOnException(lambda exc_info: self.addDetail(
            'agentkit-l2.log', content.text_content(self.proc.output())))

    # -- helpers ----------------------------------------------------------------
    def first_report(self) -> dict[str, Any]:
        """The agent's first state report: by then it has built br-int."""
        return self.neutron.wait_for_call(
            'report_state',
            lambda kw: kw['agent_state']['agent_state']['host'] == self.host,
            timeout=30)['agent_state']['agent_state']

    def add_vm(self, network_id: str, suffix: int, security_groups: list[str],
               vni: int = VNI) -> fake_vm.FakeVM:
        """A port the server knows, hybrid-plugged as nova would do it."""
        port_id = str(uuid.uuid4())
        mac = 'fa:16:3e:%02x:%02x:%02x' % tuple(uuid.uuid4().bytes[:3])
        with self.neutron.lock:
            self.neutron.port_details[port_id] = {
                'device': port_id, 'port_id': port_id, 'network_id': network_id,
                'mac_address': mac, 'admin_state_up': True,
                'network_type': 'vxlan', 'physical_network': None,
                'segmentation_id': vni, 'device_owner': 'compute:nova',
                'fixed_ips': [{'ip_address': _ip(suffix),
                               'subnet_id': str(uuid.uuid4())}],
                'security_groups': list(security_groups),
                'allowed_address_pairs': [], 'port_security_enabled': True}
        vm = fake_vm.FakeVM(self.short_name('akhyvm'), port_id, mac)
        self.addCleanup(vm.destroy)
        self.addCleanup(vm.unplug_ovs_hybrid, self.br)
        self.addCleanup(self.proc.kill)  # first, so it cannot re-wire anything
        vm.plug_ovs_hybrid(self.br)
        vm.set_ip(SUBNET.format(suffix))
        return vm

    def wait_wired(self, *vms: fake_vm.FakeVM) -> None:
        """Reported up, and qvo tagged in this process's OVSDB replica."""
        for vm in vms:
            self.neutron.wait_for_call(
                'update_device_list', lambda kw, p=vm.port_id: p in kw['devices_up'],
                timeout=30)
            ovs_host.wait_until(
                lambda v=vm: self.br.get_port_tag(v.qvo) not in (None, [], 4095),
                10, f'{vm.qvo} to be tagged')

    def reaches(self, vm: fake_vm.FakeVM, address: str,
                timeout: float = FIREWALL_TIMEOUT) -> bool:
        """Whether one ping gets through before ``timeout`` (rules change
        asynchronously, after the agent handled a notification)."""
        try:
            ovs_host.wait_until(lambda: fake_vm.ping(vm.name, address, count=1, wait=1),
                                timeout, f'{vm.name} -> {address}', interval=0.2)
            return True
        except AssertionError:
            return False

    def assertBlocked(self, vm: fake_vm.FakeVM, address: str) -> None:
        self.assertFalse(fake_vm.ping(vm.name, address, count=2, wait=1),
                         f'{vm.name} reaches {address} but must not')

    @staticmethod
    def iptables_chain(chain: str) -> str:
        return ovs_host.run('iptables', '-w', '-S', chain).stdout

    # -- tests ------------------------------------------------------------------
    def test_hybrid_plug_security_groups(self) -> None:
        net = str(uuid.uuid4())
        sg1, sg2 = str(uuid.uuid4()), str(uuid.uuid4())
        with self.neutron.lock:
            # Neutron's default group: all egress, ingress from its members.
            self.neutron.sg_rules[sg1] = [
                _rule(sg1, 'egress'), _rule(sg1, 'egress', 'IPv6'),
                _rule(sg1, 'ingress', remote_group_id=sg1)]
            self.neutron.sg_rules[sg2] = [_rule(sg2, 'egress'),
                                          _rule(sg2, 'egress', 'IPv6')]

        state = self.first_report()
        self.assertEqual('Open vSwitch agent', state['agent_type'])
        # What tells neutron-server (and so nova) to plug VMs the hybrid way.
        self.assertIs(True, state['configurations']['ovs_hybrid_plug'])

        vm1 = self.add_vm(net, 1, [sg1])
        vm2 = self.add_vm(net, 2, [sg2])
        vm3 = self.add_vm(net, 3, [sg1])
        self.wait_wired(vm1, vm2, vm3)

        # The agent wired qvo (same local VLAN for the network) and filters
        # the tap that sits in qbr, not on OVS.
        tag = self.br.get_port_tag(vm1.qvo)
        self.assertEqual({tag}, {self.br.get_port_tag(v.qvo) for v in (vm2, vm3)})
        self.assertEqual(net, self.br.get_port_other_config(vm1.qvo)['net_uuid'])
        self.assertEqual(vm1.qbr, ip_lib.get_link(vm1.tap)['master'])
        self.assertNotIn(vm1.tap, self.br.get_port_names())
        sg_chain = self.iptables_chain('neutron-openvswi-sg-chain')
        self.assertIn(f'--physdev-out {vm1.tap} --physdev-is-bridged '
                      f'-j neutron-openvswi-i{vm1.port_id[:10]}', sg_chain)
        self.assertIn(f'--physdev-in {vm1.tap} --physdev-is-bridged '
                      f'-j neutron-openvswi-o{vm1.port_id[:10]}', sg_chain)

        # Same group: ingress from sg1's members is allowed.
        self.assertTrue(self.reaches(vm3, _ip(1)), 'same-group VM blocked')
        # Other group: vm2 is not a member of sg1.
        self.assertBlocked(vm2, _ip(1))

        # The operator allows ICMP in sg1: the server casts, the agent asks
        # for the groups' rules again and vm2 gets through.
        with self.neutron.lock:
            self.neutron.sg_rules[sg1].append(_rule(sg1, 'ingress', protocol='icmp'))
        mark = self.neutron.mark()
        # 1.1: the version neutron-server's SecurityGroupAgentRpcApiMixin sends.
        self.neutron.cast_to_agent('q-agent-notifier-security_group-update', None,
                                   'security_groups_rule_updated', version='1.1',
                                   security_groups=[sg1])
        try:
            self.neutron.wait_for_call('security_group_info_for_devices', since=mark)
        except AssertionError:
            if 'UnsupportedVersion' in self.proc.output():
                self.fail('the agent refused security_groups_rule_updated at RPC '
                          'version 1.1, the version neutron-server sends')
            raise
        self.assertTrue(self.reaches(vm2, _ip(1)),
                        'ICMP still blocked after the rule was added')
        # Only sg1 changed: vm2's own group still has no ingress rule.
        self.assertBlocked(vm1, _ip(2))

        # Anti-spoofing: vm2 sending from an address that is not its port's.
        spoofed = _ip(99)
        fake_vm.run_in(vm2.name, 'ip', 'addr', 'add', f'{spoofed}/32', 'dev', 'eth0')
        self.assertIn(spoofed, fake_vm.run_in(vm2.name, 'ip', '-4', 'addr').stdout)
        result = fake_vm.run_in(vm2.name, 'ping', '-c', '2', '-W', '1', '-i', '0.2',
                                '-I', spoofed, _ip(1))
        self.assertNotEqual(0, result.returncode,
                            'a spoofed source address got through')
        # ... while its own address still passes (the drop was the spoof's).
        self.assertTrue(self.reaches(vm2, _ip(1)))
        fake_vm.run_in(vm2.name, 'ip', 'addr', 'del', f'{spoofed}/32', 'dev', 'eth0')

        self.check_arp_and_mac_spoofing(vm1, vm2, vm3)
        self.check_only_affected_ports_are_refreshed(sg1, sg2, vm1, vm3)
        self.check_many_members_cost_no_rules(sg1, vm1, vm3)

    def test_two_projects_with_the_same_addresses(self) -> None:
        """Each VM reaches its own network's peer, and the other project's
        identical addresses never share its connection state."""
        net_a, net_b = str(uuid.uuid4()), str(uuid.uuid4())
        sg_a, sg_b, sg_b_out = (str(uuid.uuid4()) for _ in range(3))
        with self.neutron.lock:
            for group in (sg_a, sg_b):  # the projects' default groups
                self.neutron.sg_rules[group] = [_rule(group, 'egress'),
                                                _rule(group, 'ingress', remote_group_id=group)]
            # b2 lets b1 in, but is no member of b1's group.
            self.neutron.sg_rules[sg_b_out] = [_rule(sg_b_out, 'egress'),
                                               _rule(sg_b_out, 'ingress', remote_group_id=sg_b)]
        self.first_report()
        a1 = self.add_vm(net_a, 1, [sg_a])
        a2 = self.add_vm(net_a, 2, [sg_a])
        b1 = self.add_vm(net_b, 1, [sg_b], vni=VNI + 1)
        b2 = self.add_vm(net_b, 2, [sg_b_out], vni=VNI + 1)
        self.wait_wired(a1, a2, b1, b2)
        self.assertNotEqual(self.br.get_port_tag(a1.qvo), self.br.get_port_tag(b1.qvo))
        self.assertTrue(self.reaches(a1, _ip(2)))
        self.assertTrue(self.reaches(b1, _ip(2)))
        # The peers a1 and b1 reached are their own networks' (by MAC).
        for vm, peer in ((a1, a2), (b1, b2)):
            spoof = spoofing.Spoofer(peer, _ip(2), vm, _ip(1))
            self.addCleanup(spoof.close)
            self.assertEqual(peer.mac, spoof.neighbour_mac(_ip(2)))
        self.assertBlocked(b2, _ip(1))  # b2 is not in b1's group
        # a1 -> a2 opens a UDP flow in network A's zone: a2's answer comes in ...
        self.assertTrue(traffic.udp_reaches(a1.name, a2.name, _ip(2), 6000, 7000))
        self.assertTrue(traffic.udp_reaches(a2.name, a1.name, _ip(1), 7000, 6000))
        # ... the very same packet in network B does not reach b1.
        self.assertTrue(traffic.udp_reaches(a1.name, a2.name, _ip(2), 6000, 7000))
        self.assertFalse(traffic.udp_reaches(b2.name, b1.name, _ip(1), 7000, 6000))
        zones = {line.split('--zone ')[1] for line in ovs_host.run(
            'iptables-save', '-t', 'raw').stdout.splitlines()
            if '--zone' in line and ('network ' + net_a in line or 'network ' + net_b in line)}
        self.assertEqual(2, len(zones), zones)

    def test_restart_keeps_every_port_filtered_and_shuts_unknown_ones(self) -> None:
        """After a restart the first apply rebuilds every chain: a port the
        server no longer describes must come out shut, not unfiltered."""
        net, group, other = (str(uuid.uuid4()) for _ in range(3))
        with self.neutron.lock:
            self.neutron.sg_rules[group] = [_rule(group, 'egress'),
                                            _rule(group, 'ingress', remote_group_id=group)]
            # vm3 lets the group's members in, but is not one of them.
            self.neutron.sg_rules[other] = [_rule(other, 'egress'),
                                            _rule(other, 'ingress', remote_group_id=group)]
        self.first_report()
        vm1 = self.add_vm(net, 1, [group])
        vm2 = self.add_vm(net, 2, [group])
        vm3 = self.add_vm(net, 3, [other])
        self.wait_wired(vm1, vm2, vm3)
        self.assertTrue(self.reaches(vm1, _ip(2)))
        self.assertTrue(self.reaches(vm1, _ip(3)))
        self.assertBlocked(vm3, _ip(1))
        self.proc.signal(signal.SIGTERM)
        self.assertEqual(0, self.proc.wait(20))
        # While the agent is down the server forgets vm3's port (as after a
        # delete whose unplug has not happened yet).
        with self.neutron.lock:
            del self.neutron.port_details[vm3.port_id]
        mark = self.neutron.mark()
        self.proc = agent_process.AgentProcess(
            'agentkit-l2', '--config-file', self.config,
            log_path=self.get_temp_path('l2-2.log'))
        self.addCleanup(self.proc.kill)
        self.proc.wait_for_output('Full sync (agent start) done', 30)
        self.neutron.wait_for_call('update_device_list',
                                   lambda kw: vm2.port_id in kw['devices_up'], since=mark)
        self.assertTrue(self.reaches(vm1, _ip(2)))
        # vm1 and vm2 keep their filters: vm3 does not get in ...
        self.assertBlocked(vm3, _ip(1))
        # ... and vm3 itself, unknown now, receives nothing (it did before).
        self.assertBlocked(vm1, _ip(3))
        self.assertIn('No usable details for 1 plugged device(s)', self.proc.output())
        self.assertIn(f'-m physdev --physdev-in {vm3.tap} --physdev-is-bridged -j DROP',
                      self.iptables_chain('neutron-openvswi-FORWARD'))

    def check_arp_and_mac_spoofing(self, vm1, vm2, vm3) -> None:
        """vm2 tries to take vm3's address from vm1's point of view."""
        spoof = spoofing.Spoofer(vm2, _ip(2), vm1, _ip(1))
        self.addCleanup(spoof.close)
        self.assertTrue(self.reaches(vm1, _ip(3)))
        self.assertEqual(vm3.mac, spoof.neighbour_mac(_ip(3)))
        # What vm2 may send arrives (the marker of every check below) ...
        self.assertTrue(spoof.arrives(*spoof.arp_claiming(_ip(2))))
        # ... ARP for vm3's address, a forged MAC and LLDP do not.
        self.assertFalse(spoof.arrives(*spoof.arp_claiming(_ip(3))))
        self.assertFalse(spoof.arrives(*spoof.from_forged_mac('fa:16:3e:de:ad:01')))
        self.assertFalse(spoof.arrives(*spoof.other_ethertype()))
        # The victim is unaffected: vm1 still maps and reaches vm3.
        self.assertEqual(vm3.mac, spoof.neighbour_mac(_ip(3)))
        self.assertTrue(self.reaches(vm1, _ip(3)))

    def check_only_affected_ports_are_refreshed(self, sg1, sg2, vm1, vm3) -> None:
        """A notification costs one call, for the ports it concerns, and no re-wiring."""
        def cast(method: str, group: str) -> None:
            self.neutron.cast_to_agent('q-agent-notifier-security_group-update', None,
                                       method, version='1.1', security_groups=[group])

        mark = self.neutron.mark()
        cast('security_groups_member_updated', sg2)  # no rule names sg2 as remote
        cast('security_groups_member_updated', sg1)  # sg1's ingress rule does
        call = self.neutron.wait_for_call('security_group_info_for_devices', since=mark)
        self.assertEqual({vm1.port_id, vm3.port_id}, set(call['devices']))
        self.assertEqual('1.3', call['call_version'])
        cast('security_groups_rule_updated', sg2)   # only vm2 is in sg2
        call = self.neutron.wait_for_call('security_group_info_for_devices',
                                          lambda kw: kw['devices'] != call['devices'],
                                          since=mark)
        self.assertEqual(1, len(call['devices']))
        methods = [m for m, _ in self.neutron.calls[mark:] if m != 'report_state']
        self.assertEqual(['security_group_info_for_devices'] * 2, methods)

    def check_many_members_cost_no_rules(self, sg1, vm1, vm3) -> None:
        """200 more ports in sg1 (on other hosts): one set grows, no rule is added."""
        chain = f'neutron-openvswi-i{vm1.port_id[:10]}'
        rules_before = self.iptables_chain(chain).count('\n')
        with self.neutron.lock:
            for i in range(200):
                port_id = str(uuid.uuid4())
                self.neutron.port_details[port_id] = {
                    'port_id': port_id, 'network_id': str(uuid.uuid4()),
                    'mac_address': 'fa:16:3e:77:%02x:%02x' % (i // 256, i % 256),
                    'fixed_ips': [{'ip_address': f'10.251.{i // 200}.{i % 200 + 1}'}],
                    'security_groups': [sg1], 'device_owner': 'compute:nova'}
        self.neutron.cast_to_agent('q-agent-notifier-security_group-update', None,
                                   'security_groups_member_updated', version='1.1',
                                   security_groups=[sg1])
        name = 'NIPv4' + sg1[:24]

        def entries() -> int:
            out = ovs_host.run('ipset', 'list', name, '-t').stdout
            return int(out.split('Number of entries:')[1].split()[0])
        ovs_host.wait_until(lambda: entries() == 202, 15, f'{name} with 202 members')
        self.assertEqual(rules_before, self.iptables_chain(chain).count('\n'))
        self.assertTrue(self.reaches(vm3, _ip(1)))
