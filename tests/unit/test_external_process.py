"""ProcessManager/ProcessMonitor logic with a fake /proc and mocked root calls."""

import os
import signal
import threading
import time
from unittest import mock

import fixtures

from agentkit import exceptions
from agentkit.lib import external_process as ep
from agentkit.privileged import process as priv_process
from tests import base


class FakeSystem:
    """A fake /proc tree plus stand-ins for the privileged spawn/kill.

    ``spawn`` "starts" a process by creating ``<proc>/<pid>/cmdline``; a
    daemonizing one also writes its pid file (like dnsmasq --pid-file).
    ``kill`` makes the process disappear unless its pid is in ``stubborn``
    (ignores SIGTERM) or ``immortal`` (ignores everything).
    """

    def __init__(self, proc_path):
        self.proc_path = proc_path
        self.next_pid = 1000
        self.stubborn = set()
        self.immortal = set()
        self.pid_file_delay = 0.0
        self.write_pid_file = True
        self.returncode = 0
        self.spawned = []
        self.signals = []

    def add_process(self, argv, pid=None):
        if pid is None:
            pid = self.next_pid
            self.next_pid += 1
        os.makedirs(os.path.join(self.proc_path, str(pid)), exist_ok=True)
        with open(os.path.join(self.proc_path, str(pid), 'cmdline'), 'wb') as f:
            f.write(b''.join(a.encode() + b'\0' for a in argv))
        return pid

    def make_zombie(self, pid):
        with open(os.path.join(self.proc_path, str(pid), 'cmdline'), 'wb'):
            pass

    def remove_process(self, pid):
        path = os.path.join(self.proc_path, str(pid))
        os.unlink(os.path.join(path, 'cmdline'))
        os.rmdir(path)

    def spawn(self, argv, namespace=None, daemonizes=True, log_file=None, env=None):
        argv = list(argv)
        self.spawned.append((argv, namespace, daemonizes))
        if self.returncode != 0:
            return {'pid': 1, 'returncode': self.returncode, 'output': 'dnsmasq: bad option'}
        pid = self.add_process(argv)
        if daemonizes and self.write_pid_file:
            pid_file = [a for a in argv if a.startswith('--pid-file=')][0].split('=', 1)[1]

            def write():
                time.sleep(self.pid_file_delay)
                with open(pid_file, 'w') as f:
                    f.write('%d\n' % pid)
            if self.pid_file_delay:
                threading.Thread(target=write).start()
            else:
                write()
            return {'pid': pid - 1, 'returncode': 0, 'output': ''}
        return {'pid': pid, 'returncode': None if not daemonizes else 0, 'output': ''}

    def kill(self, pid, sig, expected=None):
        self.signals.append((pid, sig))
        argv = ep.read_cmdline(pid, self.proc_path)
        if argv is None or (expected and not any(expected in a for a in argv)):
            return False
        if sig in (signal.SIGHUP, 0) or pid in self.immortal:
            return True
        if sig == signal.SIGKILL or pid not in self.stubborn:
            self.remove_process(pid)
        return True


class ExternalProcessTestCase(base.TestCase):

    UUID = '3f2504e0-4f89-41d3-9a0c-0305e82c3301'

    def setUp(self):
        super().setUp()
        tmp = self.useFixture(fixtures.TempDir()).path
        self.proc = os.path.join(tmp, 'proc')
        os.mkdir(self.proc)
        self.pids = os.path.join(tmp, 'pids')
        self.system = FakeSystem(self.proc)
        self.spawn = self.useFixture(fixtures.MockPatchObject(
            priv_process, 'spawn', side_effect=self.system.spawn)).mock
        self.kill = self.useFixture(fixtures.MockPatchObject(
            priv_process, 'kill', side_effect=self.system.kill)).mock

    def dnsmasq_cmd(self, pid_file):
        return ['dnsmasq', '--no-hosts', '--pid-file=' + pid_file,
                '--dhcp-hostsfile=/state/dhcp/%s/host' % self.UUID]

    def manager(self, uuid=UUID, **kwargs):
        kwargs.setdefault('proc_path', self.proc)
        return ep.ProcessManager(uuid, 'dnsmasq', 'qdhcp-x', self.pids,
                                 kwargs.pop('cmd', self.dnsmasq_cmd), **kwargs)

    def write_pid_file(self, pm, content):
        os.makedirs(os.path.dirname(pm.pid_file), exist_ok=True)
        with open(pm.pid_file, 'w') as f:
            f.write(content)


class TestReaders(ExternalProcessTestCase):

    def test_read_pid_file(self):
        path = os.path.join(self.pids, 'p')
        os.makedirs(self.pids)
        self.assertIsNone(ep.read_pid_file(path))
        cases = {'123\n': 123, ' 77 ': 77, '': None, 'abc': None, '-5': None, '0': None,
                 '12 13': None, '\uff11\uff12': None, '1e3': None}
        for content, expected in cases.items():
            with open(path, 'w') as f:
                f.write(content)
            self.assertEqual(expected, ep.read_pid_file(path), repr(content))

    def test_read_pid_file_below_a_file(self):
        os.makedirs(self.pids)
        open(os.path.join(self.pids, 'f'), 'w').close()
        self.assertIsNone(ep.read_pid_file(os.path.join(self.pids, 'f', 'pid')))

    def test_read_cmdline(self):
        pid = self.system.add_process(['dnsmasq', '--a=b', ''])
        self.assertEqual(['dnsmasq', '--a=b', ''], ep.read_cmdline(pid, self.proc))
        self.assertIsNone(ep.read_cmdline(99999, self.proc))
        self.system.make_zombie(pid)
        self.assertIsNone(ep.read_cmdline(pid, self.proc))

    def test_read_cmdline_without_trailing_nul_and_bad_utf8(self):
        os.makedirs(os.path.join(self.proc, '5'))
        with open(os.path.join(self.proc, '5', 'cmdline'), 'wb') as f:
            f.write(b'haproxy\0-f\0/x\xff')
        argv = ep.read_cmdline(5, self.proc)
        self.assertEqual(['haproxy', '-f'], argv[:2])
        self.assertEqual('/x\udcff', argv[2])

    def test_read_cmdline_of_real_self(self):
        argv = ep.read_cmdline(os.getpid())
        self.assertTrue(argv and 'python' in argv[0])


class TestProcessManager(ExternalProcessTestCase):

    def test_pid_file_default_path(self):
        pm = self.manager()
        self.assertEqual(os.path.join(self.pids, self.UUID + '.pid'), pm.pid_file)

    def test_invalid_uuid_and_service(self):
        for bad in ('../x', '', 'a b', None):
            self.assertRaises(exceptions.InvalidIdentifier, self.manager, uuid=bad)
        self.assertRaises(exceptions.ProcessError, ep.ProcessManager, self.UUID,
                          'dns/masq', None, self.pids, self.dnsmasq_cmd)

    def test_active_needs_live_pid_with_uuid_in_cmdline(self):
        pm = self.manager()
        self.assertFalse(pm.active)
        self.assertIsNone(pm.pid)
        ours = self.system.add_process(self.dnsmasq_cmd(pm.pid_file))
        self.write_pid_file(pm, '%d\n' % ours)
        self.assertTrue(pm.active)
        self.assertEqual(ours, pm.pid)
        # Recycled pid: alive, but another program.
        stranger = self.system.add_process(['sshd', '-D'])
        self.write_pid_file(pm, str(stranger))
        self.assertFalse(pm.active)
        self.assertIsNone(pm.cmdline())
        # Dead pid.
        self.write_pid_file(pm, '424242')
        self.assertFalse(pm.active)
        # Zombie.
        self.write_pid_file(pm, str(ours))
        self.system.make_zombie(ours)
        self.assertFalse(pm.active)

    def test_other_uuid_in_cmdline_is_not_ours(self):
        pm = self.manager()
        other = self.system.add_process(
            ['dnsmasq', '--pid-file=/x/aaaaaaaa-4f89-41d3-9a0c-0305e82c3301/pid'])
        self.write_pid_file(pm, str(other))
        self.assertFalse(pm.active)

    def test_enable_spawns_and_waits_for_pid_file(self):
        pm = self.manager()
        self.assertTrue(pm.enable())
        self.spawn.assert_called_once_with(self.dnsmasq_cmd(pm.pid_file), namespace='qdhcp-x',
                                           daemonizes=True, log_file=None, env={})
        self.assertTrue(pm.active)
        self.assertEqual(self.dnsmasq_cmd(pm.pid_file), pm.cmdline())
        self.assertEqual(pm.desired_cmdline(), pm.cmdline())
        self.assertIsNotNone(pm.last_start_seconds)

    def test_enable_waits_for_late_pid_file(self):
        self.system.pid_file_delay = 0.1
        pm = self.manager()
        started = time.monotonic()
        pm.enable()
        self.assertGreaterEqual(time.monotonic() - started, 0.1)
        self.assertTrue(pm.active)

    def test_enable_adopts_running_daemon(self):
        first = self.manager()
        first.enable()
        pid = first.pid
        # An agent restart: a fresh manager for the same daemon.
        second = self.manager()
        self.assertTrue(second.active)
        self.assertFalse(second.enable())
        self.assertEqual(1, self.spawn.call_count)
        self.assertEqual(pid, second.pid)
        self.kill.assert_not_called()

    def test_enable_with_reload_cfg_sends_sighup(self):
        pm = self.manager()
        pm.enable()
        pid = pm.pid
        self.assertFalse(pm.enable(reload_cfg=True))
        self.kill.assert_called_once_with(pid, signal.SIGHUP, expected=self.UUID)
        self.assertEqual(pid, pm.pid)

    def test_enable_removes_stale_pid_file_first(self):
        pm = self.manager()
        stranger = self.system.add_process(['sshd'])
        self.write_pid_file(pm, str(stranger))
        # The daemon will not write its pid file: the stale one must not count.
        self.system.write_pid_file = False
        pm.start_timeout = 0.2
        self.assertRaises(exceptions.ProcessError, pm.enable)
        self.assertFalse(os.path.exists(pm.pid_file))

    def test_pid_file_timeout_message(self):
        self.system.write_pid_file = False
        pm = self.manager(start_timeout=0.1)
        exc = self.assertRaises(exceptions.ProcessError, pm.enable)
        self.assertIn(pm.pid_file, str(exc))
        self.assertIn(self.UUID, str(exc))

    def test_start_failure_reports_output(self):
        self.system.returncode = 1
        pm = self.manager()
        exc = self.assertRaises(exceptions.ProcessError, pm.enable)
        self.assertIn('status 1', str(exc))
        self.assertIn('bad option', str(exc))

    def test_foreground_command_pid_file_written_by_manager(self):
        pm = self.manager(daemonizes=False, cmd=lambda pid_file: ['sleep-ish', self.UUID])
        self.assertTrue(pm.enable())
        argv, _, daemonizes = self.system.spawned[0]
        self.assertFalse(daemonizes)
        with open(pm.pid_file) as f:
            self.assertEqual('%d\n' % pm.pid, f.read())
        self.assertTrue(pm.active)
        self.assertEqual([], [n for n in os.listdir(self.pids) if n.startswith('.pid-')])

    def test_explicit_pid_file(self):
        pid_file = os.path.join(self.pids, 'dhcp', self.UUID, 'pid')
        pm = self.manager(pid_file=pid_file)
        pm.enable()
        self.assertEqual(pid_file, pm.pid_file)
        self.assertTrue(os.path.isfile(pid_file))

    def test_command_must_contain_uuid(self):
        pm = self.manager(cmd=lambda pid_file: ['dnsmasq', '--pid-file=' + pid_file])
        pm.pid_file = '/tmp/nothing.pid'
        exc = self.assertRaises(exceptions.ProcessError, pm.enable)
        self.assertIn('must contain its uuid', str(exc))
        self.spawn.assert_not_called()

    def test_command_callback_must_return_list_of_str(self):
        for bad in ('dnsmasq ' + self.UUID, [], ['dnsmasq', 5, self.UUID], None):
            pm = self.manager(cmd=lambda pid_file, bad=bad: bad)
            self.assertRaises(exceptions.ProcessError, pm.enable)
        self.spawn.assert_not_called()

    def test_reload_when_not_running(self):
        pm = self.manager()
        self.assertFalse(pm.reload())
        self.kill.assert_not_called()

    def test_reload_keeps_pid(self):
        pm = self.manager()
        pm.enable()
        pid = pm.pid
        self.assertTrue(pm.reload())
        self.assertEqual(pid, pm.pid)
        self.assertTrue(pm.active)

    def test_disable_terminates_and_removes_pid_file(self):
        pm = self.manager()
        pm.enable()
        pid = pm.pid
        pm.disable()
        self.assertEqual([(pid, signal.SIGTERM)], self.system.signals)
        self.assertFalse(os.path.exists(pm.pid_file))
        self.assertFalse(pm.active)

    def test_disable_escalates_to_sigkill(self):
        pm = self.manager()
        pm.enable()
        pid = pm.pid
        self.system.stubborn.add(pid)
        pm.disable(timeout=0.1)
        self.assertEqual([(pid, signal.SIGTERM), (pid, signal.SIGKILL)], self.system.signals)
        self.assertIsNone(ep.read_cmdline(pid, self.proc))
        self.assertFalse(os.path.exists(pm.pid_file))

    def test_disable_counts_zombie_as_stopped(self):
        pm = self.manager()
        pm.enable()
        pid = pm.pid
        self.system.immortal.add(pid)
        self.kill.side_effect = lambda pid, sig, expected=None: self.system.make_zombie(pid)
        pm.disable(timeout=0.1)
        self.assertEqual(1, self.kill.call_count)

    def test_disable_raises_if_process_survives_sigkill(self):
        pm = self.manager()
        pm.enable()
        self.system.immortal.add(pm.pid)
        with mock.patch.object(ep, '_KILL_GRACE', 0.05):
            self.assertRaises(exceptions.ProcessError, pm.disable, timeout=0.05)

    def test_disable_does_not_signal_a_recycled_pid(self):
        pm = self.manager()
        stranger = self.system.add_process(['sshd'])
        self.write_pid_file(pm, str(stranger))
        pm.disable()
        self.kill.assert_not_called()
        self.assertIsNotNone(ep.read_cmdline(stranger, self.proc))
        self.assertFalse(os.path.exists(pm.pid_file))

    def test_restart_gives_new_pid(self):
        pm = self.manager()
        pm.enable()
        old = pm.pid
        pm.restart()
        self.assertNotEqual(old, pm.pid)
        self.assertTrue(pm.active)
        self.assertIsNone(ep.read_cmdline(old, self.proc))


class TestProcessMonitor(ExternalProcessTestCase):

    def crash(self, pm):
        self.system.remove_process(pm.pid)

    def test_invalid_configuration(self):
        self.assertRaises(exceptions.InvalidConfiguration, ep.ProcessMonitor, 1, 'exit')
        self.assertRaises(exceptions.InvalidConfiguration, ep.ProcessMonitor, -1)

    def test_check_once_respawns_only_dead(self):
        monitor = ep.ProcessMonitor(check_interval=0)
        alive = self.manager()
        dead = self.manager(uuid='aaaaaaaa-4f89-41d3-9a0c-0305e82c3301')
        for pm in (alive, dead):
            pm.enable()
            monitor.register(pm)
        alive_pid, dead_pid = alive.pid, dead.pid
        self.crash(dead)
        self.assertEqual([dead], monitor.check_once())
        self.assertEqual(alive_pid, alive.pid)
        self.assertNotEqual(dead_pid, dead.pid)
        self.assertTrue(dead.active)
        self.assertEqual((0, 1), (alive.respawn_count, dead.respawn_count))
        self.assertIsNotNone(dead.last_respawn)
        self.assertEqual({'monitored_processes': 2, 'respawns': 1,
                          'last_respawn': monitor.last_respawn}, monitor.stats())
        self.assertEqual([], monitor.check_once())

    def test_disable_unregisters(self):
        monitor = ep.ProcessMonitor(check_interval=0)
        pm = self.manager()
        pm.enable()
        monitor.register(pm)
        pm.disable()
        self.assertEqual([], monitor.managers)
        self.assertEqual([], monitor.check_once())
        self.assertFalse(pm.active)
        self.assertEqual(1, self.spawn.call_count)

    def test_unregister_of_unknown_manager_is_noop(self):
        monitor = ep.ProcessMonitor(check_interval=0)
        monitor.unregister(self.manager())
        self.assertEqual([], monitor.managers)

    def test_register_replaces_same_key(self):
        monitor = ep.ProcessMonitor(check_interval=0)
        old, new = self.manager(), self.manager()
        monitor.register(old)
        monitor.register(new)
        self.assertEqual([new], monitor.managers)
        self.assertIs(new, monitor.get('dnsmasq', self.UUID))
        # The replaced manager is no longer respawned by this monitor.
        self.assertFalse(old._respawn_if_dead(monitor, monitor.action))

    def test_log_action_does_not_respawn(self):
        monitor = ep.ProcessMonitor(check_interval=0, action='log')
        pm = self.manager()
        pm.enable()
        monitor.register(pm)
        self.crash(pm)
        self.assertEqual([], monitor.check_once())
        self.assertEqual(1, self.spawn.call_count)

    def test_failing_respawn_does_not_stop_others(self):
        monitor = ep.ProcessMonitor(check_interval=0)
        broken = self.manager(uuid='bbbbbbbb-4f89-41d3-9a0c-0305e82c3301')
        good = self.manager()
        for pm in (broken, good):
            pm.enable()
            monitor.register(pm)
        self.crash(broken)
        self.crash(good)
        broken._cmd_callback = lambda pid_file: ['nothing-with-uuid']
        self.assertEqual([good], monitor.check_once())
        self.assertEqual(0, broken.respawn_count)
        # Still registered: the next check tries again.
        self.assertIn(broken, monitor.managers)

    def test_thread_respawns_and_stops(self):
        monitor = ep.ProcessMonitor(check_interval=0.02)
        pm = self.manager()
        pm.enable()
        monitor.register(pm)
        monitor.start()
        self.addCleanup(monitor.stop, 5)
        self.assertTrue(monitor.running)
        old = pm.pid
        self.crash(pm)
        deadline = time.monotonic() + 5
        while pm.respawn_count == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(1, pm.respawn_count)
        self.assertNotEqual(old, pm.pid)
        monitor.stop(5)
        self.assertFalse(monitor.running)

    def test_zero_interval_starts_no_thread(self):
        monitor = ep.ProcessMonitor(check_interval=0)
        monitor.start()
        self.assertFalse(monitor.running)
        monitor.stop()

    def test_disable_racing_with_check_wins(self):
        """A check that starts before disable() must not bring the daemon back."""
        monitor = ep.ProcessMonitor(check_interval=0)
        pm = self.manager()
        pm.enable()
        monitor.register(pm)
        snapshot = monitor.managers   # the check already took its list
        pm.disable()
        for manager in snapshot:
            self.assertFalse(manager._respawn_if_dead(monitor, monitor.action))
        self.assertEqual(1, self.spawn.call_count)
