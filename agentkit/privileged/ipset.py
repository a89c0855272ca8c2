"""Root ipset operations: the member sets of remote security groups.

Runs in the ``network`` privsep daemon; callers use
:mod:`agentkit.lib.ipset_manager`. Neutron's iptables firewall keeps one set
per remote security group and ethertype and matches it with
``-m set --match-set <name> src|dst``, so the number of rules grows with the
number of groups rather than with members squared. The sets live in the
daemon's own (root) network namespace, where the firewall's rules are.

Every set agentkit manages is ``hash:net`` (addresses and CIDRs, since
allowed-address-pairs give CIDRs) of family inet or inet6.

* **Members are always CIDRs**: :func:`normalise_members` turns ``10.0.0.1``
  into ``10.0.0.1/32``, masks host bits (``10.0.0.5/24`` -> ``10.0.0.0/24``,
  as the kernel would store it), and splits ``/0``, which ``hash:net``
  cannot hold, into two ``/1`` halves like Neutron does. The kernel lists a
  ``/32`` (``/128``) entry as a bare address; :func:`list_members` shows it
  as ``x/32`` too, so what is listed compares equal to what was given.
* **A change replaces the whole set atomically**: the new content is built
  in a temporary set, swapped with the live one (``IPSET_CMD_SWAP`` swaps
  the sets behind the names, so iptables rules referencing the name see the
  new members at once and keep their reference) and the temporary set is
  destroyed. A new set is built under the temporary name and renamed, so a
  half-filled set is never visible either. The current content is read
  first: an unchanged set costs one list and no write.
* **Temporary names cannot collide**: a set name is at most
  :data:`MAX_SET_NAME_LEN` (29) characters and never ends in
  :data:`SWAP_SUFFIX` (``-n``); its temporary set is ``<name>-n`` (at most
  31, the kernel's limit). So no temporary name is ever a valid set name,
  and two different sets never share a temporary name. This is also
  Neutron's scheme (``IPSET_NAME_MAX_LENGTH = 31 - len('-n')``).
* Members are added in bulk: one ``IPSET_CMD_ADD`` carries up to
  :data:`_BATCH` entries in an ``IPSET_ATTR_ADT`` list (as ``ipset
  restore`` does), with the attributes packed here rather than by
  pyroute2 (see :mod:`.nfnetlink`); 2,000 members cost a few ms, not
  0.4 s of one request each.
* Everything received is validated here even though ipset_manager checks
  it first: names against a strict pattern, ``ip_version`` 4/6, members
  parsed with :mod:`ipaddress` and of the set's family, at most
  :data:`MAX_MEMBERS` of them.
* Writes are serialised by a lock: two concurrent replacements of the same
  set would otherwise share its temporary set.

Only primitives cross the privsep channel; errors are the exception
classes below, whose ``args`` are primitives.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
import threading
from typing import Any, Iterable, Union

from agentkit import exceptions
from agentkit.privileged import network
from agentkit.privileged import nfnetlink as nfnl

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

SET_TYPE = 'hash:net'
# IPSET_MAXNAMELEN is 32 including the terminating NUL.
MAX_NAME_LEN = 31
SWAP_SUFFIX = '-n'
MAX_SET_NAME_LEN = MAX_NAME_LEN - len(SWAP_SUFFIX)
# The kernel's default maxelem for hash types.
MAX_MEMBERS = 65536
FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}

_NAME_RE = re.compile(r'[A-Za-z0-9_][A-Za-z0-9_.-]{0,%d}' % (MAX_SET_NAME_LEN - 1))
_PREFIX_RE = re.compile(r'[A-Za-z0-9_.-]{0,%d}' % MAX_NAME_LEN)
# Entries per IPSET_CMD_ADD: an IPv6 entry packs to 36 bytes and a nested
# attribute's length is a u16, so 1024 entries (36 KiB) stay well inside.
_BATCH = 1024

# Netlink/ipset protocol constants (linux/netfilter/ipset/ip_set.h).
_NFNL_SUBSYS_IPSET = 6
_CMD_LIST = 7
_CMD_ADD = 9
_ATTR_PROTOCOL = 1
_ATTR_SETNAME = 2
_ATTR_TYPENAME = 3
_ATTR_FAMILY = 5
_ATTR_DATA = 7
_ATTR_ADT = 8
_ATTR_LINENO = 9
_ATTR_IP = 1
_ATTR_CIDR = 3
_ATTR_CADT_FLAGS = 8
_ATTR_REFERENCES = 25
_ATTR_IPADDR_IPV4 = 1
_ATTR_IPADDR_IPV6 = 2
_FLAG_LIST_SETNAME = 1 << 1
_FLAG_NOMATCH = 1 << 2
_NLM_F_REQUEST = 0x1
_NLM_F_ACK = 0x4
_NLMSG_ERROR = 2

ERR_BUSY = 4100
ERR_REFERENCED = 4108
_IPSET_ERRORS = {
    4097: 'ipset protocol error', 4098: 'set type not supported',
    4099: 'maximal number of sets reached', ERR_BUSY: 'set is in use',
    4101: 'the second set does not exist', 4102: 'set types do not match',
    4103: 'element already added / not added', 4104: 'invalid CIDR',
    4105: 'invalid netmask', 4106: 'family not supported by the set type',
    4107: 'timeout not supported', ERR_REFERENCED: 'set is referenced',
    4109: 'an IPv4 address was expected', 4110: 'an IPv6 address was expected',
    4352: 'hash is full (maxelem reached)',
}

_lock = threading.Lock()


# --------------------------------------------------------------------------
# Exceptions: constructors take primitives and hand all of them to
# Exception.__init__, so privsep's ``cls(*e.args)`` rebuilds them.
# --------------------------------------------------------------------------

class InvalidIpsetArgument(exceptions.AgentkitError, ValueError):
    """A set name, prefix, IP version or member that is refused before any kernel call."""


class IpsetError(exceptions.AgentkitError):
    """The kernel refused an ipset request; ``code`` is the errno/ipset code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        reason = _IPSET_ERRORS.get(self.code) if self.code >= 4096 else os.strerror(self.code)
        return '%s: [%d] %s' % (self.message, self.code, reason or 'ipset error')


class IpsetNotFound(exceptions.AgentkitError, LookupError):
    """No set of that name exists."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return 'ipset %r does not exist' % (self.name,)


class IpsetInUse(exceptions.AgentkitError):
    """The set cannot be destroyed: an iptables rule (or another set) references it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return ('ipset %r is still referenced (by an iptables "-m set" rule or a '
                'list:set); remove the references before destroying it' % (self.name,))


class IpsetIncompatible(exceptions.AgentkitError):
    """A set of that name exists but is not a ``hash:net`` of the wanted family."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(name, detail)
        self.name = name
        self.detail = detail

    def __str__(self) -> str:
        return 'ipset %r cannot be replaced: %s' % (self.name, self.detail)


# --------------------------------------------------------------------------
# Validation (pure; ipset_manager uses the same functions before crossing)
# --------------------------------------------------------------------------

def check_name(name: Any, allow_temporary: bool = False) -> str:
    """``name`` if it is a valid set name (or, if allowed, a temporary one).

    :raises InvalidIpsetArgument: anything else.
    """
    if isinstance(name, str):
        base = name
        if allow_temporary and name.endswith(SWAP_SUFFIX):
            base = name[:-len(SWAP_SUFFIX)]
        if _NAME_RE.fullmatch(base) and not base.endswith(SWAP_SUFFIX):
            return name
    raise InvalidIpsetArgument(
        'invalid ipset name %r: 1-%d characters of [A-Za-z0-9_.-], not starting '
        'with "." or "-" and not ending in %r' % (name, MAX_SET_NAME_LEN, SWAP_SUFFIX))


def temporary_name(name: str) -> str:
    """The temporary set a replacement of ``name`` is built in."""
    return check_name(name) + SWAP_SUFFIX


def check_ip_version(ip_version: Any) -> int:
    if type(ip_version) is not int or ip_version not in FAMILIES:
        raise InvalidIpsetArgument('ip_version must be 4 or 6, got %r' % (ip_version,))
    return ip_version


def _parse_members(members: Any, ip_version: int) -> list[IPNetwork]:
    check_ip_version(ip_version)
    if not isinstance(members, (list, tuple, set, frozenset)):
        raise InvalidIpsetArgument('members must be a list of addresses or CIDRs, '
                                   'got %r' % (type(members).__name__,))
    if len(members) > MAX_MEMBERS:
        raise InvalidIpsetArgument('too many members: %d (at most %d)'
                                   % (len(members), MAX_MEMBERS))
    nets: set[IPNetwork] = set()
    for member in members:
        if not isinstance(member, str) or '%' in member:
            raise InvalidIpsetArgument('invalid ipset member %r: not an address or CIDR'
                                       % (member,))
        try:
            net = ipaddress.ip_network(member, strict=False)
        except ValueError:
            raise InvalidIpsetArgument('invalid ipset member %r: not an address or CIDR'
                                       % (member,)) from None
        if net.version != ip_version:
            raise InvalidIpsetArgument('ipset member %r is not an IPv%d address'
                                       % (member, ip_version))
        if net.prefixlen == 0:
            # hash:net cannot store /0: cover it with both halves.
            nets.update(net.subnets(prefixlen_diff=1))
        else:
            nets.add(net)
    if len(nets) > MAX_MEMBERS:
        raise InvalidIpsetArgument('too many members: %d (at most %d)'
                                   % (len(nets), MAX_MEMBERS))
    return sorted(nets)


def normalise_members(members: Iterable[str], ip_version: int) -> list[str]:
    """Validated, canonical, sorted, de-duplicated CIDR strings.

    ``10.0.0.1`` -> ``10.0.0.1/32``; host bits are masked; ``/0`` becomes
    its two ``/1`` halves. This is the form :func:`list_members` returns.

    :raises InvalidIpsetArgument: not a list of addresses/CIDRs of ``ip_version``,
        or more than :data:`MAX_MEMBERS`.
    """
    if not isinstance(members, (list, tuple, set, frozenset, str, bytes)):
        members = list(members)  # a generator, dict keys...
    return [str(n) for n in _parse_members(members, ip_version)]


# --------------------------------------------------------------------------
# Netlink
# --------------------------------------------------------------------------

def _ipset_error() -> type[Exception]:
    from pyroute2.netlink.exceptions import IPSetError
    return IPSetError


def _translate(e: Exception, what: str, name: str) -> Exception:
    code = getattr(e, 'code', 0) or 0
    if code == errno.ENOENT:
        return IpsetNotFound(name)
    if code in (ERR_BUSY, ERR_REFERENCED):
        return IpsetInUse(name)
    return IpsetError(code, '%s %r' % (what, name))


class _Socket:
    """An ``AsyncIPSet`` whose LIST replies are parsed by :mod:`.nfnetlink`."""

    def __init__(self) -> None:
        from pyroute2.ipset import AsyncIPSet
        self.sock = AsyncIPSet()

    async def __aenter__(self) -> _Socket:
        try:
            await self.sock.setup_endpoint()  # also learns the protocol version
        except BaseException:
            self.sock.close()
            raise
        self.sock.register_policy({_CMD_LIST | _NFNL_SUBSYS_IPSET << 8:
                                   nfnl.raw_msg_class()})
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.sock.close()

    def _header(self, name: str) -> bytes:
        return (nfnl.attr(_ATTR_PROTOCOL, bytes([self.sock._proto_version]))
                + nfnl.attr(_ATTR_SETNAME, name.encode('ascii') + b'\0'))

    async def _request(self, cmd: int, raw: bytes) -> None:
        msg = nfnl.raw_msg_class()()
        msg['raw'] = raw
        await self.sock.request(msg, cmd, msg_flags=_NLM_F_REQUEST | _NLM_F_ACK,
                                terminate=lambda m: m['header']['type'] == _NLMSG_ERROR)

    async def list_raw(self, name: str | None = None,
                       flags: int | None = None) -> list[bytes]:
        return [dict.get(m, 'raw', b'')
                async for m in await self.sock.list(name=name, flags=flags)]

    async def read(self, name: str) -> _SetContent | None:
        """Header and members of ``name``; None if it does not exist."""
        try:
            raws = await self.list_raw(name)
        except _ipset_error() as e:
            if getattr(e, 'code', 0) == errno.ENOENT:
                return None
            raise _translate(e, 'listing ipset', name) from None
        return _parse_list(raws)

    async def create(self, name: str, ip_version: int) -> None:
        try:
            await self.sock.create(name, stype=SET_TYPE, family=FAMILIES[ip_version])
        except _ipset_error() as e:
            raise _translate(e, 'creating ipset', name) from None

    async def destroy(self, name: str) -> bool:
        if not name:  # destroy(None) would destroy every set on the host
            raise InvalidIpsetArgument('refusing to destroy without a set name')
        try:
            await self.sock.destroy(name)
        except _ipset_error() as e:
            if getattr(e, 'code', 0) == errno.ENOENT:
                return False
            raise _translate(e, 'destroying ipset', name) from None
        return True

    async def swap(self, name: str, other: str) -> None:
        try:
            await self.sock.swap(name, other)
        except _ipset_error() as e:
            raise _translate(e, 'swapping ipset %r with' % other, name) from None

    async def rename(self, name: str, new_name: str) -> None:
        try:
            await self.sock.rename(name, new_name)
        except _ipset_error() as e:
            raise _translate(e, 'renaming ipset %r to %r' % (name, new_name),
                             name) from None

    async def add(self, name: str, nets: list[IPNetwork]) -> None:
        """Add ``nets`` with one request per :data:`_BATCH` entries."""
        for start in range(0, len(nets), _BATCH):
            entries = b''.join(_pack_entry(n) for n in nets[start:start + _BATCH])
            raw = (self._header(name) + nfnl.attr(_ATTR_LINENO, b'\0\0\0\0')
                   + nfnl.attr(_ATTR_ADT, entries, nested=True))
            try:
                await self._request(_CMD_ADD, raw)
            except _ipset_error() as e:
                raise _translate(e, 'adding %d members to ipset' % len(nets), name) from None


class _SetContent:
    __slots__ = ('type', 'family', 'members', 'foreign')

    def __init__(self) -> None:
        self.type: str | None = None
        self.family: int | None = None
        self.members: set[tuple[bytes, int]] = set()  # (packed address, prefixlen)
        self.foreign = False  # entries agentkit never writes (nomatch)


def _pack_entry(net: IPNetwork) -> bytes:
    addr = net.network_address.packed
    addr_type = _ATTR_IPADDR_IPV4 if net.version == 4 else _ATTR_IPADDR_IPV6
    body = (nfnl.attr(_ATTR_IP, nfnl.attr(addr_type, addr, net_byteorder=True), nested=True)
            + nfnl.attr(_ATTR_CIDR, bytes([net.prefixlen]), net_byteorder=True))
    return nfnl.attr(_ATTR_DATA, body, nested=True)


def _entry_key(payload: bytes) -> tuple[tuple[bytes, int] | None, bool]:
    """One ADT entry as ``(packed address, prefix length)``, and whether it is nomatch.

    Compared as bytes, not as formatted strings: formatting 2,000 entries
    with :mod:`ipaddress` would double the cost of checking an unchanged set.
    """
    addr = None
    cidr = None
    nomatch = False
    for atype, value in nfnl.iter_attrs(payload):
        if atype == _ATTR_IP:
            for inner_type, inner in nfnl.iter_attrs(value):
                if inner_type in (_ATTR_IPADDR_IPV4, _ATTR_IPADDR_IPV6) \
                        and len(inner) in (4, 16):
                    addr = inner
        elif atype == _ATTR_CIDR and value:
            cidr = value[0]
        elif atype == _ATTR_CADT_FLAGS and len(value) >= 4:
            nomatch = bool(nfnl.be32(value) & _FLAG_NOMATCH)
    if addr is None:
        return None, nomatch
    return (addr, len(addr) * 8 if cidr is None else cidr), nomatch


def _net_key(net: IPNetwork) -> tuple[bytes, int]:
    return net.network_address.packed, net.prefixlen


def _parse_list(raws: list[bytes]) -> _SetContent:
    content = _SetContent()
    for raw in raws:
        for atype, value in nfnl.iter_attrs(raw):
            if atype == _ATTR_TYPENAME:
                content.type = value.split(b'\0', 1)[0].decode('ascii', 'replace')
            elif atype == _ATTR_FAMILY and value:
                content.family = value[0]
            elif atype == _ATTR_ADT:
                for entry_type, entry in nfnl.iter_attrs(value):
                    if entry_type != _ATTR_DATA:
                        continue
                    member, nomatch = _entry_key(entry)
                    if member is None or nomatch:
                        content.foreign = True
                    else:
                        content.members.add(member)
    return content


def _check_compatible(name: str, content: _SetContent, ip_version: int) -> None:
    if content.type != SET_TYPE or content.family != FAMILIES[ip_version]:
        family_names: dict[int, str] = {socket.AF_INET: 'inet', socket.AF_INET6: 'inet6'}
        family = family_names.get(content.family or 0, str(content.family))
        raise IpsetIncompatible(name, 'it is a %s set of family %s, not %s of family %s'
                                % (content.type, family, SET_TYPE,
                                   'inet' if ip_version == 4 else 'inet6'))


# --------------------------------------------------------------------------
# Entrypoints
# --------------------------------------------------------------------------

@network.entrypoint
def replace_set(name: str, ip_version: int, members: list[str]) -> bool:
    """Make set ``name`` hold exactly ``members``; True if its content changed.

    Creates the set if missing. Otherwise the current members are listed
    and, only if they differ, the new ones are filled into the temporary
    set ``<name>-n``, which is swapped in and destroyed.

    :raises InvalidIpsetArgument: invalid name, version or members.
    :raises IpsetIncompatible: a set of that name is not ``hash:net`` of
        this family (e.g. created by hand or by another tool).
    :raises IpsetError: the kernel refused a step.
    """
    check_name(name)
    nets = _parse_members(members, ip_version)
    wanted = {_net_key(n) for n in nets}
    temp = temporary_name(name)

    async def op() -> bool:
        async with _Socket() as s:
            content = await s.read(name)
            if content is not None:
                _check_compatible(name, content, ip_version)
                if content.members == wanted and not content.foreign:
                    return False
            await s.destroy(temp)  # left over by an interrupted replacement
            await s.create(temp, ip_version)
            try:
                await s.add(temp, nets)
                if content is None:
                    await s.rename(temp, name)
                else:
                    await s.swap(name, temp)
            finally:
                await s.destroy(temp)
            return True

    with _lock:
        return nfnl.run(op())


@network.entrypoint
def destroy_set(name: str) -> bool:
    """Destroy set ``name`` (or a left-over temporary ``<name>-n``); False if absent.

    :raises IpsetInUse: an iptables rule still references the set.
    """
    check_name(name, allow_temporary=True)

    async def op() -> bool:
        async with _Socket() as s:
            return await s.destroy(name)

    with _lock:
        return nfnl.run(op())


@network.entrypoint
def list_sets(prefix: str) -> list[str]:
    """Names of all sets starting with ``prefix`` (temporary ones included), sorted."""
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise InvalidIpsetArgument('invalid ipset name prefix %r' % (prefix,))

    async def op() -> list[str]:
        async with _Socket() as s:
            raws = await s.list_raw(flags=_FLAG_LIST_SETNAME)
        names = set()
        for raw in raws:
            for atype, value in nfnl.iter_attrs(raw):
                if atype == _ATTR_SETNAME:
                    names.add(value.split(b'\0', 1)[0].decode('ascii', 'replace'))
        return sorted(n for n in names if n.startswith(prefix))

    return nfnl.run(op())


@network.entrypoint
def list_members(name: str) -> list[str]:
    """Members of ``name`` as CIDRs (host entries as ``x/32`` / ``x/128``), sorted.

    :raises IpsetNotFound: no such set.
    """
    check_name(name, allow_temporary=True)

    async def op() -> list[str]:
        async with _Socket() as s:
            content = await s.read(name)
        if content is None:
            raise IpsetNotFound(name)
        nets = sorted(ipaddress.ip_network(m) for m in content.members)
        return [str(n) for n in nets]

    return nfnl.run(op())
