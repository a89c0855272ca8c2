"""The console scripts as an operator runs them: config errors, state
reports on RabbitMQ, SIGHUP reloads, SIGTERM stops, eventlet mode."""

import os
import shutil
import signal
import subprocess
import tempfile
import time

from agentkit.conf import metadata as metadata_conf
from agentkit.lib.ovs import connection as ovs_connection
from tests.functional import agent_process
from tests.functional import base
from tests.functional import fake_neutron
from tests import reliability


class CliTestBase(base.AgentTestCase):

    def setUp(self):
        super().setUp()
        self.configure(metadata_conf.register_metadata_opts, {})
        self.neutron = fake_neutron.FakeNeutron().start()
        self.addCleanup(self.neutron.stop)

    def start_agent(self, command, sections):
        sections = {k: dict(v) for k, v in sections.items()}
        default = sections.setdefault('DEFAULT', {})
        default.setdefault('transport_url', self.neutron.transport_url)
        default.setdefault('host', self.short_name('akcli'))
        default.setdefault('state_path', self.get_temp_path('state'))
        path = base.write_config(self.get_temp_path('agent.ini'), sections)
        proc = agent_process.AgentProcess(
            command, '--config-file', path,
            log_path=self.get_temp_path('agent.log'))
        self.addCleanup(proc.kill)
        return proc, path, default['host']

    def wait_report(self, host, predicate=lambda s: True, timeout=20):
        kw = self.neutron.wait_for_call(
            'report_state',
            lambda kw: (kw['agent_state']['agent_state']['host'] == host
                        and predicate(kw['agent_state']['agent_state'])),
            timeout=timeout)
        return kw['agent_state']['agent_state']


class AgentCliTest(CliTestBase):

    def test_help_and_version(self):
        for cmd in ('agentkit-l2', 'agentkit-dhcp', 'agentkit-l3',
                    'agentkit-metadata'):
            out = subprocess.run([agent_process.BIN_DIR + '/' + cmd, '--help'],
                                 capture_output=True, text=True, timeout=60)
            self.assertEqual(0, out.returncode, out.stderr)
            self.assertIn('--config-file', out.stdout)
            self.assertIn('--config-dir', out.stdout)
            out = subprocess.run([agent_process.BIN_DIR + '/' + cmd, '--version'],
                                 capture_output=True, text=True, timeout=60)
            self.assertEqual(0, out.returncode, out.stderr)
            self.assertRegex(out.stdout + out.stderr, r'\d+\.\d+')

    def test_unknown_mechanism_driver_lists_available(self):
        proc, _, _ = self.start_agent('agentkit-l2',
                                      {'l2': {'mechanism_driver': 'nosuch'}})
        self.assertEqual(3, proc.wait(60))
        out = proc.output()
        self.assertIn("unknown agentkit.mechanism_drivers driver 'nosuch'", out)
        self.assertRegex(out, r'available: .*linuxbridge, .*openvswitch')
        self.assertEqual([], self.neutron.calls_of('report_state'))

    def test_bad_option_value_is_refused(self):
        proc, _, _ = self.start_agent('agentkit-metadata',
                                      {'agent': {'report_interval': 'often'}})
        self.assertEqual(2, proc.wait(60))
        self.assertIn('[agent] report_interval', proc.output())

    def test_bad_value_of_a_driver_option_is_refused(self):
        """Registered by the driver (radvd's), yet refused like the agent's own."""
        proc, _, _ = self.start_agent('agentkit-l3',
                                      {'DEFAULT': {'min_rtr_adv_interval': 'often'}})
        self.assertEqual(2, proc.wait(60))
        self.assertIn('[DEFAULT] min_rtr_adv_interval', proc.output())
        self.assertEqual([], self.neutron.calls_of('report_state'))

    def test_incompatible_type_driver_refused(self):
        proc, _, _ = self.start_agent(
            'agentkit-l2', {'l2': {'mechanism_driver': 'linuxbridge',
                                   'type_drivers': 'flat,gre'}})
        self.assertEqual(3, proc.wait(60))
        self.assertIn("does not support network type(s) gre", proc.output())

    def _report_sighup_sigterm(self, sections):
        proc, path, host = self.start_agent('agentkit-metadata', sections)
        first = self.wait_report(host, lambda s: s.get('start_flag'))
        self.assertEqual('agentkit-metadata', first['binary'])
        self.assertEqual('Metadata agent', first['agent_type'])
        # SIGHUP re-reads mutable options: a shorter interval takes effect.
        with open(path) as f:
            text = f.read()
        with open(path, 'w') as f:
            f.write(text.replace('report_interval = 30', 'report_interval = 1'))
        proc.signal(signal.SIGHUP)
        proc.wait_for_output('reloaded its configuration')
        before = len(self.neutron.calls_of('report_state'))
        deadline = time.monotonic() + 15
        while (len(self.neutron.calls_of('report_state')) < before + 2
               and time.monotonic() < deadline):
            time.sleep(0.2)
        self.assertGreaterEqual(len(self.neutron.calls_of('report_state')),
                                before + 2)
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        self.assertEqual(0, proc.wait(10))
        self.assertLess(time.monotonic() - started, 6)
        self.assertIn('stopped (host state left in place)', proc.output())
        return proc

    def test_metadata_agent_reports_reloads_and_stops(self):
        self._report_sighup_sigterm({'agent': {'report_interval': 30}})

    def test_eventlet_compatibility_mode(self):
        proc = self._report_sighup_sigterm({
            'DEFAULT': {'concurrency_mode': 'eventlet'},
            'agent': {'report_interval': 30}})
        self.assertIn('concurrency: eventlet', proc.output())


class ServiceAgentsCliTest(CliTestBase):
    """agentkit-dhcp and agentkit-l3 start, report and stop cleanly."""

    def _start_report_stop(self, command, agent_type, topic, default=None):
        br = self.short_name('akclibr')
        self.addCleanup(lambda: ovs_connection.get_connection().bridge(br).delete())
        # dnsmasq reads its files as "nobody": state must be traversable.
        state_path = tempfile.mkdtemp(prefix='agentkit-cli-', dir='/var/tmp')
        os.chmod(state_path, 0o755)
        self.addCleanup(shutil.rmtree, state_path, True)
        proc, _, host = self.start_agent(command, {
            'DEFAULT': dict(default or {}, state_path=state_path),
            'ovs': {'integration_bridge': br, 'datapath_type': 'netdev'}})
        state = self.wait_report(host, lambda s: s.get('start_flag'))
        self.assertEqual(agent_type, state['agent_type'])
        self.assertEqual(topic, state['topic'])
        self.assertEqual(command, state['binary'])
        self.assertEqual('nova', state['availability_zone'])
        proc.signal(signal.SIGTERM)
        self.assertEqual(0, proc.wait(10), proc.output())
        return state

    def test_dhcp_agent(self):
        state = self._start_report_stop('agentkit-dhcp', 'DHCP agent', 'dhcp_agent')
        conf = state['configurations']
        self.assertEqual('dnsmasq', conf['dhcp_driver'])
        self.assertEqual(0, conf['networks'])
        self.neutron.wait_for_call('get_active_networks_info')

    def test_dhcp_agent_eventlet_mode(self):
        """pyroute2 stays in the (unpatched) privsep daemons, so this works."""
        state = self._start_report_stop('agentkit-dhcp', 'DHCP agent', 'dhcp_agent',
                                        default={'concurrency_mode': 'eventlet'})
        self.assertEqual('dnsmasq', state['configurations']['dhcp_driver'])

    def test_l3_agent(self):
        state = self._start_report_stop('agentkit-l3', 'L3 agent', 'l3_agent')
        self.assertEqual('legacy', state['configurations']['agent_mode'])
        self.neutron.wait_for_call('get_router_ids')

    def test_malformed_free_form_value_stops_with_exit_2(self):
        """A free-form option is parsed at load: exit 2 naming the option and
        the value (it used to surface only when the driver started, exit 3)."""
        started = time.monotonic()
        for command, sections, where, value in (
                ('agentkit-dhcp', {'DEFAULT': {'dnsmasq_dns_servers': '192.0.2.53,dns.example'}},
                 '[DEFAULT] dnsmasq_dns_servers', 'dns.example'),
                ('agentkit-l2', {'l2': {'network_vlan_ranges': 'physnet1:4000:5000'}},
                 '[l2] network_vlan_ranges', '4000:5000'),
                # A driver's own free-form option, parsed when the driver loads.
                ('agentkit-l2', {'l2': {'mechanism_driver': 'linuxbridge'},
                                 'linux_bridge': {'physical_interface_mappings': 'physnet1'}},
                 '[linux_bridge] physical_interface_mappings', 'physnet1')):
            proc, _, _ = self.start_agent(command, sections)
            self.assertEqual(2, proc.wait(60), proc.output())
            out = proc.output()
            self.assertIn(where, out)
            self.assertIn(value, out)
        self.assertEqual([], self.neutron.calls_of('report_state'))
        # Positive control: the same option with a good value starts the agent.
        state = self._start_report_stop('agentkit-dhcp', 'DHCP agent', 'dhcp_agent',
                                        default={'dnsmasq_dns_servers': '192.0.2.53'})
        self.assertEqual('dnsmasq', state['configurations']['dhcp_driver'])
        reliability.record(
            'input-config-cli', kind='input',
            fault='malformed free-form option value (real agent command)',
            injected='agentkit-dhcp with dnsmasq_dns_servers = 192.0.2.53,dns.example; '
                     'agentkit-l2 with network_vlan_ranges = physnet1:4000:5000; '
                     'agentkit-l2 (linuxbridge) with physical_interface_mappings = physnet1',
            checked='exit code 2, the option and the value on the output, no state '
                    'report; the good value starts the agent and it reports',
            result={'commands refused with exit 2': 3,
                    'good value started': True,
                    'time s': round(time.monotonic() - started, 1)},
            order=221)
