"""ipset sets and conntrack deletions against the real kernel, through privsep.

ipsets: the privileged functions work in the root namespace (where the
firewall's rules are), so every set a test makes is named ``akt<hex>...``
with a prefix of its own and removed by a cleanup. Results are checked with
the ``ipset`` tool, never only with agentkit's own view; iptables rules
referencing a set live in a throwaway ``akt<hex>`` chain of the root
``filter`` table that no builtin chain jumps to, so no packet ever meets it.

conntrack: two namespaces joined by two veth pairs; the server namespace's
raw table puts each pair's traffic in its own zone (``-j CT --zone N``), as
the firewall does per network. Real flows (TCP sessions, UDP, ping, IPv4
and IPv6) are created and the entries checked with ``conntrack -L -w N``
in that namespace.
"""

from __future__ import annotations

import os
import random
import re
import select
import subprocess
import sys
import uuid
from unittest import mock

from agentkit.lib import conntrack
from agentkit.lib import ip_lib
from agentkit.lib import ipset_manager
from agentkit.privileged import ipset as priv_ipset
from tests.functional import base

TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def ipset_list(name: str) -> tuple[dict[str, str], set[str]] | None:
    """``ipset list NAME``: header fields and members (hosts as x/32, x/128)."""
    proc = run('ipset', 'list', name, check=False)
    if proc.returncode != 0:
        return None
    header: dict[str, str] = {}
    members: set[str] = set()
    in_members = False
    for line in proc.stdout.splitlines():
        if in_members:
            if line.strip():
                member = line.split()[0]
                if '/' not in member:
                    member += '/128' if ':' in member else '/32'
                members.add(member)
        elif line == 'Members:':
            in_members = True
        elif ': ' in line:
            key, value = line.split(': ', 1)
            header[key] = value
    return header, members


def ipset_test(name: str, address: str) -> bool:
    return run('ipset', 'test', name, address, check=False).returncode == 0


class IpsetTestCase(base.FunctionalTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.prefix = 'akt' + uuid.uuid4().hex[:5]
        self.manager = ipset_manager.IpsetManager(self.prefix)
        self.addCleanup(self._purge_sets)

    def _purge_sets(self) -> None:
        names = run('ipset', 'list', '-n').stdout.split()
        for name in names:
            if name.startswith(self.prefix):
                run('ipset', 'destroy', name, check=False)

    def chain_with_set_rule(self, name: str) -> str:
        """A root ``filter`` chain (not hooked anywhere) with a rule using set ``name``."""
        chain = 'akt' + uuid.uuid4().hex[:12]
        run('iptables', '-t', 'filter', '-N', chain)
        self.addCleanup(run, 'iptables', '-t', 'filter', '-X', chain, check=False)
        run('iptables', '-t', 'filter', '-A', chain, '-m', 'set', '--match-set', name, 'src',
            '-j', 'RETURN')
        self.addCleanup(run, 'iptables', '-t', 'filter', '-F', chain, check=False)
        return chain


class TestIpsets(IpsetTestCase):

    def test_create_and_normalise(self):
        group = str(uuid.uuid4())
        name = self.manager.set_name(4, group)
        self.assertTrue(self.manager.set_members(
            4, group, ['10.0.0.1', '10.1.0.5/16', '192.0.2.0/255.255.255.128']))
        header, members = ipset_list(name)
        self.assertEqual('hash:net', header['Type'])
        self.assertIn('family inet ', header['Header'])
        self.assertEqual({'10.0.0.1/32', '10.1.0.0/16', '192.0.2.0/25'}, members)
        self.assertEqual(['10.0.0.1/32', '10.1.0.0/16', '192.0.2.0/25'],
                         self.manager.members(name))
        self.assertTrue(ipset_test(name, '10.1.200.3'))
        self.assertTrue(ipset_test(name, '192.0.2.127'))
        self.assertFalse(ipset_test(name, '192.0.2.128'))
        self.assertFalse(ipset_test(name, '10.0.0.2'))
        self.assertEqual([name], self.manager.sets())
        # No temporary set left behind.
        self.assertIsNone(ipset_list(name + '-n'))

    def test_ipv6_and_zero_prefix(self):
        group = str(uuid.uuid4())
        name = self.manager.set_name(6, group)
        self.assertTrue(self.manager.set_members(6, group, ['2001:db8::1', '2001:db8:1::9/64']))
        header, members = ipset_list(name)
        self.assertIn('family inet6 ', header['Header'])
        self.assertEqual({'2001:db8::1/128', '2001:db8:1::/64'}, members)
        self.assertTrue(ipset_test(name, '2001:db8:1::ffff'))
        self.assertFalse(ipset_test(name, '2001:db8::2'))
        # ::/0 cannot be stored in hash:net: both halves are, and match everything.
        self.assertTrue(self.manager.set_members(6, group, ['::/0']))
        self.assertEqual({'::/1', '8000::/1'}, ipset_list(name)[1])
        self.assertTrue(ipset_test(name, 'fe80::1'))
        self.assertTrue(ipset_test(name, '2001:db8::2'))

    def test_unchanged_set_is_not_rewritten(self):
        group = str(uuid.uuid4())
        name = self.manager.set_name(4, group)
        self.manager.set_members(4, group, ['10.0.0.1', '10.0.0.2'])
        # A replaced set is a new kernel set with a new random hash seed.
        initval = ipset_list(name)[0]['Header']
        with mock.patch.object(priv_ipset, 'replace_set',
                               wraps=priv_ipset.replace_set) as replace:
            self.assertFalse(self.manager.set_members(4, group, ['10.0.0.2', '10.0.0.1/32']))
            replace.assert_not_called()  # memoised: no root call at all
            # A fresh manager (agent restart) asks the daemon, which compares
            # with the kernel and writes nothing.
            fresh = ipset_manager.IpsetManager(self.prefix)
            self.assertFalse(fresh.set_members(4, group, ['10.0.0.1', '10.0.0.2']))
            replace.assert_called_once()
        self.assertEqual(initval, ipset_list(name)[0]['Header'])
        self.assertTrue(fresh.set_members(4, group, ['10.0.0.1']))
        self.assertNotEqual(initval, ipset_list(name)[0]['Header'])
        self.assertEqual({'10.0.0.1/32'}, ipset_list(name)[1])

    def test_swap_keeps_the_iptables_reference(self):
        group = str(uuid.uuid4())
        name = self.manager.set_name(4, group)
        self.manager.set_members(4, group, ['10.0.0.1', '10.0.0.2'])
        chain = self.chain_with_set_rule(name)
        self.assertEqual('1', ipset_list(name)[0]['References'])

        self.assertTrue(self.manager.set_members(4, group, ['10.0.0.2', '10.0.0.3/31']))
        header, members = ipset_list(name)
        self.assertEqual({'10.0.0.2/32', '10.0.0.2/31'}, members)
        self.assertEqual('1', header['References'])  # the rule now uses the new content
        self.assertFalse(ipset_test(name, '10.0.0.1'))
        self.assertTrue(ipset_test(name, '10.0.0.3'))
        self.assertIn('--match-set %s src' % name, run('iptables-save', '-t', 'filter').stdout)
        self.assertIsNone(ipset_list(name + '-n'))

        # A referenced set cannot be destroyed; destroy_unused leaves it.
        e = self.assertRaises(ipset_manager.IpsetInUse, priv_ipset.destroy_set, name)
        self.assertIn(name, str(e))
        self.assertEqual(set(), self.manager.destroy_unused(keep=set()))
        self.assertIn('still referenced', self.log.output)
        self.assertIsNotNone(ipset_list(name))

        run('iptables', '-t', 'filter', '-F', chain)
        self.assertEqual({name}, self.manager.destroy_unused(keep=set()))
        self.assertIsNone(ipset_list(name))
        self.assertFalse(priv_ipset.destroy_set(name))

    def test_destroy_unused_keeps_wanted_and_removes_leftovers(self):
        groups = [str(uuid.uuid4()) for _ in range(3)]
        names = [self.manager.set_name(4, g) for g in groups]
        for group in groups:
            self.manager.set_members(4, group, ['10.0.0.1'])
        # A temporary set left by an interrupted replacement of a dropped group.
        run('ipset', 'create', names[2] + '-n', 'hash:net')
        other = 'akt' + uuid.uuid4().hex[:5] + 'x'  # another manager's set
        run('ipset', 'create', other, 'hash:net')
        self.addCleanup(run, 'ipset', 'destroy', other, check=False)

        destroyed = self.manager.destroy_unused(keep={names[0]})
        self.assertEqual({names[1], names[2], names[2] + '-n'}, destroyed)
        self.assertEqual([names[0]], self.manager.sets())
        self.assertIsNotNone(ipset_list(other))
        # The destroyed groups are forgotten: setting one again recreates it.
        self.assertTrue(self.manager.set_members(4, groups[1], ['10.0.0.1']))
        self.assertEqual({'10.0.0.1/32'}, ipset_list(names[1])[1])

    def test_leftover_temporary_set_does_not_block(self):
        group = str(uuid.uuid4())
        name = self.manager.set_name(4, group)
        self.manager.set_members(4, group, ['10.0.0.1'])
        run('ipset', 'create', name + '-n', 'hash:ip', 'family', 'inet')
        run('ipset', 'add', name + '-n', '10.9.9.9')
        self.assertTrue(self.manager.set_members(4, group, ['10.0.0.7']))
        self.assertEqual({'10.0.0.7/32'}, ipset_list(name)[1])
        self.assertIsNone(ipset_list(name + '-n'))

    def test_incompatible_existing_set(self):
        group = str(uuid.uuid4())
        name = self.manager.set_name(4, group)
        run('ipset', 'create', name, 'hash:ip')
        e = self.assertRaises(ipset_manager.IpsetIncompatible,
                              self.manager.set_members, 4, group, ['10.0.0.1'])
        self.assertIn('hash:ip', str(e))
        name6 = self.manager.set_name(6, group)
        run('ipset', 'create', name6, 'hash:net', 'family', 'inet')
        self.assertRaises(ipset_manager.IpsetIncompatible,
                          self.manager.set_members, 6, group, ['2001:db8::1'])
        # Nothing was changed.
        self.assertEqual('hash:ip', ipset_list(name)[0]['Type'])

    def test_large_sets(self):
        group = str(uuid.uuid4())
        name = self.manager.set_name(4, group)
        members = ['10.%d.%d.%d' % (i >> 16, (i >> 8) & 255, i & 255) for i in range(5000)]
        self.assertTrue(self.manager.set_members(4, group, members))
        header, listed = ipset_list(name)
        self.assertEqual('5000', header['Number of entries'])
        self.assertEqual({m + '/32' for m in members}, listed)
        self.assertEqual(5000, len(priv_ipset.list_members(name)))
        self.assertTrue(self.manager.set_members(4, group, members[1:] + ['11.0.0.1']))
        self.assertFalse(ipset_test(name, members[0]))
        self.assertTrue(ipset_test(name, '11.0.0.1'))
        self.assertEqual('5000', ipset_list(name)[0]['Number of entries'])

    def test_daemon_validates_what_it_receives(self):
        # Straight to the entrypoints, bypassing IpsetManager's checks.
        good = self.prefix + 'ok'
        for name in (self.prefix + 'a b', self.prefix + ';id', self.prefix + '-n',
                     self.prefix + 'x' * 30, '', self.prefix + '\n'):
            self.assertRaises(ipset_manager.InvalidIpsetArgument,
                              priv_ipset.replace_set, name, 4, [])
        for members in (['10.0.0.1 -j ACCEPT'], ['10.0.0.1', '2001:db8::1'],
                        ['10.0.0.1/40'], '10.0.0.1', [167772161]):
            self.assertRaises(ipset_manager.InvalidIpsetArgument,
                              priv_ipset.replace_set, good, 4, members)
        self.assertRaises(ipset_manager.InvalidIpsetArgument,
                          priv_ipset.replace_set, good, 5, [])
        self.assertRaises(ipset_manager.InvalidIpsetArgument,
                          priv_ipset.destroy_set, self.prefix + '-n-n')
        self.assertRaises(ipset_manager.InvalidIpsetArgument,
                          priv_ipset.list_sets, 'a b')
        self.assertRaises(ipset_manager.IpsetNotFound, priv_ipset.list_members, good)
        self.assertEqual((), priv_ipset.list_sets(self.prefix))


# --------------------------------------------------------------------------
# conntrack
# --------------------------------------------------------------------------

# Server side: listens on TCP ports (argv), keeps every connection, prints
# what arrives; binds the UDP ports so datagrams are received (no ICMP error).
_SERVER = r'''
import selectors, socket, sys
sel = selectors.DefaultSelector()
for spec in sys.argv[1:]:
    proto, family, port = spec.split(':')
    fam = socket.AF_INET6 if family == '6' else socket.AF_INET
    kind = socket.SOCK_STREAM if proto == 'tcp' else socket.SOCK_DGRAM
    s = socket.socket(fam, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(('::' if fam == socket.AF_INET6 else '0.0.0.0', int(port)))
    if kind == socket.SOCK_STREAM:
        s.listen(16)
        sel.register(s, selectors.EVENT_READ, 'listen')
    else:
        sel.register(s, selectors.EVENT_READ, 'udp')
print('ready', flush=True)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        if key.data == 'listen':
            conn, _ = s.accept()
            sel.register(conn, selectors.EVENT_READ, 'conn')
        elif key.data == 'udp':
            s.recvfrom(2048)
        else:
            data = s.recv(2048)
            if not data:
                sel.unregister(s)
                s.close()
                continue
            print('recv %d %s' % (s.getsockname()[1], data.decode().strip()), flush=True)
'''

# Client side: reads commands on stdin; keeps its TCP connections open.
#   tcp <dst> <dport> <sport>   connect (from a fixed source port)
#   udp <dst> <dport> <sport>   send one datagram
#   send <n> <text>             send a line on the n-th TCP connection
_CLIENT = r'''
import socket, sys
conns = []
for line in sys.stdin:
    cmd, *args = line.split()
    try:
        if cmd in ('tcp', 'udp'):
            dst, dport, sport = args[0], int(args[1]), int(args[2])
            fam = socket.AF_INET6 if ':' in dst else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM if cmd == 'tcp' else socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(('::' if fam == socket.AF_INET6 else '0.0.0.0', sport))
            if cmd == 'tcp':
                s.settimeout(5)
                s.connect((dst, dport))
                conns.append(s)
            else:
                s.sendto(b'x', (dst, dport))
                s.close()
        elif cmd == 'send':
            conns[int(args[0])].sendall((' '.join(args[1:]) + '\n').encode())
        print('ok', flush=True)
    except OSError as e:
        print('error %s' % e, flush=True)
'''

_ENTRY_RE = re.compile(r'(\w+)=(\S+)')


def conntrack_list(namespace: str, zone: int | None = None) -> set[tuple]:
    """Entries as (protocol, src, dst, dport or icmp type, zone), both families."""
    entries = set()
    for family in ('ipv4', 'ipv6'):
        cmd = ['ip', 'netns', 'exec', namespace, 'conntrack', '-L', '-f', family]
        if zone is not None:
            cmd += ['-w', str(zone)]
        out = run(*cmd).stdout
        for line in out.splitlines():
            fields = line.split()
            if len(fields) < 2 or not fields[1].isdigit():
                continue
            pairs = _ENTRY_RE.findall(line)
            first: dict[str, str] = {}
            for key, value in pairs:
                first.setdefault(key, value)
            port = first.get('dport') or first.get('type')
            entries.add((int(fields[1]), first['src'], first['dst'],
                         int(port) if port else None, int(first.get('zone', 0))))
    return entries


class ConntrackTestCase(base.FunctionalTestCase):
    """Client namespace --veth0 (zone A)-- server namespace
                      --veth1 (zone B)--"""

    V4 = ('192.0.2.1', '192.0.2.2')
    V6 = ('2001:db8:77::1', '2001:db8:77::2')
    OTHER = ('198.51.100.1', '198.51.100.2')

    def setUp(self) -> None:
        super().setUp()
        tag = uuid.uuid4().hex[:8]
        self.client_ns = 'akc-c-' + tag
        self.server_ns = 'akc-s-' + tag
        for ns in (self.client_ns, self.server_ns):
            ip_lib.create_namespace(ns)
            self.addCleanup(ip_lib.delete_namespace, ns)
        self.zone_a = random.randint(100, 30000)
        self.zone_b = self.zone_a + 1
        pairs = ((self.V4, '24', self.zone_a), (self.OTHER, '24', self.zone_b))
        for i, ((client_ip, server_ip), plen, zone) in enumerate(pairs):
            c_dev, s_dev = 'akc%dc%s' % (i, tag), 'akc%ds%s' % (i, tag)
            run('ip', 'link', 'add', c_dev, 'netns', self.client_ns, 'type', 'veth',
                'peer', 'name', s_dev, 'netns', self.server_ns)
            run('ip', '-n', self.client_ns, 'addr', 'add', '%s/%s' % (client_ip, plen),
                'dev', c_dev)
            run('ip', '-n', self.server_ns, 'addr', 'add', '%s/%s' % (server_ip, plen),
                'dev', s_dev)
            if i == 0:
                run('ip', '-n', self.client_ns, 'addr', 'add', self.V6[0] + '/64', 'dev', c_dev,
                    'nodad')
                run('ip', '-n', self.server_ns, 'addr', 'add', self.V6[1] + '/64', 'dev', s_dev,
                    'nodad')
            run('ip', '-n', self.client_ns, 'link', 'set', c_dev, 'up')
            run('ip', '-n', self.server_ns, 'link', 'set', s_dev, 'up')
            for tool in ('iptables', 'ip6tables'):
                for chain, flag in (('PREROUTING', '-i'), ('OUTPUT', '-o')):
                    self.server(tool, '-t', 'raw', '-A', chain, flag, s_dev, '-j', 'CT',
                                '--zone', str(zone))
        self.server_dev = 'akc0s' + tag

    def server(self, *cmd: str) -> None:
        run('ip', 'netns', 'exec', self.server_ns, *cmd)

    def spawn(self, namespace: str, script: str, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen(['ip', 'netns', 'exec', namespace, sys.executable, '-u', '-c',
                                 script, *args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, bufsize=1)
        self.addCleanup(proc.wait)
        self.addCleanup(proc.kill)
        return proc

    def start_server(self, *specs: str) -> subprocess.Popen:
        proc = self.spawn(self.server_ns, _SERVER, *specs)
        self.assertEqual('ready', self.readline(proc, 10))
        return proc

    def start_client(self) -> subprocess.Popen:
        return self.spawn(self.client_ns, _CLIENT)

    @staticmethod
    def readline(proc: subprocess.Popen, timeout: float) -> str | None:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            return None
        return proc.stdout.readline().strip()

    def client_do(self, client: subprocess.Popen, command: str) -> None:
        client.stdin.write(command + '\n')
        client.stdin.flush()
        self.assertEqual('ok', self.readline(client, 10), command)

    def ping(self, address: str) -> None:
        run('ip', 'netns', 'exec', self.client_ns, 'ping', '-c1', '-W2', address)


class TestConntrackDeletion(ConntrackTestCase):

    def test_only_matching_entries_are_deleted(self):
        c4, s4 = self.V4
        c6, s6 = self.V6
        o4, so4 = self.OTHER
        self.start_server('tcp:4:7000', 'tcp:4:7001', 'udp:4:5000', 'udp:4:5001',
                          'udp:6:5000')
        client = self.start_client()
        for command in ('tcp %s 7000 41000' % s4, 'tcp %s 7001 41001' % s4,
                        'tcp %s 7000 41002' % so4, 'udp %s 5000 42000' % s4,
                        'udp %s 5001 42001' % s4, 'udp %s 5000 42002' % so4,
                        'udp %s 5000 42003' % s6):
            self.client_do(client, command)
        for address in (s4, so4, s6):
            self.ping(address)
        a, b = self.zone_a, self.zone_b
        expected = {
            (TCP, c4, s4, 7000, a), (TCP, c4, s4, 7001, a), (TCP, o4, so4, 7000, b),
            (UDP, c4, s4, 5000, a), (UDP, c4, s4, 5001, a), (UDP, o4, so4, 5000, b),
            (UDP, c6, s6, 5000, a), (ICMP, c4, s4, 8, a), (ICMP, o4, so4, 8, b),
            (ICMPV6, c6, s6, 128, a),
        }
        self.assertEqual(expected, conntrack_list(self.server_ns))
        self.assertEqual({e for e in expected if e[4] == a},
                         conntrack_list(self.server_ns, zone=a))

        def delete(*filters: conntrack.FlowFilter) -> int:
            return conntrack.delete_flows(filters, namespace=self.server_ns)

        # One UDP port in zone A: the other port, zone B and IPv6 stay.
        self.assertEqual(1, delete(conntrack.FlowFilter(
            4, zone=a, protocol=UDP, orig_dst=s4, dport_min=5000, dport_max=5000)))
        expected.discard((UDP, c4, s4, 5000, a))
        self.assertEqual(expected, conntrack_list(self.server_ns))

        # A TCP port range in zone A, from the client's /32 only.
        self.assertEqual(1, delete(conntrack.FlowFilter(
            4, zone=a, protocol=TCP, orig_src=c4 + '/32', dport_min=6990, dport_max=7000)))
        expected.discard((TCP, c4, s4, 7000, a))
        self.assertEqual(expected, conntrack_list(self.server_ns))

        # ICMP: the "ports" (type 8, code 0) are ignored; zone B's ping stays.
        self.assertEqual(1, delete(conntrack.FlowFilter(4, zone=a, protocol=ICMP,
                                                        dport_min=8, dport_max=0)))
        expected.discard((ICMP, c4, s4, 8, a))
        self.assertEqual(expected, conntrack_list(self.server_ns))

        # A source prefix that does not contain the client: nothing.
        self.assertEqual(0, delete(conntrack.FlowFilter(4, zone=a, orig_src='10.0.0.0/8')))
        self.assertEqual(expected, conntrack_list(self.server_ns))

        # IPv6, by prefix, in zone A: UDP and ICMPv6; IPv4 untouched.
        self.assertEqual(2, delete(conntrack.FlowFilter(6, zone=a,
                                                        orig_src='2001:db8:77::/64')))
        expected -= {(UDP, c6, s6, 5000, a), (ICMPV6, c6, s6, 128, a)}
        self.assertEqual(expected, conntrack_list(self.server_ns))

        # Any zone, several filters in one call (one dump per version and zone).
        self.assertEqual(3, delete(conntrack.FlowFilter(4, protocol=UDP, dport_min=5000),
                                   conntrack.FlowFilter(4, zone=b, protocol=TCP),
                                   conntrack.FlowFilter(4, zone=b, protocol=ICMP)))
        expected = {(TCP, c4, s4, 7001, a), (UDP, c4, s4, 5001, a)}
        self.assertEqual(expected, conntrack_list(self.server_ns))

        # Deleting again finds nothing; unknown namespace is a clear error.
        self.assertEqual(0, delete(conntrack.FlowFilter(4, zone=b)))
        self.assertRaises(conntrack.NetworkNamespaceNotFound, conntrack.delete_flows,
                          [conntrack.FlowFilter(4)], namespace='akc-absent-' + uuid.uuid4().hex)

    def test_deleted_session_stops_passing(self):
        _, s4 = self.V4
        dev = self.server_dev
        server = self.start_server('tcp:4:7100')
        accept_rule = ('INPUT', '-i', dev, '-p', 'tcp', '--dport', '7100', '-j', 'ACCEPT')
        self.server('iptables', '-A', 'INPUT', '-i', dev, '-m', 'conntrack', '--ctstate',
                    'ESTABLISHED,RELATED', '-j', 'ACCEPT')
        self.server('iptables', '-A', *accept_rule)
        self.server('iptables', '-A', 'INPUT', '-i', dev, '-j', 'DROP')
        client = self.start_client()
        self.client_do(client, 'tcp %s 7100 43000' % s4)
        self.client_do(client, 'send 0 one')
        self.assertEqual('recv 7100 one', self.readline(server, 5))

        # The rule goes; the established session still passes...
        self.server('iptables', '-D', *accept_rule)
        self.client_do(client, 'send 0 two')
        self.assertEqual('recv 7100 two', self.readline(server, 5))
        # ...and a new connection does not.
        client.stdin.write('tcp %s 7100 43001\n' % s4)
        client.stdin.flush()
        self.assertTrue(self.readline(client, 10).startswith('error'))

        # Deleting its entry ends it: the next segment is not ESTABLISHED.
        self.assertEqual(1, conntrack.delete_flows(
            [conntrack.FlowFilter(4, zone=self.zone_a, protocol=TCP, orig_dst=s4,
                                  dport_min=7100)], namespace=self.server_ns))
        self.client_do(client, 'send 0 three')
        self.assertIsNone(self.readline(server, 3), 'data passed after the deletion')
        # Proof that the deletion, not a broken setup, stopped it: restore the
        # rule and the client's retransmission gets through.
        self.server('iptables', '-I', *accept_rule)
        self.assertEqual('recv 7100 three', self.readline(server, 10))

    def test_pyroute2_delete_needs_the_zone(self):
        """The kernel looks a tuple up in zone 0 unless CTA_ZONE is given.

        Why delete_entries always sends the zone: pyroute2's
        ``entry('del', tuple_orig=...)`` alone misses a zoned entry (ENOENT);
        with ``zone=`` it deletes it.
        """
        from pyroute2.netlink.exceptions import NetlinkError
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple, NFCTSocket

        c4, s4 = self.V4
        self.start_server('udp:4:5300')
        client = self.start_client()
        self.client_do(client, 'udp %s 5300 44000' % s4)
        entry = (UDP, c4, s4, 5300, self.zone_a)
        self.assertIn(entry, conntrack_list(self.server_ns))
        tuple_orig = NFCTAttrTuple(saddr=c4, daddr=s4, proto=UDP, sport=44000, dport=5300)
        sock = NFCTSocket(netns=self.server_ns, flags=0)
        self.addCleanup(sock.close)
        e = self.assertRaises(NetlinkError, sock.entry, 'del', tuple_orig=tuple_orig)
        self.assertEqual(os.strerror(e.code), os.strerror(2))
        self.assertIn(entry, conntrack_list(self.server_ns))
        sock.entry('del', tuple_orig=tuple_orig, zone=self.zone_a)
        self.assertNotIn(entry, conntrack_list(self.server_ns))
