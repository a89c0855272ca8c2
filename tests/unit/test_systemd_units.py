"""etc/systemd/*.service: what the operator guide promises, and what
systemd-analyze accepts."""

import configparser
import os
import shutil
import subprocess
import sys
import tempfile

from tests import base

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNIT_DIR = os.path.join(ROOT, 'etc', 'systemd')
AGENTS = {'l2': 'l2_agent.ini', 'dhcp': 'dhcp_agent.ini', 'l3': 'l3_agent.ini',
          'metadata': 'metadata_agent.ini'}
NEUTRON_UNITS = {'l2': 'neutron-openvswitch-agent.service',
                 'dhcp': 'neutron-dhcp-agent.service',
                 'l3': 'neutron-l3-agent.service',
                 'metadata': 'neutron-metadata-agent.service'}


def _read(name):
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str
    with open(os.path.join(UNIT_DIR, f'agentkit-{name}.service')) as f:
        text = f.read()
    parser.read_string(text)
    return parser, text


class UnitFilesTest(base.TestCase):

    def test_units(self):
        self.assertEqual(sorted(f'agentkit-{a}.service' for a in AGENTS),
                         sorted(os.listdir(UNIT_DIR)))
        for name, ini in AGENTS.items():
            unit, text = _read(name)
            svc = unit['Service']
            self.assertEqual('notify', svc['Type'])
            self.assertEqual('main', svc['NotifyAccess'])
            # dnsmasq/haproxy/radvd outlive a stop or restart
            self.assertEqual('process', svc['KillMode'])
            self.assertEqual('on-failure', svc['Restart'])
            self.assertEqual('2 3', svc['RestartPreventExitStatus'])
            self.assertEqual(f'/usr/local/bin/agentkit-{name} '
                             f'--config-file /etc/agentkit/agentkit.ini '
                             f'--config-file /etc/agentkit/{ini}', svc['ExecStart'])
            self.assertIn(f'\n#ExecStart=/usr/local/bin/agentkit-{name} '
                          f'--config-file /etc/neutron/neutron.conf', text)
            self.assertIn('\n#WatchdogSec=', text)
            self.assertNotIn('WatchdogSec', svc)
            self.assertIn('-HUP $MAINPID', svc['ExecReload'])
            self.assertIn(NEUTRON_UNITS[name], unit['Unit']['Conflicts'])
            self.assertEqual('multi-user.target', unit['Install']['WantedBy'])
            # the files named exist in the source tree
            self.assertTrue(os.path.exists(os.path.join(ROOT, 'etc', 'agentkit', ini)))

    def test_systemd_analyze_verify(self):
        tool = shutil.which('systemd-analyze')
        if tool is None:
            self.skipTest('systemd-analyze is not installed (Debian package systemd)')
        # Checked with the commands pointing at this checkout's console
        # scripts: verify also wants ExecStart to be executable.
        bin_dir = os.path.dirname(sys.executable)
        tmp = tempfile.mkdtemp()
        for name in AGENTS:
            with open(os.path.join(UNIT_DIR, f'agentkit-{name}.service')) as f:
                text = f.read().replace('/usr/local/bin/', bin_dir + '/')
            with open(os.path.join(tmp, f'agentkit-{name}.service'), 'w') as f:
                f.write(text)
        units = sorted(os.path.join(tmp, u) for u in os.listdir(tmp))
        if not os.path.exists(os.path.join(bin_dir, 'agentkit-l2')):
            self.skipTest(f'agentkit is not installed in {bin_dir}')
        out = subprocess.run([tool, 'verify', *units], capture_output=True,
                             text=True, timeout=60)
        self.assertEqual(0, out.returncode, out.stdout + out.stderr)
        self.assertEqual('', out.stdout + out.stderr)
