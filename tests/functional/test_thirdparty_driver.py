"""A third-party driver package, installed with pip, is loaded by alias.

This is the seam a vendor uses: their own distribution registers entry points
in agentkit's namespaces; agentkit is not touched.
"""

import json
import os
import subprocess
import sys
import time

from agentkit.conf import metadata as metadata_conf
from tests.functional import agent_process
from tests.functional import base
from tests.functional import fake_neutron

PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                           'thirdparty', 'agentkit_example_driver')


def _pip(*args):
    return subprocess.run([sys.executable, '-m', 'pip', '-q', *args],
                          capture_output=True, text=True, timeout=300)


class ThirdPartyDriverTest(base.AgentTestCase):

    def setUp(self):
        super().setUp()
        self.configure(metadata_conf.register_metadata_opts, {})
        # Installed into a private site directory on PYTHONPATH, so parallel
        # tests and the project venv are left alone.
        self.site = os.path.dirname(self.get_temp_path('x'))
        result = _pip('install', '--no-deps', '--no-build-isolation',
                      '--no-cache-dir', '--target', self.site, PACKAGE_DIR)
        self.assertEqual(0, result.returncode, result.stderr)
        self.env = dict(os.environ, PYTHONPATH=self.site)
        self.neutron = fake_neutron.FakeNeutron().start()
        self.addCleanup(self.neutron.stop)

    def test_entry_points_visible_to_a_fresh_process(self):
        out = subprocess.run(
            [sys.executable, '-c',
             'from agentkit import loader; '
             'print(loader.available(loader.MECHANISM_DRIVERS)); '
             'print(loader.available(loader.AGENT_EXTENSIONS))'],
            capture_output=True, text=True, timeout=60, env=self.env)
        self.assertEqual(0, out.returncode, out.stderr)
        mech, ext = out.stdout.splitlines()
        self.assertIn("'example_static'", mech)
        self.assertIn("'openvswitch'", mech)
        self.assertIn("'example_audit'", ext)

    def test_agent_loads_driver_by_alias_and_wires_through_it(self):
        port_id = self.unique_id()
        net_id = self.unique_id()
        self.neutron.port_details[port_id] = {
            'device': port_id, 'port_id': port_id, 'network_id': net_id,
            'mac_address': 'fa:16:3e:11:22:33', 'admin_state_up': True,
            'network_type': 'flat', 'physical_network': 'physnet1',
            'segmentation_id': None, 'fixed_ips': [],
            'port_security_enabled': False}
        status = self.get_temp_path('status.json')
        host = self.short_name('aktp')
        path = base.write_config(self.get_temp_path('l2.ini'), {
            'DEFAULT': {'transport_url': self.neutron.transport_url,
                        'host': host,
                        'state_path': self.get_temp_path('state')},
            'l2': {'mechanism_driver': 'example_static',
                   'type_drivers': 'flat,vxlan',
                   'extensions': 'example_audit'},
            'example': {'ports': port_id, 'status_file': status},
        })
        proc = agent_process.AgentProcess(
            'agentkit-l2', '--config-file', path,
            log_path=self.get_temp_path('l2.log'), env=self.env)
        self.addCleanup(proc.kill)

        try:
            state = self.neutron.wait_for_call(
                'report_state',
                lambda kw: kw['agent_state']['agent_state']['host'] == host
            )['agent_state']['agent_state']
        except AssertionError:
            self.fail(f'no state report; agent log:\n{proc.output()}')
        self.assertEqual('Example agent', state['agent_type'])
        self.assertEqual('agentkit-l2', state['binary'])
        self.assertEqual([port_id], state['configurations']['example_ports'])
        self.assertEqual(['example_audit'], state['configurations']['extensions'])

        up = self.neutron.wait_for_call(
            'update_device_list', lambda kw: port_id in kw['devices_up'])
        self.assertEqual(f'agentkit-l2-{host}', up['agent_id'])
        deadline = time.monotonic() + 10
        while not os.path.exists(status) and time.monotonic() < deadline:
            time.sleep(0.1)
        with open(status) as f:
            wired = json.load(f)
        self.assertEqual({port_id: {'network_id': net_id, 'network_type': 'flat',
                                    'physical_network': 'physnet1',
                                    'tunnel_key': None}}, wired)
        proc.signal(15)
        self.assertEqual(0, proc.wait(10), proc.output())
