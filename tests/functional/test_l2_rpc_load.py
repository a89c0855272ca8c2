"""agentkit-l2 RPC load against the fake server on real OVS: batches and quiet audits.

Twenty ports plugged in one OVSDB transaction cost a handful of calls, not
three per port; an audit over ports that did not change re-reports
nothing and writes nothing to the switch.
"""

import subprocess
import time
import uuid

from testtools import content

from agentkit.conf import metadata as metadata_conf
from agentkit.lib.ovs import connection as ovs_connection
from tests.functional import base
from tests.functional import fake_neutron
from tests.functional import vm as fake_vm

N_PORTS = 20
PORT_CALLS = ('get_devices_details_list_and_failed_devices',
              'security_group_info_for_devices', 'update_device_list', 'bulk_pull',
              'tunnel_sync', 'get_network_details')


class L2RpcLoadTest(base.AgentTestCase):

    def setUp(self):
        super().setUp()
        self.configure(metadata_conf.register_metadata_opts, {})
        self.neutron = fake_neutron.FakeNeutron().start()
        self.addCleanup(self.neutron.stop)
        self.ovs = ovs_connection.get_connection()
        self.br_name = self.short_name('akldbr')
        self.br = self.ovs.bridge(self.br_name, 'netdev')
        self.addCleanup(self.br.delete)
        self.host = self.short_name('akldh')
        self.config = base.write_config(self.get_temp_path('l2.ini'), {
            'DEFAULT': {'transport_url': self.neutron.transport_url,
                        'host': self.host, 'debug': 'true',
                        'state_path': self.get_temp_path('state')},
            'agent': {'report_interval': 2, 'audit_interval': 3},
            'ovs': {'integration_bridge': self.br_name, 'datapath_type': 'netdev'},
            'l2': {'mechanism_driver': 'openvswitch',
                   'type_drivers': 'flat,vxlan', 'vni_ranges': '1000:1999'},
        })

    def counts(self, since):
        with self.neutron.lock:
            calls = [m for m, _ in self.neutron.calls[since:]]
        return {m: calls.count(m) for m in PORT_CALLS if calls.count(m)}

    def switch_state(self):
        """What the agent could have written: this bridge's Port rows (with
        their row versions, which any write changes) and its flows. Only
        this bridge's: tests running beside this one change other rows."""
        names = set(subprocess.run(['ovs-vsctl', 'list-ports', self.br_name],
                                   capture_output=True, text=True, check=True).stdout.split())
        dump = subprocess.run(
            ['ovsdb-client', 'dump', 'Open_vSwitch', 'Port', '_uuid', '_version', 'name',
             'tag', 'other_config', 'external_ids'],
            capture_output=True, text=True, check=True).stdout
        # Columns padded to the widest value of any bridge's row: rows of
        # tests running beside this one change the padding, not these rows.
        ports = sorted(' '.join(line.split()) for line in dump.splitlines()
                       if names & set(line.split()))
        self.assertEqual(len(names), len(ports), 'a port of the bridge is not in the dump')
        flows = subprocess.run(['ovs-ofctl', 'dump-flows', '--no-stats', self.br_name],
                               capture_output=True, text=True, check=True).stdout
        return ports, sorted(flows.splitlines()[1:])

    def test_ports_plugged_together_cost_a_few_calls_and_audits_are_quiet(self):
        proc = self.run_agent('agentkit-l2', self.config, self.host, self.neutron)
        net = str(uuid.uuid4())
        vms = []
        for i in range(N_PORTS):
            port_id = str(uuid.uuid4())
            mac = 'fa:16:3e:%02x:%02x:%02x' % tuple(uuid.uuid4().bytes[:3])
            self.neutron.port_details[port_id] = {
                'device': port_id, 'port_id': port_id, 'network_id': net,
                'mac_address': mac, 'admin_state_up': True, 'network_type': 'vxlan',
                'physical_network': None, 'segmentation_id': 1300,
                'fixed_ips': [{'subnet_id': str(uuid.uuid4()),
                               'ip_address': f'10.251.0.{i + 2}'}],
                'port_security_enabled': False, 'device_owner': 'compute:nova'}
            vm = fake_vm.FakeVM(self.short_name('akld'), port_id, mac)
            self.addCleanup(vm.destroy, self.br)
            vms.append(vm)
        proc.wait_for_output('Full sync (agent start) done', 20)
        mark = self.neutron.mark()
        # One OVSDB transaction plugs all twenty, as a host booting VMs would.
        argv = ['ovs-vsctl']
        for vm in vms:
            argv += ['--', 'add-port', self.br_name, vm.tap, '--', 'set', 'Interface',
                     vm.tap, f'external_ids:iface-id={vm.port_id}',
                     f'external_ids:attached-mac={vm.mac}',
                     'external_ids:iface-status=active']
        started = time.monotonic()
        subprocess.run(argv, check=True, capture_output=True)
        wanted = {vm.port_id for vm in vms}

        def all_up():
            up = {p for kw in self.neutron.calls_of('update_device_list')
                  for p in kw['devices_up']}
            return wanted <= up
        base.wait_until(all_up, 30, 'all 20 ports reported up')
        elapsed = time.monotonic() - started
        plugged = self.counts(mark)
        self.addDetail('plug-calls', content.text_content(
            f'{N_PORTS} ports plugged at once: {plugged}, all up in {elapsed:.2f}s'))
        self.assertLessEqual(sum(plugged.values()), 6, plugged)
        self.assertNotIn('tunnel_sync', plugged)
        # Each port reported up exactly once.
        reports = [p for kw in self.neutron.calls_of('update_device_list')
                   for p in kw['devices_up']]
        self.assertEqual({p: 1 for p in wanted}, {p: reports.count(p) for p in wanted})

        # At rest: two audits compare in bulk and change nothing.
        time.sleep(0.5)
        before = self.switch_state()
        mark = self.neutron.mark()
        audits = proc.output().count('Full sync (audit) done')
        base.wait_until(lambda: proc.output().count('Full sync (audit) done') >= audits + 2,
                        15, 'two audits')
        at_rest = self.counts(mark)
        self.addDetail('audit-calls', content.text_content(
            f'2 audits at rest: {at_rest}'))
        self.assertEqual({}, {m: n for m, n in at_rest.items() if m != 'bulk_pull'},
                         at_rest)
        self.assertLessEqual(at_rest.get('bulk_pull', 0), 3)
        self.assertIn('Audit: 20 port(s) compared, 0 to re-wire, 0 to unwire', proc.output())
        self.assertEqual(before, self.switch_state())
