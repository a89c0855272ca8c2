"""Conntrack flow filters: validation, the pure matcher, entry parsing, the lib call.

The matcher is the one the daemon uses (``agentkit.lib.conntrack`` only
re-exports it), so every field is checked here: zone, protocol, prefix
containment, port ranges, ICMP ignoring ports, IPv4 vs IPv6.
"""

import ipaddress
import struct
from unittest import mock

import msgpack

from agentkit import exceptions
from agentkit.lib import conntrack
from agentkit.privileged import conntrack as priv
from agentkit.privileged import network
from agentkit.privileged import nfnetlink as nfnl
from tests import base

TCP, UDP, ICMP, ICMPV6, SCTP, GRE = 6, 17, 1, 58, 132, 47


def flow(src='10.0.0.5', dst='10.0.1.7', protocol=TCP, sport=40000, dport=22, zone=3,
         reply_dst=None, reply_src=None, reply_dport=None):
    src_ip, dst_ip = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if protocol not in priv.PORT_PROTOCOLS:
        sport = dport = None

    def ip(value):
        return ipaddress.ip_address(value) if value else None
    return conntrack.Flow(src_ip.version, zone, protocol, src_ip, dst_ip, sport, dport,
                          ip(reply_dst), ip(reply_src), reply_dport)


class TestFlowFilter(base.TestCase):

    def test_defaults_and_conversion(self):
        f = conntrack.FlowFilter(4, orig_src='10.0.0.5/24', orig_dst='10.0.1.7')
        self.assertEqual(ipaddress.ip_network('10.0.0.0/24'), f.orig_src)
        self.assertEqual(ipaddress.ip_network('10.0.1.7/32'), f.orig_dst)
        self.assertIsNone(f.zone)
        self.assertIsNone(f.protocol)
        self.assertFalse(f.has_ports)

    def test_single_port(self):
        self.assertEqual((22, 22), (lambda f: (f.dport_min, f.dport_max))(
            conntrack.FlowFilter(4, protocol=TCP, dport_min=22)))
        self.assertEqual((80, 80), (lambda f: (f.dport_min, f.dport_max))(
            conntrack.FlowFilter(4, protocol=TCP, dport_max=80)))

    def test_invalid(self):
        bad = [
            dict(ip_version=5), dict(ip_version='4'), dict(ip_version=True),
            dict(ip_version=[4]), dict(ip_version=4.0),
            dict(ip_version=4, zone=-1), dict(ip_version=4, zone=65536),
            dict(ip_version=4, zone='1'), dict(ip_version=4, zone=True),
            dict(ip_version=4, protocol=256), dict(ip_version=4, protocol='tcp'),
            dict(ip_version=4, orig_src='2001:db8::/64'),
            dict(ip_version=6, orig_dst='10.0.0.0/8'),
            dict(ip_version=4, orig_src='10.0.0.0/33'),
            dict(ip_version=4, orig_src='10.0.0.1 -j ACCEPT'),
            dict(ip_version=6, orig_src='fe80::1%eth0'),
            dict(ip_version=4, orig_src=167772161),
            dict(ip_version=4, dport_min=22),  # ports need a protocol
            dict(ip_version=4, protocol=TCP, dport_min=-1),
            dict(ip_version=4, protocol=TCP, dport_max=65536),
            dict(ip_version=4, protocol=TCP, dport_min=100, dport_max=99),
            dict(ip_version=4, protocol=TCP, dport_min='22'),
            dict(ip_version=4, protocol=UDP, dport_min=None, dport_max=-5),
            dict(ip_version=4, protocol=ICMP, dport_min='8'),  # ignored, still checked
        ]
        for kwargs in bad:
            e = self.assertRaises(conntrack.InvalidFlowFilter, conntrack.FlowFilter, **kwargs)
            self.assertIsInstance(e, ValueError)
            self.assertIsInstance(e, exceptions.AgentkitError)

    def test_frozen_and_hashable(self):
        f = conntrack.FlowFilter(4, zone=1)
        self.assertRaises(AttributeError, setattr, f, 'zone', 2)
        self.assertEqual(f, conntrack.FlowFilter(4, zone=1))
        self.assertEqual(1, len({f, conntrack.FlowFilter(4, zone=1)}))

    def test_primitive_round_trip_through_msgpack(self):
        for f in (conntrack.FlowFilter(4),
                  conntrack.FlowFilter(6, zone=0, protocol=UDP, orig_src='2001:db8::/64',
                                       orig_dst='2001:db8:1::1', dport_min=53,
                                       dport_max=54)):
            wire = msgpack.unpackb(msgpack.packb(f.to_primitive()))
            self.assertEqual(f, conntrack.FlowFilter.from_primitive(wire))

    def test_from_primitive_refuses_junk(self):
        for junk in (None, [], 'x', {}, {'ip_version': 4, 'evil': 1},
                     {'zone': 1}, {'ip_version': 4, 'orig_src': ['10.0.0.0/8']}):
            self.assertRaises(priv.InvalidFlowFilter, priv.FlowFilter.from_primitive, junk)
        self.assertRaises(priv.InvalidFlowFilter, priv.parse_filters, {'ip_version': 4})
        self.assertRaises(priv.InvalidFlowFilter, priv.parse_filters,
                          [{'ip_version': 4}] * (priv.MAX_FILTERS + 1))


class TestMatches(base.TestCase):

    def test_empty_filter_matches_its_family_only(self):
        self.assertTrue(conntrack.matches(conntrack.FlowFilter(4), flow()))
        self.assertFalse(conntrack.matches(conntrack.FlowFilter(6), flow()))
        v6 = flow('2001:db8::5', '2001:db8:1::7')
        self.assertTrue(conntrack.matches(conntrack.FlowFilter(6), v6))
        self.assertFalse(conntrack.matches(conntrack.FlowFilter(4), v6))

    def test_zone(self):
        self.assertTrue(conntrack.matches(conntrack.FlowFilter(4, zone=3), flow(zone=3)))
        self.assertFalse(conntrack.matches(conntrack.FlowFilter(4, zone=3), flow(zone=4)))
        self.assertFalse(conntrack.matches(conntrack.FlowFilter(4, zone=0), flow(zone=3)))
        self.assertTrue(conntrack.matches(conntrack.FlowFilter(4, zone=0), flow(zone=0)))
        self.assertTrue(conntrack.matches(conntrack.FlowFilter(4, zone=None), flow(zone=9)))

    def test_protocol(self):
        f = conntrack.FlowFilter(4, protocol=UDP)
        self.assertTrue(conntrack.matches(f, flow(protocol=UDP)))
        self.assertFalse(conntrack.matches(f, flow(protocol=TCP)))
        self.assertFalse(conntrack.matches(f, flow(protocol=ICMP)))

    def test_prefix_containment(self):
        f = conntrack.FlowFilter(4, orig_src='10.0.0.0/24', orig_dst='10.0.1.7/32')
        self.assertTrue(conntrack.matches(f, flow('10.0.0.255', '10.0.1.7')))
        self.assertTrue(conntrack.matches(f, flow('10.0.0.0', '10.0.1.7')))
        self.assertFalse(conntrack.matches(f, flow('10.0.1.1', '10.0.1.7')))
        self.assertFalse(conntrack.matches(f, flow('10.0.0.5', '10.0.1.8')))
        # Source and destination are not interchangeable (original direction).
        self.assertFalse(conntrack.matches(f, flow('10.0.1.7', '10.0.0.5')))
        self.assertTrue(conntrack.matches(conntrack.FlowFilter(4, orig_src='0.0.0.0/0'),
                                          flow('203.0.113.9')))
        f6 = conntrack.FlowFilter(6, orig_src='2001:db8::/64')
        self.assertTrue(conntrack.matches(f6, flow('2001:db8::ffff', '2001:db8:9::1')))
        self.assertFalse(conntrack.matches(f6, flow('2001:db8:0:1::1', '2001:db8:9::1')))

    def test_port_ranges(self):
        f = conntrack.FlowFilter(4, protocol=TCP, dport_min=1000, dport_max=2000)
        for port, expected in ((999, False), (1000, True), (1500, True), (2000, True),
                               (2001, False)):
            self.assertEqual(expected, conntrack.matches(f, flow(dport=port)), port)
        # The source port is never what a rule's port range means.
        self.assertFalse(conntrack.matches(f, flow(sport=1500, dport=80)))
        single = conntrack.FlowFilter(4, protocol=UDP, dport_min=53)
        self.assertTrue(conntrack.matches(single, flow(protocol=UDP, dport=53)))
        self.assertFalse(conntrack.matches(single, flow(protocol=UDP, dport=54)))
        sctp = conntrack.FlowFilter(4, protocol=SCTP, dport_min=5000, dport_max=5001)
        self.assertTrue(conntrack.matches(sctp, flow(protocol=SCTP, dport=5001)))
        self.assertFalse(conntrack.matches(sctp, flow(protocol=SCTP, dport=5002)))

    def test_icmp_ignores_ports(self):
        # Neutron keeps an ICMP rule's type/code in the port fields.
        f = conntrack.FlowFilter(4, protocol=ICMP, dport_min=8, dport_max=0)  # echo
        self.assertFalse(f.has_ports)
        self.assertEqual(conntrack.FlowFilter(4, protocol=ICMP), f)
        self.assertTrue(conntrack.matches(f, flow(protocol=ICMP)))
        f6 = conntrack.FlowFilter(6, protocol=ICMPV6, dport_min=128, dport_max=128)
        self.assertTrue(conntrack.matches(f6, flow('2001:db8::1', '2001:db8::2',
                                                   protocol=ICMPV6)))
        self.assertFalse(conntrack.matches(f6, flow('2001:db8::1', '2001:db8::2',
                                                    protocol=UDP, dport=128)))
        # GRE's keys live in the port attributes but are not ports either.
        self.assertTrue(conntrack.matches(
            conntrack.FlowFilter(4, protocol=GRE, dport_min=1), flow(protocol=GRE)))

    def test_all_fields_together(self):
        f = conntrack.FlowFilter(4, zone=3, protocol=TCP, orig_src='10.0.0.0/24',
                                 orig_dst='10.0.1.7', dport_min=22, dport_max=22)
        self.assertTrue(conntrack.matches(f, flow()))
        for other in (flow(zone=4), flow(protocol=UDP), flow(src='10.9.0.5'),
                      flow(dst='10.0.1.8'), flow(dport=23)):
            self.assertFalse(conntrack.matches(f, other), other)

    def test_groups(self):
        a = conntrack.FlowFilter(4, zone=1, protocol=TCP)
        b = conntrack.FlowFilter(4, zone=1, protocol=UDP)
        c = conntrack.FlowFilter(6, zone=1)
        d = conntrack.FlowFilter(4)
        self.assertEqual({(4, 1): [a, b], (6, 1): [c], (4, None): [d]},
                         priv.group_filters([a, b, c, d]))


def _tuple(src: bytes, dst: bytes, proto: int, sport: int | None = None,
           dport: int | None = None, icmp: bool = False) -> bytes:
    v4 = len(src) == 4
    ip = (nfnl.attr(1 if v4 else 3, src) + nfnl.attr(2 if v4 else 4, dst))
    p = nfnl.attr(1, bytes([proto]))
    if sport is not None:
        p += nfnl.attr(2, struct.pack('>H', sport)) + nfnl.attr(3, struct.pack('>H', dport))
    if icmp:
        p += nfnl.attr(4, b'\x12\x34') + nfnl.attr(5, b'\x08') + nfnl.attr(6, b'\x00')
    return nfnl.attr(1, ip, nested=True) + nfnl.attr(2, p, nested=True)


class TestEitherDirection(base.TestCase):
    """A session picked up again from the VM's side after its entry was deleted."""

    def test_reversed_entry_matches_only_with_either_direction(self):
        allowed = dict(ip_version=4, zone=3, protocol=TCP, orig_src='192.0.2.0/24',
                       orig_dst='10.0.0.5', dport_min=5001, dport_max=5001)
        # The VM (10.0.0.5:5001) sent next: its packet created the entry.
        reversed_entry = flow(src='10.0.0.5', sport=5001, dst='192.0.2.9', dport=40000,
                              reply_src='192.0.2.9', reply_dst='10.0.0.5', reply_dport=5001)
        self.assertFalse(conntrack.matches(conntrack.FlowFilter(**allowed), reversed_entry))
        both = conntrack.FlowFilter(either_direction=True, **allowed)
        self.assertTrue(conntrack.matches(both, reversed_entry))
        # The VM's own connection to another port of the peer is not matched.
        own = flow(src='10.0.0.5', sport=5001, dst='192.0.2.9', dport=40000,
                   reply_src='192.0.2.9', reply_dst='10.0.0.5', reply_dport=5002)
        self.assertFalse(conntrack.matches(both, own))
        self.assertEqual(both, conntrack.FlowFilter.from_primitive(both.to_primitive()))
        self.assertRaises(conntrack.InvalidFlowFilter, conntrack.FlowFilter, 4,
                          either_direction='yes')


class TestParseEntry(base.TestCase):

    def entry(self, tuple_orig: bytes, zone: int | None = None,
              reply: bytes | None = None) -> bytes:
        raw = nfnl.attr(1, tuple_orig, nested=True)
        if reply is not None:
            raw += nfnl.attr(2, reply, nested=True)
        raw += nfnl.attr(3, b'\0\0\0\x0e')  # status
        if zone is not None:
            raw += nfnl.attr(18, struct.pack('>H', zone))
        return raw

    def test_tcp_in_zone(self):
        t = _tuple(bytes([10, 0, 0, 5]), bytes([10, 0, 1, 7]), TCP, 40000, 22)
        parsed_flow, raw_tuple = priv.parse_entry(self.entry(t, zone=3), 4)
        self.assertEqual(flow(), parsed_flow)
        self.assertEqual(t, raw_tuple)  # sent back as is for the deletion

    def test_reply_destination_shows_source_nat(self):
        """A router's SNAT: the reply goes to the gateway IP, not the VM."""
        t = _tuple(bytes([10, 0, 0, 5]), bytes([198, 51, 100, 1]), TCP, 40000, 22)
        reply = _tuple(bytes([198, 51, 100, 1]), bytes([203, 0, 113, 2]), TCP, 22, 61000)
        parsed = priv.parse_entry(self.entry(t, reply=reply), 4)[0]
        self.assertEqual(flow(dst='198.51.100.1', zone=0, reply_dst='203.0.113.2',
                              reply_src='198.51.100.1', reply_dport=61000), parsed)
        self.assertTrue(conntrack.matches(
            conntrack.FlowFilter(4, reply_dst='203.0.113.2'), parsed))
        self.assertFalse(conntrack.matches(
            conntrack.FlowFilter(4, reply_dst='203.0.113.3'), parsed))
        # An entry without a reply tuple never matches a reply filter.
        bare = priv.parse_entry(self.entry(t), 4)[0]
        self.assertIsNone(bare.reply_dst)
        self.assertFalse(conntrack.matches(conntrack.FlowFilter(4, reply_dst='0.0.0.0/0'),
                                           bare))

    def test_zone_absent_is_zero(self):
        t = _tuple(bytes([10, 0, 0, 5]), bytes([10, 0, 1, 7]), UDP, 1, 2)
        self.assertEqual(0, priv.parse_entry(self.entry(t), 4)[0].zone)

    def test_icmp_and_v6(self):
        t = _tuple(bytes([10, 0, 0, 5]), bytes([10, 0, 1, 7]), ICMP, icmp=True)
        parsed = priv.parse_entry(self.entry(t), 4)[0]
        self.assertEqual((ICMP, None, None), (parsed.protocol, parsed.sport, parsed.dport))
        src = ipaddress.ip_address('2001:db8::1')
        dst = ipaddress.ip_address('2001:db8::2')
        t6 = _tuple(src.packed, dst.packed, UDP, 5353, 53)
        parsed6 = priv.parse_entry(self.entry(t6, zone=65535), 6)[0]
        self.assertEqual(conntrack.Flow(6, 65535, UDP, src, dst, 5353, 53), parsed6)

    def test_unusable_entries(self):
        self.assertIsNone(priv.parse_entry(b'', 4))
        t = _tuple(bytes([10, 0, 0, 5]), bytes([10, 0, 1, 7]), TCP, 1, 2)
        self.assertIsNone(priv.parse_entry(self.entry(t), 6))  # family mismatch


class TestDeleteFlows(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        entrypoints = [n for n, o in vars(priv).items() if network.is_entrypoint(o)]
        self.assertEqual(['delete_entries'], entrypoints)
        patcher = mock.patch.object(priv, 'delete_entries',
                                    autospec=priv.delete_entries.args[0])
        self.delete = patcher.start()
        self.addCleanup(patcher.stop)
        self.delete.return_value = 2

    def test_one_call_with_primitives(self):
        a = conntrack.FlowFilter(4, zone=1, protocol=TCP, orig_dst='10.0.0.1',
                                 dport_min=22)
        b = conntrack.FlowFilter(6, zone=1)
        self.assertEqual(2, conntrack.delete_flows([a, b, a], namespace='ns1'))
        self.delete.assert_called_once_with([a.to_primitive(), b.to_primitive()], 'ns1')
        for value in self.delete.call_args[0][0]:
            self.assertEqual(value, msgpack.unpackb(msgpack.packb(value)))

    def test_nothing_to_do(self):
        self.assertEqual(0, conntrack.delete_flows([]))
        self.delete.assert_not_called()

    def test_refuses_non_filters(self):
        for junk in ({'ip_version': 4}, None, 'x'):
            self.assertRaises(conntrack.InvalidFlowFilter, conntrack.delete_flows, [junk])
        self.delete.assert_not_called()


class TestExceptions(base.TestCase):

    def test_round_trip(self):
        for exc in (priv.ConntrackError(22, 'deleting IPv4 conntrack entries in ns1'),
                    priv.InvalidFlowFilter('bad')):
            args = msgpack.unpackb(msgpack.packb(exc.args), use_list=False)
            again = type(exc)(*args)
            self.assertEqual(str(exc), str(again))
            self.assertIsInstance(again, exceptions.AgentkitError)
        self.assertIn('Invalid argument', str(priv.ConntrackError(22, 'x')))
