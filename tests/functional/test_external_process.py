"""Real dnsmasq (and a foreground command) managed inside a real namespace.

Each test creates its own ``akp<hex>`` namespace with a veth pair inside it
and a world-traversable state directory (dnsmasq re-reads its files as
``nobody``), and kills every process it started, even on failure.
"""

import os
import signal
import tempfile
import time
import uuid

from testtools import content

from agentkit import exceptions
from agentkit.lib import external_process as ep
from agentkit.lib import ip_lib
from agentkit.lib import naming
from agentkit.privileged import process as priv_process
from tests.functional import base

POLL_TIMEOUT = 10.0


def wait_until(predicate, timeout=POLL_TIMEOUT, message='condition'):
    return base.wait_until(predicate, timeout, message, interval=0.01)


pids_with = base.pids_with


def foreground_dnsmasq(token_dir):
    """A dnsmasq that stays in the foreground and serves nothing (no DNS, no
    DHCP range); ``token_dir`` appears in its command line."""
    return ['dnsmasq', '--keep-in-foreground', '--port=0', '--conf-file=/dev/null',
            '--no-hosts', '--no-resolv', '--pid-file=',
            '--dhcp-leasefile=' + os.path.join(token_dir, 'leases')]


def netns_inode(pid):
    return os.stat('/proc/%d/ns/net' % pid).st_ino


class ExternalProcessFunctionalTest(base.FunctionalTestCase):

    def setUp(self):
        super().setUp()
        tag = uuid.uuid4().hex[:8]
        self.namespace = 'akp' + tag
        ip_lib.create_namespace(self.namespace)
        self.addCleanup(ip_lib.delete_namespace, self.namespace)
        self.ifname = 'akp%sa' % tag
        wrapper = ip_lib.IPWrapper(self.namespace)
        dev, peer = wrapper.add_veth(self.ifname, 'akp%sb' % tag)
        dev.addr.add('10.251.7.2/24')
        dev.link.set_up()
        peer.link.set_up()

        # NestedTempfile made a private (0700) temp root; dnsmasq runs as
        # nobody and must traverse it to re-read its host file on SIGHUP.
        os.chmod(tempfile.gettempdir(), 0o755)
        self.state_path = tempfile.mkdtemp(prefix='akp-state-')
        os.chmod(self.state_path, 0o755)
        self.network_id = str(uuid.uuid4())
        self.dhcp_dir = naming.dhcp_state_dir(self.state_path, self.network_id)
        os.makedirs(self.dhcp_dir, mode=0o755)
        self.host_file = os.path.join(self.dhcp_dir, 'host')
        self.log_file = os.path.join(self.dhcp_dir, 'dnsmasq.log')
        with open(self.host_file, 'w') as f:
            f.write('fa:16:3e:00:00:01,host-10-251-7-11.openstacklocal,10.251.7.11\n')
        os.chmod(self.host_file, 0o644)
        self.seen_pids = set()
        # Last resort: whatever carries our ids dies with the test.
        self.addCleanup(self._kill_leftovers, self.network_id)

    def _kill_leftovers(self, token):
        for pid in set(pids_with(token)) | self.seen_pids:
            argv = ep.read_cmdline(pid)
            if argv and any(token in arg for arg in argv):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def dnsmasq_cmd(self, pid_file):
        """A trimmed version of the command line Neutron's DHCP agent uses."""
        return ['dnsmasq', '--no-hosts', '--no-resolv',
                '--pid-file=' + pid_file,
                '--dhcp-hostsfile=' + self.host_file,
                '--dhcp-leasefile=' + os.path.join(self.dhcp_dir, 'leases'),
                '--interface=' + self.ifname, '--bind-dynamic', '--port=0',
                '--dhcp-range=set:subnet-x,10.251.7.0,static,255.255.255.0,86400s',
                '--conf-file=/dev/null',
                '--log-facility=' + self.log_file]

    def dnsmasq_manager(self):
        pm = ep.ProcessManager(self.network_id, 'dnsmasq', self.namespace,
                               os.path.join(self.state_path, 'external', 'pids'),
                               self.dnsmasq_cmd,
                               pid_file=os.path.join(self.dhcp_dir, 'pid'))
        self.addCleanup(self._disable_quietly, pm)
        return pm

    def _disable_quietly(self, pm):
        try:
            pm.disable(timeout=2)
        except exceptions.ProcessError:
            pass

    def monitor(self, interval=0.1):
        monitor = ep.ProcessMonitor(check_interval=interval)
        monitor.start()
        self.addCleanup(monitor.stop, 5)
        return monitor

    def start(self, pm):
        self.assertTrue(pm.enable())
        pid = pm.pid
        self.assertIsNotNone(pid)
        self.seen_pids.add(pid)
        return pid

    def count_host_reads(self):
        try:
            with open(self.log_file) as f:
                return sum(1 for line in f if 'read ' + self.host_file in line)
        except FileNotFoundError:
            return 0

    # -- tests ---------------------------------------------------------------

    def test_dnsmasq_runs_inside_namespace(self):
        pm = self.dnsmasq_manager()
        self.assertFalse(pm.active)
        pid = self.start(pm)
        self.assertTrue(pm.active)
        ns_inode = os.stat('/run/netns/' + self.namespace).st_ino
        self.assertEqual(ns_inode, netns_inode(pid))
        self.assertNotEqual(netns_inode(os.getpid()), netns_inode(pid))
        self.assertEqual(pm.desired_cmdline(), pm.cmdline())
        self.assertEqual([pid], pids_with(self.network_id))
        # Detached from the agent: own session, not our child.
        self.assertNotEqual(os.getsid(0), os.getsid(pid))
        self.addDetail('dnsmasq_start_ms',
                       content.text_content('%.1f' % (pm.last_start_seconds * 1000)))

    def test_sighup_rereads_host_file_with_same_pid(self):
        pm = self.dnsmasq_manager()
        pid = self.start(pm)
        wait_until(lambda: self.count_host_reads() >= 1, message='initial host file read')
        with open(self.host_file, 'a') as f:
            f.write('fa:16:3e:00:00:02,host-10-251-7-12.openstacklocal,10.251.7.12\n')
        self.assertTrue(pm.reload())
        wait_until(lambda: self.count_host_reads() >= 2, message='host file re-read')
        self.assertEqual(pid, pm.pid)
        self.assertTrue(pm.active)
        self.assertEqual([pid], pids_with(self.network_id))

    def test_new_manager_adopts_running_dnsmasq(self):
        first = self.dnsmasq_manager()
        pid = self.start(first)
        # As after an agent restart: new objects, same files.
        second = self.dnsmasq_manager()
        self.assertTrue(second.active)
        self.assertEqual(pid, second.pid)
        self.assertFalse(second.enable())
        monitor = self.monitor(0.05)
        monitor.register(second)
        time.sleep(0.3)
        self.assertEqual(0, second.respawn_count)
        self.assertEqual(pid, second.pid)
        self.assertEqual([pid], pids_with(self.network_id))

    def test_monitor_respawns_killed_dnsmasq(self):
        pm = self.dnsmasq_manager()
        old = self.start(pm)
        monitor = self.monitor(0.1)
        monitor.register(pm)
        killed = time.monotonic()
        os.kill(old, signal.SIGKILL)
        new = wait_until(lambda: pm.respawn_count and pm.active and pm.pid,
                         message='respawned dnsmasq')
        respawn_s = time.monotonic() - killed
        self.seen_pids.add(new)
        self.assertNotEqual(old, new)
        self.assertEqual(1, pm.respawn_count)
        self.assertEqual(1, monitor.stats()['respawns'])
        self.assertIsNotNone(pm.last_respawn)
        self.assertEqual(os.stat('/run/netns/' + self.namespace).st_ino, netns_inode(new))
        self.assertEqual([new], pids_with(self.network_id))
        self.addDetail('kill_to_respawn_ms', content.text_content('%.0f' % (respawn_s * 1000)))

    def test_disable_stops_and_is_not_respawned(self):
        pm = self.dnsmasq_manager()
        pid = self.start(pm)
        monitor = self.monitor(0.05)
        monitor.register(pm)
        pm.disable()
        self.assertIsNone(ep.read_cmdline(pid))
        self.assertFalse(os.path.exists(pm.pid_file))
        self.assertFalse(pm.active)
        self.assertEqual([], monitor.managers)
        time.sleep(0.3)
        self.assertEqual([], pids_with(self.network_id))
        self.assertEqual(0, pm.respawn_count)

    def test_restart_when_command_line_changes(self):
        pm = self.dnsmasq_manager()
        old = self.start(pm)
        changed = ep.ProcessManager(
            self.network_id, 'dnsmasq', self.namespace, self.state_path,
            lambda pid_file: self.dnsmasq_cmd(pid_file) + ['--dhcp-lease-max=256'],
            pid_file=pm.pid_file)
        self.assertNotEqual(changed.desired_cmdline(), changed.cmdline())
        changed.restart()
        new = changed.pid
        self.seen_pids.add(new)
        self.assertNotEqual(old, new)
        self.assertEqual(changed.desired_cmdline(), changed.cmdline())
        self.assertIsNone(ep.read_cmdline(old))

    def test_recycled_pid_is_not_adopted_or_signalled(self):
        pm = self.dnsmasq_manager()
        with open(pm.pid_file, 'w') as f:
            f.write('%d\n' % os.getpid())   # a live process that is not dnsmasq
        self.assertFalse(pm.active)
        pid = self.start(pm)
        self.assertNotEqual(os.getpid(), pid)
        self.assertTrue(pm.active)

    def test_start_failure_is_reported(self):
        pm = ep.ProcessManager(
            self.network_id, 'dnsmasq', self.namespace, self.state_path,
            # An option spawn accepts, with a value dnsmasq refuses at start.
            lambda pid_file: ['dnsmasq', '--dhcp-range=akp-bad-range', '--pid-file=' + pid_file])
        exc = self.assertRaises(exceptions.ProcessError, pm.enable)
        self.assertIn('dnsmasq', str(exc))
        self.assertIn('status', str(exc))
        missing = ep.ProcessManager(self.network_id, 'dnsmasq', 'akp-missing-ns',
                                    self.state_path, self.dnsmasq_cmd)
        exc = self.assertRaises(exceptions.ProcessError, missing.enable)
        self.assertIn('akp-missing-ns', str(exc))

    def test_foreground_command_is_detached_and_monitored(self):
        # A command that does not daemonize itself (root starts nothing but
        # agentkit's daemons: dnsmasq kept in the foreground); the uuid is in
        # an argument so the manager can recognise it.
        pm = ep.ProcessManager(
            self.network_id, 'sleeper', self.namespace,
            os.path.join(self.state_path, 'external', 'pids'),
            lambda pid_file: foreground_dnsmasq(self.dhcp_dir),
            daemonizes=False)
        self.addCleanup(self._disable_quietly, pm)
        pid = self.start(pm)
        self.assertEqual(os.path.join(self.state_path, 'external', 'pids',
                                      self.network_id + '.pid'), pm.pid_file)
        self.assertTrue(pm.active)
        self.assertEqual(os.stat('/run/netns/' + self.namespace).st_ino, netns_inode(pid))
        # Double-forked: neither our child nor the privsep daemon's.
        with open('/proc/%d/stat' % pid) as f:
            ppid = int(f.read().rsplit(')', 1)[1].split()[1])
        self.assertNotEqual(os.getpid(), ppid)
        parent = ep.read_cmdline(ppid) or []
        self.assertFalse(any('privsep' in arg for arg in parent), parent)
        self.assertNotEqual(os.getsid(0), os.getsid(pid))

        monitor = self.monitor(0.1)
        monitor.register(pm)
        os.kill(pid, signal.SIGKILL)
        new = wait_until(lambda: pm.respawn_count and pm.active and pm.pid,
                         message='respawned foreground command')
        self.seen_pids.add(new)
        self.assertNotEqual(pid, new)

        pm.disable()
        self.assertIsNone(ep.read_cmdline(new))
        self.assertFalse(os.path.exists(pm.pid_file))
        self.assertEqual([], pids_with(self.network_id))


class PrivilegedSpawnFunctionalTest(base.FunctionalTestCase):
    """The root primitives on their own, through the real privsep daemon."""

    def _reap_later(self, pid):
        def kill():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.addCleanup(kill)

    def setUp(self):
        super().setUp()
        self.token_dir = tempfile.mkdtemp(prefix='akp-token-')
        os.chmod(self.token_dir, 0o755)

    def test_foreground_command_gets_default_signal_dispositions(self):
        # Python ignores SIGPIPE and SIGXFSZ; an exec'd daemon must not inherit
        # that. (dnsmasq ignores SIGPIPE itself once started, so SIGXFSZ
        # shows it here; tests/unit/test_privileged.py checks both.)
        argv = foreground_dnsmasq(self.token_dir)
        result = priv_process.spawn(argv, daemonizes=False)
        pid = result['pid']
        self._reap_later(pid)
        self.assertIsNone(result['returncode'])
        self.assertEqual(argv, ep.read_cmdline(pid))
        with open('/proc/%d/status' % pid) as f:
            fields = dict(line.split(':', 1) for line in f)
        ignored = int(fields['SigIgn'].strip(), 16)
        blocked = int(fields['SigBlk'].strip(), 16)
        self.assertFalse(ignored & (1 << (signal.SIGXFSZ - 1)), hex(ignored))
        self.assertEqual(0, blocked)
        self.assertTrue(priv_process.kill(pid, int(signal.SIGTERM)))
        wait_until(lambda: ep.read_cmdline(pid) is None, message='dnsmasq to exit')

    def test_kill_checks_expected_token(self):
        pid = priv_process.spawn(foreground_dnsmasq(self.token_dir), daemonizes=False)['pid']
        self._reap_later(pid)
        self.assertFalse(priv_process.kill(pid, int(signal.SIGTERM), expected='not-there'))
        self.assertIsNotNone(ep.read_cmdline(pid))
        self.assertTrue(priv_process.kill(pid, int(signal.SIGKILL), expected=self.token_dir))
        wait_until(lambda: ep.read_cmdline(pid) is None, message='dnsmasq to die')
        # Dead (possibly a zombie until init reaps it): no longer "the same" process.
        self.assertFalse(priv_process.kill(pid, int(signal.SIGKILL), expected=self.token_dir))

    def test_bad_requests_are_refused(self):
        for pid in (0, 1, -1, -1234, True, '123'):
            self.assertRaises(exceptions.ProcessError, priv_process.kill, pid, 15)
        self.assertRaises(exceptions.ProcessError, priv_process.kill, 99999, 4242)
        for argv in ([], 'dnsmasq', ['dnsmasq', 5], ['a\0b'], ['']):
            self.assertRaises(exceptions.ProcessError, priv_process.spawn, argv)
        self.assertRaises(exceptions.ProcessError, priv_process.spawn, ['dnsmasq'],
                          namespace='../etc')
        # Through the real daemon: what it refuses (see tests/unit/test_privileged.py).
        for argv, env in ((['akp-no-such-binary'], None), (['true'], None),
                          (['dnsmasq', '--dhcp-script=/bin/sh'], None),
                          (['dnsmasq', '--no-hosts'], {'LD_PRELOAD': '/tmp/x.so'})):
            exc = self.assertRaises(exceptions.ProcessError, priv_process.spawn, argv,
                                    env=env)
            self.assertIn('refusing', str(exc))

    def test_daemonizing_command_exit_code_and_output(self):
        # (An unknown option is refused before anything starts: see the test above.)
        result = priv_process.spawn(['dnsmasq', '--dhcp-range=akp-bad-range'])
        self.assertEqual(1, result['returncode'])
        self.assertIn('bad command line options', result['output'])
        exc = self.assertRaises(exceptions.ProcessError, priv_process.spawn,
                                foreground_dnsmasq(self.token_dir), detach_timeout=0.2)
        self.assertIn('did not detach', str(exc))
