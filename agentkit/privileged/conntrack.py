"""Root conntrack operations: delete the flows a removed firewall rule allowed.

When a security-group rule or a remote-group member goes away, connections
it allowed are still ``ESTABLISHED`` in conntrack and keep passing the
firewall's ``--ctstate RELATED,ESTABLISHED -j RETURN``. Their entries must
be deleted, and *only* theirs: every network's ports have their own
conntrack zone (``-j CT --zone N`` in the raw table), and a filter names
the zone, protocol, original source/destination prefixes and destination
port range of what the rule allowed.

This module is the one home of the matching logic: :class:`FlowFilter`,
:class:`Flow` and :func:`matches` are pure (no pyroute2, no root) and
:mod:`agentkit.lib.conntrack` re-exports them; the daemon rebuilds and
re-validates filters from the primitives it receives with
:meth:`FlowFilter.from_primitive`.

How :func:`delete_entries` works:

* One dump per ``(ip_version, zone)`` group of filters, not per filter,
  through pyroute2's ``AsyncNFCTSocket`` (``nfgen_family`` selects the
  family). The zone is also passed to the kernel (``CTA_ZONE``), which
  filters the dump by it on recent kernels (seen on 6.18); a kernel that
  ignores it returns every zone, so the zone is always checked here too.
* Entries are matched here, then deleted by their original tuple *exactly
  as the kernel reported it* (the ``CTA_TUPLE_ORIG`` bytes are sent back)
  plus their zone: a tuple without ``CTA_ZONE`` is looked up in zone 0
  and a zoned entry would be missed (ENOENT). Sending the kernel's bytes
  back also keeps what identifies entries of other protocols: the ports of
  SCTP/DCCP/UDPLITE and GRE's keys, which pyroute2's
  ``NFCTAttrTuple.from_netlink`` drops for anything but TCP/UDP/ICMP.
* Deletions go out in batches of :data:`_BATCH` requests per ``send``;
  each gets its own ACK. An entry that vanished meanwhile (ENOENT) is not
  an error and not counted.
* Attributes are (de)coded with :mod:`.nfnetlink` rather than pyroute2's
  codec. Measured through privsep over 1,000 entries: ~45 ms to dump and
  match them, ~120 ms to also delete all of them; with pyroute2's own
  ``Conntrack.dump_entries``/``entry('del')`` it was ~0.7 s.
* ``namespace`` selects a named network namespace (pyroute2 opens the
  socket there with a forked helper that ``setns()``es, ~5-10 ms); the
  firewall itself uses the root namespace.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import os
import socket
import struct
from typing import Any, AsyncIterator, Iterable, Union

from agentkit import exceptions
from agentkit.privileged import namespaces
from agentkit.privileged import network
from agentkit.privileged import nfnetlink as nfnl

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

# Protocols whose conntrack tuple carries ports: tcp, udp, dccp, sctp, udplite.
PORT_PROTOCOLS = frozenset({6, 17, 33, 132, 136})
ICMP_PROTOCOLS = frozenset({1, 58})
FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}
MAX_ZONE = 0xFFFF
MAX_FILTERS = 10000

# nf_conntrack_netlink constants (linux/netfilter/nfnetlink_conntrack.h).
_NFNL_SUBSYS_CTNETLINK = 1
_MSG_CT_NEW = 0
_MSG_CT_GET = 1
_MSG_CT_DELETE = 2
_CTA_TUPLE_ORIG = 1
_CTA_TUPLE_REPLY = 2
_CTA_ZONE = 18
_CTA_TUPLE_IP = 1
_CTA_TUPLE_PROTO = 2
_CTA_IP_V4_SRC, _CTA_IP_V4_DST, _CTA_IP_V6_SRC, _CTA_IP_V6_DST = 1, 2, 3, 4
_CTA_PROTO_NUM = 1
_CTA_PROTO_SRC_PORT = 2
_CTA_PROTO_DST_PORT = 3
_NLM_F_REQUEST = 0x1
_NLM_F_ACK = 0x4
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
# Delete requests per send(): ~100 bytes each, acks ~36 bytes each.
_BATCH = 256


class InvalidFlowFilter(exceptions.AgentkitError, ValueError):
    """A conntrack filter refused before any kernel call (bad value, type or count)."""


class ConntrackError(exceptions.AgentkitError):
    """The kernel refused a conntrack request; ``errno`` says why."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.errno = code
        self.message = message

    def __str__(self) -> str:
        return '%s: [errno %d] %s' % (self.message, self.errno, os.strerror(self.errno))


# --------------------------------------------------------------------------
# Pure part: filters, flows, matching
# --------------------------------------------------------------------------

def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidFlowFilter('%s must be an integer in %d..%d, got %r'
                                % (name, low, high, value))
    return value


def _network(name: str, value: Any, ip_version: int) -> IPNetwork | None:
    if value is None:
        return None
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        net = value
    elif isinstance(value, str) and '%' not in value:
        try:
            net = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise InvalidFlowFilter('%s %r is not an address or CIDR' % (name, value)) from None
    else:
        raise InvalidFlowFilter('%s %r is not an address or CIDR' % (name, value))
    if net.version != ip_version:
        raise InvalidFlowFilter('%s %s is not an IPv%d prefix' % (name, net, ip_version))
    return net


@dataclasses.dataclass(frozen=True)
class FlowFilter:
    """Which conntrack entries to delete; ``None`` fields match anything.

    :param ip_version: 4 or 6.
    :param zone: conntrack zone (0 is the default zone); None: every zone.
    :param protocol: IP protocol number (6 tcp, 17 udp, 1 icmp, 58 icmpv6...).
    :param orig_src: prefix containing the original direction's source.
    :param orig_dst: prefix containing the original direction's destination.
    :param reply_dst: prefix containing the reply direction's destination:
        the address a flow was source-NATed to (a router's gateway IP or
        floating IP), which is what identifies its SNAT sessions.
    :param either_direction: also match an entry whose *reply* direction is
        the described flow. When an entry is deleted while the session's
        packets are in flight, conntrack (``nf_conntrack_tcp_loose``) picks
        the session up again from whichever side sends next; if that is
        the VM, the new entry has the tuple reversed and the peer's packets
        pass as replies.
    :param dport_min, dport_max: original destination port range
        (inclusive); one of them alone means that single port. Only
        meaningful for tcp/udp/sctp/udplite/dccp; for other protocols they
        are ignored (and set to None): Neutron stores an ICMP rule's type
        and code in the port fields, and all flows of the protocol are then
        matched. Ports without a protocol are refused.

    Strings are accepted for the prefixes and converted; host bits are
    masked (``10.0.0.5/24`` is ``10.0.0.0/24``).
    """

    ip_version: int
    zone: int | None = None
    protocol: int | None = None
    orig_src: IPNetwork | None = None
    orig_dst: IPNetwork | None = None
    dport_min: int | None = None
    dport_max: int | None = None
    reply_dst: IPNetwork | None = None
    either_direction: bool = False

    def __post_init__(self) -> None:
        if type(self.ip_version) is not int or self.ip_version not in FAMILIES:
            raise InvalidFlowFilter('ip_version must be 4 or 6, got %r' % (self.ip_version,))
        if type(self.either_direction) is not bool:
            raise InvalidFlowFilter('either_direction must be a bool, got %r'
                                    % (self.either_direction,))
        if self.zone is not None:
            _check_int('zone', self.zone, 0, MAX_ZONE)
        if self.protocol is not None:
            _check_int('protocol', self.protocol, 0, 255)
        set_ = object.__setattr__
        set_(self, 'orig_src', _network('orig_src', self.orig_src, self.ip_version))
        set_(self, 'orig_dst', _network('orig_dst', self.orig_dst, self.ip_version))
        set_(self, 'reply_dst', _network('reply_dst', self.reply_dst, self.ip_version))
        low, high = self.dport_min, self.dport_max
        if low is None and high is None:
            return
        if self.protocol is None:
            raise InvalidFlowFilter('a port range needs a protocol')
        for name, value in (('dport_min', low), ('dport_max', high)):
            if value is not None:
                _check_int(name, value, 0, 65535)
        if self.protocol not in PORT_PROTOCOLS:
            # Not ports (Neutron keeps an ICMP rule's type and code there,
            # e.g. min=8 max=0): ignored, so dropped.
            set_(self, 'dport_min', None)
            set_(self, 'dport_max', None)
            return
        # One bound alone is a single port (both are None only returned above).
        low = low if low is not None else high
        high = high if high is not None else low
        assert low is not None and high is not None
        if low > high:
            raise InvalidFlowFilter('dport_min %d is greater than dport_max %d' % (low, high))
        set_(self, 'dport_min', low)
        set_(self, 'dport_max', high)

    @property
    def has_ports(self) -> bool:
        """Whether a port range takes part in matching."""
        return self.dport_min is not None

    def to_primitive(self) -> dict[str, int | str | None]:
        """The form that crosses the privsep channel (msgpack)."""
        return {
            'ip_version': self.ip_version,
            'zone': self.zone,
            'protocol': self.protocol,
            'orig_src': None if self.orig_src is None else str(self.orig_src),
            'orig_dst': None if self.orig_dst is None else str(self.orig_dst),
            'dport_min': self.dport_min,
            'dport_max': self.dport_max,
            'reply_dst': None if self.reply_dst is None else str(self.reply_dst),
            'either_direction': self.either_direction,
        }

    @classmethod
    def from_primitive(cls, value: Any) -> FlowFilter:
        """Rebuild (and so re-validate) a filter from :meth:`to_primitive`.

        :raises InvalidFlowFilter: not a dict of those keys, or invalid values.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(value, dict) or 'ip_version' not in value \
                or not set(value) <= fields:
            raise InvalidFlowFilter('invalid conntrack filter %r' % (value,))
        return cls(**value)


@dataclasses.dataclass(frozen=True)
class Flow:
    """What matching needs of one conntrack entry: original tuple, zone, reply destination.

    ``sport``/``dport`` are None for protocols without ports.
    """

    ip_version: int
    zone: int
    protocol: int
    src: IPAddress
    dst: IPAddress
    sport: int | None = None
    dport: int | None = None
    # Destination of the reply direction: differs from ``src`` when the
    # flow was source-NATed (a router's SNAT or floating IP).
    reply_dst: IPAddress | None = None
    # Source and destination port of the reply direction.
    reply_src: IPAddress | None = None
    reply_dport: int | None = None


def _tuple_matches(flt: FlowFilter, src: IPAddress, dst: IPAddress | None,
                   dport: int | None) -> bool:
    if flt.orig_src is not None and src not in flt.orig_src:
        return False
    if flt.orig_dst is not None and (dst is None or dst not in flt.orig_dst):
        return False
    if flt.has_ports:
        low, high = flt.dport_min, flt.dport_max
        if dport is None or not low <= dport <= high:  # type: ignore[operator]
            return False
    return True


def matches(flt: FlowFilter, flow: Flow) -> bool:
    """Whether ``flow`` is one of the flows ``flt`` describes (pure)."""
    if flt.ip_version != flow.ip_version:
        return False
    if flt.zone is not None and flt.zone != flow.zone:
        return False
    if flt.protocol is not None and flt.protocol != flow.protocol:
        return False
    if flt.reply_dst is not None and (flow.reply_dst is None
                                      or flow.reply_dst not in flt.reply_dst):
        return False
    if _tuple_matches(flt, flow.src, flow.dst, flow.dport):
        return True
    return (flt.either_direction and flow.reply_src is not None
            and _tuple_matches(flt, flow.reply_src, flow.reply_dst, flow.reply_dport))


def parse_filters(filters: Any) -> list[FlowFilter]:
    """Validate the primitives received by :func:`delete_entries`."""
    if not isinstance(filters, (list, tuple)):
        raise InvalidFlowFilter('filters must be a list, got %r' % (type(filters).__name__,))
    if len(filters) > MAX_FILTERS:
        raise InvalidFlowFilter('too many filters: %d (at most %d)' % (len(filters), MAX_FILTERS))
    return [FlowFilter.from_primitive(f) for f in filters]


def group_filters(filters: Iterable[FlowFilter]
                  ) -> dict[tuple[int, int | None], list[FlowFilter]]:
    """Filters by ``(ip_version, zone)``: one dump serves each group."""
    groups: dict[tuple[int, int | None], list[FlowFilter]] = {}
    for flt in filters:
        groups.setdefault((flt.ip_version, flt.zone), []).append(flt)
    return groups


# --------------------------------------------------------------------------
# Netlink
# --------------------------------------------------------------------------

_Tuple = tuple[bytes | None, bytes | None, int | None, int | None, int | None]


def _parse_tuple(raw_tuple: bytes) -> _Tuple:
    """(source, destination, protocol, source port, destination port) of a ``CTA_TUPLE_*``."""
    src = dst = None
    proto = sport = dport = None
    for atype, value in nfnl.iter_attrs(raw_tuple):
        if atype == _CTA_TUPLE_IP:
            for ip_type, addr in nfnl.iter_attrs(value):
                if ip_type in (_CTA_IP_V4_SRC, _CTA_IP_V6_SRC):
                    src = addr
                elif ip_type in (_CTA_IP_V4_DST, _CTA_IP_V6_DST):
                    dst = addr
        elif atype == _CTA_TUPLE_PROTO:
            for p_type, p_value in nfnl.iter_attrs(value):
                if p_type == _CTA_PROTO_NUM and p_value:
                    proto = p_value[0]
                elif p_type == _CTA_PROTO_SRC_PORT and len(p_value) >= 2:
                    sport = nfnl.be16(p_value)
                elif p_type == _CTA_PROTO_DST_PORT and len(p_value) >= 2:
                    dport = nfnl.be16(p_value)
    return src, dst, proto, sport, dport


def parse_entry(raw: bytes, ip_version: int) -> tuple[Flow, bytes] | None:
    """A dumped entry's :class:`Flow` and raw ``CTA_TUPLE_ORIG``; None if unusable."""
    tuple_orig = tuple_reply = None
    zone = 0
    for atype, value in nfnl.iter_attrs(raw):
        if atype == _CTA_TUPLE_ORIG:
            tuple_orig = value
        elif atype == _CTA_TUPLE_REPLY:
            tuple_reply = value
        elif atype == _CTA_ZONE and len(value) >= 2:
            zone = nfnl.be16(value)
    if tuple_orig is None:
        return None
    src, dst, proto, sport, dport = _parse_tuple(tuple_orig)
    size = 4 if ip_version == 4 else 16
    if src is None or dst is None or proto is None or len(src) != size or len(dst) != size:
        return None
    cls = ipaddress.IPv4Address if ip_version == 4 else ipaddress.IPv6Address
    reply_src = reply_dst = reply_dport = None
    if tuple_reply is not None:
        r_src, r_dst, _, _, r_dport = _parse_tuple(tuple_reply)
        reply_src = cls(r_src) if r_src is not None and len(r_src) == size else None
        reply_dst = cls(r_dst) if r_dst is not None and len(r_dst) == size else None
        reply_dport = r_dport
    if proto not in PORT_PROTOCOLS:
        sport = dport = reply_dport = None  # e.g. GRE keys share the attributes
    return Flow(ip_version, zone, proto, cls(src), cls(dst), sport, dport, reply_dst,
                reply_src, reply_dport), tuple_orig


def _is_error(msg: Any) -> bool:
    return msg['header']['type'] == _NLMSG_ERROR


class _Socket:
    """One ``AsyncNFCTSocket`` per family whose replies :mod:`.nfnetlink` parses."""

    def __init__(self, ip_version: int, namespace: str | None) -> None:
        from pyroute2.netlink.nfnetlink.nfctsocket import AsyncNFCTSocket

        kwargs: dict[str, Any] = {}
        if namespace is not None:
            # flags=0: never create a namespace that is not there.
            kwargs = {'netns': namespace, 'flags': 0}
        self.ip_version = ip_version
        self.namespace = namespace
        self.sock = AsyncNFCTSocket(nfgen_family=FAMILIES[ip_version], **kwargs)

    async def __aenter__(self) -> _Socket:
        try:
            await self.sock.setup_endpoint()
        except FileNotFoundError:
            self.sock.close()
            raise namespaces.NetworkNamespaceNotFound(self.namespace) from None  # type: ignore
        except BaseException:
            self.sock.close()
            raise
        # Dumped entries arrive as IPCTNL_MSG_CT_NEW messages.
        self.sock.register_policy({(_NFNL_SUBSYS_CTNETLINK << 8) | _MSG_CT_NEW:
                                   nfnl.raw_msg_class()})
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.sock.close()

    def _where(self) -> str:
        return ('namespace %r' % self.namespace) if self.namespace else 'the root namespace'

    async def dump(self, zone: int | None) -> AsyncIterator[bytes]:
        """The attributes of each entry (of ``zone``, on kernels filtering by zone)."""
        msg = nfnl.raw_msg_class()()
        # Zone 0 cannot be filtered by the kernel (0 means "no zone filter").
        msg['raw'] = nfnl.attr(_CTA_ZONE, struct.pack('>H', zone)) if zone else b''
        try:
            async for reply in await self.sock.request(
                    msg, _MSG_CT_GET, msg_flags=_NLM_F_REQUEST | _NLM_F_DUMP):
                yield dict.get(reply, 'raw', b'')
        except _netlink_error() as e:
            raise ConntrackError(getattr(e, 'code', 0) or 0,
                                 'dumping IPv%d conntrack entries in %s'
                                 % (self.ip_version, self._where())) from None

    async def delete(self, entries: list[tuple[bytes, int]]) -> int:
        """Delete ``(raw original tuple, zone)`` entries; how many were deleted.

        Raises the first error other than ENOENT once all were tried.
        """
        from pyroute2.netlink.nlsocket import NetlinkRequest

        deleted = 0
        failure = None
        for start in range(0, len(entries), _BATCH):
            requests = []
            data = b''
            for tuple_orig, zone in entries[start:start + _BATCH]:
                msg = nfnl.raw_msg_class()()
                msg['nfgen_family'] = FAMILIES[self.ip_version]
                msg['raw'] = (nfnl.attr(_CTA_TUPLE_ORIG, tuple_orig, nested=True)
                              + nfnl.attr(_CTA_ZONE, struct.pack('>H', zone)))
                request = NetlinkRequest(self.sock, msg, terminate=_is_error)
                request.msg['header']['type'] = (_NFNL_SUBSYS_CTNETLINK << 8) | _MSG_CT_DELETE
                request.msg['header']['flags'] = _NLM_F_REQUEST | _NLM_F_ACK
                await request.prepare()
                data += request.msg.data
                requests.append(request)
            self.sock.send(data)
            for request in requests:
                try:
                    async for _ in request.response():
                        pass
                    deleted += 1
                except _netlink_error() as e:
                    code = getattr(e, 'code', 0) or 0
                    if code != errno.ENOENT and failure is None:
                        failure = code
        if failure is not None:
            raise ConntrackError(failure, 'deleting IPv%d conntrack entries in %s (%d deleted)'
                                 % (self.ip_version, self._where(), deleted))
        return deleted


def _netlink_error() -> type[Exception]:
    from pyroute2.netlink.exceptions import NetlinkError
    return NetlinkError


# --------------------------------------------------------------------------
# Entrypoint
# --------------------------------------------------------------------------

@network.entrypoint
def delete_entries(filters: list[dict[str, Any]], namespace: str | None = None) -> int:
    """Delete every conntrack entry matching one of ``filters``; how many were deleted.

    ``filters`` are :meth:`FlowFilter.to_primitive` dicts; ``namespace``
    None is the daemon's (root) namespace.

    :raises InvalidFlowFilter: invalid filters.
    :raises ValueError: invalid namespace name.
    :raises NetworkNamespaceNotFound: no such namespace.
    :raises ConntrackError: the kernel refused a dump or a deletion.
    """
    groups = group_filters(parse_filters(filters))
    if namespace is not None and not os.path.exists(namespaces.path(namespace)):
        raise namespaces.NetworkNamespaceNotFound(namespace)
    if not groups:
        return 0

    async def op() -> int:
        total = 0
        for ip_version in sorted({v for v, _ in groups}):
            async with _Socket(ip_version, namespace) as s:
                seen: set[tuple[bytes, int]] = set()  # groups may overlap (zone None)
                for (version, zone), group in groups.items():
                    if version != ip_version:
                        continue
                    doomed = []
                    async for raw in s.dump(zone):
                        parsed = parse_entry(raw, ip_version)
                        if parsed is None:
                            continue
                        flow, tuple_orig = parsed
                        key = (tuple_orig, flow.zone)
                        if key not in seen and any(matches(f, flow) for f in group):
                            seen.add(key)
                            doomed.append(key)
                    total += await s.delete(doomed)
        return total

    return nfnl.run(op())
