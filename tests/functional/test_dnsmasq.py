"""The dnsmasq driver serving real DHCP clients.

Topology per test (every name starts with ``akd<hex>``): a Linux bridge; a
"qdhcp" namespace whose veth holds the DHCP port's MAC and address; one
namespace per "VM" on another veth, with the port's MAC, where ``dhclient``
runs with a recording script (``-sf``), so the host's resolv.conf is never
touched and the test reads what the VM was offered from the script's
environment. Every dnsmasq and dhclient the test started is killed in a
cleanup, even when the test fails.
"""

from concurrent import futures
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from unittest import mock

from testtools import content

from agentkit import exceptions
from agentkit.api import dhcp as dhcp_api
from agentkit.api import dhcp_payload
from agentkit.conf import dhcp as dhcp_conf
from agentkit.lib import external_process as ep
from agentkit.lib import ip_lib
from agentkit.lib import naming
from agentkit.privileged import process as priv_process
from drivers.dhcp.dnsmasq import driver as dnsmasq_driver
from tests.functional import base
from tests.unit import test_option_values

HOST = 'akd-test-host'
TIMEOUT = 15.0
MTU = 1450
# dhclient gives up after this many seconds without a lease (``-1``).
NO_LEASE_TIMEOUT = 4

DHCLIENT_CONF = """\
option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;
request subnet-mask, broadcast-address, routers, domain-name,
        domain-name-servers, host-name, interface-mtu,
        rfc3442-classless-static-routes;
timeout %d;
retry 1;
reboot 2;
initial-interval 1;
"""


def wait_until(predicate, timeout=TIMEOUT, message='condition'):
    return base.wait_until(predicate, timeout, message, interval=0.005)


pids_with = base.pids_with


def kill_all(token):
    """Last resort: every process carrying ``token`` (a network id) dies."""
    for pid in pids_with(token):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def warm_up_privsep():
    """Start the daemons' privsep helper now, so timings show steady state.

    A running agent started it long ago; the first call in a test process
    would otherwise add its ~0.3 s start-up to the first dnsmasq start.
    """
    priv_process.kill(os.getpid(), 0)


def read_rchar(pid):
    """Bytes dnsmasq has read(); it only grows when dnsmasq (re-)reads its files.

    dnsmasq receives DHCP and netlink with recvmsg(), which is not counted,
    so on an idle network this moves only on start-up and SIGHUP.
    """
    with open('/proc/%d/io' % pid) as f:
        for line in f:
            if line.startswith('rchar:'):
                return int(line.split()[1])
    raise AssertionError('no rchar for pid %d' % pid)


def dhcp_bound(pid):
    """True once the process's namespace has a socket on UDP port 67."""
    try:
        with open('/proc/%d/net/udp' % pid) as f:
            return any(line.split()[1].endswith(':0043') for line in list(f)[1:])
    except (FileNotFoundError, ProcessLookupError):
        return False


def typed(network):
    """The typed network the DHCP agent hands its driver."""
    return dhcp_payload.parse_network(network)


class DnsmasqTopology:
    """Bridge, DHCP namespace and VM namespaces of one test network."""

    def __init__(self, test, third_octet):
        self.test = test
        self.octet = third_octet
        self.prefix = 'akd' + uuid.uuid4().hex[:8]
        self.cidr = '10.252.%d.0/24' % third_octet
        self.net = '10.252.%d.' % third_octet
        self.network_id = str(uuid.uuid4())
        self.subnet_id = str(uuid.uuid4())
        self.dhcp_port_id = str(uuid.uuid4())
        self.dhcp_mac = 'fa:16:3e:%02x:00:02' % third_octet
        self.ports = []
        # Named as the DHCP agent names it: only qdhcp- namespaces may have
        # their leases released (agentkit.privileged.dhcp_release).
        self.namespace = naming.dhcp_namespace(self.network_id)
        self.dhcp_device = self.prefix + 'd1'

    def create(self, with_bridge=True):
        root = ip_lib.IPWrapper()
        if with_bridge:
            self.bridge = self.prefix + 'br'
            br = root.add_bridge(self.bridge)
            self.test.addCleanup(self._delete_device, self.bridge)
            br.link.set_up()
        self._namespace(self.namespace)
        root_end, ns_end = root.add_veth(self.prefix + 'd0', self.dhcp_device,
                                         peer_namespace=self.namespace, mtu=MTU,
                                         peer_mac=self.dhcp_mac)
        self.test.addCleanup(self._delete_device, root_end.name)
        if with_bridge:
            root_end.link.set_master(self.bridge)
        root_end.link.set_up()
        ns_end.addr.add(self.net + '2/24')
        ns_end.link.set_up()

    def _namespace(self, name):
        wrapper = ip_lib.IPWrapper(name)
        wrapper.ensure_namespace()
        self.test.addCleanup(wrapper.delete_namespace)
        wrapper.device('lo').link.set_up()

    @staticmethod
    def _delete_device(name):
        device = ip_lib.IPDevice(name)
        if device.exists():
            device.delete()

    def add_vm(self, index, mac=None):
        """A VM namespace on the bridge; returns (namespace, device, mac)."""
        mac = mac or 'fa:16:3e:%02x:01:%02x' % (self.octet, index)
        namespace = '%sv%d' % (self.prefix, index)
        self._namespace(namespace)
        device = '%se%d' % (self.prefix, index)
        root_end, vm_end = ip_lib.IPWrapper().add_veth(
            '%sv%d' % (self.prefix, index), device, peer_namespace=namespace, mtu=1500,
            peer_mac=mac)
        self.test.addCleanup(self._delete_device, root_end.name)
        root_end.link.set_master(self.bridge)
        root_end.link.set_up()
        vm_end.link.set_up()
        return namespace, device, mac

    def port(self, mac, host_octet, owner='compute:nova'):
        return {'id': str(uuid.uuid4()), 'network_id': self.network_id,
                'mac_address': mac, 'device_owner': owner,
                'device_id': str(uuid.uuid4()), 'extra_dhcp_opts': [],
                'fixed_ips': [{'subnet_id': self.subnet_id,
                               'ip_address': self.net + str(host_octet)}]}

    def network(self, ports=(), with_router=True):
        subnet = {'id': self.subnet_id, 'network_id': self.network_id, 'ip_version': 4,
                  'cidr': self.cidr, 'gateway_ip': self.net + '1', 'enable_dhcp': True,
                  'host_routes': [], 'dns_nameservers': ['10.252.0.53'],
                  'ipv6_ra_mode': None, 'ipv6_address_mode': None}
        dhcp_port = self.port(self.dhcp_mac, 2, owner='network:dhcp')
        dhcp_port.update(id=self.dhcp_port_id,
                         device_id=dhcp_api.dhcp_port_device_id(HOST, self.network_id))
        all_ports = [dhcp_port] + list(ports)
        if with_router:
            all_ports.append(self.port('fa:16:3e:ff:ff:01', 1,
                                       owner='network:router_interface'))
        return {'id': self.network_id, 'mtu': MTU, 'admin_state_up': True,
                'subnets': [subnet], 'ports': all_ports, 'non_local_subnets': []}


class DhcpClient:
    """One ``dhclient -1`` run in a VM namespace, in the foreground (``-d``)."""

    def __init__(self, test, namespace, device, timeout=10, lease_file=None):
        self.dir = tempfile.mkdtemp(prefix='akd-dhclient-')
        test.addCleanup(self.stop)
        script = os.path.join(self.dir, 'record.sh')
        with open(script, 'w') as f:
            # TIMEOUT: dhclient asks whether an old recorded lease still
            # works; "no", so only a server's ACK can give a lease.
            f.write('#!/bin/sh\nenv > "%s/$reason.env"\n'
                    '[ "$reason" = TIMEOUT ] && exit 1\nexit 0\n' % self.dir)
        os.chmod(script, 0o755)
        conf = os.path.join(self.dir, 'dhclient.conf')
        with open(conf, 'w') as f:
            f.write(DHCLIENT_CONF % timeout)
        self.pid_file = os.path.join(self.dir, 'pid')
        self.lease_file = os.path.join(self.dir, 'leases')
        if lease_file:
            shutil.copy(lease_file, self.lease_file)
        self.log = os.path.join(self.dir, 'out')
        self.started = time.monotonic()
        with open(self.log, 'w') as out:
            self.proc = subprocess.Popen(
                ['ip', 'netns', 'exec', namespace, 'dhclient', '-1', '-d', '-v',
                 '-cf', conf, '-sf', script, '-lf', self.lease_file,
                 '-pf', self.pid_file, device],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def lease_env(self):
        """The script's environment for a lease the server ACKed, else None."""
        for reason in ('BOUND', 'REBOOT', 'RENEW'):
            path = os.path.join(self.dir, reason + '.env')
            if not os.path.exists(path):
                continue
            with open(path) as f:
                text = f.read()
            if 'new_ip_address=' in text:  # else still being written
                return dict(line.split('=', 1) for line in text.splitlines() if '=' in line)
        return None

    def wait_bound(self, timeout=TIMEOUT):
        env = wait_until(lambda: self.lease_env() or self.proc.poll() is not None,
                         timeout=timeout, message='a DHCP lease')
        if env is True:
            raise AssertionError('dhclient exited (%s) without a lease:\n%s'
                                 % (self.proc.returncode, self.output()))
        self.seconds = time.monotonic() - self.started
        return env

    def wait_failed(self, timeout):
        """dhclient -1 exits non-zero when nobody offered a lease in time."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError('dhclient still running after %.0f s' % timeout) from None
        return self.proc.returncode

    def recorded_leases(self):
        try:
            with open(self.lease_file) as f:
                return f.read()
        except FileNotFoundError:
            return ''

    def output(self):
        with open(self.log) as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        try:
            with open(self.pid_file) as f:
                pid = int(f.read().strip())
            argv = ep.read_cmdline(pid) or []
            if argv and 'dhclient' in argv[0]:
                os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass


class DnsmasqDriverFunctionalTest(base.FunctionalTestCase):

    def setUp(self):
        super().setUp()
        dhcp_conf.register_dhcp_opts(self.conf)
        # NestedTempfile's root is 0700; dnsmasq reads as nobody (see initialize()).
        os.chmod(tempfile.gettempdir(), 0o755)
        self.state_path = tempfile.mkdtemp(prefix='akd-state-')
        os.chmod(self.state_path, 0o755)
        self.conf.set_override('state_path', self.state_path)
        self.conf.set_override('check_child_processes_interval', 1)
        self.topo = DnsmasqTopology(self, int(uuid.uuid4().int % 200) + 10)
        self.topo.create()
        self.addCleanup(kill_all, self.topo.network_id)
        self.driver = self.new_driver()

    def new_driver(self):
        driver = dnsmasq_driver.DnsmasqDriver(conf=self.conf, host=HOST,
                                              interface_driver=mock.Mock())
        driver.initialize()
        self.addCleanup(driver.stop)
        return driver

    def enable(self, network, driver=None):
        (driver or self.driver).serve(typed(network), self.topo.namespace,
                                      self.topo.dhcp_device)
        pid = wait_until(lambda: self.driver.pid(self.topo.network_id), message='dnsmasq pid')
        wait_until(lambda: dhcp_bound(pid), message='dnsmasq bound to UDP 67')
        return pid

    def assertLease(self, env, address, pid=None):
        t = self.topo
        self.assertEqual(address, env['new_ip_address'])
        self.assertEqual(t.net + '1', env['new_routers'])
        self.assertEqual(str(MTU), env['new_interface_mtu'])
        self.assertEqual(t.net + '2', env['new_dhcp_server_identifier'])
        self.assertEqual('10.252.0.53', env['new_domain_name_servers'])
        self.assertEqual('openstacklocal', env['new_domain_name'])

    def test_lease_then_new_port_via_sighup_same_pid(self):
        t = self.topo
        ns1, dev1, mac1 = t.add_vm(1)
        port1 = t.port(mac1, 11)
        warm_up_privsep()
        started = time.monotonic()
        pid = self.enable(t.network([port1]))
        bound_s = time.monotonic() - started
        vm1 = DhcpClient(self, ns1, dev1)
        env = vm1.wait_bound()
        answered_s = time.monotonic() - started
        self.assertLease(env, t.net + '11')
        self.assertEqual(
            '32 169 254 169 254 %s 0 %s' % ((t.net + '1').replace('.', ' '),
                                            (t.net + '1').replace('.', ' ')),
            env['new_rfc3442_classless_static_routes'])
        self.assertEqual([pid], pids_with(t.network_id))

        # A port added later: files rewritten, SIGHUP, same process.
        ns2, dev2, mac2 = t.add_vm(2)
        port2 = t.port(mac2, 12)
        rchar = read_rchar(pid)
        reload_started = time.monotonic()
        self.driver.reload(typed(t.network([port1, port2])))
        reload_call_s = time.monotonic() - reload_started
        wait_until(lambda: read_rchar(pid) > rchar, message='dnsmasq re-reading its files')
        reread_s = time.monotonic() - reload_started
        self.assertEqual(ep.DaemonAction.RELOAD, self.driver.last_action)
        env = DhcpClient(self, ns2, dev2).wait_bound()
        self.assertLease(env, t.net + '12')
        self.assertEqual(pid, self.driver.pid(t.network_id))
        self.assertEqual([pid], pids_with(t.network_id))

        # The same network again: nothing to do, dnsmasq is not even signalled.
        rchar = read_rchar(pid)
        self.driver.reload(typed(t.network([port1, port2])))
        time.sleep(0.3)
        self.assertEqual(rchar, read_rchar(pid))
        self.assertEqual(ep.DaemonAction.NONE, self.driver.last_action)
        self.assertEqual(1, self.driver.get_configurations()['dnsmasq_reloads'])

        for name, value in (('enable_to_udp67_bound_ms', bound_s),
                            ('enable_to_first_lease_ms', answered_s),
                            ('dhclient_dora_ms', vm1.seconds),
                            ('reload_call_ms', reload_call_s),
                            ('reload_to_reread_ms', reread_s)):
            self.addDetail(name, content.text_content('%.1f' % (value * 1000)))

    def test_deleted_port_gets_no_lease(self):
        t = self.topo
        ns1, dev1, mac1 = t.add_vm(1)
        ns2, dev2, mac2 = t.add_vm(2)
        port1, port2 = t.port(mac1, 11), t.port(mac2, 12)
        pid = self.enable(t.network([port1, port2]))
        old = DhcpClient(self, ns2, dev2)
        self.assertLease(old.wait_bound(), t.net + '12')
        # dhclient records the lease after running its script.
        wait_until(lambda: 'fixed-address %s;' % (t.net + '12') in old.recorded_leases(),
                   message="dhclient's lease file")
        old.stop()

        self.driver.reload(typed(t.network([port1])))
        self.assertEqual(pid, self.driver.pid(t.network_id))
        with open(os.path.join(self.state_path, 'dhcp', t.network_id, 'host')) as f:
            self.assertNotIn(mac2, f.read())
        # A fresh client (no lease file, so it DISCOVERs): static mode
        # offers nothing to an unknown MAC.
        gone = DhcpClient(self, ns2, dev2, timeout=NO_LEASE_TIMEOUT)
        self.assertNotEqual(0, gone.wait_failed(NO_LEASE_TIMEOUT + 10), gone.output())
        self.assertIsNone(gone.lease_env())
        self.assertIn('No DHCPOFFERS received', gone.output())
        self.assertNotIn('DHCPOFFER of', gone.output())
        # The old client asking to keep its address (INIT-REBOOT REQUEST from
        # its lease file) is not acknowledged: dnsmasq NAKs it if it still
        # remembers the lease, else stays silent (it is not authoritative).
        renew = DhcpClient(self, ns2, dev2, timeout=NO_LEASE_TIMEOUT, lease_file=old.lease_file)
        returncode = renew.wait_failed(NO_LEASE_TIMEOUT + 15)
        output = renew.output()
        self.addDetail('renew_output', content.text_content(output))
        self.assertNotEqual(0, returncode)
        self.assertIn('DHCPREQUEST for %s' % (t.net + '12'), output)
        self.assertNotIn('DHCPACK', output)
        self.assertIsNone(renew.lease_env())
        # Control: the remaining port is still served by the same dnsmasq.
        self.assertLease(DhcpClient(self, ns1, dev1).wait_bound(), t.net + '11')
        self.assertEqual(pid, self.driver.pid(t.network_id))

    def leases(self):
        with open(os.path.join(self.state_path, 'dhcp', self.topo.network_id,
                               'leases')) as f:
            return f.read()

    def _reuse_address(self):
        """VM 1 leases .11; its port is deleted and .11 goes to VM 2's new MAC.

        Returns (VM 2's namespace, device, MAC, old MAC).
        """
        t = self.topo
        ns1, dev1, mac1 = t.add_vm(1)
        pid = self.enable(t.network([t.port(mac1, 11)]))
        old = DhcpClient(self, ns1, dev1)
        self.assertLease(old.wait_bound(), t.net + '11')
        wait_until(lambda: 'fixed-address %s;' % (t.net + '11') in old.recorded_leases(),
                   message="dhclient's lease file")
        old.stop()  # killed: the VM goes away without a DHCPRELEASE of its own
        self.assertIn('%s %s' % (mac1, t.net + '11'), self.leases())

        ns2, dev2, mac2 = t.add_vm(2)
        self.driver.reload(typed(t.network([t.port(mac2, 11)])))
        self.assertEqual(ep.DaemonAction.RELOAD, self.driver.last_action)
        self.assertEqual(pid, self.driver.pid(t.network_id))
        return ns2, dev2, mac2, mac1

    def test_address_of_deleted_port_goes_to_new_mac_at_once(self):
        t = self.topo
        released = time.monotonic()
        ns2, dev2, mac2, mac1 = self._reuse_address()
        # dnsmasq itself dropped the old lease (it rewrites this file).
        self.assertNotIn(mac1, self.leases())
        self.assertEqual(1, self.driver.get_configurations()['dnsmasq_leases_released'])
        new = DhcpClient(self, ns2, dev2, timeout=NO_LEASE_TIMEOUT)
        self.assertLease(new.wait_bound(), t.net + '11')
        self.assertIn('%s %s' % (mac2, t.net + '11'), self.leases())
        self.addDetail('reload_to_new_lease_ms', content.text_content(
            '%.0f' % ((time.monotonic() - released) * 1000)))

    def test_without_dhcp_release_reused_address_is_refused(self):
        """The control of the test above: what happens where dnsmasq-utils is missing."""
        t = self.topo
        self.driver._release_tools = {4: False, 6: False}
        ns2, dev2, mac2, mac1 = self._reuse_address()
        self.assertIn('%s %s' % (mac1, t.net + '11'), self.leases())
        self.assertEqual(0, self.driver.get_configurations()['dnsmasq_leases_released'])
        # dnsmasq offers nothing: .11 is the only address of mac2 and is leased.
        refused = DhcpClient(self, ns2, dev2, timeout=NO_LEASE_TIMEOUT)
        self.assertNotEqual(0, refused.wait_failed(NO_LEASE_TIMEOUT + 10), refused.output())
        self.assertIsNone(refused.lease_env())
        self.assertNotIn('DHCPACK', refused.output())

    def test_dnsmasq_dns_servers_are_forwarders_not_handed_to_vms(self):
        self.conf.set_override('dnsmasq_dns_servers', ['192.0.2.53', '192.0.2.54#5353'])
        t = self.topo
        ns1, dev1, mac1 = t.add_vm(1)
        network = t.network([t.port(mac1, 11)])
        network['subnets'][0]['dns_nameservers'] = []
        pid = self.enable(network)
        argv = ep.read_cmdline(pid)
        self.assertEqual(['--server=192.0.2.53', '--server=192.0.2.54#5353'],
                         [a for a in argv if a.startswith('--server')])
        self.assertIn('--no-resolv', argv)
        with open(os.path.join(self.state_path, 'dhcp', t.network_id, 'opts')) as f:
            self.assertNotIn('dns-server', f.read())
        env = DhcpClient(self, ns1, dev1).wait_bound()
        # No dns_nameservers on the subnet: the VM resolves through dnsmasq.
        self.assertEqual(t.net + '2', env['new_domain_name_servers'])

    def test_monitor_respawns_killed_dnsmasq(self):
        t = self.topo
        ns1, dev1, mac1 = t.add_vm(1)
        network = t.network([t.port(mac1, 11)])
        old = self.enable(network)
        killed = time.monotonic()
        os.kill(old, signal.SIGKILL)
        new = wait_until(lambda: (self.driver.pid(t.network_id) or old) != old
                         and self.driver.pid(t.network_id), message='respawned dnsmasq')
        respawn_s = time.monotonic() - killed
        wait_until(lambda: dhcp_bound(new), message='respawned dnsmasq bound')
        # The new pid file can appear before the monitor has counted it.
        wait_until(lambda: self.driver.get_configurations()['dnsmasq_respawns'] == 1,
                   message='respawn counted')
        self.assertEqual(os.stat('/run/netns/' + t.namespace).st_ino,
                         os.stat('/proc/%d/ns/net' % new).st_ino)
        self.assertLease(DhcpClient(self, ns1, dev1).wait_bound(), t.net + '11')
        self.assertEqual([new], pids_with(t.network_id))
        self.addDetail('kill_to_respawn_ms', content.text_content('%.0f' % (respawn_s * 1000)))

    def test_restarted_agent_adopts_running_dnsmasq(self):
        self.conf.set_override('enable_isolated_metadata', True)
        t = self.topo
        ns1, dev1, mac1 = t.add_vm(1)
        network = t.network([t.port(mac1, 11)], with_router=False)
        pid = self.enable(network)
        self.driver.stop()  # the agent stops; dnsmasq must survive
        time.sleep(0.2)
        self.assertEqual(pid, self.driver.pid(t.network_id))

        hooks = []
        second = self.new_driver()
        second.metadata_hook = lambda net_id, ns, enabled: hooks.append((net_id, enabled))
        self.assertEqual({t.network_id}, second.active_networks())
        rchar = read_rchar(pid)
        second.serve(typed(network), t.namespace, t.dhcp_device)
        self.assertEqual(ep.DaemonAction.NONE, second.last_action)
        self.assertEqual(pid, second.pid(t.network_id))
        self.assertEqual(rchar, read_rchar(pid))  # not even a SIGHUP
        conf = second.get_configurations()
        self.assertEqual((1, 0, 0), (conf['dnsmasq_adopted'], conf['dnsmasq_starts'],
                                     conf['dnsmasq_restarts']))
        self.assertEqual([(t.network_id, True)], hooks)
        env = DhcpClient(self, ns1, dev1).wait_bound()
        self.assertLease(env, t.net + '11')
        # Isolated subnet: metadata goes to the DHCP port (.2), not the gateway.
        dhcp_ip = (t.net + '2').replace('.', ' ')
        self.assertIn('32 169 254 169 254 %s' % dhcp_ip,
                      env['new_rfc3442_classless_static_routes'])
        self.assertEqual([pid], pids_with(t.network_id))

    def test_disable_removes_process_and_state(self):
        t = self.topo
        pid = self.enable(t.network())
        state_dir = os.path.join(self.state_path, 'dhcp', t.network_id)
        self.assertTrue(os.path.isdir(state_dir))
        self.driver.stop_serving(t.network_id)
        self.assertIsNone(ep.read_cmdline(pid))
        self.assertFalse(os.path.exists(state_dir))
        self.assertEqual(set(), self.driver.active_networks())
        time.sleep(1.5)  # longer than the monitor interval: no respawn
        self.assertEqual([], pids_with(t.network_id))
        self.driver.stop_serving(t.network_id)  # idempotent

    def test_private_state_path_is_refused(self):
        private = tempfile.mkdtemp(prefix='akd-private-')
        os.chmod(private, 0o700)
        self.conf.set_override('state_path', os.path.join(private, 'state'))
        driver = dnsmasq_driver.DnsmasqDriver(conf=self.conf, host=HOST,
                                              interface_driver=mock.Mock())
        self.assertRaises(exceptions.InvalidConfiguration, driver.initialize)


class DnsmasqScaleFunctionalTest(base.FunctionalTestCase):
    """enable() of 20 networks until every dnsmasq answers DHCP."""

    NETWORKS = 20

    def setUp(self):
        super().setUp()
        dhcp_conf.register_dhcp_opts(self.conf)
        os.chmod(tempfile.gettempdir(), 0o755)
        self.state_path = tempfile.mkdtemp(prefix='akd-state-')
        os.chmod(self.state_path, 0o755)
        self.conf.set_override('state_path', self.state_path)
        self.conf.set_override('check_child_processes_interval', 0)
        self.driver = dnsmasq_driver.DnsmasqDriver(conf=self.conf, host=HOST,
                                                   interface_driver=mock.Mock())
        self.driver.initialize()
        self.addCleanup(self.driver.stop)

    def test_twenty_networks(self):
        topos, networks, vms = [], [], []
        for i in range(self.NETWORKS):
            topo = DnsmasqTopology(self, 10 + i)
            topo.create()
            self.addCleanup(kill_all, topo.network_id)
            ns, dev, mac = topo.add_vm(1)
            topos.append(topo)
            networks.append(topo.network([topo.port(mac, 11)]))
            vms.append((ns, dev))

        warm_up_privsep()
        started = time.monotonic()
        # As the DHCP agent does: its worker threads (default 8) enable networks.
        with futures.ThreadPoolExecutor(max_workers=8) as pool:
            jobs = [pool.submit(self.driver.serve, typed(network), topo.namespace, topo.dhcp_device)
                    for topo, network in zip(topos, networks)]
            for job in jobs:
                job.result(TIMEOUT)
        calls_s = time.monotonic() - started
        pids = [self.driver.pid(t.network_id) for t in topos]
        self.assertNotIn(None, pids)
        wait_until(lambda: all(dhcp_bound(p) for p in pids), message='20 dnsmasq bound')
        bound_s = time.monotonic() - started
        clients = [DhcpClient(self, ns, dev) for ns, dev in vms]
        for topo, client in zip(topos, clients):
            self.assertEqual(topo.net + '11', client.wait_bound()['new_ip_address'])
        answered_s = time.monotonic() - started
        self.assertEqual(set(t.network_id for t in topos), self.driver.active_networks())
        for name, value in (('enable_20_calls_ms', calls_s),
                            ('enable_20_to_udp67_bound_ms', bound_s),
                            ('enable_20_to_20_leases_ms', answered_s)):
            self.addDetail(name, content.text_content('%.1f' % (value * 1000)))


class DnsServerFormsTest(base.FunctionalTestCase):

    def test_every_accepted_dns_server_form_passes_dnsmasqs_own_check(self):
        """What option_values accepts for dnsmasq_dns_servers is what this
        dnsmasq takes (a value it refused would stop every network's
        server, not the agent at start)."""
        for value, normalised in test_option_values.DNSMASQ_SERVER_FORMS:
            check = subprocess.run(['dnsmasq', '--test', '--conf-file=/dev/null',
                                    '--server=' + normalised],
                                   capture_output=True, text=True)
            self.assertEqual(0, check.returncode, f'{value}: {check.stderr}')
