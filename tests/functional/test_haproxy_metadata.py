"""The haproxy metadata driver with a real haproxy in real namespaces.

Topology per test (every name carries a random ``akm<hex>`` prefix):

* a stand-in for the metadata agent: a threaded HTTP server on a unix
  socket in a world-traversable temp dir; it records every request's
  headers and answers ``metadata for <path>``;
* a "router" namespace ``akm<hex>-qrouter-<id>`` with the REDIRECT rule the
  L3 agent installs, or a "DHCP" namespace ``akm<hex>-qdhcp-<id>`` whose
  device holds 169.254.169.254/32 (and fe80::a9fe:a9fe/64);
* "VM" namespaces on veths to it, which talk HTTP with python's
  http.client (``ip netns exec``), sending forged identity headers.

haproxy runs as ``nobody``/``nogroup``. Every haproxy, namespace and file is
removed in cleanups, even when a test fails.
"""

import json
import os
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import uuid
from http import server as http_server

from oslo_config import cfg

from agentkit import exceptions
from agentkit.conf import common as common_conf
from agentkit.api import driver as driver_api
from agentkit.conf import metadata_proxy as proxy_conf
from agentkit.lib import external_process as ep
from agentkit.lib import ip_lib
from drivers.metadata import haproxy
from tests.functional import base

TIMEOUT = 10.0
METADATA_IP = '169.254.169.254'
METADATA_V6_IP = 'fe80::a9fe:a9fe'
FORGED = [
    ('X-Forwarded-For', '203.0.113.66'),
    ('X-Instance-ID', 'forged-instance'),
    ('X_Instance_ID', 'forged-instance-underscore'),
    ('x-tenant-id', 'forged-tenant'),
    ('X-Instance-ID-Signature', 'forged-signature'),
    ('X-Neutron-Router-ID', 'forged-router'),
    ('X-Neutron-Network-ID', 'forged-network'),
    ('X_Forwarded_For', '203.0.113.67'),
]
IDENTITY_HEADERS = {'x-forwarded-for', 'x-instance-id', 'x-tenant-id',
                    'x-instance-id-signature', 'x-neutron-router-id',
                    'x-neutron-network-id'}

# Runs inside a VM namespace: ``count`` requests, one connection each;
# prints [[status, body], ...]. http.client with an explicit port takes a
# scoped IPv6 address ("fe80::a9fe:a9fe%eth0") as it is.
CLIENT = r"""
import http.client, json, sys
spec = json.loads(sys.argv[1])
out = []
for _ in range(spec['count']):
    conn = http.client.HTTPConnection(spec['connect'], spec['port'], timeout=5)
    try:
        conn.putrequest('GET', spec['path'], skip_host=True, skip_accept_encoding=True)
        conn.putheader('Host', spec['host'])
        for name, value in spec['headers']:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        out.append([response.status, response.read().decode('utf-8', 'replace')])
    except OSError as exc:
        out.append([None, repr(exc)])
    finally:
        conn.close()
print(json.dumps(out))
"""


def http_get(namespace, connect, host=METADATA_IP, port=80, headers=(), count=1,
             path='/latest/meta-data/'):
    """[(status, body)] of ``count`` GETs sent from inside ``namespace``."""
    spec = {'connect': connect, 'host': host, 'port': port, 'headers': list(headers),
            'count': count, 'path': path}
    proc = subprocess.run(['ip', 'netns', 'exec', namespace, sys.executable, '-c', CLIENT,
                           json.dumps(spec)], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise AssertionError('client in %s failed: %s' % (namespace, proc.stderr))
    return [tuple(item) for item in json.loads(proc.stdout)]


class MetadataStandIn:
    """The metadata agent's end of ``metadata_proxy_socket``: records, answers."""

    def __init__(self, path):
        self.path = path
        self.requests = []
        lock = threading.Lock()
        requests = self.requests

        class Handler(http_server.BaseHTTPRequestHandler):
            def do_GET(self):
                with lock:
                    requests.append({'path': self.path,
                                     'headers': [(k.lower(), v) for k, v in
                                                 self.headers.items()]})
                body = ('metadata for %s' % self.path).encode()
                self.send_response(200)
                self.send_header('Content-Type', 'text/plain')
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass  # a unix peer has no address to log

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(path, Handler)
        # haproxy connects as nobody: connecting needs write permission.
        os.chmod(path, 0o666)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def headers(self, index=-1):
        """{name: [values]} of one recorded request."""
        result = {}
        for name, value in self.requests[index]['headers']:
            result.setdefault(name, []).append(value)
        return result


class HaproxyMetadataTestCase(base.FunctionalTestCase):

    def setUp(self):
        super().setUp()
        self.prefix = 'akm' + uuid.uuid4().hex[:8]
        # NestedTempfile's root is 0700: nobody could not reach the socket.
        os.chmod(tempfile.gettempdir(), 0o755)
        tmp = tempfile.mkdtemp(prefix='md')
        os.chmod(tmp, 0o755)
        self.state_path = os.path.join(tmp, 'state')
        os.mkdir(self.state_path, 0o755)
        self.standin = MetadataStandIn(os.path.join(tmp, 'metadata_proxy'))
        self.addCleanup(self.standin.stop)
        self.conf = cfg.ConfigOpts()
        common_conf.register_common_opts(self.conf)
        proxy_conf.register_metadata_proxy_opts(self.conf)
        driver_api.register_options(self.conf, haproxy.OPTIONS)
        self.conf([], project='agentkit', default_config_files=[])
        self.conf.set_override('state_path', self.state_path)
        self.conf.set_override('metadata_proxy_socket', self.standin.path)
        self.conf.set_override('check_child_processes_interval', 1)
        self.resource_ids = []
        # Cleanups run LIFO: these two run after every driver of the test
        # stopped watching, so no monitor can respawn what they stop.
        self.addCleanup(self._kill_leftovers)
        self.addCleanup(self._destroy_all)

    def _destroy_all(self):
        driver = haproxy.HaproxyMetadataDriver(self.conf, 'akm-test-host')
        for resource_id in self.resource_ids:
            driver.destroy_proxy(resource_id)

    def _kill_leftovers(self):
        for resource_id in self.resource_ids:
            for pid in base.pids_with(resource_id):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def new_driver(self):
        driver = haproxy.HaproxyMetadataDriver(self.conf, 'akm-test-host')
        driver.initialize()
        self.addCleanup(driver.stop)
        return driver

    def spawn(self, driver, namespace, resource_id, router):
        if resource_id not in self.resource_ids:
            self.resource_ids.append(resource_id)
        driver.spawn_proxy(namespace, resource_id, router)
        return base.wait_until(lambda: driver.pid(resource_id), TIMEOUT, 'haproxy pid')

    def namespace(self, name):
        ip_lib.IPWrapper(name).ensure_namespace()
        self.addCleanup(ip_lib.delete_namespace, name)
        ip_lib.IPDevice('lo', name).link.set_up()
        return name

    def vm(self, name, peer_namespace, peer_device, peer_cidr, vm_cidr, gateway=None):
        """A VM namespace whose eth0 is a veth to ``peer_device`` in ``peer_namespace``."""
        vm_ns = self.namespace(self.prefix + '-' + name)
        ip_lib.IPWrapper(peer_namespace).add_veth(peer_device, 'eth0', peer_namespace=vm_ns)
        for device, cidr in ((ip_lib.IPDevice(peer_device, peer_namespace), peer_cidr),
                             (ip_lib.IPDevice('eth0', vm_ns), vm_cidr)):
            device.addr.add(cidr)
            device.link.set_up()
        if gateway:
            ip_lib.IPDevice('eth0', vm_ns).route.add_gateway(gateway)
        return vm_ns

    def router(self, router_id, port=9697):
        """A qrouter-like namespace with the L3 agent's REDIRECT rule."""
        ns = self.namespace('%s-qrouter-%s' % (self.prefix, router_id))
        self.iptables(ns, '-t', 'nat', '-A', 'PREROUTING', '-d', METADATA_IP + '/32',
                      '-p', 'tcp', '--dport', '80', '-j', 'REDIRECT', '--to-ports', str(port))
        return ns

    @staticmethod
    def iptables(namespace, *args):
        subprocess.run(['ip', 'netns', 'exec', namespace, 'iptables', *args], check=True,
                       capture_output=True, timeout=30)

    def assert_identity(self, headers, address, header, resource_id):
        """Exactly the proxy's identity headers, none of the VM's."""
        self.assertEqual([address], headers.get('x-forwarded-for'))
        self.assertEqual([resource_id], headers.get(header.lower()))
        self.assertEqual({'x-forwarded-for', header.lower()},
                         {name.replace('_', '-') for name in headers} & IDENTITY_HEADERS)
        for name, _ in FORGED:
            if name.lower() not in ('x-forwarded-for', header.lower()):
                self.assertNotIn(name.lower(), headers)
        self.assertNotIn('x_forwarded_for', headers)
        self.assertNotIn('x_instance_id', headers)

    @staticmethod
    def proc_ids(pid):
        """(uid, gid) a process runs as."""
        with open('/proc/%d/status' % pid) as f:
            fields = dict(line.split(':', 1) for line in f)
        return int(fields['Uid'].split()[1]), int(fields['Gid'].split()[1])


class TestRouterProxy(HaproxyMetadataTestCase):

    def test_vm_request_reaches_the_agent_with_trusted_headers_only(self):
        router_id = str(uuid.uuid4())
        ns = self.router(router_id)
        vm = self.vm('vm1', ns, self.prefix[:8] + 'qr1', '10.253.1.1/24', '10.253.1.5/24',
                     gateway='10.253.1.1')
        driver = self.new_driver()
        pid = self.spawn(driver, ns, router_id, router=True)
        # haproxy starts as root and drops to nobody/nogroup once configured.
        base.wait_until(lambda: self.proc_ids(pid) == (65534, 65534), 10,
                        'haproxy running as nobody/nogroup')

        [(status, body)] = http_get(vm, METADATA_IP, headers=FORGED)
        self.assertEqual((200, 'metadata for /latest/meta-data/'), (status, body))
        self.assertEqual(1, len(self.standin.requests))
        self.assert_identity(self.standin.headers(), '10.253.1.5', 'X-Neutron-Router-ID',
                             router_id)

        # The proxy listens on every address of the namespace; without the
        # L3 agent's INPUT filter a direct connection must still get nothing.
        [(status, _)] = http_get(vm, '10.253.1.1', host='10.253.1.1', port=9697)
        self.assertEqual(403, status)
        self.assertEqual(1, len(self.standin.requests))

        # An agent restart: the new driver adopts the same process.
        second = self.new_driver()
        self.assertEqual({router_id}, second.active_proxies(router=True))
        self.assertEqual(set(), second.active_proxies(router=False))
        second.spawn_proxy(ns, router_id, router=True)
        self.assertEqual(pid, second.pid(router_id))
        self.assertEqual(1, second.counters['adopted'])
        self.assertEqual([pid], base.pids_with(router_id))
        self.assertEqual(200, http_get(vm, METADATA_IP)[0][0])

    def test_killed_proxy_is_respawned_by_the_monitor(self):
        router_id = str(uuid.uuid4())
        ns = self.router(router_id)
        vm = self.vm('vm1', ns, self.prefix[:8] + 'qr1', '10.253.1.1/24', '10.253.1.5/24',
                     gateway='10.253.1.1')
        driver = self.new_driver()
        pid = self.spawn(driver, ns, router_id, router=True)
        os.kill(pid, signal.SIGKILL)
        new_pid = base.wait_until(lambda: driver.pid(router_id) not in (None, pid)
                                  and driver.pid(router_id), TIMEOUT, 'respawned haproxy')
        self.assertNotEqual(pid, new_pid)
        # The pid file is written before the monitor counts the respawn.
        base.wait_until(lambda: driver.monitor.respawn_count == 1, TIMEOUT,
                        'the monitor counting one respawn')
        [(status, _)] = http_get(vm, METADATA_IP)
        self.assertEqual(200, status)
        self.assert_identity(self.standin.headers(), '10.253.1.5', 'X-Neutron-Router-ID',
                             router_id)

    def test_rate_limit_per_vm(self):
        group = haproxy.RATE_LIMITING_GROUP
        self.conf.set_override('rate_limit_enabled', True, group)
        self.conf.set_override('burst_window_duration', 10, group)
        self.conf.set_override('burst_query_rate_limit', 3, group)
        self.conf.set_override('base_window_duration', 10, group)
        self.conf.set_override('base_query_rate_limit', 100, group)
        router_id = str(uuid.uuid4())
        ns = self.router(router_id)
        vm1 = self.vm('vm1', ns, self.prefix[:8] + 'qr1', '10.253.1.1/24', '10.253.1.5/24',
                      gateway='10.253.1.1')
        vm2 = self.vm('vm2', ns, self.prefix[:8] + 'qr2', '10.253.2.1/24', '10.253.2.7/24',
                      gateway='10.253.2.1')
        driver = self.new_driver()
        self.spawn(driver, ns, router_id, router=True)

        statuses = [status for status, _ in http_get(vm1, METADATA_IP, count=6)]
        self.assertEqual([200, 200, 200, 429, 429, 429], statuses)
        # Another VM behind the same router is still served.
        self.assertEqual([200], [s for s, _ in http_get(vm2, METADATA_IP)])
        sources = [dict(r['headers'])['x-forwarded-for'] for r in self.standin.requests]
        self.assertEqual(['10.253.1.5'] * 3 + ['10.253.2.7'], sources)

    def test_destroy_removes_process_and_files(self):
        router_id = str(uuid.uuid4())
        ns = self.router(router_id)
        driver = self.new_driver()
        self.spawn(driver, ns, router_id, router=True)
        proxy_dir = os.path.join(self.state_path, 'metadata-proxy')
        self.assertEqual({router_id + '.conf', router_id + '.pid'}, set(os.listdir(proxy_dir)))
        driver.destroy_proxy(router_id)
        self.assertEqual([], base.pids_with(router_id))
        self.assertEqual([], os.listdir(proxy_dir))
        self.assertEqual(set(), driver.active_proxies())
        driver.destroy_proxy(router_id)  # idempotent
        # Nothing comes back: the monitor no longer watches it.
        self.assertIsNone(driver.monitor.get('haproxy', router_id))


class TestNetworkProxy(HaproxyMetadataTestCase):

    def test_ipv4_and_link_local_ipv6(self):
        network_id = str(uuid.uuid4())
        ns = self.namespace('%s-qdhcp-%s' % (self.prefix, network_id))
        device = self.prefix[:8] + 'dh'
        vm = self.vm('vm1', ns, device, '10.253.3.2/24', '10.253.3.5/24')
        ip_lib.IPDevice('eth0', vm).route.add_route(METADATA_IP + '/32', via='10.253.3.2')
        dhcp_port = ip_lib.IPDevice(device, ns)
        dhcp_port.addr.add(METADATA_IP + '/32')
        # What the DHCP agent must add for IPv6 VMs. Three DAD probes keep it
        # tentative for ~3 s: long enough to prove the proxy binds it anyway.
        ip_lib.set_sysctl(['net', 'ipv6', 'conf', device, 'dad_transmits'], 3, ns)
        dhcp_port.addr.add(METADATA_V6_IP + '/64', scope='link')
        [v6] = [a for a in dhcp_port.addr.list(6) if a['address'] == METADATA_V6_IP]
        self.assertTrue(v6['tentative'])

        driver = self.new_driver()
        pid = self.spawn(driver, ns, network_id, router=False)
        self.assertIn('interface %s' % device, open(driver.config_path(network_id)).read())

        [(status, body)] = http_get(vm, METADATA_IP, headers=FORGED)
        self.assertEqual((200, 'metadata for /latest/meta-data/'), (status, body))
        self.assert_identity(self.standin.headers(), '10.253.3.5', 'X-Neutron-Network-ID',
                             network_id)

        def ready():
            addresses = (ip_lib.IPDevice('eth0', vm).addr.list(6, scope='link')
                         + [a for a in dhcp_port.addr.list(6) if a['address'] == METADATA_V6_IP])
            return len(addresses) == 2 and not any(a['tentative'] for a in addresses) and \
                addresses[0]['address']
        vm_link_local = base.wait_until(ready, TIMEOUT, 'DAD of both link-local addresses')
        [(status, body)] = http_get(vm, METADATA_V6_IP + '%eth0', host='[%s]' % METADATA_V6_IP,
                                    headers=FORGED)
        self.assertEqual(200, status, body)
        self.assert_identity(self.standin.headers(), vm_link_local, 'X-Neutron-Network-ID',
                             network_id)
        self.assertEqual(pid, driver.pid(network_id))  # served by the same process
        self.assertEqual({network_id}, driver.active_proxies(router=False))
        self.assertEqual(set(), driver.active_proxies(router=True))

        # Without the IPv6 address the proxy is restarted with IPv4 only.
        dhcp_port.addr.delete(METADATA_V6_IP + '/64')
        driver.spawn_proxy(ns, network_id, router=False)
        self.assertNotEqual(pid, driver.pid(network_id))
        self.assertNotIn('fe80', open(driver.config_path(network_id)).read())
        self.assertEqual(200, http_get(vm, METADATA_IP)[0][0])

    def test_missing_metadata_address_fails_clearly(self):
        network_id = str(uuid.uuid4())
        ns = self.namespace('%s-qdhcp-%s' % (self.prefix, network_id))
        driver = self.new_driver()
        self.resource_ids.append(network_id)
        exc = self.assertRaises(exceptions.ProcessError, driver.spawn_proxy,
                                ns, network_id, False)
        self.assertIn('cannot bind socket', str(exc))
        self.assertIsNone(driver.pid(network_id))
        self.assertIsNone(ep.read_pid_file(os.path.join(
            self.state_path, 'metadata-proxy', network_id + '.pid')))
