"""The metadata agent's request handling, without RabbitMQ or root.

The lookup RPC is mocked; Nova is the real stand-in HTTP server on
127.0.0.1 (tests/functional/fake_nova.py) and the unix-socket server runs in
a temporary directory, so headers, signatures, timeouts and status codes are
checked on real HTTP exchanges.
"""

from __future__ import annotations

import email.message
import grp
import os
import pwd
import socket
import stat
import threading
import time
import uuid
from unittest import mock

import fixtures
import oslo_messaging

from agentkit.agent import metadata
from agentkit.agent import metadata_lookup
from agentkit.agent import metadata_server
from agentkit.agent import nova_metadata
from agentkit.conf import metadata as metadata_conf
from tests import base
from tests.functional import fake_nova
from tests.functional import metadata_client

SECRET = 'the-shared-secret-' + uuid.uuid4().hex


def _uuid() -> str:
    return str(uuid.uuid4())


def headers(*pairs: tuple[str, str]) -> email.message.Message:
    msg = email.message.Message()
    for name, value in pairs:
        msg[name] = value
    return msg


def port(network_id: str, device_id: str, project_id: str = 'p1', **extra) -> dict:
    return dict({'id': _uuid(), 'network_id': network_id, 'device_id': device_id,
                 'project_id': project_id, 'tenant_id': project_id}, **extra)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MetadataTestCase(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        metadata_conf.register_metadata_opts(self.conf)
        self.conf.set_override('metadata_proxy_shared_secret', SECRET)


class SignatureTest(base.TestCase):

    def test_rfc4231_vector(self) -> None:
        # RFC 4231 test case 2 (HMAC-SHA-256, key "Jefe").
        self.assertEqual(
            '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843',
            nova_metadata.sign_instance_id('Jefe', 'what do ya want for nothing?'))

    def test_neutron_vector(self) -> None:
        # Computed with neutron 29's neutron.common.utils.sign_instance_id
        # (a non-ASCII secret: both encode it as UTF-8).
        self.assertEqual(
            'b6f26cf0c23d0faea355ea593bcfce3db74e0f95e1b255b1f4cf8cd719d9e411',
            nova_metadata.sign_instance_id('s3cr\u00e9t', '0b7f3a8c-6f0e-4c1f-9a43-1a2b3c4d5e6f'))


class TrustedSourceTest(base.TestCase):
    """Only haproxy's headers identify the requester."""

    def test_the_last_forwarded_for_is_haproxys(self) -> None:
        router = _uuid()
        source = metadata_server.trusted_source(headers(
            ('X-Forwarded-For', '10.0.0.99'),   # the VM's own, forged
            ('X-Neutron-Router-ID', router),
            ('X-Forwarded-For', '10.0.0.5')))   # appended by haproxy
        self.assertEqual(metadata_lookup.Source('10.0.0.5', None, router, None), source)
        source = metadata_server.trusted_source(headers(
            ('X-Forwarded-For', '10.0.0.99, 10.0.0.6'), ('X-Neutron-Network-ID', router)))
        self.assertEqual('10.0.0.6', source.address)
        self.assertEqual(router, source.network_id)

    def test_ipv6_sources(self) -> None:
        net = _uuid()
        mapped = metadata_server.trusted_source(headers(
            ('X-Forwarded-For', '::ffff:10.1.2.3'), ('X-Neutron-Network-ID', net)))
        self.assertEqual(('10.1.2.3', None), (mapped.address, mapped.mac))
        link_local = metadata_server.trusted_source(headers(
            ('X-Forwarded-For', 'fe80::f816:3eff:fe84:f82'), ('X-Neutron-Network-ID', net)))
        self.assertEqual('fa:16:3e:84:0f:82', link_local.mac)
        slaac = metadata_server.trusted_source(headers(
            ('X-Forwarded-For', 'fd00:c5:9d:0:f816:3eff:fe84:f82'),
            ('X-Neutron-Network-ID', net)))
        self.assertIsNone(slaac.mac)

    def test_rejected(self) -> None:
        r, n = _uuid(), _uuid()
        for bad in ([('X-Neutron-Router-ID', r)],
                    [('X-Forwarded-For', '10.0.0.5')],
                    [('X-Forwarded-For', '10.0.0.5'), ('X-Neutron-Router-ID', r),
                     ('X-Neutron-Network-ID', n)],
                    [('X-Forwarded-For', '10.0.0.5'), ('X-Neutron-Router-ID', r),
                     ('X-Neutron-Router-ID', _uuid())],
                    [('X-Forwarded-For', '10.0.0.5'), ('X-Neutron-Router-ID', 'qrouter-x')],
                    [('X-Forwarded-For', 'not-an-ip'), ('X-Neutron-Router-ID', r)],
                    [('X-Forwarded-For', 'fe80::1'), ('X-Neutron-Router-ID', r)]):
            with self.subTest(headers=bad):
                self.assertRaises(metadata_server.BadRequest,
                                  metadata_server.trusted_source, headers(*bad))

    def test_request_target(self) -> None:
        self.assertEqual('/latest/meta-data/?a=1',
                         metadata_server.request_target('/latest/meta-data/?a=1'))
        self.assertEqual('/latest?x=y',
                         metadata_server.request_target('http://169.254.169.254/latest?x=y'))


class LookupCacheTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.clock = FakeClock()
        self.ttl = 5.0
        self.cache = metadata_lookup.LookupCache(lambda: self.ttl, self.clock)

    def test_a_concurrent_burst_costs_one_load(self) -> None:
        release = threading.Event()
        loads = []

        def load():
            loads.append(1)
            release.wait(5)
            return 'instance'

        results = []
        threads = [threading.Thread(target=lambda: results.append(self.cache.get('k', load)))
                   for _ in range(50)]
        for t in threads:
            t.start()
        time.sleep(0.2)  # every thread is waiting for the one load by now
        release.set()
        for t in threads:
            t.join(5)
        self.assertEqual(['instance'] * 50, results)
        self.assertEqual(1, len(loads))
        # ... and later requests within the TTL cost nothing.
        self.assertEqual('instance', self.cache.get('k', lambda: self.fail('loaded')))

    def test_expiry(self) -> None:
        values = iter(['first', 'second'])
        self.assertEqual('first', self.cache.get('k', lambda: next(values)))
        self.clock.now += 4.9
        self.assertEqual('first', self.cache.get('k', lambda: next(values)))
        self.clock.now += 0.2
        self.assertEqual('second', self.cache.get('k', lambda: next(values)))

    def test_ttl_zero_asks_every_time(self) -> None:
        self.ttl = 0
        calls = []
        for _ in range(3):
            self.cache.get('k', lambda: calls.append(1) or 'v')
        self.assertEqual(3, len(calls))

    def test_misses_and_errors_are_not_kept(self) -> None:
        calls = []
        self.cache.get('k', lambda: calls.append(1), keep=lambda v: v is not None)
        self.cache.get('k', lambda: calls.append(1), keep=lambda v: v is not None)
        self.assertEqual(2, len(calls))

        def boom():
            raise metadata_lookup.LookupUnavailable('down')
        self.assertRaises(metadata_lookup.LookupUnavailable, self.cache.get, 'e', boom)
        self.assertEqual('ok', self.cache.get('e', lambda: 'ok'))

    def test_followers_share_the_leaders_error(self) -> None:
        release = threading.Event()
        loads = []

        def load():
            loads.append(1)
            release.wait(5)
            raise metadata_lookup.LookupUnavailable('neutron-server is down')

        errors = []

        def get():
            try:
                self.cache.get('k', load)
            except metadata_lookup.LookupUnavailable as exc:
                errors.append(exc)
        threads = [threading.Thread(target=get) for _ in range(10)]
        for t in threads:
            t.start()
        time.sleep(0.2)
        release.set()
        for t in threads:
            t.join(5)
        self.assertEqual(1, len(loads))
        self.assertEqual(10, len(errors))


class InstanceLookupTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.api = mock.Mock()
        self.ttl = 5
        self.clock = FakeClock()
        self.lookup = metadata_lookup.InstanceLookup(self.api, lambda: self.ttl,
                                                     lambda: 3, self.clock)
        self.router, self.net1, self.net2 = _uuid(), _uuid(), _uuid()
        self.api.get_router_interfaces.return_value = [
            port(self.net1, self.router, device_owner='network:router_interface'),
            port(self.net2, self.router, device_owner='network:router_interface')]
        self.vm = port(self.net1, _uuid(), 'proj')
        self.api.get_ports_by_address.return_value = [self.vm]

    def test_router_lookup_then_cache(self) -> None:
        source = metadata_lookup.Source('10.0.0.5', router_id=self.router)
        expected = metadata_lookup.Instance(self.vm['device_id'], 'proj')
        self.assertEqual(expected, self.lookup.lookup(source))
        self.api.get_router_interfaces.assert_called_once_with(self.router, timeout=3)
        self.api.get_ports_by_address.assert_called_once_with(
            sorted([self.net1, self.net2]), ip_address='10.0.0.5', mac_address=None,
            timeout=3)
        for _ in range(20):
            self.assertEqual(expected, self.lookup.lookup(source))
        self.assertEqual(1, self.api.get_router_interfaces.call_count)
        self.assertEqual(1, self.api.get_ports_by_address.call_count)
        self.clock.now += 6
        self.lookup.lookup(source)
        self.assertEqual(2, self.api.get_ports_by_address.call_count)

    def test_network_lookup_is_one_rpc(self) -> None:
        source = metadata_lookup.Source('10.0.0.5', network_id=self.net1)
        self.assertEqual(self.vm['device_id'], self.lookup.lookup(source).instance_id)
        self.api.get_router_interfaces.assert_not_called()
        self.api.get_ports_by_address.assert_called_once_with(
            [self.net1], ip_address='10.0.0.5', mac_address=None, timeout=3)

    def test_link_local_source_is_looked_up_by_mac(self) -> None:
        source = metadata_lookup.Source.parse('fe80::f816:3eff:fe84:f82', network_id=self.net1)
        self.lookup.lookup(source)
        self.api.get_ports_by_address.assert_called_once_with(
            [self.net1], ip_address='fe80::f816:3eff:fe84:f82',
            mac_address='fa:16:3e:84:0f:82', timeout=3)

    def test_no_single_port_means_no_instance(self) -> None:
        source = metadata_lookup.Source('10.0.0.5', network_id=self.net1)
        for ports in ([], [self.vm, port(self.net1, _uuid())], [port(self.net1, '')]):
            with self.subTest(ports=ports):
                self.api.get_ports_by_address.return_value = ports
                self.assertIsNone(self.lookup.lookup(source))
        # Misses are asked again, not cached.
        self.api.get_ports_by_address.return_value = [self.vm]
        self.assertIsNotNone(self.lookup.lookup(source))

    def test_router_without_interfaces(self) -> None:
        self.api.get_router_interfaces.return_value = []
        source = metadata_lookup.Source('10.0.0.5', router_id=self.router)
        self.assertIsNone(self.lookup.lookup(source))
        # Never the unfiltered search neutron would then make.
        self.api.get_ports_by_address.assert_not_called()

    def test_project_from_tenant_id(self) -> None:
        self.api.get_ports_by_address.return_value = [
            {'id': _uuid(), 'network_id': self.net1, 'device_id': 'i', 'tenant_id': 't'}]
        source = metadata_lookup.Source('10.0.0.5', network_id=self.net1)
        self.assertEqual(metadata_lookup.Instance('i', 't'), self.lookup.lookup(source))

    def test_rpc_failures(self) -> None:
        source = metadata_lookup.Source('10.0.0.5', network_id=self.net1)
        for exc, expected in ((oslo_messaging.MessagingTimeout('t'),
                               metadata_lookup.LookupUnavailable),
                              (oslo_messaging.MessageDeliveryFailure('d'),
                               metadata_lookup.LookupUnavailable),
                              (oslo_messaging.RemoteError('DBError', 'x'),
                               metadata_lookup.LookupFailed)):
            with self.subTest(exc=exc):
                self.api.get_ports_by_address.side_effect = exc
                self.assertRaises(expected, self.lookup.lookup, source)


class ProxyTest(MetadataTestCase):
    """MetadataProxy against the real stand-in Nova over HTTP."""

    def setUp(self) -> None:
        super().setUp()
        self.nova = fake_nova.FakeNova(SECRET).start()
        self.addCleanup(self.nova.stop)
        self.conf.set_override('nova_metadata_port', self.nova.port)
        self.instance = metadata_lookup.Instance(_uuid(), 'project-1')
        self.nova.instances[self.instance.instance_id] = 'project-1'
        self.lookup = mock.Mock()
        self.lookup.lookup.return_value = self.instance
        self.proxy = metadata_server.MetadataProxy(
            self.lookup, nova_metadata.NovaMetadataClient(self.conf))
        self.router = _uuid()

    def request(self, path='/latest/meta-data/instance-id', method='GET', body=None,
                vm_headers=()) -> metadata_server.Reply:
        return self.proxy.handle(method, path, headers(
            *vm_headers, ('X-Neutron-Router-ID', self.router),
            ('X-Forwarded-For', '10.0.0.5')), body)

    def test_signed_request_and_answer(self) -> None:
        reply = self.request('/openstack/latest/meta_data.json?x=1')
        self.assertEqual(200, reply.status)
        self.assertIn(b'"uuid": "' + self.instance.instance_id.encode(), reply.body)
        self.assertIn(b'"query": "x=1"', reply.body)
        self.assertIn(('Content-Type', 'application/json'), reply.headers)
        sent = self.nova.requests[-1]
        self.assertEqual('/openstack/latest/meta_data.json?x=1', sent['path'])
        self.assertEqual(self.instance.instance_id, sent['headers']['X-Instance-ID'])
        self.assertEqual('project-1', sent['headers']['X-Tenant-ID'])
        self.assertEqual('10.0.0.5', sent['headers']['X-Forwarded-For'])
        self.assertEqual(nova_metadata.sign_instance_id(SECRET, self.instance.instance_id),
                         sent['headers']['X-Instance-ID-Signature'])

    def test_forged_headers_from_the_vm_are_not_trusted(self) -> None:
        other = _uuid()
        reply = self.request(vm_headers=[
            ('X-Instance-ID', other), ('X-Tenant-ID', 'evil'),
            ('X-Instance-ID-Signature', 'f' * 64), ('X-Forwarded-For', '10.0.0.66'),
            ('X-Neutron-Network-ID', _uuid())])
        # Two ids: the request did not come from one proxy as it should.
        self.assertEqual(400, reply.status)
        reply = self.request(vm_headers=[
            ('X-Instance-ID', other), ('X-Tenant-ID', 'evil'),
            ('X-Instance-ID-Signature', 'f' * 64), ('X-Forwarded-For', '10.0.0.66')])
        self.assertEqual(200, reply.status)
        self.assertEqual(self.instance.instance_id.encode(), reply.body)
        source = self.lookup.lookup.call_args[0][0]
        self.assertEqual(('10.0.0.5', self.router), (source.address, source.router_id))
        sent = self.nova.requests[-1]['headers']
        self.assertEqual(self.instance.instance_id, sent['X-Instance-ID'])
        self.assertEqual('project-1', sent['X-Tenant-ID'])
        self.assertEqual('10.0.0.5', sent['X-Forwarded-For'])
        self.assertNotIn('evil', str(sent))

    def test_head_and_post(self) -> None:
        reply = self.request(method='HEAD')
        self.assertEqual(200, reply.status)
        self.assertEqual(len(self.instance.instance_id), reply.length)
        self.assertEqual(b'', reply.body)
        reply = self.request('/openstack/latest/password', 'POST', b'encrypted-pw')
        self.assertEqual(200, reply.status)
        self.assertEqual(b'encrypted-pw', self.nova.passwords[self.instance.instance_id])

    def test_wrong_secret_passes_novas_403(self) -> None:
        self.conf.set_override('metadata_proxy_shared_secret', 'not-novas')
        reply = self.request()
        self.assertEqual(403, reply.status)
        self.assertEqual(b'Invalid proxy request signature.', reply.body)
        self.assertIn('shared_secret differs', self.log.output)
        self.assertNotIn('not-novas', self.log.output)

    def test_novas_404_and_other_statuses_pass_through(self) -> None:
        self.assertEqual(404, self.request('/no/such/path').status)
        self.nova.instances[self.instance.instance_id] = 'another-project'
        self.assertEqual(404, self.request().status)

    def test_no_instance_is_404_without_asking_nova(self) -> None:
        self.lookup.lookup.return_value = None
        reply = self.request()
        self.assertEqual(404, reply.status)
        self.assertIn(self.router.encode(), reply.body)
        self.assertEqual([], self.nova.requests)

    def test_lookup_failures(self) -> None:
        self.lookup.lookup.side_effect = metadata_lookup.LookupUnavailable('timeout')
        self.assertEqual(503, self.request().status)
        self.lookup.lookup.side_effect = metadata_lookup.LookupFailed('DBError')
        self.assertEqual(500, self.request().status)
        self.lookup.lookup.side_effect = RuntimeError('bug')
        reply = self.request()
        self.assertEqual(500, reply.status)
        self.assertNotIn(b'bug', reply.body)

    def test_nova_down_is_503_at_once(self) -> None:
        self.nova.stop()
        started = time.monotonic()
        reply = self.request()
        self.assertEqual(503, reply.status)
        self.assertLess(time.monotonic() - started, 0.5)

    def test_slow_nova_is_503_within_the_timeout(self) -> None:
        self.nova.delay = 3.0
        started = time.monotonic()
        reply = self.request()
        elapsed = time.monotonic() - started
        self.assertEqual(503, reply.status)
        self.assertLess(elapsed, 2.0)
        self.assertGreater(elapsed, 1.4)  # the default nova_metadata_timeout, 1.5 s
        self.assertNotIn(SECRET, self.log.output)
        self.assertNotIn(nova_metadata.sign_instance_id(SECRET, self.instance.instance_id),
                         self.log.output)

    def test_deadline_covers_a_dribbling_answer(self) -> None:
        # Nova sends its headers, then the body a byte at a time: the total,
        # not each read, is bounded.
        listener = socket.socket()
        listener.bind(('127.0.0.1', 0))
        listener.listen(1)
        self.addCleanup(listener.close)
        self.conf.set_override('nova_metadata_port', listener.getsockname()[1])
        self.conf.set_override('nova_metadata_timeout', 0.5)

        def serve():
            conn, _ = listener.accept()
            conn.recv(65536)
            conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n')
            try:
                for _ in range(100):
                    conn.sendall(b'x')
                    time.sleep(0.1)
            except OSError:
                pass
            conn.close()
        threading.Thread(target=serve, daemon=True).start()
        started = time.monotonic()
        self.assertEqual(503, self.request().status)
        self.assertLess(time.monotonic() - started, 1.0)


class OptionsTest(MetadataTestCase):

    def test_defaults(self) -> None:
        conf = self.conf
        self.assertEqual(('127.0.0.1', 8775, 'http'), (
            conf.nova_metadata_host, conf.nova_metadata_port, conf.nova_metadata_protocol))
        # $state_path/metadata_proxy; tests/base.py points state_path at a
        # temporary directory, the host default being /var/lib/agentkit.
        self.assertEqual(os.path.join(conf.state_path, 'metadata_proxy'),
                         conf.metadata_proxy_socket)
        self.assertEqual(('deduce', 4096, 5, 1.5), (
            conf.metadata_proxy_socket_mode, conf.metadata_backlog,
            conf.metadata_cache_ttl, conf.nova_metadata_timeout))
        self.assertIsNone(conf.metadata_workers)
        self.assertGreaterEqual(metadata_conf.default_workers(), 16)
        secret = next(o for o in metadata_conf.metadata_opts
                      if o.name == 'metadata_proxy_shared_secret')
        self.assertTrue(secret.secret)

    def test_neutron_spelling_nova_metadata_ip(self) -> None:
        path = os.path.join(self.useFixture(
            fixtures.TempDir()).path, 'metadata_agent.ini')
        with open(path, 'w') as f:
            f.write('[DEFAULT]\nnova_metadata_ip = 192.0.2.10\n'
                    'nova_metadata_protocol = https\nmetadata_workers = 0\n')
        self.conf(['--config-file', path], project='agentkit', default_config_files=[])
        self.assertEqual('192.0.2.10', self.conf.nova_metadata_host)
        self.assertEqual('https', self.conf.nova_metadata_protocol)
        self.assertEqual(0, self.conf.metadata_workers)

    def test_bad_values_are_refused(self) -> None:
        for name, value in (('nova_metadata_protocol', 'ftp'),
                            ('metadata_proxy_socket_mode', 'world'),
                            ('metadata_cache_ttl', -1)):
            with self.subTest(option=name):
                self.assertRaises(ValueError, self.conf.set_override, name, value)

    def test_the_state_report_never_carries_the_secret(self) -> None:
        agent = metadata.MetadataAgent(self.conf)
        state = agent.build_state()
        self.assertEqual({'metadata_proxy_socket', 'nova_metadata_host',
                          'nova_metadata_port', 'log_agent_heartbeats'},
                         set(state['configurations']))
        self.assertNotIn(SECRET, repr(state))

    def test_socket_permissions(self) -> None:
        euid_name = pwd.getpwuid(os.geteuid()).pw_name
        egid = os.getegid()
        cases = [
            ({'metadata_proxy_user': ''}, 0o644, 'user'),
            ({'metadata_proxy_user': euid_name}, 0o644, 'user'),
            ({'metadata_proxy_user': 'root'}, 0o644, 'user'),
            ({'metadata_proxy_user': 'nobody', 'metadata_proxy_group': ''}, 0o664, 'group'),
            ({'metadata_proxy_user': 'nobody', 'metadata_proxy_group': str(egid)},
             0o664, 'group'),
            ({'metadata_proxy_user': 'nobody', 'metadata_proxy_group': 'no-such-group'},
             0o666, 'all'),
            ({'metadata_proxy_socket_mode': 'all'}, 0o666, 'all'),
            ({'metadata_proxy_socket_mode': 'user'}, 0o644, 'user'),
        ]
        for overrides, bits, name in cases:
            with self.subTest(**overrides):
                for k, v in overrides.items():
                    self.conf.set_override(k, v)
                mode, gid, mode_name = metadata_server.socket_permissions(self.conf)
                self.assertEqual((bits, name), (mode, mode_name))
                for k in overrides:
                    self.conf.clear_override(k)
        # The defaults (proxies as nobody:nogroup): the socket gets nogroup
        # and 0664 when the agent may give it that group, 0666 otherwise.
        mode, gid, name = metadata_server.socket_permissions(self.conf)
        nogroup = grp.getgrnam('nogroup').gr_gid
        if os.geteuid() == 0 or nogroup in os.getgroups():
            self.assertEqual((0o664, nogroup, 'group'), (mode, gid, name))
        else:
            self.assertEqual((0o666, None, 'all'), (mode, gid, name))


class SocketServerTest(MetadataTestCase):
    """The unix-socket server's lifecycle, as an unprivileged user can run it."""

    def setUp(self) -> None:
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.path = os.path.join(self.dir, 'sub', 'metadata_proxy')
        self.conf.set_override('metadata_proxy_socket', self.path)
        self.conf.set_override('metadata_workers', 4)
        self.nova = fake_nova.FakeNova(SECRET).start()
        self.addCleanup(self.nova.stop)
        self.conf.set_override('nova_metadata_port', self.nova.port)
        self.instance = metadata_lookup.Instance(_uuid(), 'p')
        self.nova.instances[self.instance.instance_id] = 'p'
        self.lookup = mock.Mock()
        self.lookup.lookup.return_value = self.instance

    def server(self) -> metadata_server.MetadataProxyServer:
        server = metadata_server.MetadataProxyServer(self.conf, metadata_server.MetadataProxy(
            self.lookup, nova_metadata.NovaMetadataClient(self.conf)))
        server.start()
        self.addCleanup(server.stop)
        return server

    def get(self, **kwargs) -> metadata_client.Answer:
        return metadata_client.proxy_request(
            self.path, '/latest/meta-data/instance-id', '10.0.0.5',
            network_id=kwargs.pop('network_id', _uuid()), **kwargs)

    def test_serves_and_stops(self) -> None:
        server = self.server()
        self.assertTrue(stat.S_ISSOCK(os.lstat(self.path).st_mode))
        answer = self.get()
        self.assertEqual((200, self.instance.instance_id.encode()), (answer.status, answer.body))
        self.assertEqual('close', answer.headers['connection'])
        server.stop()
        self.assertFalse(os.path.exists(self.path))
        started = time.monotonic()
        self.assertRaises(OSError, self.get)
        self.assertLess(time.monotonic() - started, 0.5)

    def test_concurrent_requests_beyond_the_workers(self) -> None:
        self.server()
        self.nova.delay = 0.2
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(self.get().status))
                   for _ in range(12)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        self.assertEqual([200] * 12, answers)
        # 4 workers, 12 requests of 0.2 s: three rounds, not one, not twelve.
        self.assertGreater(time.monotonic() - started, 0.55)

    def test_stale_socket_is_replaced(self) -> None:
        os.makedirs(os.path.dirname(self.path))
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(self.path)
        stale.close()  # the file stays, nobody listens: a killed agent's
        self.server()
        self.assertEqual(200, self.get().status)
        self.assertIn('Replacing the stale socket', self.log.output)

    def test_a_file_that_is_not_a_socket_is_kept(self) -> None:
        os.makedirs(os.path.dirname(self.path))
        with open(self.path, 'w') as f:
            f.write('precious')
        server = metadata_server.MetadataProxyServer(self.conf, mock.Mock())
        self.assertRaises(RuntimeError, server.start)
        with open(self.path) as f:
            self.assertEqual('precious', f.read())

    def test_an_old_agent_does_not_remove_a_new_agents_socket(self) -> None:
        old = self.server()
        new = self.server()  # took the path over
        old.stop()
        self.assertTrue(os.path.exists(self.path))
        self.assertEqual(200, self.get().status)
        new.stop()
        self.assertFalse(os.path.exists(self.path))

    def test_bad_requests_on_the_socket(self) -> None:
        self.server()
        answer = metadata_client.proxy_request(self.path, '/', '10.0.0.5')
        self.assertEqual(400, answer.status)
        answer = metadata_client.proxy_request(self.path, '/', '10.0.0.5', network_id=_uuid(),
                                               method='DELETE')
        self.assertEqual(501, answer.status)

    def test_serial_mode(self) -> None:
        self.conf.set_override('metadata_workers', 0)
        self.server()
        self.assertEqual(200, self.get().status)


class AgentTest(MetadataTestCase):

    def test_start_serves_after_rpc_and_stop_closes(self) -> None:
        path = os.path.join(self.useFixture(fixtures.TempDir()).path, 'md')
        self.conf.set_override('metadata_proxy_socket', path)
        agent = metadata.MetadataAgent(self.conf)
        with mock.patch.object(metadata.base.Agent, 'start') as start, \
                mock.patch.object(metadata.base.Agent, 'stop') as stop:
            start.side_effect = lambda: agent.setup_rpc_clients()
            agent.transport = mock.Mock()
            with mock.patch.object(metadata.metadata_api, 'MetadataPluginApi') as api:
                agent.start()
            api.assert_called_once_with(agent.transport, agent.host, timeout=5)
            self.assertTrue(os.path.exists(path))
            agent.stop()
            stop.assert_called_once_with(5.0)
        self.assertFalse(os.path.exists(path))


class PluginApiTest(base.TestCase):
    """The RPC as neutron-metadata-agent sends it (see also the contract test)."""

    def test_bounded_call(self) -> None:
        from agentkit.rpc import client, metadata_api
        with mock.patch.object(oslo_messaging, 'get_rpc_client') as get_client:
            api = metadata_api.MetadataPluginApi(mock.Mock(), 'host1', timeout=4, retry=1)
            target = get_client.call_args[0][1]
            self.assertEqual(('q-plugin', '1.0', None),
                             (target.topic, target.version, target.namespace))
            api.get_router_interfaces('r1', timeout=2)
            get_client.return_value.prepare.assert_called_once_with(
                version='1.0', timeout=2, retry=1, transport_options=client.MANDATORY)
            call = get_client.return_value.prepare.return_value.call
            context, method = call.call_args[0]
            self.assertEqual('get_ports', method)
            self.assertTrue(context['is_admin'])
            self.assertEqual({'filters': {'device_id': ['r1'], 'device_owner': [
                'network:router_interface', 'network:ha_router_replicated_interface',
                'network:router_interface_distributed']}}, call.call_args[1])
