"""Operations, as systemd and an operator see an agent process: READY only
once the first sync's work is on the host, WATCHDOG=1 at half
WATCHDOG_USEC, STOPPING=1 on SIGTERM, and Guru Meditation Reports on SIGUSR2
(to stderr, or to [oslo_reports] log_dir) while the agent keeps serving.

The test binds the datagram socket systemd would (NOTIFY_SOCKET) and runs
the real console scripts against a fake neutron-server on RabbitMQ.
"""

import glob
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid

import fixtures

from agentkit.conf import metadata as metadata_conf
from agentkit.lib import external_process
from agentkit.lib.ovs import connection as ovs_connection
from tests.functional import agent_process
from tests.functional import base
from tests.functional import fake_neutron

STATE_ROOT = '/var/lib/agentkit-test'
WATCHDOG_USEC = 2_000_000  # pets expected every second


class NotifySocket:
    """What systemd binds: one AF_UNIX datagram socket; keeps arrival times."""

    def __init__(self, test: base.AgentTestCase) -> None:
        path = tempfile.mkdtemp(prefix='agentkit-notify-')
        test.addCleanup(shutil.rmtree, path, True)
        self.path = os.path.join(path, 'notify')
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        test.addCleanup(self.sock.close)
        self.received: list[tuple[float, str]] = []

    def receive(self, seconds: float) -> list[tuple[float, str]]:
        """Every message that arrives within ``seconds``."""
        got = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            got.append((time.monotonic(), data))
        self.received += got
        return got

    def wait_for(self, message: str, timeout: float,
                 proc: agent_process.AgentProcess) -> float:
        """Time ``message`` (one line of a datagram) arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, data in self.receive(min(0.5, deadline - time.monotonic())):
                if message in data.split('\n'):
                    return at
            if proc.proc.poll() is not None:
                raise AssertionError(f'agent exited before sending {message}:\n'
                                     f'{proc.output()}')
        raise AssertionError(f'{message} not received in {timeout}s; got '
                             f'{[m for _, m in self.received]}:\n{proc.output()}')

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ, NOTIFY_SOCKET=self.path)
        env.update(extra)
        return env


class DhcpAgentOperationsTest(base.AgentTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.configure(metadata_conf.register_metadata_opts, {})
        self.neutron = fake_neutron.FakeNeutron().start()
        self.addCleanup(self.neutron.stop)
        os.makedirs(STATE_ROOT, mode=0o755, exist_ok=True)
        os.chmod(STATE_ROOT, 0o755)  # dnsmasq reads its files as nobody
        self.state_path = os.path.join(STATE_ROOT, uuid.uuid4().hex[:12])
        os.makedirs(self.state_path, mode=0o755)
        self.addCleanup(shutil.rmtree, self.state_path, True)
        self.host = self.short_name('akops')
        br = self.short_name('akopsbr')
        ovs = ovs_connection.get_connection()
        ovs.bridge(br, 'netdev').create()
        self.addCleanup(ovs.bridge(br).delete)
        self.config = base.write_config(self.get_temp_path('dhcp.ini'), {
            'DEFAULT': {'transport_url': self.neutron.transport_url,
                        'host': self.host, 'state_path': self.state_path,
                        'interface_driver': 'openvswitch', 'dhcp_driver': 'dnsmasq'},
            'agent': {'report_interval': 5},
            'ovs': {'integration_bridge': br, 'datapath_type': 'netdev'},
        })
        self.notify = NotifySocket(self)

    def cleanup_network(self, net_id: str) -> None:
        base.remove_dhcp_of(net_id)

    def dnsmasq_pid(self, net_id: str) -> int | None:
        pid = external_process.read_pid_file(
            os.path.join(self.state_path, 'dhcp', net_id, 'pid'))
        return pid if pid and os.path.exists(f'/proc/{pid}') else None

    def test_ready_after_first_sync_watchdog_report_and_stop(self) -> None:
        net = self.neutron.add_network()
        self.neutron.add_subnet(net['id'], '10.254.40.0/24', '10.254.40.1')
        self.addCleanup(self.cleanup_network, net['id'])

        # The server is slow to give the network its DHCP port: the first
        # full sync is done (queued) well before the network is applied.
        gate = threading.Event()
        self.addCleanup(gate.set)
        original = fake_neutron.PluginEndpoint.create_dhcp_port

        def slow_create_dhcp_port(endpoint, context, port, host):
            gate.wait(30)
            return original(endpoint, context, port, host)
        self.useFixture(fixtures.MockPatchObject(
            fake_neutron.PluginEndpoint, 'create_dhcp_port', slow_create_dhcp_port))

        proc = agent_process.AgentProcess(
            'agentkit-dhcp', '--config-file', self.config,
            log_path=self.get_temp_path('agentkit-dhcp.log'),
            env=self.notify.env(WATCHDOG_USEC=str(WATCHDOG_USEC)))
        self.addCleanup(proc.kill)
        proc.wait_for_output('Full sync (agent start) done', timeout=60)
        early = [m for _, m in self.notify.receive(4.0)]
        self.assertNotIn('READY=1', '\n'.join(early).split('\n'), proc.output())
        self.assertIn('STATUS=first full sync done, applying 1 queued update(s)',
                      [m for _, m in self.notify.received])
        self.assertGreaterEqual(early.count('WATCHDOG=1'), 2, early)  # alive meanwhile
        self.assertIsNone(self.dnsmasq_pid(net['id']))
        gate.set()

        # READY: by then the network's dnsmasq serves, not just "sync queued".
        self.notify.wait_for('READY=1', 60, proc)
        pid = self.dnsmasq_pid(net['id'])
        self.assertIsNotNone(pid, 'READY=1 before the network was applied')
        self.assertIn('Full sync (agent start) done', proc.output())
        self.assertIn('agentkit-dhcp is ready: first full sync applied', proc.output())

        # Pets keep coming at about WATCHDOG_USEC/2.
        pets = [at for at, m in self.notify.receive(5.0) if m == 'WATCHDOG=1']
        self.assertGreaterEqual(len(pets), 4, self.notify.received)
        gaps = [b - a for a, b in zip(pets, pets[1:])]
        self.assertLess(max(gaps), WATCHDOG_USEC / 1e6 * 0.8, gaps)
        self.assertGreater(min(gaps), WATCHDOG_USEC / 1e6 * 0.3, gaps)

        # SIGUSR2: a report on stderr, and the agent goes on.
        proc.signal(signal.SIGUSR2)
        proc.wait_for_output('====                           Resources')
        report = proc.output()
        for title in ('Package', 'Threads', 'Configuration', 'Agent',
                      'Work Queue', 'Drivers', 'Resources'):
            self.assertRegex(report, rf'\n====\s+{title}\s+====\n')
        self.assertIn('agentkit.dhcp_drivers:dnsmasq = drivers.dhcp.dnsmasq.driver.DnsmasqDriver',
                      report)
        self.assertIn('agentkit.interface_drivers:openvswitch = '
                      'drivers.interface.openvswitch.OVSInterfaceDriver', report)
        self.assertRegex(report, r'\nnetworks = 1\n')
        self.assertRegex(report, r'\nsubnets = 1\n')
        self.assertRegex(report, r'\nports = 1\n')  # the DHCP port
        self.assertIn('pending_total = 0', report)
        self.assertIn('status = ready', report)
        mark = self.neutron.mark()
        self.notify.wait_for('WATCHDOG=1', 3, proc)
        self.neutron.wait_for_call(
            'report_state', lambda kw: kw['agent_state']['agent_state']['host'] == self.host,
            since=mark, timeout=15)
        self.assertIsNone(proc.proc.poll())

        # SIGTERM: STOPPING=1; dnsmasq, in a session of its own, stays; the
        # privsep daemons go by themselves (what KillMode=process relies on).
        self.assertNotEqual(os.getsid(proc.proc.pid), os.getsid(pid))
        # (privsep-helper gets the agent's --config-file; it detaches from it)
        helpers = [p for p in base.pids_with(self.config) if p != proc.proc.pid]
        self.assertEqual(2, len(helpers), 'network and daemons privsep daemons')
        proc.signal(signal.SIGTERM)
        self.notify.wait_for('STOPPING=1', 10, proc)
        self.assertEqual(0, proc.wait(15), proc.output())
        self.assertEqual(pid, self.dnsmasq_pid(net['id']))
        base.wait_until(lambda: not any(os.path.exists(f'/proc/{h}') for h in helpers),
                        timeout=10)


class MetadataAgentOperationsTest(base.AgentTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.configure(metadata_conf.register_metadata_opts, {})
        self.neutron = fake_neutron.FakeNeutron().start()
        self.addCleanup(self.neutron.stop)
        self.state = tempfile.mkdtemp(prefix='agentkit-ops-', dir='/var/tmp')
        os.chmod(self.state, 0o755)
        self.addCleanup(shutil.rmtree, self.state, True)
        self.reports = os.path.join(self.state, 'reports')
        os.makedirs(self.reports)
        self.socket_path = os.path.join(self.state, 'metadata_proxy')
        self.config = base.write_config(os.path.join(self.state, 'metadata.ini'), {
            'DEFAULT': {'transport_url': self.neutron.transport_url,
                        'host': self.short_name('akopsmd'), 'state_path': self.state,
                        'metadata_proxy_socket': self.socket_path},
            'oslo_reports': {'log_dir': self.reports},
        })
        self.notify = NotifySocket(self)

    def test_ready_once_listening_and_report_to_log_dir(self) -> None:
        proc = agent_process.AgentProcess(
            'agentkit-metadata', '--config-file', self.config,
            log_path=os.path.join(self.state, 'agentkit-metadata.log'),
            env=self.notify.env())
        self.addCleanup(proc.kill)
        self.notify.wait_for('READY=1', 30, proc)
        # ready means the proxies can connect
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(self.socket_path)
        client.close()
        self.assertNotIn('WATCHDOG=1', [m for _, m in self.notify.received])  # not asked for

        proc.signal(signal.SIGUSR2)
        deadline = time.monotonic() + 15
        while not (files := glob.glob(os.path.join(
                self.reports, 'agentkit-metadata_gurumeditation_*'))):
            self.assertLess(time.monotonic(), deadline, proc.output())
            time.sleep(0.2)
        time.sleep(0.5)  # written in one go, but let it finish
        with open(files[0]) as f:
            report = f.read()
        for title in ('Package', 'Threads', 'Configuration', 'Agent',
                      'Work Queue', 'Drivers', 'Resources'):
            self.assertRegex(report, rf'\n====\s+{title}\s+====\n')
        self.assertIn('binary = agentkit-metadata', report)
        self.assertIn('product = agentkit-metadata', report)
        self.assertNotIn('Guru Meditation', proc.output())  # went to the file

        # still serving
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(self.socket_path)
        client.close()
        proc.signal(signal.SIGTERM)
        self.notify.wait_for('STOPPING=1', 10, proc)
        self.assertEqual(0, proc.wait(15), proc.output())
