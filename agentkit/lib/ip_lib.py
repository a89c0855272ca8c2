"""Network devices, namespaces, addresses, routes: the API drivers use.

This is the unprivileged side. Every operation is one call into the
``network`` privsep daemon (:mod:`agentkit.privileged.netlink`), where it is
done with a cached netlink socket; no ``ip`` command is ever executed.
Arguments are validated *here*, before they cross to root, so a malformed
value (a 16-character device name, ``10.0.0.1/33``, a namespace called
``../etc``) is reported as a clear ``ValueError`` subclass and never reaches
the daemon.

Two layers, in the spirit of Neutron's ``ip_lib`` but smaller:

* functions (``create_namespace``, ``add_route``, ``set_sysctl``...) that
  map one-to-one to privileged operations;
* objects: :class:`IPWrapper` (a namespace: create it, make devices in it)
  and :class:`IPDevice` (one device, with ``.link``, ``.addr``, ``.route``
  and ``.neigh`` helpers).

Idempotency: "create"/"add" of something that is already exactly there and
"delete" of something already gone succeed and return False; anything
ambiguous (an existing device of another kind, an address with another
prefix length) raises.

``namespace=None`` always means the root network namespace.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from typing import Any, Iterable, Mapping, Sequence, TypedDict, Union, cast

from agentkit import exceptions
from agentkit.lib import naming
from agentkit.privileged import namespaces
from agentkit.privileged import netlink as priv

# Re-exported so drivers never import the privileged module themselves.
NetworkNamespaceNotFound = namespaces.NetworkNamespaceNotFound
NetworkInterfaceNotFound = priv.NetworkInterfaceNotFound
NetworkInterfaceExists = priv.NetworkInterfaceExists
NetlinkOperationError = priv.NetlinkOperationError
VlanNotSupported = priv.VlanNotSupported

MAX_DEVICE_NAME_LEN = naming.MAX_DEVICE_NAME_LEN
MAX_NAMESPACE_NAME_LEN = namespaces.MAX_NAME_LEN
DEFAULT_VXLAN_PORT = 4789
MIN_MTU, MAX_MTU = 68, 65535

SCOPES = {'global': 0, 'universe': 0, 'site': 200, 'link': 253, 'host': 254}
TABLES = {'main': 254, 'local': 255, 'default': 253}
MAIN_TABLE = TABLES['main']

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPInterface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Table = Union[int, str]

# Printable ASCII without '/', ':' (the kernel refuses both) and space.
_DEVICE_RE = re.compile(r'[!-.0-9;-~]{1,%d}' % MAX_DEVICE_NAME_LEN)
_MAC_RE = re.compile(r'[0-9a-f]{2}(:[0-9a-f]{2}){5}')
_SYSCTL_PART_RE = re.compile(r'[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,254}')


class InvalidNetworkValue(exceptions.AgentkitError, ValueError):
    """An address, CIDR, MAC, MTU... that cannot be handed to the kernel."""


class LinkInfo(TypedDict, total=False):
    name: str
    index: int
    mtu: int
    address: str | None
    state: str  # 'up' / 'down' (administrative)
    operstate: str | None
    kind: str | None  # 'veth', 'bridge', 'vxlan'... None for physical/lo
    master: str | None
    master_index: int | None
    peer: str | None  # veth peer name when it lives in the same namespace
    peer_index: int | None
    peer_in_other_namespace: bool
    vxlan: dict[str, Any]


class AddressInfo(TypedDict):
    cidr: str
    address: str
    prefixlen: int
    ip_version: int
    scope: str
    dynamic: bool
    tentative: bool
    dadfailed: bool
    broadcast: str | None
    device: str | None
    label: str | None


class RouteInfo(TypedDict):
    dst: str  # always a CIDR; default routes are 0.0.0.0/0 and ::/0
    ip_version: int
    gateway: str | None
    device: str | None
    table: int
    metric: int
    scope: str
    type: str
    source: str | None
    onlink: bool
    protocol: str  # 'ra': learned from a router advertisement, not installed by anyone


class NeighbourInfo(TypedDict):
    ip: str
    mac: str | None
    device: str | None
    ip_version: int
    state: str


class FdbEntry(TypedDict):
    mac: str
    dst: str | None  # remote endpoint (VXLAN), None for local entries
    device: str
    permanent: bool
    self: bool  # the device's own table (a VXLAN device's remotes)
    master: bool  # the table of the bridge the device is enslaved to


@dataclasses.dataclass(frozen=True)
class DeviceState:
    """One read of a service port's device and its namespace.

    Taken with :func:`read_device_state` in a single privileged call, and
    handed to interface drivers so that a port already plugged costs one
    round trip to check rather than one per attribute.
    """

    loopback_up: bool
    link: LinkInfo | None  # None: the device is not in the namespace
    addresses: tuple[AddressInfo, ...]
    routes: tuple[RouteInfo, ...]  # main table, out of the device
    # Root-namespace devices read along (those that exist), by name;
    # None: none were asked for.
    root_links: Mapping[str, LinkInfo] | None = None

    def gateway(self, ip_version: int = 4) -> RouteInfo | None:
        """The device's default route with the lowest metric, if any."""
        return _lowest_default(self.routes, ip_version)


#: A default route's destination as routes read here name it, by IP version.
DEFAULT_DESTINATIONS = {4: '0.0.0.0/0', 6: '::/0'}


def _lowest_default(routes: Iterable[RouteInfo], ip_version: int) -> RouteInfo | None:
    default = DEFAULT_DESTINATIONS[ip_version]
    candidates = [r for r in routes if r['dst'] == default]
    return min(candidates, key=lambda r: r['metric']) if candidates else None


# --------------------------------------------------------------------------
# Validation (public so drivers can check values early, e.g. config)
# --------------------------------------------------------------------------

def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + '...'


def validate_device_name(name: Any) -> str:
    """A kernel-acceptable interface name (IFNAMSIZ-1 = 15 chars at most)."""
    if not isinstance(name, str):
        raise exceptions.InvalidIdentifier(
            'device name must be a string, got %s' % type(name).__name__)
    if len(name) > MAX_DEVICE_NAME_LEN:
        raise exceptions.InvalidIdentifier(
            'device name %s is %d characters long; the kernel allows %d'
            % (_short(name), len(name), MAX_DEVICE_NAME_LEN))
    if name in ('', '.', '..') or not _DEVICE_RE.fullmatch(name):
        raise exceptions.InvalidIdentifier(
            'invalid device name %s: use 1-%d printable ASCII characters '
            'without "/", ":" or whitespace' % (_short(name), MAX_DEVICE_NAME_LEN))
    return name


def validate_namespace(name: Any) -> str | None:
    """A namespace name safe as /run/netns/<name>; None (root) passes."""
    if name is None:
        return None
    if not namespaces.is_valid_name(name):
        raise exceptions.InvalidIdentifier(
            'invalid network namespace name %s: use up to %d characters from '
            '[A-Za-z0-9_.-], not starting with "." or "-"'
            % (_short(name), MAX_NAMESPACE_NAME_LEN))
    return name


def _require_namespace(name: Any) -> str:
    if name is None:
        raise exceptions.InvalidIdentifier('a network namespace name is required')
    return validate_namespace(name)  # type: ignore[return-value]


def parse_ip(value: Any) -> IPAddress:
    """One IPv4/IPv6 address, without prefix length."""
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value
    if not isinstance(value, str):
        raise InvalidNetworkValue('IP address must be a string, got %s'
                                  % type(value).__name__)
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise InvalidNetworkValue('invalid IP address %s' % _short(value)) from None


def parse_interface_cidr(value: Any) -> IPInterface:
    """An address *with* its prefix length, as put on a device ('10.0.0.5/24').

    The prefix length is mandatory: a silent /32 on a port would break
    on-link reachability in a way that is hard to spot.
    """
    if isinstance(value, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        return value
    if not isinstance(value, str) or '/' not in value:
        raise InvalidNetworkValue('invalid address %s: expected "address/prefixlen"'
                                  % _short(value))
    try:
        return ipaddress.ip_interface(value)
    except ValueError as e:
        raise InvalidNetworkValue('invalid address %s: %s' % (_short(value), e)) from None


def parse_route_destination(value: Any) -> IPNetwork:
    """A route destination: 'default', a CIDR without host bits, or one IP (/32, /128)."""
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    if not isinstance(value, str):
        raise InvalidNetworkValue('route destination must be a string, got %s'
                                  % type(value).__name__)
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as e:
        raise InvalidNetworkValue('invalid route destination %s: %s'
                                  % (_short(value), e)) from None


def validate_mac(value: Any, unicast: bool = True) -> str:
    """A MAC 'aa:bb:cc:dd:ee:ff', returned lowercased.

    Devices need a unicast MAC (the kernel refuses others with a vague
    EADDRNOTAVAIL); neighbour entries may map to a multicast one.
    """
    if not isinstance(value, str) or not _MAC_RE.fullmatch(value.lower()):
        raise InvalidNetworkValue('invalid MAC address %s: expected xx:xx:xx:xx:xx:xx'
                                  % _short(value))
    mac = value.lower()
    if unicast and int(mac[:2], 16) & 1:
        raise InvalidNetworkValue('MAC address %s is a multicast address' % mac)
    return mac


def _validate_int(value: Any, low: int, high: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidNetworkValue('%s must be an integer, got %s' % (what, _short(value)))
    if not low <= value <= high:
        raise InvalidNetworkValue('%s %d out of range %d..%d' % (what, value, low, high))
    return value


def validate_mtu(value: Any) -> int:
    return _validate_int(value, MIN_MTU, MAX_MTU, 'MTU')


def validate_table(value: Any) -> int:
    """A routing table by id (1..2**32-1) or name ('main', 'local', 'default')."""
    if isinstance(value, str):
        try:
            return TABLES[value]
        except KeyError:
            raise InvalidNetworkValue('unknown routing table %s; known: %s'
                                      % (_short(value), ', '.join(TABLES))) from None
    return _validate_int(value, 1, 2 ** 32 - 1, 'routing table')


def validate_scope(value: Any) -> int:
    if isinstance(value, str):
        try:
            return SCOPES[value]
        except KeyError:
            raise InvalidNetworkValue('unknown scope %s; known: %s'
                                      % (_short(value), ', '.join(SCOPES))) from None
    return _validate_int(value, 0, 255, 'scope')


def _validate_ip_version(value: Any) -> int | None:
    if value not in (None, 4, 6) or isinstance(value, bool):
        raise InvalidNetworkValue('ip_version must be 4, 6 or None, got %s' % _short(value))
    return None if value is None else int(value)


def parse_sysctl_key(key: str | Sequence[str]) -> list[str]:
    """'net.ipv4.ip_forward' -> ['net', 'ipv4', 'ip_forward'].

    Device names may contain dots (``eth0.100``), so a key naming a device
    must be given as a sequence of components instead of a dotted string.
    """
    parts = key.split('.') if isinstance(key, str) else list(key)
    if len(parts) < 2 or parts[0] != 'net':
        raise InvalidNetworkValue('only net.* sysctls are supported, got %s' % _short(key))
    for part in parts:
        if not isinstance(part, str) or not _SYSCTL_PART_RE.fullmatch(part) or part == '..':
            raise InvalidNetworkValue('invalid sysctl component %s in %s'
                                      % (_short(part), _short(key)))
    return parts


def _ipv6_scope(ip: IPAddress) -> int:
    """The scope the kernel gives an IPv6 address (see ipv6_addr_scope())."""
    if ip.is_loopback:
        return SCOPES['host']
    if ip.is_link_local:
        return SCOPES['link']
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return SCOPES['site']
    return SCOPES['global']


def _sysctl_value(value: Any) -> str:
    if isinstance(value, bool):
        return '1' if value else '0'
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value and not any(c in value for c in '\n\0'):
        return value
    raise InvalidNetworkValue('invalid sysctl value %s' % _short(value))


# --------------------------------------------------------------------------
# Functions: one privileged call each
# --------------------------------------------------------------------------

def create_namespace(name: str) -> bool:
    """Create a namespace with ``lo`` up; False if it already existed."""
    return priv.create_namespace(_require_namespace(name))


def delete_namespace(name: str) -> bool:
    """Delete a namespace (its devices go with it); False if it was absent."""
    return priv.delete_namespace(_require_namespace(name))


def list_namespaces() -> list[str]:
    return list(priv.list_namespaces())


def namespace_exists(name: str) -> bool:
    return priv.namespace_exists(_require_namespace(name))


def device_exists(name: str, namespace: str | None = None) -> bool:
    """False too when the namespace does not exist."""
    return priv.link_exists(validate_device_name(name), validate_namespace(namespace))


def get_link(name: str, namespace: str | None = None) -> LinkInfo:
    """One device's attributes; raises NetworkInterfaceNotFound."""
    return cast(LinkInfo, priv.get_link(validate_device_name(name),
                                        validate_namespace(namespace)))


def get_links(names: Sequence[str], namespace: str | None = None) -> dict[str, LinkInfo]:
    """The devices among ``names`` that exist, by name, in one privileged call."""
    links = priv.get_links([validate_device_name(n) for n in names],
                           validate_namespace(namespace))
    return cast(dict[str, LinkInfo], links)


def read_device_state(name: str, namespace: str,
                      root_devices: Sequence[str] | None = None) -> DeviceState | None:
    """``name`` and its namespace, plus the root namespace's
    ``root_devices``, in one privileged call; None if there is no such
    namespace."""
    roots = None if root_devices is None else [validate_device_name(n) for n in root_devices]
    try:
        state = priv.get_device_state(validate_device_name(name),
                                      _require_namespace(namespace), roots)
    except NetworkNamespaceNotFound:
        return None
    return DeviceState(loopback_up=state['lo_up'], link=state['link'],
                       addresses=tuple(state['addresses']),
                       routes=tuple(state['routes']),
                       root_links=state['root_links'])


def list_links(namespace: str | None = None, kind: str | None = None) -> list[LinkInfo]:
    return cast(list[LinkInfo], priv.list_links(validate_namespace(namespace), kind))


def list_addresses(namespace: str | None = None,
                   ip_version: int | None = None) -> list[AddressInfo]:
    """Every address of every device in ``namespace``, in one netlink dump."""
    addresses = priv.list_addresses(validate_namespace(namespace), None,
                                    _validate_ip_version(ip_version))
    return cast(list[AddressInfo], addresses)


def add_route(dst: str, namespace: str | None = None, gateway: str | None = None,
              device: str | None = None, table: Table | None = None,
              metric: int | None = None, scope: str | int | None = None,
              onlink: bool = False, replace: bool = True) -> bool:
    """Add a route to ``dst`` ('default', a CIDR or a host IP).

    With ``replace`` (the default) the call converges: an existing route
    with the same destination/metric/table is overwritten. Returns False
    only when ``replace`` is off and the route was already there.
    """
    network, version = _route_dst(dst, gateway)
    if gateway is None and device is None:
        raise InvalidNetworkValue('route to %s needs a gateway or a device' % dst)
    if onlink and (gateway is None or device is None):
        raise InvalidNetworkValue('an onlink route needs both a gateway and a device')
    return priv.add_route(
        str(network), version, validate_namespace(namespace),
        gateway=_gateway(gateway, version),
        device=validate_device_name(device) if device is not None else None,
        table=validate_table(table) if table is not None else None,
        metric=_validate_int(metric, 0, 2 ** 32 - 1, 'metric') if metric is not None else None,
        scope=validate_scope(scope) if scope is not None else None,
        onlink=bool(onlink), replace=bool(replace))


def delete_route(dst: str, namespace: str | None = None, gateway: str | None = None,
                 device: str | None = None, table: Table | None = None,
                 metric: int | None = None) -> bool:
    """Delete a route; False if no route matched."""
    network, version = _route_dst(dst, gateway)
    return priv.delete_route(
        str(network), version, validate_namespace(namespace),
        gateway=_gateway(gateway, version),
        device=validate_device_name(device) if device is not None else None,
        table=validate_table(table) if table is not None else None,
        metric=_validate_int(metric, 0, 2 ** 32 - 1, 'metric') if metric is not None else None)


def list_routes(namespace: str | None = None, ip_version: int | None = None,
                table: Table | None = 'main', device: str | None = None) -> list[RouteInfo]:
    """Routes of ``table`` (None: every table, including 'local')."""
    return cast(list[RouteInfo], priv.list_routes(
        validate_namespace(namespace), _validate_ip_version(ip_version),
        validate_table(table) if table is not None else None,
        validate_device_name(device) if device is not None else None))


def set_sysctl(key: str | Sequence[str], value: int | str | bool,
               namespace: str | None = None) -> None:
    """Write a net.* sysctl in ``namespace`` (e.g. 'net.ipv4.ip_forward', 1)."""
    priv.set_sysctl(parse_sysctl_key(key), _sysctl_value(value),
                    validate_namespace(namespace))


def get_sysctl(key: str | Sequence[str], namespace: str | None = None) -> str:
    return priv.get_sysctl(parse_sysctl_key(key), validate_namespace(namespace))


def get_sysctls(keys: Sequence[str | Sequence[str]],
                namespace: str | None = None) -> list[str | None]:
    """Several sysctls with one privileged call (None where absent)."""
    return list(priv.get_sysctls([parse_sysctl_key(k) for k in keys],
                                 validate_namespace(namespace)))


ZERO_MAC = '00:00:00:00:00:00'


def add_fdb_entry(device: str, mac: str, dst: str, namespace: str | None = None,
                  append: bool = True) -> None:
    """Add a permanent ``mac -> dst`` entry to a VXLAN device's own FDB.

    ``bridge fdb append 00:00:00:00:00:00 dev vxlan-N dst PEER`` is
    ``add_fdb_entry('vxlan-N', ZERO_MAC, PEER)``: one such entry per peer
    makes a unicast VXLAN device send flooded (broadcast, unknown unicast)
    frames to every peer. ``append=False`` replaces instead, for per-MAC
    entries that must have exactly one remote. Idempotent.
    """
    priv.add_fdb_entry(validate_device_name(device), validate_mac(mac, unicast=False),
                       str(parse_ip(dst)), validate_namespace(namespace),
                       append=bool(append))


def delete_fdb_entry(device: str, mac: str, dst: str | None = None,
                     namespace: str | None = None) -> bool:
    """Remove the remote ``dst`` of ``mac`` (every remote if None); False if absent."""
    return priv.delete_fdb_entry(
        validate_device_name(device), validate_mac(mac, unicast=False),
        str(parse_ip(dst)) if dst is not None else None, validate_namespace(namespace))


def list_fdb_entries(device: str, namespace: str | None = None) -> list[FdbEntry]:
    """FDB entries of ``device`` (its own and its bridge's, see FdbEntry)."""
    entries = priv.list_fdb_entries(validate_device_name(device),
                                    validate_namespace(namespace))
    return cast(list[FdbEntry], entries)


def _route_dst(dst: str, gateway: str | None) -> tuple[IPNetwork, int]:
    if dst == 'default':
        if gateway is None:
            raise InvalidNetworkValue('"default" needs a gateway to tell IPv4 from IPv6; '
                                      'use 0.0.0.0/0 or ::/0')
        version = parse_ip(gateway).version
        network = ipaddress.ip_network('0.0.0.0/0' if version == 4 else '::/0')
    else:
        network = parse_route_destination(dst)
    return network, network.version


def _gateway(gateway: str | None, version: int) -> str | None:
    if gateway is None:
        return None
    ip = parse_ip(gateway)
    if ip.version != version:
        raise InvalidNetworkValue('gateway %s is IPv%d but the destination is IPv%d'
                                  % (ip, ip.version, version))
    return str(ip)


# --------------------------------------------------------------------------
# Objects
# --------------------------------------------------------------------------

class IPWrapper:
    """A network namespace (or the root one): create it, make devices in it."""

    def __init__(self, namespace: str | None = None) -> None:
        self.namespace = validate_namespace(namespace)

    def __repr__(self) -> str:
        return 'IPWrapper(namespace=%r)' % (self.namespace,)

    def ensure_namespace(self) -> bool:
        """Create the namespace if missing; True if it was created now."""
        return priv.create_namespace(_require_namespace(self.namespace))

    def delete_namespace(self) -> bool:
        return priv.delete_namespace(_require_namespace(self.namespace))

    def namespace_exists(self) -> bool:
        return self.namespace is None or priv.namespace_exists(self.namespace)

    @staticmethod
    def list_namespaces() -> list[str]:
        return list_namespaces()

    def device(self, name: str) -> IPDevice:
        return IPDevice(name, self.namespace)

    def add_veth(self, name: str, peer_name: str, peer_namespace: str | None = None,
                 mtu: int | None = None, mac: str | None = None,
                 peer_mtu: int | None = None,
                 peer_mac: str | None = None) -> tuple[IPDevice, IPDevice]:
        """Create a veth pair, its peer born directly in ``peer_namespace``.

        ``peer_namespace`` defaults to this wrapper's namespace. To put the
        peer in the root namespace, create the pair from ``IPWrapper()``
        with the ends swapped. ``peer_mtu`` defaults to ``mtu``: veth ends
        with different MTUs drop packets silently.
        """
        peer_ns = validate_namespace(peer_namespace) if peer_namespace else self.namespace
        if peer_mtu is None:
            peer_mtu = mtu
        priv.create_veth(
            validate_device_name(name), validate_device_name(peer_name),
            namespace=self.namespace, peer_namespace=peer_ns,
            mtu=validate_mtu(mtu) if mtu is not None else None,
            address=validate_mac(mac) if mac is not None else None,
            peer_mtu=validate_mtu(peer_mtu) if peer_mtu is not None else None,
            peer_address=validate_mac(peer_mac) if peer_mac is not None else None)
        return IPDevice(name, self.namespace), IPDevice(peer_name, peer_ns)

    def add_bridge(self, name: str, mtu: int | None = None, mac: str | None = None,
                   exist_ok: bool = False) -> IPDevice:
        """Create a Linux bridge; with ``exist_ok`` an existing bridge is fine."""
        priv.create_bridge(
            validate_device_name(name), self.namespace,
            mtu=validate_mtu(mtu) if mtu is not None else None,
            address=validate_mac(mac) if mac is not None else None,
            exist_ok=bool(exist_ok))
        return IPDevice(name, self.namespace)

    def add_vxlan(self, name: str, vni: int, local_ip: str | None = None,
                  group: str | None = None, dev: str | None = None,
                  dstport: int = DEFAULT_VXLAN_PORT, learning: bool = True,
                  ttl: int | None = None, mtu: int | None = None,
                  exist_ok: bool = False) -> IPDevice:
        """Create a VXLAN device.

        ``group`` is a multicast group for flooding; None gives a unicast
        VXLAN whose FDB the agent fills. A multicast group needs ``dev``.
        """
        local = parse_ip(local_ip) if local_ip is not None else None
        grp = parse_ip(group) if group is not None else None
        if grp is not None:
            if not grp.is_multicast:
                raise InvalidNetworkValue('VXLAN group %s is not a multicast address' % grp)
            if dev is None:
                raise InvalidNetworkValue('a multicast VXLAN group needs a device (dev)')
            if local is not None and local.version != grp.version:
                raise InvalidNetworkValue('VXLAN local %s and group %s differ in IP version'
                                          % (local, grp))
        priv.create_vxlan(
            validate_device_name(name), naming.validate_vni(vni), self.namespace,
            local_ip=str(local) if local is not None else None,
            group=str(grp) if grp is not None else None,
            dev=validate_device_name(dev) if dev is not None else None,
            dstport=_validate_int(dstport, 1, 65535, 'VXLAN port'),
            learning=bool(learning),
            ttl=_validate_int(ttl, 0, 255, 'TTL') if ttl is not None else None,
            mtu=validate_mtu(mtu) if mtu is not None else None,
            exist_ok=bool(exist_ok))
        return IPDevice(name, self.namespace)

    def add_vlan(self, name: str, physical_device: str, vlan_id: int,
                 mtu: int | None = None, exist_ok: bool = False) -> IPDevice:
        """Create the 802.1Q sub-interface ``name`` of ``physical_device``.

        :raises VlanNotSupported: the kernel has no 8021q support (then no
            VLAN device can be made on this host at all).
        """
        priv.create_vlan(
            validate_device_name(name), validate_device_name(physical_device),
            naming.validate_vlan_tag(vlan_id), self.namespace,
            mtu=validate_mtu(mtu) if mtu is not None else None,
            exist_ok=bool(exist_ok))
        return IPDevice(name, self.namespace)

    def list_links(self, kind: str | None = None) -> list[LinkInfo]:
        return list_links(self.namespace, kind)

    def get_devices(self, kind: str | None = None,
                    exclude_loopback: bool = True) -> list[IPDevice]:
        return [IPDevice(link['name'], self.namespace) for link in self.list_links(kind)
                if not (exclude_loopback and link['name'] == 'lo')]

    def list_routes(self, ip_version: int | None = None,
                    table: Table | None = 'main') -> list[RouteInfo]:
        return list_routes(self.namespace, ip_version, table)

    def set_sysctl(self, key: str | Sequence[str], value: int | str | bool) -> None:
        set_sysctl(key, value, self.namespace)

    def get_sysctl(self, key: str | Sequence[str]) -> str:
        return get_sysctl(key, self.namespace)


class IPDevice:
    """One device in one namespace: ``.link``, ``.addr``, ``.route``, ``.neigh``."""

    def __init__(self, name: str, namespace: str | None = None) -> None:
        self.name = validate_device_name(name)
        self.namespace = validate_namespace(namespace)
        self.link = IpLinkCommand(self)
        self.addr = IpAddrCommand(self)
        self.route = IpRouteCommand(self)
        self.neigh = IpNeighCommand(self)

    def __repr__(self) -> str:
        return 'IPDevice(%r, namespace=%r)' % (self.name, self.namespace)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, IPDevice) and other.name == self.name
                and other.namespace == self.namespace)

    def __hash__(self) -> int:
        return hash((self.name, self.namespace))

    def exists(self) -> bool:
        return priv.link_exists(self.name, self.namespace)

    def delete(self) -> bool:
        """Delete the device (a veth takes its peer along); False if absent."""
        return priv.delete_link(self.name, self.namespace)

    def disable_ipv6(self, disabled: bool = True) -> None:
        """Stop (or restart) IPv6 on this device: no link-local, no DAD, no RS."""
        priv.set_sysctl(['net', 'ipv6', 'conf', self.name, 'disable_ipv6'],
                        '1' if disabled else '0', self.namespace)


class _DeviceCommand:
    def __init__(self, device: IPDevice) -> None:
        self._device = device

    @property
    def name(self) -> str:
        return self._device.name

    @property
    def namespace(self) -> str | None:
        return self._device.namespace


class IpLinkCommand(_DeviceCommand):
    """Link attributes of the device."""

    def _set(self, **kwargs: Any) -> None:
        priv.set_link(self.name, self.namespace, **kwargs)

    def set_up(self) -> None:
        self._set(state='up')

    def set_down(self) -> None:
        self._set(state='down')

    def set_mtu(self, mtu: int) -> None:
        self._set(mtu=validate_mtu(mtu))

    def set_address(self, mac: str) -> None:
        self._set(address=validate_mac(mac))

    def set_master(self, bridge: str) -> None:
        """Enslave to a bridge in the same namespace."""
        self._set(master=validate_device_name(bridge))

    def set_nomaster(self) -> None:
        self._set(master='')

    def set_netns(self, namespace: str | None) -> None:
        """Move the device; it keeps no addresses and comes up down.

        Costs ~18 ms of kernel time: prefer creating devices in place.
        """
        target = validate_namespace(namespace)
        priv.move_link(self.name, target, self.namespace)
        self._device.namespace = target

    def delete(self) -> bool:
        return self._device.delete()

    def exists(self) -> bool:
        return self._device.exists()

    @property
    def attributes(self) -> LinkInfo:
        return cast(LinkInfo, priv.get_link(self.name, self.namespace))

    @property
    def mtu(self) -> int:
        return self.attributes['mtu']

    @property
    def address(self) -> str | None:
        return self.attributes['address']

    @property
    def state(self) -> str:
        return self.attributes['state']

    @property
    def kind(self) -> str | None:
        return self.attributes['kind']


class IpAddrCommand(_DeviceCommand):
    """Addresses on the device."""

    def add(self, cidr: str, scope: str | int = 'global', broadcast: str | None = None,
            add_broadcast: bool = True) -> bool:
        """Add ``cidr`` ('10.0.0.5/24'); False if it was already there.

        IPv4 gets the subnet's broadcast address unless ``add_broadcast`` is
        off or ``broadcast`` is given (the kernel sets none by itself).
        """
        iface = parse_interface_cidr(cidr)
        scope_id = validate_scope(scope)
        if iface.version == 6 and scope_id != _ipv6_scope(iface.ip):
            # The kernel derives IPv6 scope from the address and silently
            # ignores the requested one; refuse rather than pretend.
            raise InvalidNetworkValue(
                'IPv6 address %s always has scope %s; cannot add it with scope %s'
                % (iface, priv.SCOPE_NAMES[_ipv6_scope(iface.ip)], scope))
        if broadcast is not None:
            bcast: str | None = str(parse_ip(broadcast))
            if iface.version != 4:
                raise InvalidNetworkValue('broadcast only applies to IPv4 addresses')
        elif add_broadcast and iface.version == 4 and iface.network.prefixlen < 31:
            bcast = str(iface.network.broadcast_address)
        else:
            bcast = None
        return priv.add_address(self.name, str(iface.ip), iface.network.prefixlen,
                                iface.version, self.namespace, broadcast=bcast,
                                scope=scope_id)

    def delete(self, cidr: str) -> bool:
        """Remove ``cidr``; False if it was not on the device."""
        iface = parse_interface_cidr(cidr)
        return priv.delete_address(self.name, str(iface.ip), iface.network.prefixlen,
                                   iface.version, self.namespace)

    def list(self, ip_version: int | None = None,
             scope: str | None = None) -> list[AddressInfo]:
        """Addresses on the device, optionally of one version and/or scope."""
        addrs = cast(list[AddressInfo], priv.list_addresses(
            self.namespace, self.name, _validate_ip_version(ip_version)))
        if scope is not None:
            wanted = validate_scope(scope)
            addrs = [a for a in addrs if SCOPES.get(a['scope']) == wanted]
        return list(addrs)

    def flush(self, ip_version: int | None = None) -> int:
        """Remove all addresses (of one version); returns how many were removed."""
        return priv.flush_addresses(self.name, self.namespace,
                                    _validate_ip_version(ip_version))


class IpRouteCommand(_DeviceCommand):
    """Routes out of the device."""

    def add_gateway(self, gateway: str, metric: int | None = None,
                    table: Table | None = None, onlink: bool = False) -> bool:
        """Default route via ``gateway`` (IPv4 or IPv6) out of this device."""
        return add_route('default', self.namespace, gateway=gateway, device=self.name,
                         table=table, metric=metric, onlink=onlink)

    def delete_gateway(self, gateway: str, metric: int | None = None,
                       table: Table | None = None) -> bool:
        return delete_route('default', self.namespace, gateway=gateway, device=self.name,
                            table=table, metric=metric)

    def get_gateway(self, ip_version: int = 4, table: Table = 'main') -> RouteInfo | None:
        """The default route out of this device with the lowest metric, if any."""
        return _lowest_default(self.list_routes(ip_version, table), ip_version)

    def add_route(self, cidr: str, via: str | None = None, metric: int | None = None,
                  table: Table | None = None, scope: str | int | None = None,
                  onlink: bool = False, replace: bool = True) -> bool:
        return add_route(cidr, self.namespace, gateway=via, device=self.name, table=table,
                         metric=metric, scope=scope, onlink=onlink, replace=replace)

    def delete_route(self, cidr: str, via: str | None = None, metric: int | None = None,
                     table: Table | None = None) -> bool:
        return delete_route(cidr, self.namespace, gateway=via, device=self.name,
                            table=table, metric=metric)

    def list_routes(self, ip_version: int | None = None,
                    table: Table | None = 'main') -> list[RouteInfo]:
        return list_routes(self.namespace, ip_version, table, self.name)


class IpNeighCommand(_DeviceCommand):
    """Static neighbour (ARP/NDP) entries on the device."""

    def add(self, ip: str, mac: str) -> None:
        """Add or replace a permanent entry."""
        addr = parse_ip(ip)
        priv.add_neighbour(self.name, str(addr), validate_mac(mac, unicast=False), addr.version,
                           self.namespace)

    def delete(self, ip: str) -> bool:
        addr = parse_ip(ip)
        return priv.delete_neighbour(self.name, str(addr), addr.version, self.namespace)

    def list(self, ip_version: int | None = None) -> list[NeighbourInfo]:
        neighbours = priv.list_neighbours(self.namespace, self.name,
                                          _validate_ip_version(ip_version))
        return cast(list[NeighbourInfo], neighbours)
