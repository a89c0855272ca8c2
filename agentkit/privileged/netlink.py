"""Root netlink operations: namespaces, links, addresses, routes, neighbours, sysctls.

Everything here runs inside the ``network`` privsep daemon, which is never
eventlet-patched; it is the only module of agentkit that calls pyroute2's
rtnetlink (ipset and conntrack, over nfnetlink, are in :mod:`.ipset` and
:mod:`.conntrack`). Callers use :mod:`agentkit.lib.ip_lib`, which validates
arguments before they cross to root.

Design points:

* **One netlink socket per namespace, kept open.** The socket is created
  by a throwaway thread that joined the namespace (never creating one, so
  a mistyped name raises) and handed to ``IPRoute(fileno=...)``; pyroute2's
  own ``IPRoute(netns=...)`` forks a helper per socket (~6-20 ms). A cached
  socket makes an operation cost ~0.3 ms. It pins its namespace, so every
  use first checks that ``/run/netns/<name>`` still refers to the namespace
  the socket lives in (one ``stat``); a namespace deleted or recreated behind our back makes
  the socket stale and it is dropped. The least recently used sockets are
  closed beyond a limit derived from the fd limit (4 fds each).
* **One thread owns pyroute2.** Netlink operations are handed from
  privsep's worker pool to a single thread that creates and uses every
  IPRoute object (see :class:`_NetlinkThread`); sysctl writes and
  namespace creation run outside it.
* **Device names resolve by ioctl.** SIOCGIFINDEX/SIOCGIFNAME on the cached
  socket answer in ~2 us, where a netlink lookup costs ~0.3 ms.
* **Only primitives cross the privsep channel** (msgpack): results are
  dicts/lists of str/int/bool/None, errors are the exception classes below
  whose ``args`` are primitives, because privsep re-raises ``cls(*args)``.
* pyroute2 is imported lazily: the unprivileged agent imports this module
  (for the entrypoint stubs and the exception classes) and should not pay
  the ~170 ms pyroute2 import for code that only runs in the daemon.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import os
import queue
import re
import resource
import socket
import struct
import threading
from concurrent import futures
from typing import Any, Callable, Iterable, Iterator, TypeVar

from agentkit import exceptions
from agentkit.privileged import namespaces
from agentkit.privileged import network
from agentkit.privileged.namespaces import NetworkNamespaceNotFound

# ioctl returning an fd for the network namespace a socket belongs to.
SIOCGSKNS = 0x894C
NETLINK_ROUTE = 0
SIOCGIFINDEX = 0x8933
SIOCGIFNAME = 0x8910
SIOCGIFFLAGS = 0x8913
_IFNAMSIZ = 16
# struct ifreq: char ifr_name[16]; union { int ifr_ifindex; ... } (40 bytes).
_IFREQ_FMT = '16si20x'
_IFREQ_FLAGS_FMT = '16sh22x'  # ... union { short ifr_flags; ... }
MAIN_TABLE = 254

IFF_UP = 0x1
IFA_F_TENTATIVE = 0x40
IFA_F_PERMANENT = 0x80
IFA_F_DADFAILED = 0x08
RTNH_F_ONLINK = 0x4
NUD_PERMANENT = 0x80

SCOPE_NAMES = {0: 'global', 200: 'site', 253: 'link', 254: 'host', 255: 'nowhere'}
#: rtm_protocol: who installed a route (``ra``: the kernel, from a router
#: advertisement; ``boot``: ``ip route``; ``static``: agentkit, through pyroute2).
ROUTE_PROTOCOL_NAMES = {1: 'redirect', 2: 'kernel', 3: 'boot', 4: 'static', 9: 'ra',
                        16: 'dhcp'}
ROUTE_TYPE_NAMES = {1: 'unicast', 2: 'local', 3: 'broadcast', 4: 'anycast',
                    5: 'multicast', 6: 'blackhole', 7: 'unreachable',
                    8: 'prohibit', 9: 'throw', 10: 'nat'}
NUD_NAMES = {0x01: 'incomplete', 0x02: 'reachable', 0x04: 'stale',
             0x08: 'delay', 0x10: 'probe', 0x20: 'failed', 0x40: 'noarp',
             0x80: 'permanent', 0x00: 'none'}
FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}
_VERSIONS = {socket.AF_INET: 4, socket.AF_INET6: 6}

# Defence in depth: ip_lib validates first, but root re-checks what would
# otherwise become a path (sysctl components; namespace names: namespaces.path).
_SYSCTL_PART_RE = re.compile(r'[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,254}')

T = TypeVar('T')


# --------------------------------------------------------------------------
# Exceptions. Constructors take only primitives and pass all of them to
# Exception.__init__, so privsep's ``cls(*e.args)`` rebuilds them faithfully.
# --------------------------------------------------------------------------

def _where(namespace: str | None) -> str:
    return 'namespace %r' % namespace if namespace else 'the root namespace'


class NetworkInterfaceNotFound(exceptions.AgentkitError, LookupError):
    """The named device does not exist in the namespace it was looked up in."""

    def __init__(self, device: str, namespace: str | None = None) -> None:
        super().__init__(device, namespace)
        self.device = device
        self.namespace = namespace

    def __str__(self) -> str:
        return 'network device %r does not exist in %s' % (
            self.device, _where(self.namespace))


class NetworkInterfaceExists(exceptions.AgentkitError):
    """A device with that name already exists (and was not expected to)."""

    def __init__(self, device: str, namespace: str | None = None,
                 detail: str = '') -> None:
        super().__init__(device, namespace, detail)
        self.device = device
        self.namespace = namespace
        self.detail = detail

    def __str__(self) -> str:
        text = 'network device %r already exists in %s' % (
            self.device, _where(self.namespace))
        return '%s: %s' % (text, self.detail) if self.detail else text


class NetlinkOperationError(exceptions.AgentkitError):
    """The kernel refused a netlink request; ``errno`` says why."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.errno = code
        self.message = message

    def __str__(self) -> str:
        return '%s: [errno %d] %s' % (self.message, self.errno,
                                      os.strerror(self.errno))


class VlanNotSupported(exceptions.AgentkitError):
    """The kernel cannot create 802.1Q VLAN devices (no ``8021q`` support).

    The kernel answers EOPNOTSUPP for an unknown link kind, which on its own
    reads like a bug in the request; this names the missing module instead.
    """

    def __init__(self, device: str, namespace: str | None = None) -> None:
        super().__init__(device, namespace)
        self.device = device
        self.namespace = namespace

    def __str__(self) -> str:
        return ('cannot create VLAN device %r in %s: the kernel has no 802.1Q '
                'VLAN support (module 8021q not built in and not loadable)'
                % (self.device, _where(self.namespace)))


# --------------------------------------------------------------------------
# Socket cache
# --------------------------------------------------------------------------

class _Entry:
    """A cached IPRoute plus the identity of the namespace it was opened in."""

    __slots__ = ('ipr', 'inode')

    def __init__(self, ipr: Any, inode: int | None) -> None:
        self.ipr = ipr
        self.inode = inode


class _NetlinkThread:
    """The one thread that owns and uses every pyroute2 object.

    pyroute2 0.9's sync API keeps an asyncio loop and transport per thread
    for the thread that created the object; from any other thread each call
    builds and tears down a loop (+0.2-0.3 ms, measured). privsep serves
    requests from a pool, so operations are handed to this thread instead
    (~30 us). Serialising netlink work costs little: the kernel runs most
    of it under the single rtnl lock anyway. It also means the socket
    cache below needs no locking: only this thread touches it.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def call(self, func: Callable[..., T], *args: Any) -> T:
        if threading.current_thread() is self._thread:
            return func(*args)
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name='netlink',
                                                daemon=True)
                self._thread.start()
        future: futures.Future[T] = futures.Future()
        self._queue.put((future, func, args))
        return future.result()

    def _loop(self) -> None:
        while True:
            future, func, args = self._queue.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(func(*args))
            except BaseException as e:  # handed to the caller
                future.set_exception(e)


_netlink_thread = _NetlinkThread()
# namespace name (None: the daemon's own) -> socket, least recently used
# first; netlink thread only.
_cache: collections.OrderedDict[str | None, _Entry] = collections.OrderedDict()
_cache_limit: int | None = None
_FDS_PER_SOCKET = 4  # netlink socket + the thread's epoll fd and self-pipe


def _max_cached() -> int:
    """How many namespace sockets to keep open.

    Each one holds 4 fds, and agents commonly start with a 1024 soft fd
    limit (systemd's default), which would cap a DHCP agent at ~250
    networks. The soft limit is raised to the hard one (no privilege
    needed) and half of it is given to the cache; least recently used
    sockets beyond that are closed and reopened on demand (~6-10 ms).
    """
    global _cache_limit
    if _cache_limit is None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > 1 << 20:
            hard = 1 << 20
        if soft != resource.RLIM_INFINITY and soft < hard:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                soft = hard
        if soft == resource.RLIM_INFINITY:
            soft = hard
        _cache_limit = max(8, soft // 2 // _FDS_PER_SOCKET)
    return _cache_limit


def _ns_inode(namespace: str) -> int:
    """Inode of the namespace /run/netns/<name> is bound to; raises if missing."""
    try:
        return os.stat(namespaces.path(namespace)).st_ino
    except FileNotFoundError:
        raise NetworkNamespaceNotFound(namespace) from None


def _socket_ns_inode(ipr: Any) -> int:
    fd = fcntl.ioctl(ipr.fileno(), SIOCGSKNS)
    try:
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


def _open(namespace: str | None) -> _Entry:
    from pyroute2 import IPRoute

    if namespace is None:
        return _Entry(IPRoute(), None)
    # The socket is created by a thread that joined the namespace (a socket
    # stays in the namespace it was created in), not by pyroute2's
    # netns= path, which forks a helper per socket: ~20 ms on a busy
    # daemon, the largest cost of a restarted agent's first pass over
    # hundreds of namespaces.
    sock = namespaces.run_in_namespace(namespace, lambda: socket.socket(
        socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE))
    fd = sock.detach()
    try:
        ipr = IPRoute(fileno=fd)
    except BaseException:
        os.close(fd)
        raise
    try:
        inode = _socket_ns_inode(ipr)
    except BaseException:
        ipr.close()
        raise
    return _Entry(ipr, inode)


def _drop(namespace: str | None) -> None:
    """Forget and close the cached socket of ``namespace`` (netlink thread)."""
    entry = _cache.pop(namespace, None)
    if entry is not None:
        with contextlib.suppress(Exception):
            entry.ipr.close()


def _get_entry(namespace: str | None) -> _Entry:
    """The cached socket of ``namespace``, (re)opened if needed (netlink thread).

    A cached socket keeps its namespace alive even after the name is gone,
    so the name's current inode is compared with the socket's on every use.
    """
    try:
        inode = None if namespace is None else _ns_inode(namespace)
    except NetworkNamespaceNotFound:
        _drop(namespace)  # deleted behind our back: stop pinning it
        raise
    entry = _cache.get(namespace)
    if entry is not None:
        if entry.inode == inode:
            _cache.move_to_end(namespace)
            return entry
        _drop(namespace)  # deleted and recreated under the same name
    limit = _max_cached()
    while len(_cache) >= limit:
        _drop(next(iter(_cache)))
    entry = _open(namespace)
    if entry.inode != inode:
        # Replaced again while we were opening: report rather than guess.
        entry.ipr.close()
        raise NetworkNamespaceNotFound(namespace)  # type: ignore[arg-type]
    _cache[namespace] = entry
    return entry


def _run_here(namespace: str | None, func: Callable[[Any], T]) -> T:
    for attempt in (0, 1):
        entry = _get_entry(namespace)
        try:
            return func(entry.ipr)
        except OSError as e:
            # A closed socket (EBADF/ENOTSOCK: the request never reached the
            # kernel) is dropped and the call retried once on a fresh one.
            if e.errno not in (errno.EBADF, errno.ENOTSOCK) or attempt:
                raise
            _drop(namespace)
    raise AssertionError('unreachable')  # pragma: no cover


def _run(namespace: str | None, func: Callable[[Any], T]) -> T:
    """Run ``func(ipr)`` with the namespace's cached socket, on the netlink thread."""
    return _netlink_thread.call(_run_here, namespace, func)


def _netlink_error() -> type[Exception]:
    from pyroute2.netlink.exceptions import NetlinkError
    return NetlinkError


@contextlib.contextmanager
def _translate(what: str, namespace: str | None = None,
               device: str | None = None) -> Iterator[None]:
    """Turn pyroute2's NetlinkError into agentkit exceptions.

    ENODEV becomes :class:`NetworkInterfaceNotFound` when we know which
    device the request was about; anything else becomes
    :class:`NetlinkOperationError` with the errno and what we tried.
    """
    try:
        yield
    except _netlink_error() as e:
        code = getattr(e, 'code', 0) or 0
        if code == errno.ENODEV and device is not None:
            raise NetworkInterfaceNotFound(device, namespace) from None
        raise NetlinkOperationError(code, '%s in %s' % (what, _where(namespace))) from None


def _get_link_msg(ipr: Any, name: str, namespace: str | None) -> Any:
    with _translate('looking up device %r' % name, namespace, name):
        return ipr.link('get', ifname=name)[0]


def _index(ipr: Any, name: str, namespace: str | None) -> int:
    """ifindex of ``name`` in the socket's namespace.

    SIOCGIFINDEX on the cached netlink socket resolves the name in the
    namespace the socket lives in, in ~2 us; a pyroute2 RTM_GETLINK costs
    ~280 us (mostly decoding the reply) and would double the cost of every
    address/route/neighbour operation.
    """
    if not isinstance(name, str) or not name or len(name) >= _IFNAMSIZ:
        raise ValueError('invalid device name %r' % (name,))
    return _ifreq(ipr, name, namespace, SIOCGIFINDEX, _IFREQ_FMT)


def _is_up(ipr: Any, name: str, namespace: str | None) -> bool:
    """Whether ``name`` is administratively up (SIOCGIFFLAGS, ~2 us)."""
    return bool(_ifreq(ipr, name, namespace, SIOCGIFFLAGS, _IFREQ_FLAGS_FMT) & IFF_UP)


def _ifreq(ipr: Any, name: str, namespace: str | None, request: int, fmt: str) -> int:
    """A SIOCGIF* ioctl for ``name`` in the socket's namespace: the first
    field of the answer's union (index, flags)."""
    req = struct.pack(fmt, name.encode('ascii'), 0)
    try:
        res = fcntl.ioctl(ipr.fileno(), request, req)
    except OSError as e:
        if e.errno == errno.ENODEV:
            raise NetworkInterfaceNotFound(name, namespace) from None
        raise
    return struct.unpack_from(fmt, res)[1]


def _names(ipr: Any, indexes: Iterable[int | None]) -> dict[int, str]:
    """ifindex -> name for the given indexes (SIOCGIFNAME, ~2 us each).

    Cheaper than a link dump, whose decoding costs ~0.1 ms per device.
    Indexes that vanished meanwhile are simply left out.
    """
    names: dict[int, str] = {}
    for idx in set(indexes):
        if not idx or idx in names:
            continue
        try:
            res = fcntl.ioctl(ipr.fileno(), SIOCGIFNAME, struct.pack(_IFREQ_FMT, b'', idx))
        except OSError as e:
            if e.errno == errno.ENODEV:
                continue
            raise
        names[idx] = res[:_IFNAMSIZ].split(b'\0', 1)[0].decode('ascii', 'replace')
    return names


# --------------------------------------------------------------------------
# Namespaces
# --------------------------------------------------------------------------

@network.entrypoint
def create_namespace(name: str) -> bool:
    """Create ``name`` with its loopback up; False if it already existed.

    ``lo`` is brought up like Neutron does: services bind 127.0.0.1 and the
    kernel refuses some routes (e.g. onlink gateways) while it is down.
    """
    from pyroute2 import netns

    path = namespaces.path(name)
    created = False
    if not os.path.exists(path):
        try:
            netns.create(name)
            created = True
        except FileExistsError:
            pass  # created concurrently: same end state
        except BaseException:
            # pyroute2 can leave an unmounted /run/netns/<name> behind, which
            # would then fail every later operation with EINVAL.
            with contextlib.suppress(OSError):
                netns.remove(name)
            raise

    def lo_up(ipr: Any) -> None:
        with _translate('setting lo up', name, 'lo'):
            ipr.link('set', index=_index(ipr, 'lo', name), state='up')

    _run(name, lo_up)
    return created


@network.entrypoint
def delete_namespace(name: str) -> bool:
    """Delete ``name``; False if it did not exist.

    The cached socket is closed first: an open socket keeps a namespace (and
    every device in it) alive after its name is gone. Both steps run on the
    netlink thread so no queued operation can reopen it in between.
    """
    from pyroute2 import netns

    path = namespaces.path(name)

    def remove() -> bool:
        _drop(name)
        if not os.path.exists(path):
            return False
        try:
            netns.remove(name)
        except FileNotFoundError:
            return False  # removed concurrently
        return True

    return _netlink_thread.call(remove)


@network.entrypoint
def list_namespaces() -> list[str]:
    """Names under /run/netns, sorted."""
    try:
        return sorted(os.listdir(namespaces.NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


@network.entrypoint
def namespace_exists(name: str) -> bool:
    return os.path.exists(namespaces.path(name))


# --------------------------------------------------------------------------
# Links
# --------------------------------------------------------------------------

def _link_to_dict(msg: Any, names: dict[int, str] | None = None) -> dict[str, Any]:
    """The parts of an RTM_NEWLINK message callers need, as primitives.

    ``names`` maps ifindex to name in the same namespace, used to name the
    master and a same-namespace veth peer.
    """
    flags = msg.get('flags') or 0
    kind = msg.get_nested('IFLA_LINKINFO', 'IFLA_INFO_KIND')
    master = msg.get('IFLA_MASTER')
    result: dict[str, Any] = {
        'name': msg.get('IFLA_IFNAME'),
        'index': msg['index'],
        'mtu': msg.get('IFLA_MTU'),
        'address': msg.get('IFLA_ADDRESS'),
        'state': 'up' if flags & IFF_UP else 'down',
        'operstate': msg.get('IFLA_OPERSTATE'),
        'kind': kind,
        'master_index': master,
        'master': (names or {}).get(master) if master else None,
    }
    if kind == 'veth':
        link = msg.get('IFLA_LINK')
        other_ns = msg.get('IFLA_LINK_NETNSID') is not None
        result['peer_index'] = link
        result['peer_in_other_namespace'] = other_ns
        result['peer'] = None if other_ns else (names or {}).get(link)
    elif kind == 'vxlan':
        data = msg.get_nested('IFLA_LINKINFO', 'IFLA_INFO_DATA')
        if data is not None:
            result['vxlan'] = {
                'vni': data.get('IFLA_VXLAN_ID'),
                'local': (data.get('IFLA_VXLAN_LOCAL')
                          or data.get('IFLA_VXLAN_LOCAL6')),
                'group': (data.get('IFLA_VXLAN_GROUP')
                          or data.get('IFLA_VXLAN_GROUP6')),
                'port': data.get('IFLA_VXLAN_PORT'),
                'learning': bool(data.get('IFLA_VXLAN_LEARNING')),
                'link_index': data.get('IFLA_VXLAN_LINK'),
                'dev': (names or {}).get(data.get('IFLA_VXLAN_LINK')),
                'ttl': data.get('IFLA_VXLAN_TTL'),
            }
    return result


def _link_dict(ipr: Any, name: str, namespace: str | None) -> dict[str, Any]:
    msg = _get_link_msg(ipr, name, namespace)
    wanted = [msg.get('IFLA_MASTER')]
    if msg.get('IFLA_LINK_NETNSID') is None:
        wanted.append(msg.get('IFLA_LINK'))
    data = msg.get_nested('IFLA_LINKINFO', 'IFLA_INFO_DATA')
    if data is not None and hasattr(data, 'get'):
        wanted.append(data.get('IFLA_VXLAN_LINK'))
    return _link_to_dict(msg, _names(ipr, wanted))


def _create_link(namespace: str | None, name: str, kind: str,
                 exist_ok: bool, **kwargs: Any) -> bool:
    """Create a device; False if ``exist_ok`` and one of that kind exists.

    Only the kind of an existing device is checked, not its settings.
    """
    def op(ipr: Any) -> bool:
        try:
            with _translate('creating %s %r' % (kind, name), namespace):
                ipr.link('add', ifname=name, kind=kind, **kwargs)
        except NetlinkOperationError as e:
            if e.errno != errno.EEXIST:
                raise
            existing = _get_link_msg(ipr, name, namespace).get_nested(
                'IFLA_LINKINFO', 'IFLA_INFO_KIND')
            if existing != kind:
                raise NetworkInterfaceExists(
                    name, namespace, 'it is a %s device, not %s' % (existing, kind)
                ) from None
            if not exist_ok:
                raise NetworkInterfaceExists(name, namespace) from None
            return False
        return True

    return _run(namespace, op)


@network.entrypoint
def create_veth(name: str, peer_name: str, namespace: str | None = None,
                peer_namespace: str | None = None, mtu: int | None = None,
                address: str | None = None, peer_mtu: int | None = None,
                peer_address: str | None = None) -> None:
    """Create a veth pair with its peer born in ``peer_namespace``.

    One netlink request creates both ends in their final namespaces; moving
    the peer afterwards would cost ~18 ms of kernel time per device.

    :raises NetworkInterfaceExists: naming the end that already exists.
    """
    peer: dict[str, Any] = {'ifname': peer_name}
    if peer_mtu is not None:
        peer['mtu'] = peer_mtu
    if peer_address is not None:
        peer['address'] = peer_address
    kwargs: dict[str, Any] = {}
    if mtu is not None:
        kwargs['mtu'] = mtu
    if address is not None:
        kwargs['address'] = address

    def op(ipr: Any) -> None:
        try:
            with contextlib.ExitStack() as stack:
                if peer_namespace != namespace:
                    peer['net_ns_fd'] = stack.enter_context(namespaces.netns_fd(peer_namespace))
                with _translate('creating veth %r/%r' % (name, peer_name), namespace):
                    ipr.link('add', ifname=name, kind='veth', peer=peer, **kwargs)
        except NetlinkOperationError as e:
            if e.errno != errno.EEXIST:
                raise
            # The kernel does not say which end clashed; find out.
            try:
                _index(ipr, name, namespace)
            except NetworkInterfaceNotFound:
                raise NetworkInterfaceExists(
                    peer_name, peer_namespace,
                    'cannot create it as the peer of %r' % name) from None
            raise NetworkInterfaceExists(name, namespace) from None

    _run(namespace, op)


@network.entrypoint
def create_bridge(name: str, namespace: str | None = None, mtu: int | None = None,
                  address: str | None = None, exist_ok: bool = False) -> bool:
    """Create a Linux bridge (STP off: ports forward immediately).

    Returns False if ``exist_ok`` and a bridge of that name already exists.
    """
    kwargs: dict[str, Any] = {}
    if mtu is not None:
        kwargs['mtu'] = mtu
    if address is not None:
        kwargs['address'] = address
    return _create_link(namespace, name, 'bridge', exist_ok, **kwargs)


@network.entrypoint
def create_vxlan(name: str, vni: int, namespace: str | None = None,
                 local_ip: str | None = None, group: str | None = None,
                 dev: str | None = None, dstport: int = 4789, learning: bool = True,
                 ttl: int | None = None, mtu: int | None = None,
                 exist_ok: bool = False) -> bool:
    """Create a VXLAN device; ``group`` None means unicast (FDB-driven).

    Returns False if ``exist_ok`` and a VXLAN device of that name exists.
    """
    kwargs: dict[str, Any] = {'vxlan_id': vni, 'vxlan_port': dstport,
                              'vxlan_learning': 1 if learning else 0}
    v6 = ':' in (local_ip or '') or ':' in (group or '')
    if local_ip is not None:
        kwargs['vxlan_local6' if v6 else 'vxlan_local'] = local_ip
    if group is not None:
        kwargs['vxlan_group6' if v6 else 'vxlan_group'] = group
    if ttl is not None:
        kwargs['vxlan_ttl'] = ttl
    if mtu is not None:
        kwargs['mtu'] = mtu
    if dev is not None:
        kwargs['vxlan_link'] = _run(namespace, lambda ipr: _index(ipr, dev, namespace))
    return _create_link(namespace, name, 'vxlan', exist_ok, **kwargs)


@network.entrypoint
def create_vlan(name: str, physical_device: str, vlan_id: int,
                namespace: str | None = None, mtu: int | None = None,
                exist_ok: bool = False) -> bool:
    """Create an 802.1Q sub-interface of ``physical_device`` tagged ``vlan_id``.

    Returns False if ``exist_ok`` and a VLAN device of that name exists
    (its parent and tag are not compared).

    :raises VlanNotSupported: the kernel has no 8021q support.
    """
    kwargs: dict[str, Any] = {'vlan_id': vlan_id}
    if mtu is not None:
        kwargs['mtu'] = mtu
    kwargs['link'] = _run(namespace, lambda ipr: _index(ipr, physical_device, namespace))
    try:
        return _create_link(namespace, name, 'vlan', exist_ok, **kwargs)
    except NetlinkOperationError as e:
        if e.errno == errno.EOPNOTSUPP:
            raise VlanNotSupported(name, namespace) from None
        raise


@network.entrypoint
def delete_link(name: str, namespace: str | None = None) -> bool:
    """Delete a device; False if it did not exist."""
    def op(ipr: Any) -> bool:
        try:
            with _translate('deleting device %r' % name, namespace, name):
                ipr.link('del', ifname=name)
        except NetworkInterfaceNotFound:
            return False
        return True

    return _run(namespace, op)


@network.entrypoint
def set_link(name: str, namespace: str | None = None, state: str | None = None,
             mtu: int | None = None, address: str | None = None,
             master: str | None = None) -> None:
    """Change attributes in one request.

    ``state`` is 'up' or 'down'; ``master`` is a bridge name in the same
    namespace, or '' to detach from any master.
    """
    def op(ipr: Any) -> None:
        kwargs: dict[str, Any] = {}
        if mtu is not None:
            kwargs['mtu'] = mtu
        if address is not None:
            kwargs['address'] = address
        if master is not None:
            kwargs['master'] = _index(ipr, master, namespace) if master else 0
        if state is not None:
            kwargs['state'] = state
        if not kwargs:
            return
        idx = _index(ipr, name, namespace)
        with _translate('setting %s on %r' % (sorted(kwargs), name), namespace, name):
            ipr.link('set', index=idx, **kwargs)

    _run(namespace, op)


@network.entrypoint
def move_link(name: str, target_namespace: str | None,
              namespace: str | None = None) -> None:
    """Move a device to ``target_namespace`` (None: the root namespace).

    Note the kernel cost (~18 ms); prefer creating devices in place.
    """
    def op(ipr: Any) -> None:
        idx = _index(ipr, name, namespace)
        with namespaces.netns_fd(target_namespace) as fd:
            try:
                with _translate('moving %r to %s' % (name, _where(target_namespace)),
                                namespace, name):
                    ipr.link('set', index=idx, net_ns_fd=fd)
            except NetlinkOperationError as e:
                if e.errno == errno.EEXIST:
                    raise NetworkInterfaceExists(name, target_namespace) from None
                raise

    _run(namespace, op)


@network.entrypoint
def get_link(name: str, namespace: str | None = None) -> dict[str, Any]:
    """One device as a dict: name, index, mtu, address, state, kind, master..."""
    return _run(namespace, lambda ipr: _link_dict(ipr, name, namespace))


@network.entrypoint
def list_links(namespace: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
    """All devices (optionally only one kind), in ifindex order."""
    def op(ipr: Any) -> list[dict[str, Any]]:
        with _translate('listing devices', namespace):
            msgs = ipr.link('dump')
        names = {m['index']: m.get('IFLA_IFNAME') for m in msgs}
        links = [_link_to_dict(m, names) for m in msgs]
        if kind is not None:
            links = [link for link in links if link['kind'] == kind]
        return sorted(links, key=lambda link: link['index'])

    return _run(namespace, op)


@network.entrypoint
def get_links(names: list[str], namespace: str | None = None) -> dict[str, dict[str, Any]]:
    """The links among ``names`` that exist, by name, in one round trip.

    A driver checking the two or three devices of one port this way pays
    one privsep round trip (~1 ms) instead of one per device.
    """
    return _run(namespace, lambda ipr: _links_here(ipr, names, namespace))


def _links_here(ipr: Any, names: Iterable[str], namespace: str | None
                ) -> dict[str, dict[str, Any]]:
    links = {}
    for name in names:
        with contextlib.suppress(NetworkInterfaceNotFound):
            links[name] = _link_dict(ipr, name, namespace)
    return links


@network.entrypoint
def get_device_state(name: str, namespace: str,
                     root_devices: list[str] | None = None) -> dict[str, Any]:
    """A service port's namespace as one read: is ``lo`` up, the device's
    link, addresses and main-table routes (empty when it is missing), and
    the links among ``root_devices`` in the root namespace (the switch side
    an interface driver checks: a bridge, a tap; None: not read).

    What a restarted DHCP agent checks per network, in one round trip
    rather than six (namespace, device, addresses, default route, bridge,
    tap). Raises NetworkNamespaceNotFound.
    """
    def op(ipr: Any) -> dict[str, Any]:
        lo_up = _is_up(ipr, 'lo', namespace)
        try:
            link = _link_dict(ipr, name, namespace)
        except NetworkInterfaceNotFound:
            return {'lo_up': lo_up, 'link': None, 'addresses': [], 'routes': []}
        addresses = _dump_addresses(ipr, namespace, name, None)
        names = {link['index']: name}
        return {'lo_up': lo_up, 'link': link,
                'addresses': [_addr_to_dict(m, names) for m in addresses],
                'routes': _routes(ipr, namespace, None, MAIN_TABLE, name)}

    def read() -> dict[str, Any]:
        state = _run_here(namespace, op)
        state['root_links'] = None if root_devices is None else _run_here(
            None, lambda ipr: _links_here(ipr, root_devices, None))
        return state

    return _netlink_thread.call(read)


@network.entrypoint
def link_exists(name: str, namespace: str | None = None) -> bool:
    """False also when the namespace itself does not exist."""
    try:
        _run(namespace, lambda ipr: _index(ipr, name, namespace))
    except (NetworkNamespaceNotFound, NetworkInterfaceNotFound):
        return False
    return True


# --------------------------------------------------------------------------
# Addresses
# --------------------------------------------------------------------------

def _addr_to_dict(msg: Any, names: dict[int, str]) -> dict[str, Any]:
    version = _VERSIONS.get(msg['family'], 0)
    address = msg.get('IFA_LOCAL') or msg.get('IFA_ADDRESS')
    flags = msg.get('IFA_FLAGS')
    if flags is None:
        flags = msg.get('flags') or 0
    return {
        'cidr': '%s/%d' % (address, msg['prefixlen']),
        'address': address,
        'prefixlen': msg['prefixlen'],
        'ip_version': version,
        'scope': SCOPE_NAMES.get(msg['scope'], str(msg['scope'])),
        'dynamic': not flags & IFA_F_PERMANENT,
        'tentative': bool(flags & IFA_F_TENTATIVE),
        'dadfailed': bool(flags & IFA_F_DADFAILED),
        'broadcast': msg.get('IFA_BROADCAST'),
        'device': names.get(msg['index']),
        'label': msg.get('IFA_LABEL'),
    }


@network.entrypoint
def add_address(device: str, address: str, prefixlen: int, ip_version: int,
                namespace: str | None = None, broadcast: str | None = None,
                scope: int = 0) -> bool:
    """Add an address; False if exactly that address/prefix was already there.

    IPv6 identifies an address without its prefix length, so an existing
    address with a different prefix is an error rather than "already done".
    """
    def op(ipr: Any) -> bool:
        idx = _index(ipr, device, namespace)
        kwargs: dict[str, Any] = {'scope': scope}
        if broadcast is not None:
            kwargs['broadcast'] = broadcast
        try:
            with _translate('adding %s/%d to %r' % (address, prefixlen, device),
                            namespace, device):
                ipr.addr('add', index=idx, address=address, prefixlen=prefixlen,
                         family=FAMILIES[ip_version], **kwargs)
        except NetlinkOperationError as e:
            if e.errno != errno.EEXIST:
                raise
            for msg in ipr.addr('dump', index=idx, family=FAMILIES[ip_version]):
                current = msg.get('IFA_LOCAL') or msg.get('IFA_ADDRESS')
                if current == address and msg['prefixlen'] == prefixlen:
                    return False
            raise NetlinkOperationError(
                errno.EEXIST, '%s is already on %r in %s with another prefix length'
                % (address, device, _where(namespace))) from None
        return True

    return _run(namespace, op)


@network.entrypoint
def delete_address(device: str, address: str, prefixlen: int, ip_version: int,
                   namespace: str | None = None) -> bool:
    """Remove an address; False if it was not there."""
    def op(ipr: Any) -> bool:
        idx = _index(ipr, device, namespace)
        try:
            with _translate('deleting %s/%d from %r' % (address, prefixlen, device),
                            namespace, device):
                ipr.addr('del', index=idx, address=address, prefixlen=prefixlen,
                         family=FAMILIES[ip_version])
        except NetlinkOperationError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                return False
            raise
        return True

    return _run(namespace, op)


def _dump_addresses(ipr: Any, namespace: str | None, device: str | None,
                    ip_version: int | None) -> list[Any]:
    kwargs: dict[str, Any] = {}
    if device is not None:
        kwargs['index'] = _index(ipr, device, namespace)
    if ip_version is not None:
        kwargs['family'] = FAMILIES[ip_version]
    with _translate('listing addresses', namespace, device):
        return list(ipr.addr('dump', **kwargs))


@network.entrypoint
def list_addresses(namespace: str | None = None, device: str | None = None,
                   ip_version: int | None = None) -> list[dict[str, Any]]:
    """Addresses with cidr, ip_version, scope and the dynamic (not permanent) flag."""
    def op(ipr: Any) -> list[dict[str, Any]]:
        msgs = _dump_addresses(ipr, namespace, device, ip_version)
        names = _names(ipr, (m['index'] for m in msgs))
        return [_addr_to_dict(m, names) for m in msgs]

    return _run(namespace, op)


@network.entrypoint
def flush_addresses(device: str, namespace: str | None = None,
                    ip_version: int | None = None) -> int:
    """Remove every address (of one family) from a device; returns how many."""
    def op(ipr: Any) -> int:
        removed = 0
        for msg in _dump_addresses(ipr, namespace, device, ip_version):
            address = msg.get('IFA_LOCAL') or msg.get('IFA_ADDRESS')
            try:
                with _translate('flushing %s from %r' % (address, device),
                                namespace, device):
                    ipr.addr('del', index=msg['index'], address=address,
                             prefixlen=msg['prefixlen'], family=msg['family'])
                removed += 1
            except NetlinkOperationError as e:
                if e.errno != errno.EADDRNOTAVAIL:  # went away meanwhile
                    raise
        return removed

    return _run(namespace, op)


# --------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------

def _route_args(ipr: Any, namespace: str | None, dst: str, ip_version: int,
                gateway: str | None, device: str | None, table: int | None,
                metric: int | None, scope: int | None = None,
                onlink: bool = False) -> dict[str, Any]:
    kwargs: dict[str, Any] = {'dst': dst, 'family': FAMILIES[ip_version]}
    if gateway is not None:
        kwargs['gateway'] = gateway
    if device is not None:
        kwargs['oif'] = _index(ipr, device, namespace)
    if table is not None:
        kwargs['table'] = table
    if metric is not None:
        kwargs['priority'] = metric
    if scope is not None:
        kwargs['scope'] = scope
    if onlink:
        kwargs['flags'] = RTNH_F_ONLINK
    return kwargs


@network.entrypoint
def add_route(dst: str, ip_version: int, namespace: str | None = None,
              gateway: str | None = None, device: str | None = None,
              table: int | None = None, metric: int | None = None,
              scope: int | None = None, onlink: bool = False,
              replace: bool = True) -> bool:
    """Add (or with ``replace`` converge) a route; ``dst`` is a CIDR.

    Without ``replace``, an existing route for the same dst/metric/table is
    left alone and False returned.
    """
    def op(ipr: Any) -> bool:
        kwargs = _route_args(ipr, namespace, dst, ip_version, gateway, device,
                             table, metric, scope, onlink)
        try:
            with _translate('adding route to %s' % dst, namespace, device):
                ipr.route('replace' if replace else 'add', **kwargs)
        except NetlinkOperationError as e:
            if e.errno == errno.EEXIST and not replace:
                return False
            raise
        return True

    return _run(namespace, op)


@network.entrypoint
def delete_route(dst: str, ip_version: int, namespace: str | None = None,
                 gateway: str | None = None, device: str | None = None,
                 table: int | None = None, metric: int | None = None) -> bool:
    """Delete a matching route; False if there was none."""
    def op(ipr: Any) -> bool:
        kwargs = _route_args(ipr, namespace, dst, ip_version, gateway, device,
                             table, metric)
        try:
            with _translate('deleting route to %s' % dst, namespace, device):
                ipr.route('del', **kwargs)
        except NetlinkOperationError as e:
            if e.errno == errno.ESRCH:
                return False
            raise
        return True

    return _run(namespace, op)


def _route_to_dict(msg: Any, names: dict[int, str]) -> dict[str, Any]:
    version = _VERSIONS.get(msg['family'], 0)
    dst = msg.get('RTA_DST')
    if dst is None:
        dst = '0.0.0.0' if version == 4 else '::'
    oif = msg.get('RTA_OIF')
    metric = msg.get('RTA_PRIORITY')
    return {
        'dst': '%s/%d' % (dst, msg['dst_len']),
        'ip_version': version,
        'gateway': msg.get('RTA_GATEWAY'),
        'device': names.get(oif) if oif else None,
        'table': msg.get('RTA_TABLE') or msg['table'],
        'metric': metric if metric is not None else 0,
        'scope': SCOPE_NAMES.get(msg['scope'], str(msg['scope'])),
        'type': ROUTE_TYPE_NAMES.get(msg['type'], str(msg['type'])),
        'source': msg.get('RTA_PREFSRC'),
        'onlink': bool((msg.get('flags') or 0) & RTNH_F_ONLINK),
        'protocol': ROUTE_PROTOCOL_NAMES.get(msg['proto'], str(msg['proto'])),
    }


def _routes(ipr: Any, namespace: str | None, ip_version: int | None,
            table: int | None, device: str | None) -> list[dict[str, Any]]:
    kwargs: dict[str, Any] = {}
    if ip_version is not None:
        kwargs['family'] = FAMILIES[ip_version]
    oif = _index(ipr, device, namespace) if device is not None else None
    with _translate('listing routes', namespace):
        msgs = ipr.route('dump', **kwargs)
    names = _names(ipr, (m.get('RTA_OIF') for m in msgs))
    routes = []
    for msg in msgs:
        if table is not None and (msg.get('RTA_TABLE') or msg['table']) != table:
            continue
        if oif is not None and msg.get('RTA_OIF') != oif:
            continue
        routes.append(_route_to_dict(msg, names))
    return routes


@network.entrypoint
def list_routes(namespace: str | None = None, ip_version: int | None = None,
                table: int | None = MAIN_TABLE,
                device: str | None = None) -> list[dict[str, Any]]:
    """Routes of one table (None: all tables), default routes as x/0."""
    return _run(namespace, lambda ipr: _routes(ipr, namespace, ip_version, table, device))


# --------------------------------------------------------------------------
# Neighbours
# --------------------------------------------------------------------------

@network.entrypoint
def add_neighbour(device: str, ip: str, mac: str, ip_version: int,
                  namespace: str | None = None) -> None:
    """Add or replace a permanent neighbour entry (static ARP/ND)."""
    def op(ipr: Any) -> None:
        idx = _index(ipr, device, namespace)
        with _translate('adding neighbour %s on %r' % (ip, device), namespace, device):
            ipr.neigh('replace', dst=ip, lladdr=mac, ifindex=idx,
                      family=FAMILIES[ip_version], state=NUD_PERMANENT)

    _run(namespace, op)


@network.entrypoint
def delete_neighbour(device: str, ip: str, ip_version: int,
                     namespace: str | None = None) -> bool:
    """Remove a neighbour entry; False if there was none."""
    def op(ipr: Any) -> bool:
        idx = _index(ipr, device, namespace)
        try:
            with _translate('deleting neighbour %s on %r' % (ip, device),
                            namespace, device):
                ipr.neigh('del', dst=ip, ifindex=idx, family=FAMILIES[ip_version])
        except NetlinkOperationError as e:
            if e.errno == errno.ENOENT:
                return False
            raise
        return True

    return _run(namespace, op)


@network.entrypoint
def list_neighbours(namespace: str | None = None, device: str | None = None,
                    ip_version: int | None = None) -> list[dict[str, Any]]:
    """Neighbour entries with ip, mac, device and state name."""
    def op(ipr: Any) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {}
        if ip_version is not None:
            kwargs['family'] = FAMILIES[ip_version]
        idx = _index(ipr, device, namespace) if device is not None else None
        with _translate('listing neighbours', namespace):
            msgs = ipr.neigh('dump', **kwargs)
        names = _names(ipr, (m['ifindex'] for m in msgs))
        result = []
        for msg in msgs:
            if msg['family'] not in _VERSIONS:
                continue  # bridge FDB entries share the dump
            if idx is not None and msg['ifindex'] != idx:
                continue
            state = msg['state']
            result.append({
                'ip': msg.get('NDA_DST'),
                'mac': msg.get('NDA_LLADDR'),
                'device': names.get(msg['ifindex']),
                'ip_version': _VERSIONS[msg['family']],
                'state': NUD_NAMES.get(state, str(state)),
            })
        return result

    return _run(namespace, op)


# --------------------------------------------------------------------------
# Bridge forwarding database (FDB) entries of a device's own table
# --------------------------------------------------------------------------

NUD_NOARP = 0x40
NTF_SELF = 0x02
NTF_MASTER = 0x04


@network.entrypoint
def add_fdb_entry(device: str, mac: str, dst: str, namespace: str | None = None,
                  append: bool = True) -> None:
    """Add a permanent ``mac -> dst`` entry to a VXLAN device's own FDB.

    With ``append`` the remote is added to those ``mac`` already has (the
    all-zeros MAC with one entry per peer makes the device replicate
    flooded frames to every peer); without it the entry is replaced, so
    ``dst`` becomes the only remote of ``mac``. Both are idempotent.
    """
    def op(ipr: Any) -> None:
        idx = _index(ipr, device, namespace)
        with _translate('%s FDB entry %s dst %s on %r'
                        % ('appending' if append else 'replacing', mac, dst, device),
                        namespace, device):
            ipr.fdb('append' if append else 'replace', ifindex=idx, lladdr=mac,
                    dst=dst, state=NUD_PERMANENT | NUD_NOARP, flags=NTF_SELF)

    _run(namespace, op)


@network.entrypoint
def delete_fdb_entry(device: str, mac: str, dst: str | None = None,
                     namespace: str | None = None) -> bool:
    """Remove ``mac``'s remote ``dst`` (all its remotes if None); False if absent."""
    def op(ipr: Any) -> bool:
        idx = _index(ipr, device, namespace)
        kwargs: dict[str, Any] = {'ifindex': idx, 'lladdr': mac, 'flags': NTF_SELF}
        if dst is not None:
            kwargs['dst'] = dst
            # The kernel also answers 0 for a remote the MAC does not have.
            with _translate('listing FDB entries of %r' % device, namespace, device):
                present = any(
                    m['ifindex'] == idx and m.get('NDA_LLADDR') == mac
                    and m.get('NDA_DST') == dst and (m.get('flags') or 0) & NTF_SELF
                    for m in ipr.fdb('dump', ifindex=idx))
            if not present:
                return False
        try:
            with _translate('deleting FDB entry %s dst %s on %r' % (mac, dst, device),
                            namespace, device):
                ipr.fdb('del', **kwargs)
        except NetlinkOperationError as e:
            if e.errno == errno.ENOENT:
                return False
            raise
        return True

    return _run(namespace, op)


@network.entrypoint
def list_fdb_entries(device: str, namespace: str | None = None) -> list[dict[str, Any]]:
    """FDB entries of ``device``: mac, dst, permanent, and which table.

    ``self`` entries are the device's own (a VXLAN device's remotes);
    ``master`` ones are what the bridge it is enslaved to knows about it.
    """
    def op(ipr: Any) -> list[dict[str, Any]]:
        idx = _index(ipr, device, namespace)
        with _translate('listing FDB entries of %r' % device, namespace, device):
            msgs = list(ipr.fdb('dump', ifindex=idx))
        result = []
        for msg in msgs:
            if msg['ifindex'] != idx:
                continue
            flags = msg.get('flags') or 0
            result.append({
                'mac': msg.get('NDA_LLADDR'),
                'dst': msg.get('NDA_DST'),
                'device': device,
                'permanent': bool((msg.get('state') or 0) & NUD_PERMANENT),
                'self': bool(flags & NTF_SELF),
                'master': bool(flags & NTF_MASTER),
            })
        return result

    return _run(namespace, op)


# --------------------------------------------------------------------------
# sysctl inside a namespace
# --------------------------------------------------------------------------


def _sysctl_path(components: list[str] | tuple[str, ...]) -> str:
    """/proc/sys/net/... from path components (device names may contain dots)."""
    parts = list(components)
    if len(parts) < 2 or parts[0] != 'net':
        raise ValueError('only net.* sysctls are supported, got %r' % (components,))
    for part in parts:
        if (not isinstance(part, str) or not _SYSCTL_PART_RE.fullmatch(part)
                or part in ('.', '..')):
            raise ValueError('invalid sysctl component %r' % (part,))
    return os.path.join('/proc/sys', *parts)


@network.entrypoint
def set_sysctl(components: list[str], value: str, namespace: str | None = None) -> None:
    """Write a net.* sysctl, in ``namespace`` if given.

    :raises NetworkNamespaceNotFound: no such namespace.
    :raises FileNotFoundError: no such sysctl (e.g. device absent).
    """
    path = _sysctl_path(components)
    if not isinstance(value, str) or '\n' in value or '\0' in value:
        raise ValueError('invalid sysctl value %r' % (value,))

    def write() -> None:
        with open(path, 'w') as f:
            f.write(value)

    namespaces.run_in_namespace(namespace, write)


@network.entrypoint
def get_sysctl(components: list[str], namespace: str | None = None) -> str:
    """Read a net.* sysctl, in ``namespace`` if given (stripped text)."""
    path = _sysctl_path(components)

    def read() -> str:
        with open(path) as f:
            return f.read().strip()

    return namespaces.run_in_namespace(namespace, read)


@network.entrypoint
def get_sysctls(keys: list[list[str]], namespace: str | None = None) -> list[str | None]:
    """Read several net.* sysctls in one visit of ``namespace``; None for absent ones."""
    if not isinstance(keys, (list, tuple)) or len(keys) > 64:
        raise ValueError('keys must be a list of at most 64 sysctl keys')
    paths = [_sysctl_path(components) for components in keys]

    def read() -> list[str | None]:
        values: list[str | None] = []
        for path in paths:
            try:
                with open(path) as f:
                    values.append(f.read().strip())
            except FileNotFoundError:
                values.append(None)
        return values

    return namespaces.run_in_namespace(namespace, read)
