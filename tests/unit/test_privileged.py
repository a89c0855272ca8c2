"""The privileged layer's own checks, run in-process (no root, no daemon).

Each refusal of a request the agent should never make is shown here:
namespace names, spawns of anything but agentkit's daemons, iptables
inputs that touch chains agentkit does not own.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
from unittest import mock

import fixtures

from agentkit import exceptions
from agentkit import privileged
from agentkit.lib import ip_lib
from agentkit.lib import iptables_manager
from agentkit.privileged import iptables
from agentkit.privileged import namespaces
from agentkit.privileged import probe
from agentkit.privileged import process
from agentkit.privileged import tool_exec
from tests import base

NETWORK_ID = '0f3c4e1a-5b6d-4c7e-8f90-a1b2c3d4e5f6'


class NamespaceNamesTest(base.TestCase):

    def test_names_agentkit_creates_are_valid(self) -> None:
        for name in ('qdhcp-' + '0' * 8 + '-1111-2222-3333-' + '4' * 12,
                     'qrouter-abc', 'snat-x', 'fip-y', 'akp1234abcd', '_leading_underscore',
                     'a', 'a' * namespaces.MAX_NAME_LEN):
            self.assertEqual(name, namespaces.check_name(name))
            self.assertEqual(name, ip_lib.validate_namespace(name))

    def test_unsafe_names_are_refused_by_root_and_agent_alike(self) -> None:
        for name in ('', '.', '..', '../etc', 'a/b', '-n', '.hidden', 'a b', 'a\0b',
                     'a' * (namespaces.MAX_NAME_LEN + 1), None, 5, b'qdhcp-x'):
            if name is not None:
                self.assertRaises(ValueError, namespaces.check_name, name)
                self.assertRaises(Exception, ip_lib.validate_namespace, name)
            self.assertFalse(namespaces.is_valid_name(name))

    def test_path_and_missing_namespace(self) -> None:
        self.assertEqual(os.path.join(namespaces.NETNS_RUN_DIR, 'qrouter-x'),
                         namespaces.path('qrouter-x'))
        missing = 'akn-missing-%d' % os.getpid()
        exc = self.assertRaises(namespaces.NetworkNamespaceNotFound,
                                namespaces.open_namespace, missing)
        self.assertIn(missing, str(exc))
        self.assertIsNone(namespaces.open_namespace(None))

    def test_root_namespace_runs_in_the_calling_thread(self) -> None:
        self.assertEqual(42, namespaces.run_in_namespace(None, lambda: 42))
        with namespaces.netns_fd(None) as fd:
            self.assertEqual(os.stat('/proc/self/ns/net').st_ino, os.fstat(fd).st_ino)


class SpawnRefusalsTest(base.TestCase):
    """``process.spawn`` in-process: every refusal comes before anything runs."""

    def setUp(self) -> None:
        super().setUp()
        self.useFixture(fixtures.MockPatchObject(privileged.daemons, 'client_mode', False))
        self.fork = self.useFixture(fixtures.MockPatchObject(
            tool_exec.subprocess, 'Popen', side_effect=AssertionError('must not start'))).mock

    def assertRefused(self, message: str, argv: object, **kwargs: object) -> None:
        exc = self.assertRaises(exceptions.ProcessError, process.spawn, argv, **kwargs)
        self.assertIn(message, str(exc))
        self.fork.assert_not_called()

    def test_only_agentkits_daemons(self) -> None:
        for argv0 in ('sh', 'sleep', '/usr/sbin/dnsmasq', './dnsmasq', 'dnsmasq ',
                      'keepalived-not-run', 'python3'):
            self.assertRefused('not one of the daemons', [argv0, '--version'])

    def test_malformed_argv(self) -> None:
        for argv in ([], 'dnsmasq', ('dnsmasq', 5), ['dnsmasq', 'a\0b'], [''], None):
            self.assertRaises(exceptions.ProcessError, process.spawn, argv)
        for bad in ('--domain=a\nb', '--domain=a\rb', '--domain=' + 'a' * process.MAX_ARG_LEN):
            self.assertRefused('line breaks', ['dnsmasq', bad])
        self.assertRefused('at most', ['dnsmasq'] + ['--no-hosts'] * process.MAX_ARGS)

    def test_dnsmasq_arguments(self) -> None:
        for arg in ('--dhcp-script=/tmp/x', '--dhcp-luascript=/tmp/x.lua',
                    '--conf-script=/tmp/x', '--user=root', '--group=root',
                    # abbreviations dnsmasq would expand (found in review)
                    '--dhcp-luas=/tmp/x.lua', '--conf-s=/tmp/x', '--grou=root'):
            self.assertRefused('not an option agentkit gives', ['dnsmasq', arg])
        # A configuration file others may write could name a dhcp-script.
        writable = self.useFixture(fixtures.TempDir()).join('dnsmasq.conf')
        with open(writable, 'w') as f:
            f.write('dhcp-script=/tmp/x\n')
        os.chmod(writable, 0o666)
        self.assertRefused('others may write', ['dnsmasq', '--conf-file=' + writable])
        self.assertRefused('cannot read it', ['dnsmasq', '--conf-file=/nonexistent/x'])
        for arg in ('-6', '-6/tmp/x', '-k6', 'positional', '--', '-', '--X=1'):
            self.assertRefused('only --long-options', ['dnsmasq', '--no-hosts', arg])

    def test_haproxy_and_radvd_arguments(self) -> None:
        self.assertRefused('not one of', ['haproxy', '-f', '/x.cfg', '-L', 'peer'])
        self.assertRefused('value of -f expected', ['haproxy', '-f', '-db'])
        self.assertRefused('value is missing', ['haproxy', '-f'])
        self.assertRefused('not one of', ['radvd', '-C', '/x.conf', '--config=/y'])
        self.assertRefused('value is missing', ['radvd', '-C', '/x.conf', '-u'])

    def test_environment_allow_list(self) -> None:
        for env in ({'LD_PRELOAD': '/tmp/evil.so'}, {'LD_LIBRARY_PATH': '/tmp'},
                    {'PATH': '/tmp'}, {'PYTHONPATH': '/tmp'}, {'LANG': 'C', 'BASH_ENV': 'x'}):
            self.assertRefused('refusing environment variables', ['dnsmasq', '--no-hosts'],
                               env=env)
        self.assertEqual({'PATH': process.DEFAULT_PATH, 'LANG': 'C.UTF-8'},
                         process._validate_env({'LANG': 'C.UTF-8'}))

    def test_namespace_checked_before_start(self) -> None:
        self.useFixture(fixtures.MockPatchObject(
            process.tool_exec, 'find_binary', side_effect=lambda name: '/usr/sbin/' + name))
        self.assertRefused('invalid network namespace name', ['dnsmasq', '--no-hosts'],
                           namespace='../etc')
        self.assertRefused('does not exist', ['dnsmasq', '--no-hosts'],
                           namespace='akn-missing-%d' % os.getpid())

    def test_missing_daemon_is_a_clear_error(self) -> None:
        self.useFixture(fixtures.MockPatchObject(process.tool_exec.shutil, 'which',
                                                 return_value=None))
        self.assertRefused('radvd not found in ' + process.DEFAULT_PATH, ['radvd', '-n'])

    def test_what_the_drivers_run_is_accepted(self) -> None:
        self.useFixture(fixtures.MockPatchObject(
            process.tool_exec, 'find_binary', side_effect=lambda name: '/usr/sbin/' + name))
        for argv in (['dnsmasq', '--no-hosts', '--pid-file=/s/dhcp/%s/pid' % NETWORK_ID,
                      '--dhcp-range=set:subnet-x,10.0.0.0,static,255.255.255.0,86400s',
                      '--conf-file=/dev/null', '--server=192.0.2.53', '--domain=example.org'],
                     ['haproxy', '-f', '/s/metadata-proxy/%s.conf' % NETWORK_ID],
                     ['radvd', '-C', '/s/ra/%s.radvd.conf' % NETWORK_ID,
                      '-p', '/s/ra/%s.pid' % NETWORK_ID, '-m', 'syslog', '-u', 'radvd']):
            self.assertEqual(('/usr/sbin/' + argv[0], argv), process._validate_argv(argv))


class IptablesRestoreRefusalsTest(base.TestCase):
    """``iptables.restore`` in-process: only agentkit's chains and namespaces."""

    def setUp(self) -> None:
        super().setUp()
        self.useFixture(fixtures.MockPatchObject(privileged.network, 'client_mode', False))
        self.execute = self.useFixture(fixtures.MockPatchObject(
            iptables.tool_exec, 'execute', return_value=(0, '', ''))).mock
        self.useFixture(fixtures.MockPatchObject(
            iptables.tool_exec, 'find_binary', side_effect=lambda name: '/usr/sbin/' + name))

    def assertRefused(self, message: str, rules: str, namespace: str | None = None) -> None:
        exc = self.assertRaises(ValueError, iptables.restore, namespace, 4, rules)
        self.assertIn(message, str(exc))
        self.execute.assert_not_called()

    def test_rendered_input_is_accepted_in_own_namespaces_and_root(self) -> None:
        rules = iptables_manager.IptablesManager('ns').restore_input(4, {})
        for namespace in (None, 'qrouter-' + NETWORK_ID, 'qdhcp-' + NETWORK_ID):
            iptables.restore(namespace, 4, rules)
        self.assertEqual(3, self.execute.call_count)
        iptables.restore(None, 4, '*filter\n'
                         '-D FORWARD -m physdev --physdev-out tapx -j neutron-openvswi-sg-chain\n'
                         '-D some-other-chain -j neutron-openvswi-local\n'
                         '-X neutron-openvswi-local\nCOMMIT\n')

    def test_foreign_namespaces(self) -> None:
        rules = '*filter\n:neutron-l3-agent-INPUT - [0:0]\nCOMMIT\n'
        for namespace in ('akp1234', 'snat-x', 'qrouterx', 'other-qrouter-x'):
            self.assertRefused('not one of agentkit', rules, namespace)
        self.assertRefused('invalid network namespace name', rules, '../qrouter-x')

    def test_foreign_chains(self) -> None:
        for line in (':DOCKER - [0:0]', ':INPUT DROP [0:0]', '-F LIBVIRT_INP', '-X DOCKER',
                     '-A DOCKER -j ACCEPT', '-Z INPUT', '-N evil', '-A INPUT -j ACCEPT',
                     '-I INPUT 1 -p tcp --dport 22 -j ACCEPT', '-A FORWARD -j DOCKER',
                     '-D INPUT -j ACCEPT', '-R INPUT 1 -j ACCEPT', '-A neutron- -j ACCEPT',
                     '-A PREROUTING -j neutron-l3-agent-x'):
            self.assertRefused('not agentkit', '*filter\n%s\nCOMMIT\n' % line)
        self.assertRefused('not agentkit', '*raw\n-A INPUT -j neutron-l3-agent-x\nCOMMIT\n')

    def test_no_jump_hidden_in_a_comment_and_no_replaced_rule(self) -> None:
        # Found in review: the first "-j" of the line was taken for the target.
        for line in ('-A INPUT -m comment --comment "x -j neutron-a" -j ACCEPT',
                     '-I INPUT 1 -m comment --comment "-j neutron-a" -j ACCEPT',
                     '-A INPUT -j neutron-a -j ACCEPT',
                     '-R INPUT 1 -j neutron-a',
                     '-A INPUT -m comment --comment "unbalanced -j neutron-a'):
            self.assertRefused('not agentkit', '*filter\n%s\nCOMMIT\n' % line)
        # A quoted comment on a real hook is fine.
        iptables.restore(None, 4, '*filter\n-I INPUT 1 -m comment --comment "agentkit hook" '
                         '-j neutron-l3-agent-INPUT\nCOMMIT\n')


class ProbeRefusalsTest(base.TestCase):
    """agentkit-doctor --probe's operations in-process: each refusal comes
    before any namespace, device or socket is touched."""

    def setUp(self) -> None:
        super().setUp()
        self.useFixture(fixtures.MockPatchObject(privileged.network, 'client_mode', False))
        self.netlink = self.useFixture(fixtures.MockPatchObject(probe, 'netlink')).mock
        self.run_in = self.useFixture(fixtures.MockPatchObject(
            probe.namespaces, 'run_in_namespace',
            side_effect=AssertionError('must not enter a namespace'))).mock

    def assertRefused(self, message: str, func: object, *args: object) -> None:
        exc = self.assertRaises(ValueError, func, *args)
        self.assertIn(message, str(exc))
        self.run_in.assert_not_called()
        self.assertEqual([], [c for c in self.netlink.mock_calls
                              if not c[0].startswith('list_addresses')])

    def test_only_probe_names_are_created_or_removed(self) -> None:
        for probe_id in ('', '1234567', '123456789', 'ABCDEF01', '../../x1', 'qdhcp-12',
                         12345678, None):
            self.assertRefused('probe id', probe.create_probe, probe_id)
            self.assertRefused('probe id', probe.remove_probe, probe_id)
            self.assertRefused('probe id', probe.dhcp_discover, probe_id, 'fa:16:3e:00:00:01')
        self.assertRefused('invalid MTU', probe.create_probe, '0000abcd', 10 ** 6)
        self.assertEqual(('akprobe-0000abcd', 'akp0000abcd', 'akq0000abcd'),
                         (probe.probe_namespace('0000abcd'), probe.probe_host_device('0000abcd'),
                          probe.probe_inner_device('0000abcd')))

    def test_discover_arguments(self) -> None:
        for mac in ('FA:16:3E:00:00:01', 'fa:16:3e:00:00', 'fa-16-3e-00-00-01', None):
            self.assertRefused('invalid MAC', probe.dhcp_discover, '0000abcd', mac)
        for timeout in (0, -1, 11, True, '3'):
            self.assertRefused('timeout', probe.dhcp_discover, '0000abcd',
                               'fa:16:3e:00:00:01', timeout)

    def test_gateway_only_from_a_dhcp_namespace(self) -> None:
        for namespace in (None, 'qrouter-' + NETWORK_ID, 'akprobe-0000abcd', 'qdhcp-x',
                          'qdhcp-' + NETWORK_ID.upper(), '../qdhcp-' + NETWORK_ID):
            self.assertRefused('not a qdhcp- namespace', probe.probe_gateway, namespace,
                               'tap1', '10.0.0.1')
        ns = 'qdhcp-' + NETWORK_ID
        for address in ('255.255.255.255', '224.0.0.1', '0.0.0.0', 'fe80::1', 'x'):
            self.assertRefused('address', probe.probe_gateway, ns, 'tap1', address)
        self.assertRefused('invalid device', probe.probe_gateway, ns, 'a/b', '10.0.0.1')
        # The source is the device's own address on the gateway's subnet, or nothing.
        self.netlink.list_addresses.return_value = [
            {'address': '169.254.169.254', 'prefixlen': 16}]
        self.assertRefused('no address on the subnet', probe.probe_gateway, ns, 'tap1',
                           '10.0.0.1')

    def accept(self, result: object = None) -> None:
        """Let the next call enter its namespace (``run_in_namespace`` answers)."""
        self.run_in.side_effect = None
        self.run_in.return_value = result

    def test_gateway_only_a_host_of_the_devices_own_subnet(self) -> None:
        ns = 'qdhcp-' + NETWORK_ID
        self.netlink.list_addresses.return_value = [
            {'address': '10.0.0.2', 'prefixlen': 24}, {'address': '10.0.0.3', 'prefixlen': 24},
            {'address': '10.0.1.4', 'prefixlen': 31}]
        for address, why in (('10.0.0.0', 'network or broadcast'),
                             ('10.0.0.255', 'network or broadcast'),
                             ('10.0.0.2', 'itself'), ('10.0.0.3', 'itself'),
                             ('10.0.1.4', 'itself'),
                             ('10.0.2.1', 'no address on the subnet'),
                             ('192.0.2.1', 'no address on the subnet'),
                             ('127.0.0.1', 'no address on the subnet')):
            self.assertRefused(why, probe.probe_gateway, ns, 'tap1', address)
        # Positive control: a host of the subnet, from the device's address there.
        self.useFixture(fixtures.MockPatchObject(probe, '_arp', return_value='fa:16:3e:00:00:01'))
        self.useFixture(fixtures.MockPatchObject(probe, '_ping', return_value=0.5))
        self.run_in.side_effect = lambda namespace, func: func()
        for gateway, source in (('10.0.0.1', '10.0.0.2'), ('10.0.0.254', '10.0.0.2'),
                                ('10.0.1.5', '10.0.1.4')):    # a /31 has no broadcast
            self.assertEqual({'source': source, 'mac': 'fa:16:3e:00:00:01', 'rtt_ms': 0.5},
                             probe.probe_gateway(ns, 'tap1', gateway))
            self.assertEqual(ns, self.run_in.call_args[0][0])
        self.netlink.list_addresses.assert_called_with(ns, 'tap1', 4)

    def test_connect_only_from_dhcp_and_router_namespaces(self) -> None:
        for namespace in (None, 'akprobe-0000abcd', 'snat-' + NETWORK_ID, 'qrouter-x'):
            self.assertRefused('namespace', probe.tcp_connect, namespace, '169.254.169.254', 80)
        for port in (0, 65536, '80', True):
            self.assertRefused('invalid port', probe.tcp_connect, 'qrouter-' + NETWORK_ID,
                               '169.254.169.254', port)

    def test_connect_only_to_the_metadata_service(self) -> None:
        ns = 'qrouter-' + NETWORK_ID
        for address, port in (('169.254.169.254', 22), ('169.254.169.254', 9697),
                              ('169.254.169.253', 80), ('10.0.0.1', 80), ('127.0.0.1', 80)):
            self.assertRefused('only the metadata service', probe.tcp_connect, ns, address,
                               port)
        # Positive control: the metadata service itself, from both kinds of namespace.
        self.accept('connection refused')
        for namespace in (ns, 'qdhcp-' + NETWORK_ID):
            self.assertEqual('connection refused',
                             probe.tcp_connect(namespace, '169.254.169.254', 80))
            self.assertEqual(namespace, self.run_in.call_args[0][0])


class DhcpProbePacketsTest(base.TestCase):
    """The DISCOVER the probe sends and the OFFER it accepts."""

    PROBE_MAC = bytes.fromhex('0a0000000001')
    VM_MAC = bytes.fromhex('fa163e000010')

    @staticmethod
    def offer(xid: int, chaddr: bytes, message_type: int = 2, server: int = 2) -> bytes:
        """An OFFER of 10.0.0.10 from the DHCP server 10.0.0.<server>."""
        bootp = bytearray(300)
        bootp[0:8] = bytes([2, 1, 6, 0]) + xid.to_bytes(4, 'big')
        bootp[16:20] = bytes([10, 0, 0, 10])
        bootp[28:34] = chaddr
        bootp[236:240] = probe.DHCP_MAGIC
        bootp[240:249] = bytes([53, 1, message_type, 54, 4, 10, 0, 0, server])
        bootp[249] = 255
        udp = (67).to_bytes(2, 'big') + (68).to_bytes(2, 'big') + bytes(4) + bytes(bootp)
        ip = bytes([0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 2, 255, 255, 255, 255])
        return b'\xff' * 6 + bytes.fromhex('fa163e000002') + b'\x08\x00' + ip + udp

    def test_discover_broadcast_from_the_probes_own_mac(self) -> None:
        frame = probe.build_discover(self.PROBE_MAC, self.VM_MAC, 0x1234)
        self.assertEqual(b'\xff' * 6, frame[:6])
        self.assertEqual(self.PROBE_MAC, frame[6:12])     # the switch never sees the VM's MAC
        bootp = frame[14 + 20 + 8:]
        self.assertEqual(0x8000, int.from_bytes(bootp[10:12], 'big'))   # BROADCAST flag
        self.assertEqual(self.VM_MAC, bootp[28:34])
        self.assertEqual(bytes([53, 1, 1]), bootp[240:243])           # DHCPDISCOVER
        self.assertEqual(0, probe._checksum(frame[14:34]))           # a valid IP header

    def test_only_the_matching_offer_is_taken(self) -> None:
        self.assertEqual({'address': '10.0.0.10', 'server': '10.0.0.2',
                          'server_mac': 'fa:16:3e:00:00:02'},
                         probe.parse_offer(self.offer(7, self.VM_MAC), 7, self.VM_MAC))
        self.assertIsNone(probe.parse_offer(self.offer(8, self.VM_MAC), 7, self.VM_MAC))
        self.assertIsNone(probe.parse_offer(self.offer(7, self.PROBE_MAC), 7, self.VM_MAC))
        self.assertIsNone(probe.parse_offer(self.offer(7, self.VM_MAC, 5), 7, self.VM_MAC))
        self.assertIsNone(probe.parse_offer(b'short', 7, self.VM_MAC))


class SimulatedLink:
    """A socket, a clock and ``select`` for :func:`probe.collect_offers`:
    frames arrive at set times; every ``select`` costs a millisecond, as a
    system call costs some time."""

    COST = 0.001

    def __init__(self, arrivals: list[tuple[float, bytes]]) -> None:
        self.now = 0.0
        self.arrivals = sorted(arrivals, key=lambda a: a[0])
        self.sent: list[float] = []

    def clock(self) -> float:
        return self.now

    def send(self, frame: bytes) -> int:
        self.sent.append(self.now)
        return len(frame)

    def recv(self, size: int) -> bytes:
        return self.arrivals.pop(0)[1]

    def select(self, rlist: list[object], wlist: list[object], xlist: list[object],
               timeout: float) -> tuple[list[object], list[object], list[object]]:
        # What the real select says of the timeout (it refuses a negative one).
        select.select([], [], [], min(timeout, 0.0))
        self.now += self.COST
        if self.arrivals and self.arrivals[0][0] <= self.now + timeout:
            self.now = max(self.now, self.arrivals[0][0])
            return rlist, [], []
        self.now += timeout
        return [], [], []


class DhcpExchangeTest(base.TestCase):
    """When the probe sends DISCOVERs and how long it waits for OFFERs
    (a simulated link and clock: the real exchange is in the functional
    doctor tests)."""

    XID = 0x1234
    VM_MAC = DhcpProbePacketsTest.VM_MAC
    DISCOVER = probe.build_discover(DhcpProbePacketsTest.PROBE_MAC, VM_MAC, XID)

    def exchange(self, link: SimulatedLink, wait: float = 3.0) -> list[str]:
        offers = probe.collect_offers(link, self.DISCOVER, self.XID, self.VM_MAC, wait,
                                      clock=link.clock, readable=link.select)
        return sorted(o['server'] for o in offers)

    def offer(self, server: int = 2, xid: int = XID) -> bytes:
        return DhcpProbePacketsTest.offer(xid, self.VM_MAC, server=server)

    def test_an_offer_later_than_the_resend_interval_is_taken(self) -> None:
        # dnsmasq answers the second DISCOVER 0.8 s late: past its resend time.
        link = SimulatedLink([(1.8, self.offer())])
        self.assertEqual(['10.0.0.2'], self.exchange(link))
        self.assertEqual([0, 1], [round(t) for t in link.sent])   # none once answered
        self.assertLessEqual(link.now, 1.8 + probe.MORE_OFFERS_WAIT + 2 * link.COST)

    def test_a_prompt_offer_and_a_second_servers(self) -> None:
        link = SimulatedLink([(0.05, self.offer(2)), (0.2, self.offer(3)),
                              (0.3, self.offer(2)),      # a repeat: one per server
                              (0.9, self.offer(4))])     # after the extra wait
        self.assertEqual(['10.0.0.2', '10.0.0.3'], self.exchange(link))
        self.assertEqual([0], [round(t) for t in link.sent])
        self.assertEqual([(0.9, self.offer(4))], link.arrivals)

    def test_unanswered_discovers_are_resent_until_the_timeout(self) -> None:
        link = SimulatedLink([(0.5, self.offer(xid=self.XID + 1))])   # another client's
        self.assertEqual([], self.exchange(link))
        self.assertEqual([0, 1, 2], [round(t) for t in link.sent])
        self.assertGreaterEqual(link.now, 3.0)


class ToolExecTest(base.TestCase):
    """What a tool started by root inherits (in-process: no namespace needed)."""

    def test_default_signal_dispositions_and_empty_mask(self) -> None:
        rc, out, _ = tool_exec.execute([tool_exec.find_binary('cat'), '/proc/self/status'],
                                       None)
        self.assertEqual(0, rc)
        fields = dict(line.split(':', 1) for line in out.splitlines())
        ignored = int(fields['SigIgn'].strip(), 16)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            self.assertFalse(ignored & (1 << (sig - 1)), hex(ignored))
        self.assertEqual(0, int(fields['SigBlk'].strip(), 16))

    def test_environment_is_roots_own(self) -> None:
        self.useFixture(fixtures.EnvironmentVariable('LD_PRELOAD', '/nonexistent.so'))
        rc, out, _ = tool_exec.execute([tool_exec.find_binary('env')], None)
        self.assertEqual(0, rc)
        self.assertEqual(['LC_ALL=C', 'PATH=' + tool_exec.SEARCH_PATH], sorted(out.split()))

    def test_exec_failure_names_the_step(self) -> None:
        err = self.assertRaises(exceptions.ProcessError, tool_exec.execute,
                                ['/nonexistent/iptables-restore'], None)
        self.assertIn('exec failed: No such file or directory', str(err))


class SpawnFailuresTest(base.TestCase):
    """``process.spawn`` in-process (root namespace): failures after the checks."""

    def setUp(self) -> None:
        super().setUp()
        self.useFixture(fixtures.MockPatchObject(privileged.daemons, 'client_mode', False))
        self.binary = '/nonexistent/dnsmasq'
        self.useFixture(fixtures.MockPatchObject(
            process.tool_exec, "find_binary", side_effect=lambda name: self.binary))

    def test_exec_failure_names_the_step_in_both_modes(self) -> None:
        for daemonizes in (True, False):
            err = self.assertRaises(exceptions.ProcessError, process.spawn,
                                    ['dnsmasq', '--no-hosts'], daemonizes=daemonizes)
            self.assertIn("cannot start 'dnsmasq': exec failed: No such file or directory",
                          str(err))

    def test_command_that_does_not_detach_is_killed(self) -> None:
        # A stand-in that stays in the foreground, under dnsmasq's name.
        self.binary = shutil.which('sleep', path=tool_exec.SEARCH_PATH)
        patcher = mock.patch.dict(process.DAEMONS, {'dnsmasq': lambda args: None})
        patcher.start()
        self.addCleanup(patcher.stop)
        err = self.assertRaises(exceptions.ProcessError, process.spawn, ['dnsmasq', '30'],
                                detach_timeout=0.2)
        self.assertIn('did not detach', str(err))
