"""The agent process can run unprivileged: root work happens in privsep only.

A child Python process starts the ``network`` privsep daemon while still
root (as an agent started by systemd with a root helper would), then drops
to nobody (uid/gid 65534, no groups, no capabilities). From there a direct
netlink request must fail with EPERM, while the same kind of work through
ip_lib succeeds. The parent (root) checks the result with iproute2.
"""

import errno
import json
import os
import subprocess
import sys
import uuid

import agentkit
from tests.functional import base

NOBODY = 65534

CHILD = r'''
import errno, json, os, sys

from oslo_config import cfg

from agentkit.conf import common
from agentkit import privsep_setup

ns, root_dev, ns_dev, cidr, gateway, dst = sys.argv[1:7]

common.register_common_opts(cfg.CONF)
cfg.CONF([], project='agentkit', default_config_files=[])
privsep_setup.setup_privsep(cfg.CONF)

from agentkit.lib import ip_lib
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

# One privileged call while root starts the daemon.
ip_lib.list_namespaces()
# The interpreter lives under a 0700 /root here: load lazily imported
# modules now, while still allowed to.
IPRoute().close()

os.setgroups([])
os.setgid(65534)
os.setuid(65534)

result = {'uid': os.getuid(), 'euid': os.geteuid(), 'gid': os.getgid(),
          'groups': os.getgroups()}
with open('/proc/self/status') as f:
    result['cap_eff'] = [line.split()[1] for line in f
                         if line.startswith('CapEff:')][0]

ipr = IPRoute()
try:
    ipr.link('add', ifname=root_dev + 'x', kind='veth',
             peer={'ifname': ns_dev + 'x'})
except NetlinkError as e:
    result['direct_errno'] = e.code
else:
    result['direct_errno'] = 0
finally:
    ipr.close()

wrapper = ip_lib.IPWrapper(ns)
result['created'] = wrapper.ensure_namespace()
root_end, ns_end = ip_lib.IPWrapper().add_veth(root_dev, ns_dev, peer_namespace=ns,
                                               mtu=1400)
ns_end.addr.add(cidr)
ns_end.link.set_up()
root_end.link.set_up()
ns_end.route.add_gateway(gateway)
ns_end.route.add_route(dst, via=gateway, metric=42)
result['addresses'] = [a['cidr'] for a in ns_end.addr.list(ip_version=4)]
print(json.dumps(result))
'''


def ip_json(*args: str, namespace: str | None = None) -> list:
    cmd = ['ip', '-j', '-d'] + (['-n', namespace] if namespace else []) + list(args)
    return json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                     text=True).stdout or '[]')


class TestUnprivilegedAgent(base.FunctionalTestCase):

    def test_agent_drops_root_and_works_through_privsep(self):
        ns = 'aki-' + uuid.uuid4().hex
        root_dev, ns_dev = self.short_name('aki'), self.short_name('aki')
        cidr, gateway, dst = '10.123.4.5/24', '10.123.4.1', '10.124.0.0/16'
        # Cleanups with iproute2, independent of the code under test.
        self.addCleanup(subprocess.run, ['ip', 'netns', 'del', ns], capture_output=True)
        for dev in (root_dev, root_dev + 'x'):
            self.addCleanup(subprocess.run, ['ip', 'link', 'del', dev], capture_output=True)

        repo = os.path.dirname(os.path.dirname(os.path.abspath(agentkit.__file__)))
        proc = subprocess.run(
            [sys.executable, '-c', CHILD, ns, root_dev, ns_dev, cidr, gateway, dst],
            cwd=repo, capture_output=True, text=True, timeout=120)
        self.assertEqual(0, proc.returncode,
                         'child failed:\n%s\n%s' % (proc.stdout, proc.stderr))
        result = json.loads(proc.stdout.strip().splitlines()[-1])

        # The child really was unprivileged...
        self.assertEqual((NOBODY, NOBODY, NOBODY, []),
                         (result['uid'], result['euid'], result['gid'], result['groups']))
        self.assertEqual(0, int(result['cap_eff'], 16))
        # ...so the kernel refused its own netlink request...
        self.assertEqual(errno.EPERM, result['direct_errno'])
        self.assertFalse(os.path.exists('/sys/class/net/' + root_dev + 'x'))
        # ...while the same work through privsep happened.
        self.assertTrue(result['created'])
        self.assertEqual([cidr], result['addresses'])

        self.assertIn(ns, subprocess.check_output(['ip', 'netns', 'list'], text=True))
        [root_end] = ip_json('link', 'show', 'dev', root_dev)
        self.assertEqual('veth', root_end['linkinfo']['info_kind'])
        self.assertEqual(1400, root_end['mtu'])
        self.assertIn('UP', root_end['flags'])
        [ns_end] = ip_json('addr', 'show', 'dev', ns_dev, namespace=ns)
        self.assertEqual(1400, ns_end['mtu'])
        self.assertIn('UP', ns_end['flags'])
        self.assertIn(('10.123.4.5', 24),
                      [(a['local'], a['prefixlen']) for a in ns_end['addr_info']])
        # The peer was born in the namespace, not in the root one.
        self.assertFalse(os.path.exists('/sys/class/net/' + ns_dev))

        routes = {r['dst']: r for r in ip_json('-4', 'route', 'show', namespace=ns)}
        self.assertEqual((gateway, ns_dev), (routes['default']['gateway'],
                                             routes['default']['dev']))
        self.assertEqual((gateway, 42), (routes[dst]['gateway'], routes[dst]['metric']))
