"""devstack/: the plugin's phases run in bash with stand-ins for devstack's
functions (dry-run mode: no host command runs), then the files it wrote
are read back, and loaded by agentkit's own option parser; plus shellcheck.
"""

import configparser
import os
import shutil
import socket
import subprocess
import sys
import tempfile

from oslo_config import cfg

from agentkit import service
from agentkit.api import driver as driver_api
from agentkit.conf import common as common_conf
from agentkit.conf import dhcp as dhcp_conf
from agentkit.conf import l2 as l2_conf
from agentkit.conf import l3 as l3_conf
from agentkit.conf import metadata as metadata_conf
from drivers.linuxbridge import mech_driver as lb_mech_driver
from tests import base

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEVSTACK = os.path.join(ROOT, 'devstack')
BIN_DIR = '/opt/stack/data/venv/bin'
TRANSPORT_URL = 'rabbit://stackrabbit:secretrabbit@10.0.0.5:5672/'

# What devstack would provide; every call is recorded in $CALLS, one a line.
STUBS = r'''
set -o errexit
function _record { echo "$*" >> "$CALLS"; }
function sudo { _record "sudo $*"; echo "sudo must not run in dry-run mode" >&2; return 1; }
function die { local line=$1; shift; echo "die: $*" >&2; exit 1; }
function define_plugin { _record "define_plugin $*"; }
function enable_service {
    local s; for s in "$@"; do ENABLED_SERVICES="$ENABLED_SERVICES,$s"; done
}
function disable_service {
    local s; for s in "$@"; do
        ENABLED_SERVICES=$(echo ",$ENABLED_SERVICES," | sed "s/,$s,/,/g; s/^,//; s/,$//")
    done
}
function is_service_enabled {
    local s; for s in "$@"; do
        [[ ",$ENABLED_SERVICES," == *",$s,"* ]] && return 0
    done
    return 1
}
function iniset {
    local sudo=""
    if [[ "$1" == "-sudo" ]]; then sudo="-sudo "; shift; fi
    _record "iniset $sudo$*"
    "$PYTHON" "$INISET" "$@"
}
function setup_develop { _record "setup_develop $*"; }
function run_process { _record "run_process $1|$2|$3|$4"; }
function stop_process { _record "stop_process $*"; }
function get_transport_url { echo "$TRANSPORT_URL"; }
function get_python_exec_prefix { echo "$BIN_DIR"; }
'''

INISET = '''
import configparser, os, sys
path, section, option, value = sys.argv[1:5]
parser = configparser.ConfigParser(interpolation=None, strict=False)
parser.optionxform = str
if os.path.exists(path):
    parser.read(path)
if section != 'DEFAULT' and not parser.has_section(section):
    parser.add_section(section)
parser.set(section, option, value)
with open(path, 'w') as f:
    parser.write(f)
'''


class DevstackPluginTest(base.TestCase):

    def setUp(self):
        super().setUp()
        if shutil.which('bash') is None:
            self.skipTest('bash is not installed: the devstack plugin is a bash script')
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.conf_dir = os.path.join(self.tmp, 'etc-agentkit')
        os.makedirs(self.conf_dir)  # devstack: sudo install -d (dry-run: printed)
        self.systemd_dir = os.path.join(self.tmp, 'systemd')
        os.makedirs(self.systemd_dir)
        self.ml2_conf = os.path.join(self.tmp, 'ml2_conf.ini')
        self.state = os.path.join(self.tmp, 'data', 'agentkit')
        self.calls = os.path.join(self.tmp, 'calls')
        self.iniset = os.path.join(self.tmp, 'iniset.py')
        with open(self.iniset, 'w') as f:
            f.write(INISET)

    def run_phases(self, phases, enabled='key,mysql,rabbit,q-svc,q-agt,q-dhcp,q-l3,q-meta',
                   load_settings=True, **env):
        """Source override-defaults, settings and plugin.sh as stack.sh does,
        once per phase; returns (completed process, recorded calls)."""
        script = [STUBS, f'ENABLED_SERVICES={enabled}',
                  f'source {DEVSTACK}/override-defaults']
        if load_settings:
            script.append(f'source {DEVSTACK}/settings')
        for phase in phases:
            script.append(f'_record "== {phase}"')
            script.append(f'source {DEVSTACK}/plugin.sh {phase}')
        script.append('_record "Q_AGENT=$Q_AGENT"')
        script.append('_record "Q_ML2_PLUGIN_MECHANISM_DRIVERS=$Q_ML2_PLUGIN_MECHANISM_DRIVERS"')
        script.append('_record "ENABLED_SERVICES=$ENABLED_SERVICES"')
        environ = {
            'PATH': os.environ['PATH'], 'HOME': self.tmp, 'CALLS': self.calls,
            'PYTHON': sys.executable, 'INISET': self.iniset,
            'TRANSPORT_URL': TRANSPORT_URL, 'BIN_DIR': BIN_DIR,
            'AGENTKIT_DEVSTACK_DRY_RUN': '1',
            'DEST': '/opt/stack', 'DATA_DIR': os.path.join(self.tmp, 'data'),
            'AGENTKIT_DIR': ROOT, 'AGENTKIT_CONF_DIR': self.conf_dir,
            'SYSTEMD_DIR': self.systemd_dir, 'STACK_USER': 'stack',
            'Q_PLUGIN_CONF_FILE': self.ml2_conf.lstrip('/'),
            'HOST_IP': '10.0.0.5', 'SERVICE_HOST': '10.0.0.5',
            'ENABLE_DEBUG_LOG_LEVEL': 'True',
        }
        environ.update(env)
        out = subprocess.run(['bash', '-c', '\n'.join(script)], env=environ,
                             capture_output=True, text=True, timeout=120)
        calls = []
        if os.path.exists(self.calls):
            with open(self.calls) as f:
                calls = f.read().splitlines()
        return out, calls

    def read(self, path):
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        parser.optionxform = str
        self.assertEqual([path], parser.read(path))
        return parser

    def phase_calls(self, calls, phase):
        start = calls.index(f'== {phase}') + 1
        end = next((i for i in range(start, len(calls)) if calls[i].startswith('== ')
                    or calls[i].startswith('Q_AGENT=')), len(calls))
        return calls[start:end]

    def assert_agentkit_loads(self, agent, register):
        """agentkit's parser accepts every value the plugin wrote."""
        conf = cfg.ConfigOpts()
        common_conf.register_common_opts(conf)
        register(conf)
        conf(['--config-file', os.path.join(self.conf_dir, 'agentkit.ini'),
              '--config-file', os.path.join(self.conf_dir, f'{agent}_agent.ini')],
             project='agentkit', default_config_files=[])
        self.assertEqual([], service.validate_options(conf))
        return conf

    # -- tests ---------------------------------------------------------------
    ALL = ['stack install', 'stack post-config', 'stack extra', 'unstack', 'clean']

    def test_openvswitch_phases(self):
        out, calls = self.run_phases(self.ALL)
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertEqual([], [c for c in calls if c.startswith('sudo ')])  # printed instead
        self.assertIn('Q_AGENT=openvswitch', calls)
        self.assertIn('Q_ML2_PLUGIN_MECHANISM_DRIVERS=openvswitch', calls)
        # settings: agentkit's agents instead of Neutron's (and OVN's)
        enabled = set(calls[-1].split('=', 1)[1].split(','))
        self.assertEqual(set(), enabled & {'q-agt', 'q-dhcp', 'q-l3', 'q-meta',
                                           'ovn-controller', 'ovn-northd'})
        self.assertLessEqual({'q-svc', 'agentkit-l2', 'agentkit-dhcp', 'agentkit-l3',
                              'agentkit-metadata'}, enabled)

        self.assertEqual([f'setup_develop {ROOT}'], self.phase_calls(calls, 'stack install'))

        common = self.read(os.path.join(self.conf_dir, 'agentkit.ini'))
        self.assertEqual(TRANSPORT_URL, common['DEFAULT']['transport_url'])
        self.assertEqual(socket.gethostname(), common['DEFAULT']['host'])
        self.assertEqual(self.state, common['DEFAULT']['state_path'])
        self.assertEqual('system', common['ovs']['datapath_type'])
        l2 = self.read(os.path.join(self.conf_dir, 'l2_agent.ini'))
        self.assertEqual('openvswitch', l2['l2']['mechanism_driver'])
        self.assertEqual('10.0.0.5', l2['l2']['local_ip'])
        self.assertEqual('vxlan', l2['l2']['tunnel_types'])
        self.assertEqual('public:br-ex', l2['l2']['bridge_mappings'])
        self.assertEqual('iptables_hybrid', l2['securitygroup']['firewall_driver'])
        for agent in ('dhcp', 'l3'):
            ini = self.read(os.path.join(self.conf_dir, f'{agent}_agent.ini'))
            self.assertEqual('openvswitch', ini['DEFAULT']['interface_driver'])
        meta = self.read(os.path.join(self.conf_dir, 'metadata_agent.ini'))
        self.assertEqual('10.0.0.5', meta['DEFAULT']['nova_metadata_host'])
        # the server side
        ml2 = self.read(self.ml2_conf)
        self.assertEqual('openvswitch', ml2['ml2']['mechanism_drivers'])
        self.assertEqual('vxlan', ml2['ml2']['tenant_network_types'])
        self.assertEqual('public', ml2['ml2_type_flat']['flat_networks'])
        # what agentkit itself makes of the files
        conf = self.assert_agentkit_loads('l2', l2_conf.register_l2_opts)
        self.assertEqual('openvswitch', conf.l2.mechanism_driver)
        self.assertEqual(['vxlan'], conf.l2.tunnel_types)
        self.assert_agentkit_loads('dhcp', dhcp_conf.register_dhcp_opts)
        self.assert_agentkit_loads('l3', l3_conf.register_l3_opts)
        self.assert_agentkit_loads('metadata', metadata_conf.register_metadata_opts)

        extra = self.phase_calls(calls, 'stack extra')
        runs = [c for c in extra if c.startswith('run_process ')]
        self.assertEqual(
            [f'run_process agentkit-{a}|{BIN_DIR}/agentkit-{a} --config-file '
             f'{self.conf_dir}/agentkit.ini --config-file {self.conf_dir}/{a}_agent.ini||root'
             for a in ('l2', 'dhcp', 'l3', 'metadata')], runs)
        for agent in ('l2', 'dhcp', 'l3', 'metadata'):
            unit = self.read(os.path.join(self.systemd_dir, f'devstack@agentkit-{agent}.service'))
            self.assertEqual('notify', unit['Service']['Type'])
            self.assertEqual('main', unit['Service']['NotifyAccess'])
            # the keys come before run_process writes the rest of the unit
            self.assertLess(extra.index(f'iniset -sudo {self.systemd_dir}/devstack@agentkit-'
                                        f'{agent}.service Service Type notify'),
                            extra.index(next(r for r in runs if f'agentkit-{agent}|' in r)))

        self.assertEqual([f'stop_process agentkit-{a}' for a in ('l2', 'dhcp', 'l3', 'metadata')],
                         self.phase_calls(calls, 'unstack'))
        self.assertIn(f'agentkit-dry-run: rm -rf {self.state}', out.stdout)
        self.assertIn(f'agentkit-dry-run: pkill -f -- dnsmasq.*{self.state}/', out.stdout)
        self.assertIn(f'agentkit-dry-run: install -d -o stack {self.conf_dir}', out.stdout)

    def test_linuxbridge(self):
        out, calls = self.run_phases(['stack post-config', 'stack extra'],
                                     AGENTKIT_MECHANISM_DRIVER='linuxbridge',
                                     AGENTKIT_PHYSICAL_INTERFACE_MAPPINGS='public:eth1')
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertIn('Q_ML2_PLUGIN_MECHANISM_DRIVERS=agentkit_linuxbridge', calls)
        ml2 = self.read(self.ml2_conf)
        self.assertEqual('agentkit_linuxbridge', ml2['ml2']['mechanism_drivers'])
        l2 = self.read(os.path.join(self.conf_dir, 'l2_agent.ini'))
        self.assertEqual('linuxbridge', l2['l2']['mechanism_driver'])
        self.assertEqual('public:eth1', l2['linux_bridge']['physical_interface_mappings'])
        for agent in ('dhcp', 'l3'):
            ini = self.read(os.path.join(self.conf_dir, f'{agent}_agent.ini'))
            self.assertEqual('linuxbridge', ini['DEFAULT']['interface_driver'])
        conf = self.assert_agentkit_loads('l2', l2_conf.register_l2_opts)
        self.assertEqual('linuxbridge', conf.l2.mechanism_driver)
        # The driver's own options, as the driver registers and checks them.
        driver_api.register_options(conf, lb_mech_driver.OPTIONS)
        self.assertEqual({'public': 'eth1'}, dict(
            item.split(':') for item in conf.linux_bridge.physical_interface_mappings))

    def test_unknown_mechanism_stops_the_stack(self):
        out, _ = self.run_phases(['stack post-config'], AGENTKIT_MECHANISM_DRIVER='ovn')
        self.assertNotEqual(0, out.returncode)
        self.assertIn("AGENTKIT_MECHANISM_DRIVER: openvswitch or linuxbridge, not 'ovn'",
                      out.stderr)

    def test_nothing_happens_without_agentkit_services(self):
        out, calls = self.run_phases(self.ALL, load_settings=False)
        self.assertEqual(0, out.returncode, out.stderr)
        for phase in self.ALL:
            self.assertEqual([], self.phase_calls(calls, phase))
        self.assertEqual([], os.listdir(self.conf_dir))
        self.assertEqual('', out.stdout)

    def test_shellcheck(self):
        tool = shutil.which('shellcheck')
        if tool is None:
            self.skipTest('shellcheck is not installed (Debian package shellcheck, '
                          'in bindep.txt)')
        out = subprocess.run(
            [tool, '--shell=bash', '--severity=style', os.path.join(DEVSTACK, 'plugin.sh'),
             os.path.join(DEVSTACK, 'settings'), os.path.join(DEVSTACK, 'override-defaults')],
            capture_output=True, text=True, timeout=120)
        self.assertEqual(0, out.returncode, out.stdout + out.stderr)
