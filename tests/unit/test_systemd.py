"""systemd notifications: the protocol (a real datagram socket), readiness
after the first sync's work, the watchdog only while the agent is alive."""

import os
import socket
import tempfile
import threading
import time
from unittest import mock

from agentkit import service
from agentkit.agent import base as agent_base
from agentkit.agent import work_queue as wq
from agentkit.lib import systemd
from tests import base


class NotifySocket:
    """A bound AF_UNIX datagram socket standing in for systemd."""

    def __init__(self, test):
        tmp = tempfile.mkdtemp()
        self.path = os.path.join(tmp, 'notify')
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0)
        test.addCleanup(self.sock.close)

    def messages(self):
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return out


class NotifierTest(base.TestCase):

    def test_without_notify_socket_nothing_is_sent(self):
        n = systemd.Notifier({})
        self.assertFalse(n.enabled)
        self.assertIsNone(n.watchdog_interval)
        self.assertFalse(n.send('STATUS=x'))
        with mock.patch('oslo_service.systemd.notify') as oslo_notify:
            n.ready('ready')
        oslo_notify.assert_not_called()

    def test_messages_reach_the_socket(self):
        sock = NotifySocket(self)
        n = systemd.Notifier({'NOTIFY_SOCKET': sock.path})
        n.status('starting')
        n.watchdog()
        n.stopping()
        self.assertEqual(['STATUS=starting', 'WATCHDOG=1', 'STOPPING=1\nSTATUS=stopping'],
                         sock.messages())

    def test_ready_goes_through_oslo_service(self):
        sock = NotifySocket(self)
        with mock.patch.dict(os.environ, {'NOTIFY_SOCKET': sock.path}):
            n = systemd.Notifier()
            n.ready('ready; 3 networks')
        # oslo.service's notify() sent READY=1; NOTIFY_SOCKET is kept for
        # the later messages (notify_once() would have removed it).
        self.assertEqual(['READY=1', 'STATUS=ready; 3 networks'], sock.messages())

    def test_abstract_socket(self):
        name = f'@agentkit-test-{os.getpid()}-{time.monotonic_ns()}'
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind('\0' + name[1:])
        self.addCleanup(sock.close)
        self.assertTrue(systemd.Notifier({'NOTIFY_SOCKET': name}).send('WATCHDOG=1'))
        self.assertEqual(b'WATCHDOG=1', sock.recv(100))

    def test_unreachable_socket_is_not_an_error(self):
        n = systemd.Notifier({'NOTIFY_SOCKET': '/nonexistent/notify'})
        self.assertFalse(n.send('STATUS=x'))

    def test_watchdog_settings(self):
        env = {'NOTIFY_SOCKET': '/x', 'WATCHDOG_USEC': '3000000'}
        n = systemd.Notifier(env)
        self.assertEqual(3.0, n.watchdog_timeout)
        self.assertEqual(1.5, n.watchdog_interval)
        # for another process (a child that inherited the environment)
        n = systemd.Notifier(dict(env, WATCHDOG_PID=str(os.getpid() + 1)))
        self.assertIsNone(n.watchdog_interval)
        n = systemd.Notifier(dict(env, WATCHDOG_PID=str(os.getpid())))
        self.assertEqual(1.5, n.watchdog_interval)
        for bad in ('0', 'soon', ''):
            self.assertIsNone(systemd.Notifier(dict(env, WATCHDOG_USEC=bad)).watchdog_interval)
        self.assertIsNone(systemd.Notifier({'WATCHDOG_USEC': '3000000'}).watchdog_interval)


class FakeAgent(agent_base.Agent):
    binary = 'agentkit-fake'
    agent_type = 'Fake agent'

    def load_drivers(self):
        self.synced = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_sync = None

    def rpc_topics(self):
        return {}

    def get_configurations(self):
        return {'networks': 2, 'ports': 5, 'log_agent_heartbeats': False,
                'dhcp_driver': 'dnsmasq', 'dhcp_lease_duration': 86400}

    def sync_state(self):
        if self.fail_sync is not None:
            raise self.fail_sync
        for rid in ('a', 'b', 'c'):
            self.queue.put(wq.ResourceUpdate(rid, 'sync', wq.PRIORITY_SYNC))

    def process_update(self, update):
        self.gate.wait(10)
        self.synced.append(update.resource_id)

    def run_loops(self):
        """The parts of start() that need no RPC: workers and the sync loop."""
        self.queue.start()
        self._sync_thread = threading.Thread(target=self._sync_loop, daemon=True)
        self._sync_thread.start()

    def halt(self):
        self._stop_event.set()
        self._resync_event.set()
        self.queue.stop(2)
        if self._sync_thread is not None:
            self._sync_thread.join(2)


class ReadinessTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.agent = FakeAgent(self.conf)
        self.addCleanup(self.agent.halt)

    def test_ready_only_after_the_first_syncs_work_is_done(self):
        self.agent.gate.clear()  # handlers block
        self.assertFalse(self.agent.is_ready())
        self.assertEqual('starting: first full sync', self.agent.status())
        self.agent.run_loops()
        base_deadline = time.monotonic() + 5
        while self.agent.fullsyncs_done == 0 and time.monotonic() < base_deadline:
            time.sleep(0.01)
        self.assertEqual(1, self.agent.fullsyncs_done)
        self.assertFalse(self.agent.is_ready())
        self.assertIn('first full sync done, applying', self.agent.status())
        self.agent.gate.set()
        self.assertTrue(self.agent.queue.wait_idle(5))
        self.assertTrue(self.agent.is_ready())
        self.assertEqual(['a', 'b', 'c'], sorted(self.agent.synced))
        self.assertEqual('ready', self.agent.status())

    def test_failing_first_sync_is_not_ready_and_says_why(self):
        self.agent.fail_sync = RuntimeError('server unreachable')
        self.agent.run_loops()
        deadline = time.monotonic() + 5
        while self.agent._fullsync_failures == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertFalse(self.agent.is_ready())
        self.assertIn('starting: full sync failed 1 time(s), retrying: '
                      'RuntimeError: server unreachable', self.agent.status())

    def test_work_queued_after_the_sync_is_not_waited_for(self):
        self.agent.run_loops()
        self.assertTrue(self._wait(lambda: self.agent.fullsyncs_done))
        self.assertTrue(self.agent.queue.wait_idle(5))
        self.agent.gate.clear()
        self.agent.queue.put(wq.ResourceUpdate('later', 'sync'))
        self.assertTrue(self.agent.is_ready())
        self.agent.gate.set()

    def test_health(self):
        self.assertEqual('the full sync thread is not running', self.agent.health())
        self.agent.run_loops()
        self.assertIsNone(self.agent.health(stall_after=1.0))
        self.agent.gate.clear()
        self.agent.queue.put(wq.ResourceUpdate('stuck', 'apply'))
        self.assertTrue(self._wait(lambda: self.agent.queue.longest_running()))
        self.assertIsNone(self.agent.health(stall_after=30.0))
        time.sleep(0.3)
        self.assertRegex(self.agent.health(stall_after=0.2),
                         r'apply of stuck has been running for \d+s')
        self.agent.gate.set()
        self.assertTrue(self.agent.queue.wait_idle(5))
        self.assertIsNone(self.agent.health(stall_after=0.2))
        self.agent.queue.stop(2)
        self.assertEqual('a work queue worker thread is not running',
                         self.agent.health())

    def test_resource_counts_are_the_reported_counts(self):
        self.assertEqual({'networks': 2, 'ports': 5}, self.agent.resource_counts())

    @staticmethod
    def _wait(predicate, timeout=5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.01)
        return None


class StubAgent:
    """What SystemdSupervisor asks of an agent, under the test's control."""

    def __init__(self):
        self.ready = False
        self.problem = None
        self.text = 'starting: first full sync'
        self.stall_after = []

    def is_ready(self):
        return self.ready

    def status(self):
        return self.text

    def health(self, stall_after=None):
        self.stall_after.append(stall_after)
        return self.problem


class SupervisorTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.sock = NotifySocket(self)
        self.now = 100.0
        self.agent = StubAgent()

    def supervisor(self, **env):
        notifier = systemd.Notifier(dict({'NOTIFY_SOCKET': self.sock.path}, **env))
        return service.SystemdSupervisor(notifier, self.agent, clock=lambda: self.now)

    def test_ready_once_and_status_on_change(self):
        sup = self.supervisor()
        sup.tick()
        sup.tick()
        self.assertEqual(['STATUS=starting: first full sync'], self.sock.messages())
        self.agent.ready = True
        self.agent.text = 'ready'
        sup.tick()
        sup.tick()
        self.assertEqual(['READY=1', 'STATUS=ready'], self.sock.messages())
        self.agent.text = 'ready; full sync failed 1 time(s), retrying: x'
        sup.tick()
        self.assertEqual(['STATUS=ready; full sync failed 1 time(s), retrying: x'],
                         self.sock.messages())
        self.assertEqual([], self.agent.stall_after)  # no watchdog: no checks
        self.assertEqual(service.TICK, sup.wait_time())

    def test_watchdog_every_half_timeout_while_healthy(self):
        sup = self.supervisor(WATCHDOG_USEC='4000000')
        self.assertEqual(0.5, sup.wait_time())  # 2 s between pets, 4 s timeout
        self.assertEqual(0.25, self.supervisor(WATCHDOG_USEC='1000000').wait_time())
        pets = []
        for step in range(10):  # 5 s at 0.5 s ticks
            sup.tick()
            pets += [m for m in self.sock.messages() if m == 'WATCHDOG=1']
            self.now += 0.5
        self.assertEqual(3, len(pets))  # at 0, 2 and 4 s
        self.assertEqual({service.STALL_AFTER_MIN}, set(self.agent.stall_after))

    def test_unhealthy_agent_stops_petting_and_says_why(self):
        sup = self.supervisor(WATCHDOG_USEC='2000000')
        sup.tick()
        self.assertIn('WATCHDOG=1', self.sock.messages())
        self.agent.problem = 'the full sync thread is not running'
        for _ in range(10):
            self.now += 1
            sup.tick()
        messages = self.sock.messages()
        self.assertNotIn('WATCHDOG=1', messages)
        self.assertEqual(['STATUS=unhealthy: the full sync thread is not running'],
                         messages)
        self.assertIn('Not petting the systemd watchdog', self.log.output)
        self.agent.problem = None
        self.now += 1
        sup.tick()
        self.assertEqual(['STATUS=starting: first full sync', 'WATCHDOG=1'],
                         self.sock.messages())

    def test_without_notify_socket_readiness_is_still_checked(self):
        agent = mock.Mock()
        sup = service.SystemdSupervisor(systemd.Notifier({}), agent)
        sup.tick()
        agent.is_ready.assert_called_once_with()
        agent.health.assert_not_called()
        agent.status.assert_not_called()
