"""Router drivers: realise neutron routers on this host.

Why the types here: the L3 agent turns each ``sync_routers`` entry into a
:class:`Router` *once*, at the edge, so every router driver sees the same
checked values and none of them parses RPC dicts. The shape they are
parsed from is the real server's (``tests/fixtures/neutron29/
sync_routers.json``, captured from neutron 29), not an assumption:

* a router: ``id``, ``admin_state_up``, ``enable_snat``, ``ha``,
  ``distributed``, ``routes`` (``[{destination, nexthop}]``), ``gw_port``
  (a port, or absent/None), ``_interfaces`` (ports) and ``_floatingips``;
* a port (``gw_port`` and each of ``_interfaces``): ``id``, ``network_id``,
  ``mac_address``, ``mtu``, ``fixed_ips`` (``[{subnet_id, ip_address,
  prefixlen}]``) and ``subnets`` (``[{id, cidr, gateway_ip,
  dns_nameservers, ipv6_ra_mode, subnetpool_id}]``);
* a floating IP: ``id``, ``floating_ip_address``, ``fixed_ip_address``,
  ``port_id``, ``status`` (and ``router_id``, ``floating_network_id``).

Partial failure, as before the types existed: a router whose entry is not
usable at all (no valid id, parts of the wrong type) is refused as a whole;
a bad interface, gateway, floating IP or route is logged and left out, and
the router still says which ids it left out so a driver keeps what it built
for them (devices) or reports them (floating IPs in ERROR).
"""

from __future__ import annotations

import abc
import dataclasses
import ipaddress
import logging
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from oslo_config import cfg

from agentkit import exceptions
from agentkit.api import driver
from agentkit.api import interface
from agentkit.lib import ip_lib
from agentkit.lib import naming

LOG = logging.getLogger(__name__)

# Floating IP statuses reported with update_floatingip_statuses (Neutron's).
FIP_ACTIVE = 'ACTIVE'
FIP_DOWN = 'DOWN'
FIP_ERROR = 'ERROR'

_BadPart = (exceptions.InvalidPayload, exceptions.InvalidIdentifier)


def _items(value: Any, what: str) -> Sequence[Any]:
    """A list of the payload (None: empty); anything else refuses the router."""
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise exceptions.InvalidPayload('%s must be a list, got %s'
                                        % (what, type(value).__name__))
    return value


def _address(value: Any, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise exceptions.InvalidPayload('%s: invalid address %r' % (what, value)) from None


@dataclasses.dataclass(frozen=True)
class Subnet:
    """One subnet of a router port (the port's ``subnets``).

    :ivar id: the server's subnet id, as given (only matched against
        ``fixed_ips``).
    :ivar cidr: canonical network.
    :ivar gateway_ip: canonical address, None if the subnet has none.
    :ivar ipv6_ra_mode: as given (``slaac``, ``dhcpv6-stateful``,
        ``dhcpv6-stateless`` or None); what to advertise is the driver's call.
    :ivar dns_nameservers: as given (strings).
    """

    id: str | None
    cidr: str
    gateway_ip: str | None = None
    ipv6_ra_mode: str | None = None
    dns_nameservers: tuple[str, ...] = ()

    @classmethod
    def from_rpc(cls, subnet: Any, what: str) -> Subnet:
        """:raises InvalidPayload: not a dict, or a bad cidr or gateway_ip."""
        if not isinstance(subnet, Mapping):
            raise exceptions.InvalidPayload('%s: subnet %r is not a dict' % (what, subnet))
        try:
            network = ipaddress.ip_network(subnet.get('cidr'))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise exceptions.InvalidPayload('%s: invalid subnet cidr %r'
                                            % (what, subnet.get('cidr'))) from None
        gateway = subnet.get('gateway_ip')
        if gateway is not None:
            gateway = str(_address(gateway, '%s: gateway_ip' % what))
        subnet_id = subnet.get('id')
        ra_mode = subnet.get('ipv6_ra_mode')
        dns = subnet.get('dns_nameservers')
        return cls(subnet_id if isinstance(subnet_id, str) else None, str(network), gateway,
                   ra_mode if isinstance(ra_mode, str) else None,
                   tuple(d for d in dns if isinstance(d, str))
                   if isinstance(dns, (list, tuple)) else ())


@dataclasses.dataclass(frozen=True)
class RouterPort:
    """A router's internal port (``_interfaces``) or its gateway (``gw_port``).

    :ivar cidrs: ``address/prefixlen`` of each fixed IP (the prefix of its
        subnet, else the server's ``prefixlen``), in order, each once; never
        empty.
    :ivar gateways: ``gateway_ip`` of each fixed IP's subnet in the fixed
        IP's family, each once (the default routes, for a gateway port).
    :ivar mtu: the network's MTU, None if the server did not say.
    :ivar subnets: the port's usable subnets (those with an
        ``ipv6_ra_mode`` are the ones to advertise).
    """

    id: str
    network_id: str
    mac_address: str
    cidrs: tuple[str, ...]
    gateways: tuple[str, ...] = ()
    mtu: int | None = None
    subnets: tuple[Subnet, ...] = ()

    @property
    def ipv4_address(self) -> str | None:
        """The first IPv4 address (what SNAT uses on a gateway port)."""
        for cidr in self.cidrs:
            iface = ipaddress.ip_interface(cidr)
            if iface.version == 4:
                return str(iface.ip)
        return None

    @classmethod
    def from_rpc(cls, port: Any, gateway: bool = False) -> RouterPort:
        """:raises InvalidPayload, InvalidIdentifier: naming the port."""
        if not isinstance(port, Mapping):
            raise exceptions.InvalidPayload('port %r is not a dict' % (port,))
        port_id = naming.validate_id(port.get('id'), 'port')
        what = '%s port %s' % ('gateway' if gateway else 'interface', port_id)
        network_id = naming.validate_id(port.get('network_id'), 'network')
        try:
            mac = ip_lib.validate_mac(port.get('mac_address'))
            mtu = port.get('mtu')
            mtu = ip_lib.validate_mtu(mtu) if mtu is not None else None
        except ValueError as exc:
            raise exceptions.InvalidPayload('%s: %s' % (what, exc)) from None
        subnets: dict[str | None, Subnet] = {}
        bad_subnets: dict[str, exceptions.InvalidPayload] = {}
        for raw in _items(port.get('subnets'), '%s: subnets' % what):
            try:
                subnet = Subnet.from_rpc(raw, what)
            except exceptions.InvalidPayload as exc:
                raw_id = raw.get('id') if isinstance(raw, Mapping) else None
                if isinstance(raw_id, str):
                    bad_subnets[raw_id] = exc
                LOG.error('%s: subnet %s left out: %s', what, raw_id, exc)
                continue
            subnets.setdefault(subnet.id, subnet)
        cidrs: list[str] = []
        gateways: list[str] = []
        for fixed in _items(port.get('fixed_ips'), '%s: fixed_ips' % what):
            if not isinstance(fixed, Mapping):
                raise exceptions.InvalidPayload('%s: fixed_ips entry %r is not a dict'
                                                % (what, fixed))
            ip = _address(fixed.get('ip_address'), '%s: fixed IP' % what)
            subnet_id = fixed.get('subnet_id')
            if subnet_id in bad_subnets:
                raise bad_subnets[subnet_id]
            own = subnets.get(subnet_id) if isinstance(subnet_id, str) else None
            if own is not None:
                network = ipaddress.ip_network(own.cidr)
                if ip not in network:
                    raise exceptions.InvalidPayload('%s: %s is not in its subnet %s'
                                                    % (what, ip, network))
                prefixlen = network.prefixlen
                gw = own.gateway_ip
                if gw is not None and ipaddress.ip_address(gw).version == ip.version \
                        and gw not in gateways:
                    gateways.append(gw)
            else:
                given = fixed.get('prefixlen')
                if (not isinstance(given, int) or isinstance(given, bool)
                        or not 0 < given <= ip.max_prefixlen):
                    raise exceptions.InvalidPayload('%s: no subnet and no valid prefixlen '
                                                    'for %s' % (what, ip))
                prefixlen = given
            cidr = '%s/%d' % (ip, prefixlen)
            if cidr not in cidrs:
                cidrs.append(cidr)
        if not cidrs:
            raise exceptions.InvalidPayload('%s has no fixed IPs' % what)
        return cls(port_id, network_id, mac, tuple(cidrs), tuple(gateways), mtu,
                   tuple(subnets.values()))


@dataclasses.dataclass(frozen=True)
class FloatingIP:
    """A floating IP of the router (IPv4, as Neutron's).

    :ivar status: what the server currently shows, None if unknown; a
        driver reports only statuses that differ.
    :ivar port_id: the VM port the fixed IP belongs to, if the server said.
    """

    id: str
    floating_ip: str
    fixed_ip: str
    status: str | None = None
    port_id: str | None = None

    @classmethod
    def from_rpc(cls, fip: Any) -> FloatingIP:
        """:raises InvalidPayload, InvalidIdentifier: naming the floating IP."""
        if not isinstance(fip, Mapping):
            raise exceptions.InvalidPayload('floating IP %r is not a dict' % (fip,))
        fip_id = naming.validate_id(fip.get('id'), 'floating IP')
        addresses = []
        for key in ('floating_ip_address', 'fixed_ip_address'):
            ip = _address(fip.get(key), 'floating IP %s: %s' % (fip_id, key))
            if ip.version != 4:
                raise exceptions.InvalidPayload('floating IP %s: %s %s is not IPv4'
                                                % (fip_id, key, ip))
            addresses.append(str(ip))
        status = fip.get('status')
        port_id = fip.get('port_id')
        return cls(fip_id, addresses[0], addresses[1],
                   status if isinstance(status, str) else None,
                   port_id if naming.is_valid_id(port_id) else None)


@dataclasses.dataclass(frozen=True)
class Route:
    """An extra route (``routes``): canonical destination and next hop."""

    destination: str
    nexthop: str

    @classmethod
    def from_rpc(cls, route: Any) -> Route:
        """:raises InvalidPayload: not a dict, bad addresses, mixed families."""
        if not isinstance(route, Mapping):
            raise exceptions.InvalidPayload('route %r is not a dict' % (route,))
        try:
            dst = ipaddress.ip_network(route.get('destination'))  # type: ignore[arg-type]
            nexthop = ipaddress.ip_address(route.get('nexthop'))  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise exceptions.InvalidPayload('invalid route %r: %s' % (route, exc)) from None
        if dst.version != nexthop.version:
            raise exceptions.InvalidPayload('route %r mixes IP versions' % (route,))
        return cls(str(dst), str(nexthop))


@dataclasses.dataclass(frozen=True)
class Router:
    """One ``sync_routers`` entry, validated.

    :ivar admin_state_up: False: the router must not exist on the host.
    :ivar enable_snat: SNAT of internal traffic through the gateway.
    :ivar ha: ``ha`` (keepalived-managed) router; :ivar distributed: DVR.
    :ivar interfaces: usable internal ports, in the server's order.
    :ivar gateway: the usable gateway port, None if none or unusable.
    :ivar floating_ips: usable floating IPs, by address; no two share a
        floating or a fixed IP.
    :ivar routes: usable extra routes, each once, in the server's order.
    :ivar unusable_interface_ids: interfaces left out whose id is valid:
        what a driver built for them stays as it is.
    :ivar gateway_unusable: a gateway was given but left out (a driver keeps
        its NAT and default routes as they are rather than drop them);
        ``unusable_gateway_id`` is its id when that one is valid.
    :ivar unusable_floating_ips: floating IPs left out whose id is valid,
        with the status the server shows (a driver reports them ERROR).
    :ivar network_ids: networks of every port the entry names with a valid
        network id, usable or not (which routers a network update touches).
    """

    id: str
    admin_state_up: bool = True
    enable_snat: bool = True
    ha: bool = False
    distributed: bool = False
    interfaces: tuple[RouterPort, ...] = ()
    gateway: RouterPort | None = None
    floating_ips: tuple[FloatingIP, ...] = ()
    routes: tuple[Route, ...] = ()
    unusable_interface_ids: frozenset[str] = frozenset()
    gateway_unusable: bool = False
    unusable_gateway_id: str | None = None
    unusable_floating_ips: Mapping[str, str | None] = dataclasses.field(
        default_factory=dict)
    network_ids: frozenset[str] = frozenset()

    @property
    def has_gateway(self) -> bool:
        """A gateway was given, usable or not."""
        return self.gateway is not None or self.gateway_unusable

    @classmethod
    def from_rpc(cls, router: Any) -> Router:
        """Parse one ``sync_routers`` entry; bad parts are logged and left out.

        :raises InvalidPayload, InvalidIdentifier: the entry as a whole is
            unusable (not a dict, no valid id, a part of the wrong type).
        """
        if not isinstance(router, Mapping):
            raise exceptions.InvalidPayload('router %r is not a dict' % (router,))
        router_id = naming.validate_id(router.get('id'), 'router')
        what = 'router %s' % router_id
        raw_interfaces = _items(router.get('_interfaces'), what + ': _interfaces')
        raw_fips = _items(router.get('_floatingips'), what + ': _floatingips')
        raw_routes = _items(router.get('routes'), what + ': routes')
        raw_gw = router.get('gw_port')
        network_ids = frozenset(
            p['network_id'] for p in [*raw_interfaces, raw_gw]
            if isinstance(p, Mapping) and naming.is_valid_id(p.get('network_id')))

        interfaces: list[RouterPort] = []
        unusable_ids: set[str] = set()
        for raw in raw_interfaces:
            try:
                interfaces.append(RouterPort.from_rpc(raw))
            except _BadPart as exc:
                LOG.error('Router %s: skipping interface: %s', router_id, exc)
                if isinstance(raw, Mapping) and naming.is_valid_id(raw.get('id')):
                    unusable_ids.add(raw['id'])

        gateway, gateway_unusable, unusable_gw_id = None, False, None
        if raw_gw:
            try:
                gateway = RouterPort.from_rpc(raw_gw, gateway=True)
            except _BadPart as exc:
                LOG.error('Router %s: ignoring the external gateway: %s', router_id, exc)
                gateway_unusable = True
                if isinstance(raw_gw, Mapping) and naming.is_valid_id(raw_gw.get('id')):
                    unusable_gw_id = raw_gw['id']

        fips: list[FloatingIP] = []
        unusable_fips: dict[str, str | None] = {}
        seen_ips: set[str] = set()
        seen_fixed: set[str] = set()
        for raw in raw_fips:
            try:
                fip = FloatingIP.from_rpc(raw)
                if fip.floating_ip in seen_ips or fip.fixed_ip in seen_fixed:
                    raise exceptions.InvalidPayload(
                        'floating IP %s: %s -> %s duplicates another floating IP'
                        % (fip.id, fip.floating_ip, fip.fixed_ip))
            except _BadPart as exc:
                LOG.error('Router %s: skipping floating IP: %s', router_id, exc)
                if isinstance(raw, Mapping) and naming.is_valid_id(raw.get('id')):
                    status = raw.get('status')
                    unusable_fips[raw['id']] = status if isinstance(status, str) else None
                continue
            seen_ips.add(fip.floating_ip)
            seen_fixed.add(fip.fixed_ip)
            fips.append(fip)
        fips.sort(key=lambda f: ipaddress.ip_address(f.floating_ip))

        routes: list[Route] = []
        for raw in raw_routes:
            try:
                route = Route.from_rpc(raw)
            except exceptions.InvalidPayload as exc:
                LOG.error('Router %s: skipping extra route: %s', router_id, exc)
                continue
            if route not in routes:
                routes.append(route)

        return cls(id=router_id,
                   admin_state_up=router.get('admin_state_up') is not False,
                   enable_snat=router.get('enable_snat', True) is not False,
                   ha=bool(router.get('ha')), distributed=bool(router.get('distributed')),
                   interfaces=tuple(interfaces), gateway=gateway,
                   floating_ips=tuple(fips), routes=tuple(routes),
                   unusable_interface_ids=frozenset(unusable_ids),
                   gateway_unusable=gateway_unusable, unusable_gateway_id=unusable_gw_id,
                   unusable_floating_ips=unusable_fips, network_ids=network_ids)

    def to_record(self) -> dict[str, Any]:
        """The router as JSON-ready data; :meth:`from_record` reads it back.

        Why: the L3 agent records what neutron-server last told it about a
        router (``agentkit.agent.router_intent``) and agentkit-doctor compares
        the host with that record; one serialisation of these types serves both.
        """
        return typing.cast(dict[str, Any], _plain(self))

    @classmethod
    def from_record(cls, record: Any) -> Router:
        """:raises InvalidPayload: not what :meth:`to_record` wrote."""
        try:
            return typing.cast(Router, _from_plain(cls, record))
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise exceptions.InvalidPayload('not a recorded router: %s' % exc) from None


def _plain(value: Any) -> Any:
    """Dataclasses, tuples, sets and mappings as JSON types (sets sorted)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _from_plain(kind: Any, value: Any) -> Any:
    """``value`` (from :func:`_plain`) as the annotated type ``kind``."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return kind(**{f.name: _from_plain(hints[f.name], value[f.name])
                       for f in dataclasses.fields(kind) if f.name in value})
    if origin in (types.UnionType, typing.Union):
        if value is None:
            return None
        return _from_plain(next(a for a in args if a is not type(None)), value)
    if origin is tuple:
        return tuple(_from_plain(args[0], v) for v in value)
    if origin is frozenset:
        return frozenset(_from_plain(args[0], v) for v in value)
    if origin in (Mapping, dict):
        return {str(k): _from_plain(args[1], v) for k, v in value.items()}
    if kind in (str, int, bool) and type(value) is not kind:
        raise TypeError('%r is not a %s' % (value, kind.__name__))
    return value


class RouterProcessingError(exceptions.AgentkitError):
    """Some parts of a router failed; the others were configured.

    ``fip_statuses`` holds what :meth:`RouterDriver.process_router` would have
    returned, so the agent reports them before retrying the router.
    """

    def __init__(self, router_id: str, failures: list[str],
                 fip_statuses: dict[str, str] | None = None) -> None:
        super().__init__('router %s: %d part(s) failed: %s'
                         % (router_id, len(failures), '; '.join(failures)))
        self.router_id = router_id
        self.failures = failures
        self.fip_statuses = fip_statuses or {}


class RouterDriver(driver.Driver):
    """Builds routers (namespace, interfaces, routes, SNAT, floating IPs).

    Drivers receive each router as a :class:`Router` the agent validated.

    :param interface_driver: plugs the router's qr-/qg- ports; the L3 agent
        loads it from ``[DEFAULT] interface_driver`` and initialises it first.
    """

    def __init__(self, conf: cfg.ConfigOpts, host: str,
                 interface_driver: interface.InterfaceDriver) -> None:
        super().__init__(conf, host)
        self.interface_driver = interface_driver

    def unsupported_reason(self, router: Router) -> str | None:
        """Why this driver must not build ``router``, or None if it can.

        The default refuses HA and distributed (DVR) routers: built as
        plain routers they would be active on several hosts at once with
        the same IP and MAC addresses. A driver that implements them (e.g.
        keepalived-based HA) overrides this; the agent needs no change.
        """
        if router.ha:
            return ('HA routers (ha=True) need an HA router driver; %s builds '
                    'legacy routers only' % type(self).__name__)
        if router.distributed:
            return ('distributed (DVR) routers are not supported by %s'
                    % type(self).__name__)
        return None

    @abc.abstractmethod
    def process_router(self, router: Router) -> dict[str, str]:
        """Make the host match ``router``; returns floating IP statuses.

        Only statuses that differ from what the server shows
        (:attr:`FloatingIP.status`), plus ``DOWN`` for floating IPs the
        driver configured before and the router no longer has, and
        ``ERROR`` for :attr:`Router.unusable_floating_ips`.

        :raises RouterProcessingError: part of the router failed; carries
            the statuses of what did work.
        """

    @abc.abstractmethod
    def delete_router(self, router_id: str) -> None:
        """Remove everything of the router from the host (idempotent)."""

    @abc.abstractmethod
    def existing_routers(self) -> set[str]:
        """Router ids with state on this host (for stale cleanup)."""
