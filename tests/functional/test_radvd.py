"""The radvd manager with a real radvd, observed from a "VM" namespace.

Topology per test (every name starts with ``akr<hex>``): a router namespace
with ``net.ipv6.conf.all.forwarding = 1`` (as the router driver sets it) and
a "VM" namespace, joined by a veth pair; the router end holds
``2001:db8:<random>::1/64``. DAD is off on both ends so addresses are usable
at once. The VM's kernel autoconfigures from the RAs it receives; ``rdisc6``
(Debian package ndisc6) solicits an RA and shows its flags, prefixes and
options as the VM receives them.

radvd advertises every 3-10 s here (``min/max_rtr_adv_interval``) and the
monitor checks every second. Every radvd, namespace and file is removed in
cleanups, even when a test fails.
"""

import ipaddress
import os
import random
import re
import shutil
import signal
import tempfile
import uuid

from oslo_config import cfg

from agentkit.api import driver as driver_api
from agentkit.conf import common as common_conf
from agentkit.conf import l3 as l3_conf
from agentkit.lib import ip_lib
from drivers.l3 import radvd
from tests.functional import base
from tests.functional import vm

# An RA reaches the VM within MaxRtrAdvInterval even if none is solicited.
RA_TIMEOUT = 25.0
TIMEOUT = 10.0
MIN_INTERVAL = 3
MAX_INTERVAL = 10


def random_prefix(taken=()):
    while True:
        prefix = '2001:db8:%x::/64' % random.randint(1, 0xffff)
        if prefix not in taken:
            return prefix


def host(prefix, index=1):
    """``2001:db8:x::<index>`` of a /64."""
    return str(ipaddress.ip_network(prefix)[index])


class RadvdTestCase(base.FunctionalTestCase):

    def setUp(self):
        super().setUp()
        if shutil.which('radvd', path='/usr/sbin:/usr/bin:/sbin:/bin') is None:
            self.skipTest('radvd is not installed (Debian package radvd, see bindep.txt)')
        self.prefix = 'akr' + uuid.uuid4().hex[:8]
        # NestedTempfile's root is 0700: the radvd user could not re-read its config.
        os.chmod(tempfile.gettempdir(), 0o755)
        tmp = tempfile.mkdtemp(prefix='ra')
        os.chmod(tmp, 0o755)
        self.state_path = os.path.join(tmp, 'state')
        os.mkdir(self.state_path, 0o755)
        self.conf = cfg.ConfigOpts()
        common_conf.register_common_opts(self.conf)
        l3_conf.register_l3_opts(self.conf)
        driver_api.register_options(self.conf, radvd.OPTIONS)  # the driver's own, set below
        self.conf([], project='agentkit', default_config_files=[])
        self.conf.set_override('state_path', self.state_path)
        self.conf.set_override('check_child_processes_interval', 1)
        self.conf.set_override('min_rtr_adv_interval', MIN_INTERVAL)
        self.conf.set_override('max_rtr_adv_interval', MAX_INTERVAL)
        self.router_id = str(uuid.uuid4())
        # Cleanups run LIFO: these run after every manager stopped watching,
        # so no monitor respawns what they stop.
        self.addCleanup(self._kill_leftovers)
        self.addCleanup(self._disable)

    def _disable(self):
        radvd.RadvdManager(self.conf).disable(self.router_id)

    def _kill_leftovers(self):
        base.kill_pids_with(self.router_id)

    def new_manager(self):
        manager = radvd.RadvdManager(self.conf)
        self.addCleanup(manager.stop)
        return manager

    def namespace(self, suffix):
        name = self.prefix + suffix
        ip_lib.IPWrapper(name).ensure_namespace()
        self.addCleanup(ip_lib.delete_namespace, name)
        ip_lib.IPDevice('lo', name).link.set_up()
        return name

    def topology(self, router_prefix):
        """(router namespace, router device, VM namespace)."""
        router_ns = self.namespace('r')
        vm_ns = self.namespace('v')
        ip_lib.set_sysctl('net.ipv6.conf.all.forwarding', 1, router_ns)
        device = self.prefix + '-qr'
        router_end, vm_end = ip_lib.IPWrapper(router_ns).add_veth(
            device, 'eth0', peer_namespace=vm_ns, mtu=1500)
        ip_lib.set_sysctl(['net', 'ipv6', 'conf', device, 'accept_dad'], 0, router_ns)
        # A VM: no forwarding (the namespace default), RAs accepted, no DAD.
        self.assertEqual('0', ip_lib.get_sysctl('net.ipv6.conf.all.forwarding', vm_ns))
        ip_lib.set_sysctl('net.ipv6.conf.eth0.accept_ra', 2, vm_ns)
        ip_lib.set_sysctl('net.ipv6.conf.eth0.accept_dad', 0, vm_ns)
        router_end.addr.add(host(router_prefix) + '/64')
        router_end.link.set_up()
        vm_end.link.set_up()
        # Until the VM has its link-local address it cannot solicit (rdisc6:
        # "Network is unreachable").
        base.wait_until(lambda: [a for a in ip_lib.list_addresses(vm_ns, ip_version=6)
                                 if a['device'] == 'eth0' and a['scope'] == 'link'
                                 and not a['tentative']],
                        TIMEOUT, 'the VM\'s link-local address', interval=0.02)
        return router_ns, device, vm_ns

    @staticmethod
    def global_addresses(namespace):
        return {a['cidr'] for a in ip_lib.list_addresses(namespace, ip_version=6)
                if a['device'] == 'eth0' and a['scope'] == 'global' and not a['tentative']}

    def wait_for_address_in(self, vm_ns, prefix):
        network = ipaddress.ip_network(prefix)
        return base.wait_until(
            lambda: [c for c in self.global_addresses(vm_ns)
                     if ipaddress.ip_interface(c).ip in network],
            RA_TIMEOUT, 'a SLAAC address in %s' % prefix, interval=0.2)

    def observed_ra(self, vm_ns):
        """What ``rdisc6`` shows of the RA the router answers a solicitation with."""
        if shutil.which('rdisc6') is None:
            self.skipTest('rdisc6 is not installed (Debian package ndisc6, see bindep.txt)')
        result = vm.run_in(vm_ns, 'rdisc6', '-1', '-r', '5', '-w', '3000', 'eth0',
                           timeout=30)
        self.assertEqual(0, result.returncode, result.stdout + result.stderr)
        return result.stdout

    @staticmethod
    def field(ra_text, name):
        match = re.search(r'^\s*%s\s*:\s*(\S+)' % re.escape(name), ra_text, re.MULTILINE)
        return match.group(1) if match else None

    @staticmethod
    def prefix_block(ra_text, prefix):
        """The lines rdisc6 prints under ``Prefix : <prefix>``."""
        match = re.search(r'^ Prefix\s*:\s*%s\n((?:  .*\n)*)' % re.escape(prefix), ra_text,
                          re.MULTILINE)
        return match.group(1) if match else None

    @staticmethod
    def default_route(vm_ns):
        """The VM's IPv6 default route (learnt from RAs), '' if none."""
        result = vm.run_in(vm_ns, 'ip', '-6', 'route', 'show', 'default')
        return result.stdout.strip()

    @staticmethod
    def proc_uid(pid):
        with open('/proc/%d/status' % pid) as f:
            fields = dict(line.split(':', 1) for line in f)
        return int(fields['Uid'].split()[1])


class TestRadvd(RadvdTestCase):

    def test_slaac_adopt_respawn_reload_and_stop(self):
        prefix1 = random_prefix()
        router_ns, device, vm_ns = self.topology(prefix1)
        dns = host(prefix1, 0x53)
        manager = self.new_manager()
        manager.update(self.router_id, router_ns, [radvd.RaInterface(
            device, (radvd.RaPrefix(prefix1, radvd.SLAAC, (dns,)),), mtu=1400)])
        pid = manager.pid(self.router_id)
        self.assertIsNotNone(pid)
        # radvd starts as root and drops to its user once set up.
        base.wait_until(lambda: self.proc_uid(pid) == radvd.radvd_user().pw_uid,
                        TIMEOUT, 'radvd running as its own user')

        # The VM autoconfigures, learns the MTU and reaches the router.
        self.wait_for_address_in(vm_ns, prefix1)
        base.wait_until(lambda: ip_lib.get_sysctl('net.ipv6.conf.eth0.mtu', vm_ns) == '1400',
                        TIMEOUT, 'the advertised MTU on the VM')
        ping = vm.run_in(vm_ns, 'ping', '-6', '-c', '2', '-W', '2', '-i', '0.2',
                         host(prefix1))
        self.assertEqual(0, ping.returncode, ping.stdout + ping.stderr)
        ra = self.observed_ra(vm_ns)
        self.assertEqual('No', self.field(ra, 'Stateful address conf.'))
        self.assertEqual('No', self.field(ra, 'Stateful other conf.'))
        self.assertEqual(dns, self.field(ra, 'Recursive DNS server'))
        block = self.prefix_block(ra, prefix1)
        self.assertIsNotNone(block, ra)
        self.assertEqual('Yes', self.field(block, 'Autonomous address conf.'))

        # An agent restart: the new manager adopts the running radvd.
        manager.stop()
        manager = self.new_manager()
        self.assertEqual({self.router_id}, manager.active_routers())
        manager.update(self.router_id, router_ns, [radvd.RaInterface(
            device, (radvd.RaPrefix(prefix1, radvd.SLAAC, (dns,)),), mtu=1400)])
        self.assertEqual(radvd.Action.NONE, manager.last_action)
        self.assertEqual(pid, manager.pid(self.router_id))
        self.assertEqual(1, manager.get_configurations()['radvd_adopted'])

        # radvd dies: the monitor starts it again.
        os.kill(pid, signal.SIGKILL)
        pid = base.wait_until(
            lambda: (manager.pid(self.router_id) or pid) != pid and manager.pid(self.router_id),
            TIMEOUT, 'radvd respawned by the monitor')
        # The pid file is written before the monitor counts the respawn.
        base.wait_until(lambda: manager.get_configurations()['radvd_respawns'] == 1,
                        TIMEOUT, 'the monitor counting one respawn')

        # A second subnet: SIGHUP, same pid, and the VM gets an address in it.
        prefix2 = random_prefix(taken={prefix1})
        ip_lib.IPDevice(device, router_ns).addr.add(
            host(prefix2) + '/64')
        manager.update(self.router_id, router_ns, [radvd.RaInterface(
            device, (radvd.RaPrefix(prefix1, radvd.SLAAC, (dns,)),
                     radvd.RaPrefix(prefix2, radvd.SLAAC)), mtu=1400)])
        self.assertEqual(radvd.Action.RELOAD, manager.last_action)
        self.assertEqual(pid, manager.pid(self.router_id))
        self.wait_for_address_in(vm_ns, prefix2)
        self.assertEqual(pid, manager.pid(self.router_id))
        ping = vm.run_in(vm_ns, 'ping', '-6', '-c', '2', '-W', '2', '-i', '0.2',
                         host(prefix2))
        self.assertEqual(0, ping.returncode, ping.stdout + ping.stderr)

        # Nothing left to advertise: radvd stops (its last RA withdraws the
        # default route) and its files go.
        self.assertTrue(self.default_route(vm_ns))
        manager.update(self.router_id, router_ns, [])
        self.assertEqual(radvd.Action.STOP, manager.last_action)
        base.wait_until(lambda: not base.pids_with(self.router_id), TIMEOUT,
                        'every radvd process of the router gone')
        base.wait_until(lambda: not self.default_route(vm_ns), TIMEOUT,
                        'the default route withdrawn from the VM')
        self.assertEqual([], os.listdir(os.path.join(self.state_path, 'ra')))
        self.assertEqual(set(), manager.active_routers())
        self.assertIsNone(manager.pid(self.router_id))

    def test_dhcpv6_flags_as_the_vm_receives_them(self):
        prefix = random_prefix()
        router_ns, device, vm_ns = self.topology(prefix)
        manager = self.new_manager()
        manager.update(self.router_id, router_ns, [radvd.RaInterface(
            device, (radvd.RaPrefix(prefix, radvd.DHCPV6_STATEFUL),), mtu=None)])
        pid = manager.pid(self.router_id)
        with open(manager.config_path(self.router_id)) as f:
            self.assertIn('    AdvManagedFlag on;\n', f.read())

        ra = self.observed_ra(vm_ns)
        self.assertEqual('Yes', self.field(ra, 'Stateful address conf.'), ra)
        self.assertEqual('No', self.field(ra, 'Stateful other conf.'), ra)
        block = self.prefix_block(ra, prefix)
        self.assertIsNotNone(block, ra)
        self.assertEqual('Yes', self.field(block, 'On-link'))
        self.assertEqual('No', self.field(block, 'Autonomous address conf.'))
        self.assertIsNone(self.field(ra, 'MTU'))
        self.assertEqual(set(), self.global_addresses(vm_ns))  # addresses come from DHCPv6

        # The subnet becomes dhcpv6-stateless: reload, O flag, and SLAAC.
        manager.update(self.router_id, router_ns, [radvd.RaInterface(
            device, (radvd.RaPrefix(prefix, radvd.DHCPV6_STATELESS),), mtu=None)])
        self.assertEqual(radvd.Action.RELOAD, manager.last_action)
        self.assertEqual(pid, manager.pid(self.router_id))
        ra = self.observed_ra(vm_ns)
        self.assertEqual('No', self.field(ra, 'Stateful address conf.'), ra)
        self.assertEqual('Yes', self.field(ra, 'Stateful other conf.'), ra)
        self.assertEqual('Yes', self.field(self.prefix_block(ra, prefix),
                                           'Autonomous address conf.'))
        self.wait_for_address_in(vm_ns, prefix)

        manager.disable(self.router_id)
        base.wait_until(lambda: not base.pids_with(self.router_id), TIMEOUT,
                        'every radvd process of the router gone')
        self.assertFalse(os.path.exists(manager.config_path(self.router_id)))
