"""The README's main command, ``tools/demo.sh``, as a user runs it: up, up again, down.

The demo runs against this suite's neutron-server (its state directory and
vhost, passed through the environment the script documents) with bridge
names, a host name and a project of this test, so it shares nothing with
other tests. What the demo prints is checked, and so is the host: the VMs
it plugged reach each other, and after ``down`` nothing of it is left.
"""

import os
import subprocess
import urllib.parse

from testtools import content

from agentkit.lib import ip_lib
from tests.fullstack import base
from tests.functional import base as functional_base
from tests.functional import neutron_server
from tests.functional import vm as fake_vm

DEMO = os.path.join(neutron_server.ROOT, 'tools', 'demo.sh')
DEMO_NAMESPACES = ('demo-vm1', 'demo-vm2', 'demo-upstream')


class DemoTest(base.RealNeutronServerTestBase):

    def setUp(self):
        super().setUp()
        vhost = urllib.parse.urlsplit(self.server.transport_url).path.lstrip('/')
        self.root = os.path.join(self.state_path, 'demo')
        self.env = {**os.environ,
                    'AGENTKIT_DEMO_ROOT': self.root,
                    'AGENTKIT_DEMO_HOST': self.host,
                    'AGENTKIT_DEMO_PROJECT': self.api.project_id,
                    'AGENTKIT_DEMO_BRIDGES': f'{self.br_int} {self.br_tun} {self.br_ex}',
                    'AGENTKIT_NEUTRON_STATE': self.server.state_dir,
                    'AGENTKIT_NEUTRON_VHOST': vhost,
                    'AGENTKIT_NEUTRON_PHYSNET': base.PHYSNET}
        self.addCleanup(self.demo, 'down', check=False)

    def demo(self, command, check=True):
        proc = subprocess.run(['bash', DEMO, command], env=self.env, capture_output=True,
                              text=True, timeout=900, stdin=subprocess.DEVNULL)
        self.addDetail(f'demo.sh {command} #{len(self.getDetails())}',
                       content.text_content(proc.stdout + proc.stderr))
        if check:
            self.assertEqual(0, proc.returncode, f'tools/demo.sh {command} failed')
        return proc.stdout

    def test_up_twice_then_down(self):
        out = self.demo('up')
        for agent in ('Open vSwitch agent', 'DHCP agent', 'L3 agent', 'Metadata agent'):
            self.assertRegex(out, rf'ok {agent} +agentkit-\S+ +host={self.host} alive')
        self.assertRegex(out, r'ok demo-vm1: lease 10\.10\.0\.\d+ router 10\.10\.0\.1 mtu 1450')
        self.assertRegex(out, r'ok demo-vm2: lease 10\.10\.0\.\d+')
        self.assertRegex(out, r'ok demo-vm2 -> 172\.24\.4\.1: the upstream side saw 172\.24\.4\.')
        self.assertRegex(out, r'ok upstream -> 172\.24\.4\.\d+ \(floating IP\): demo-vm1 saw '
                              r'172\.24\.4\.1\n')
        self.assertRegex(out, r'ok demo-vm1 is instance [0-9a-f-]{36}')
        self.assertIn('tools/demo.sh down', out)
        # What the demo says is there, is there.
        router = self.api._list('routers', name='demo-router',
                                project_id=self.api.project_id)[0]
        self.assertTrue(ip_lib.IPWrapper(f'qrouter-{router["id"]}').namespace_exists())
        vm2 = self.api._list('ports', name='demo-vm2', project_id=self.api.project_id)[0]
        self.assertTrue(fake_vm.ping('demo-vm1', vm2['fixed_ips'][0]['ip_address']))

        again = self.demo('up')
        self.assertIn('(reusing network demo-net', again)
        self.assertNotIn('POST /v2.0/networks demo-net', again)
        self.assertIn('already running', again)
        self.assertRegex(again, r'ok demo-vm1 is instance [0-9a-f-]{36}')

        self.demo('down')
        for ns in DEMO_NAMESPACES + (f'qrouter-{router["id"]}',):
            self.assertFalse(ip_lib.IPWrapper(ns).namespace_exists(), f'{ns} left')
        self.assertEqual([], functional_base.pids_with(self.root), 'demo processes left')
        self.assertEqual([], self.api.list_agents(host=self.host), 'agent records left')
        self.assertEqual([], self.api._list('networks', project_id=self.api.project_id))
        self.assertFalse(os.path.exists(self.root))
