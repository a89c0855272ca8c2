"""``agentkit-metadata`` as a real process, as haproxy and Nova see it.

The agent runs against the fake neutron-server (a vhost of its own) whose
``get_ports`` answers like neutron 29's (tests/unit/test_neutron29_get_ports.py),
and a real stand-in Nova metadata API on 127.0.0.1 that checks the
signature with its own copy of the secret. Requests go to the unix socket
the way haproxy forwards them (tests/functional/metadata_client.py); one
test puts a real haproxy, running as nobody, in front.
"""

from __future__ import annotations

import grp
import http.client
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import uuid

from agentkit.conf import metadata as metadata_conf
from agentkit.rpc import metadata_api
from tests.functional import agent_process
from tests.functional import base
from tests.functional import fake_neutron
from tests.functional import fake_nova
from tests.functional import metadata_client

INSTANCE_ID_PATH = '/latest/meta-data/instance-id'
NOBODY = 65534


def _uuid() -> str:
    return str(uuid.uuid4())


class MetadataScenarioMixin:
    """The fake server and Nova, the scenario's ports, the agent's config;
    shared with tests/functional/test_metadata_abuse.py."""

    def setUp(self) -> None:
        super().setUp()
        self.configure(metadata_conf.register_metadata_opts, {})
        self.neutron = fake_neutron.FakeNeutron().start()
        self.addCleanup(self.neutron.stop)
        self.secret = 'secret-' + uuid.uuid4().hex
        self.nova = fake_nova.FakeNova(self.secret).start()
        self.addCleanup(lambda: self.nova.stop())
        # The proxies run as nobody: the socket's directory must be
        # traversable (mkdtemp makes it 0700).
        self.state = tempfile.mkdtemp(prefix='agentkit-md-', dir='/var/tmp')
        os.chmod(self.state, 0o755)
        self.addCleanup(shutil.rmtree, self.state, True)
        self.socket = os.path.join(self.state, 'metadata_proxy')
        self.host = self.short_name('akmd')
        self.build_scenario()

    def build_scenario(self) -> None:
        """Router R with interfaces on net1 and net2; net3 is not on R and
        reuses net1's addresses (a twin of vm1)."""
        self.router = _uuid()
        self.net1, self.net2, self.net3 = _uuid(), _uuid(), _uuid()
        self.vm1 = self.add_port(self.net1, '10.50.0.5', _uuid(), 'project-1')
        self.vm2 = self.add_port(self.net2, '10.60.0.7', _uuid(), 'project-2')
        self.twin = self.add_port(self.net3, '10.50.0.5', _uuid(), 'project-3')
        self.local = self.add_port(self.net1, '127.0.0.1', _uuid(), 'project-1')
        for net, ip in ((self.net1, '10.50.0.1'), (self.net2, '10.60.0.1')):
            self.add_port(net, ip, self.router, 'project-1',
                          device_owner='network:router_interface')
        for vm in (self.vm1, self.vm2, self.twin, self.local):
            self.nova.instances[vm['device_id']] = vm['project_id']

    def add_port(self, network_id: str, ip: str, device_id: str, project_id: str,
                 device_owner: str = 'compute:nova') -> dict:
        port = {'id': _uuid(), 'network_id': network_id, 'device_id': device_id,
                'device_owner': device_owner, 'project_id': project_id,
                'mac_address': 'fa:16:3e:%02x:%02x:%02x' % tuple(os.urandom(3)),
                'fixed_ips': [{'subnet_id': _uuid(), 'ip_address': ip}]}
        with self.neutron.lock:
            self.neutron.port_details[port['id']] = port
        return port

    def write_config(self, **options: object) -> str:
        default = {'transport_url': self.neutron.transport_url, 'host': self.host,
                   'state_path': self.state, 'nova_metadata_port': self.nova.port,
                   'metadata_proxy_shared_secret': self.secret}
        default.update(options)
        path = os.path.join(self.state, 'metadata_agent.ini')
        return base.write_config(path, {'DEFAULT': default, 'agent': {'report_interval': 30}})

    def start_agent(self, **options: object) -> agent_process.AgentProcess:
        path = self.write_config(**options)
        proc = agent_process.AgentProcess(
            'agentkit-metadata', '--config-file', path,
            log_path=self.get_temp_path('agentkit-metadata.log'))
        self.addCleanup(proc.kill)
        proc.wait_for_output('Serving metadata on')
        return proc

    def get(self, source: str, path: str = INSTANCE_ID_PATH, **kwargs) -> metadata_client.Answer:
        return metadata_client.proxy_request(self.socket, path, source, **kwargs)

    def get_ports_calls(self) -> int:
        return len(self.neutron.calls_of('get_ports'))


class MetadataAgentTest(MetadataScenarioMixin, base.AgentTestCase):

    # -- lookups ---------------------------------------------------------------
    def test_router_and_network_lookups(self) -> None:
        proc = self.start_agent()
        answer = self.get('10.50.0.5', router_id=self.router)
        self.assertEqual((200, self.vm1['device_id'].encode()), (answer.status, answer.body))
        # The router's lookup as neutron-metadata-agent makes it.
        calls = self.neutron.calls_of('get_ports')
        self.assertEqual({'device_id': [self.router],
                          'device_owner': list(metadata_api.ROUTER_INTERFACE_OWNERS)},
                         calls[0]['filters'])
        self.assertEqual({'network_id': sorted([self.net1, self.net2]),
                          'fixed_ips': {'ip_address': ['10.50.0.5']}}, calls[1]['filters'])
        sent = self.nova.requests_for(self.vm1['device_id'])[-1]
        self.assertEqual(fake_nova.FakeNova(self.secret).signature(self.vm1['device_id']),
                         sent['headers']['X-Instance-ID-Signature'])
        self.assertEqual('project-1', sent['headers']['X-Tenant-ID'])
        self.assertEqual('10.50.0.5', sent['headers']['X-Forwarded-For'])

        self.assertEqual(self.vm2['device_id'].encode(),
                         self.get('10.60.0.7', router_id=self.router).body)
        # net3 is not on the router: its twin of 10.50.0.5 is only found by network.
        self.assertEqual(self.twin['device_id'].encode(),
                         self.get('10.50.0.5', network_id=self.net3).body)
        self.assertEqual(self.vm1['device_id'].encode(),
                         self.get('10.50.0.5', network_id=self.net1).body)
        answer = self.get('10.50.0.5', '/openstack/latest/meta_data.json?x=1',
                          network_id=self.net1)
        self.assertEqual('application/json', answer.headers['content-type'])
        self.assertIn(b'"query": "x=1"', answer.body)

        # What a VM sends itself is never believed.
        answer = self.get('10.50.0.5', router_id=self.router, vm_headers=[
            ('X-Forwarded-For', '10.60.0.7'), ('X-Instance-ID', self.vm2['device_id']),
            ('X-Tenant-ID', 'project-2'), ('X-Instance-ID-Signature', 'f' * 64)])
        self.assertEqual(self.vm1['device_id'].encode(), answer.body)
        self.assertEqual(404, self.get('10.50.0.99', router_id=self.router).status)
        self.assertEqual(404, self.get('10.60.0.7', network_id=self.net1).status)
        self.assertEqual(400, self.get('10.50.0.5').status)

        # POST (the password) and HEAD pass through too.
        answer = self.get('10.50.0.5', '/openstack/latest/password', method='POST',
                          body=b'ciphertext', network_id=self.net1)
        self.assertEqual(200, answer.status)
        self.assertEqual(b'ciphertext', self.nova.passwords[self.vm1['device_id']])
        answer = self.get('10.50.0.5', method='HEAD', network_id=self.net1)
        self.assertEqual((200, b'', str(len(self.vm1['device_id']))),
                         (answer.status, answer.body, answer.headers['content-length']))

        # The secret is in no log line and no state report.
        state = self.neutron.wait_for_call(
            'report_state', lambda kw: kw['agent_state']['agent_state']['host'] == self.host)
        self.assertNotIn(self.secret, repr(state))
        self.assertNotIn(self.secret, proc.output())

    def test_an_unprivileged_proxy_can_connect(self) -> None:
        self.start_agent()
        st = os.stat(self.socket)
        self.assertEqual(0o664, stat.S_IMODE(st.st_mode))
        self.assertEqual(grp.getgrnam('nogroup').gr_gid, st.st_gid)
        # A bare HTTP request from a process running as nobody:nogroup.
        code = ('import socket, sys\n'
                's = socket.socket(socket.AF_UNIX)\n'
                's.settimeout(10)\n'
                's.connect(sys.argv[1])\n'
                's.sendall(b"GET /latest/meta-data/instance-id HTTP/1.1\\r\\nHost: x\\r\\n"\n'
                '          b"X-Neutron-Network-ID: " + sys.argv[2].encode() + b"\\r\\n"\n'
                '          b"X-Forwarded-For: 10.50.0.5\\r\\n\\r\\n")\n'
                'data = b""\n'
                'while chunk := s.recv(65536):\n'
                '    data += chunk\n'
                'head, _, body = data.partition(b"\\r\\n\\r\\n")\n'
                'print(head.split()[1].decode(), body.decode())\n')
        out = subprocess.run(['/usr/bin/python3', '-c', code, self.socket, self.net1],
                             user=NOBODY, group=NOBODY, extra_groups=[], capture_output=True,
                             text=True, timeout=30, cwd='/')
        self.assertEqual(f'200 {self.vm1["device_id"]}', out.stdout.strip(), out.stderr)

    def test_real_haproxy_as_nobody(self) -> None:
        """Neutron's proxy configuration in front: haproxy as nobody:nogroup,
        sets the router id and appends X-Forwarded-For after the VM's."""
        haproxy = shutil.which('haproxy')
        if haproxy is None:
            self.skipTest('haproxy is not installed')
        self.start_agent()
        listener = socket.socket()
        listener.bind(('127.0.0.1', 0))
        port = listener.getsockname()[1]
        listener.close()
        config = os.path.join(self.state, 'haproxy.cfg')
        with open(config, 'w') as f:
            f.write(f'''global
    user nobody
    group nogroup
    maxconn 64
defaults
    mode http
    option http-server-close
    option forwardfor
    retries 3
    timeout connect 5s
    timeout client 10s
    timeout server 10s
listen listener
    bind 127.0.0.1:{port}
    server metadata {self.socket}
    http-request del-header X-Neutron-Network-ID
    http-request set-header X-Neutron-Router-ID {self.router}
''')
        proc = subprocess.Popen([haproxy, '-db', '-f', config], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        self.addCleanup(lambda: (proc.kill(), proc.wait(10)))
        # haproxy's client is 127.0.0.1: "local", a VM port on net1.

        def fetch(headers: dict[str, str]) -> tuple[int, bytes]:
            conn = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
            try:
                conn.request('GET', INSTANCE_ID_PATH, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.read()
            finally:
                conn.close()
        base.wait_until(lambda: _port_open(port), message='haproxy listening')
        self.assertEqual((200, self.local['device_id'].encode()), fetch({}))
        # A VM forging every header still gets its own metadata.
        self.assertEqual((200, self.local['device_id'].encode()), fetch({
            'X-Forwarded-For': '10.60.0.7', 'X-Neutron-Router-ID': _uuid(),
            'X-Neutron-Network-ID': self.net2, 'X-Instance-ID': self.vm2['device_id'],
            'X-Tenant-ID': 'project-2', 'X-Instance-ID-Signature': 'f' * 64}))

    def test_eventlet_compatibility_mode_serves_too(self) -> None:
        proc = self.start_agent(concurrency_mode='eventlet')
        self.assertIn('concurrency: eventlet', proc.output())
        self.assertEqual([200] * 20, self.burst(20, '10.60.0.7', router_id=self.router))
        proc.signal(signal.SIGTERM)
        self.assertEqual(0, proc.wait(10))
        self.assertFalse(os.path.exists(self.socket))

    # -- Nova and neutron-server failing ------------------------------------------
    def test_nova_and_neutron_failures(self) -> None:
        self.start_agent(metadata_rpc_timeout=1)
        self.assertEqual(200, self.get('10.50.0.5', network_id=self.net1).status)
        # Nova does not share our secret: its 403 and its body pass through.
        self.nova.secret = 'another-secret'
        answer = self.get('10.50.0.5', network_id=self.net1)
        self.assertEqual((403, b'Invalid proxy request signature.'),
                         (answer.status, answer.body))
        self.nova.secret = self.secret
        # Nova stuck: 503 within the default 1.5 s timeout.
        self.nova.delay = 10
        started = time.monotonic()
        self.assertEqual(503, self.get('10.50.0.5', network_id=self.net1).status)
        self.assertLess(time.monotonic() - started, 2.0)
        # Nova down: 503 at once.
        self.nova.stop()
        started = time.monotonic()
        self.assertEqual(503, self.get('10.50.0.5', network_id=self.net1).status)
        self.assertLess(time.monotonic() - started, 2.0)
        # neutron-server does not answer get_ports: 503 after the RPC timeout.
        plugin_server = self.neutron._servers[1]
        plugin_server.stop()
        plugin_server.wait()
        started = time.monotonic()
        self.assertEqual(503, self.get('10.60.0.7', network_id=self.net2).status)
        self.assertLess(time.monotonic() - started, 3.0)

    # -- the cache ---------------------------------------------------------------------
    def burst(self, count: int, source: str, **kwargs) -> list[int]:
        statuses: list[int] = []
        barrier = threading.Barrier(count)

        def one() -> None:
            barrier.wait(10)
            statuses.append(self.get(source, **kwargs).status)
        threads = [threading.Thread(target=one) for _ in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        return statuses

    def test_a_burst_costs_one_lookup_with_the_cache_and_fifty_without(self) -> None:
        proc = self.start_agent()
        before = self.get_ports_calls()
        self.assertEqual([200] * 50, self.burst(50, '10.50.0.5', network_id=self.net1))
        self.assertEqual(1, self.get_ports_calls() - before)
        before = self.get_ports_calls()
        self.assertEqual([200] * 50, self.burst(50, '10.60.0.7', router_id=self.router))
        self.assertEqual(2, self.get_ports_calls() - before)  # router's networks, then the port
        # metadata_cache_ttl = 0 (a SIGHUP applies it): every request asks.
        self.write_config(metadata_cache_ttl=0)
        proc.signal(signal.SIGHUP)
        proc.wait_for_output('reloaded its configuration')
        before = self.get_ports_calls()
        self.assertEqual([200] * 50, self.burst(50, '10.50.0.5', network_id=self.net1))
        self.assertEqual(50, self.get_ports_calls() - before)

    # -- restarts ------------------------------------------------------------------------
    def test_requests_fail_fast_while_the_agent_restarts(self) -> None:
        proc = self.start_agent()
        outcomes: list[tuple[str, float]] = []
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    status = str(self.get('10.50.0.5', network_id=self.net1, timeout=10).status)
                except OSError as exc:
                    status = type(exc).__name__
                outcomes.append((status, time.monotonic() - started))
                time.sleep(0.02)
        thread = threading.Thread(target=hammer)
        thread.start()
        self.addCleanup(stop.set)
        try:
            time.sleep(0.3)
            proc.signal(signal.SIGTERM)
            self.assertEqual(0, proc.wait(10))
            self.assertFalse(os.path.exists(self.socket))
            time.sleep(0.5)  # proxies keep trying while no agent runs
            down = len(outcomes)
            self.start_agent()
            restarted = len(outcomes)
            # Right after the start the next request succeeds.
            self.assertEqual(200, self.get('10.50.0.5', network_id=self.net1).status)
            time.sleep(0.3)
        finally:
            stop.set()
            thread.join(15)
        kinds = {status for status, _ in outcomes}
        self.assertIn('200', kinds)
        self.assertTrue(kinds & {'FileNotFoundError', 'ConnectionRefusedError'}, kinds)
        # Nothing hung: every attempt was answered or refused quickly.
        slow = [(s, round(d, 2)) for s, d in outcomes if d > 1.0]
        self.assertEqual([], slow)
        self.assertEqual({'200'}, {s for s, _ in outcomes[restarted + 1:]} or {'200'})
        self.assertEqual(set(), {s for s, _ in outcomes[:down]} - {
            '200', 'FileNotFoundError', 'ConnectionRefusedError', 'ConnectionResetError',
            'RemoteDisconnected'})

    def test_a_stale_socket_of_a_killed_agent_does_not_stop_the_next(self) -> None:
        proc = self.start_agent()
        self.assertEqual(200, self.get('10.50.0.5', network_id=self.net1).status)
        proc.kill()  # SIGKILL: no cleanup, the socket file stays
        self.assertTrue(stat.S_ISSOCK(os.lstat(self.socket).st_mode))
        started = time.monotonic()
        self.assertRaises(ConnectionRefusedError, self.get, '10.50.0.5', network_id=self.net1)
        self.assertLess(time.monotonic() - started, 0.5)
        new = self.start_agent()
        self.assertIn('Replacing the stale socket', new.output())
        self.assertEqual(200, self.get('10.50.0.5', network_id=self.net1).status)


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(('127.0.0.1', port), timeout=0.2).close()
        return True
    except OSError:
        return False
