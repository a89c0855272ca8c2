"""The validated model of a network, as dnsmasq serves it.

Every value from the server ends up in files dnsmasq parses line by line,
so it is parsed here into typed values first; a bad port is left out (so
the other VMs keep their DHCP), a bad network or subnet is refused.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from typing import Any, Union

from oslo_log import log as logging

from agentkit import exceptions
from agentkit.api import dhcp
from agentkit.lib import ip_lib
from agentkit.lib import naming

LOG = logging.getLogger(__name__)

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

DEVICE_OWNER_DHCP = dhcp.DEVICE_OWNER_DHCP
DEVICE_OWNER_ROUTER_INTF = 'network:router_interface'
DEVICE_OWNER_DVR_INTERFACE = 'network:router_interface_distributed'
DEVICE_OWNER_HA_REPLICATED_INT = 'network:ha_router_replicated_interface'
DEVICE_OWNER_ROUTER_HA_INTF = 'network:router_ha_interface'
DEVICE_OWNER_FLOATINGIP = 'network:floatingip'
DEVICE_OWNER_DISTRIBUTED = 'network:distributed'
#: Ports that make a subnet "routed" when they hold its gateway address.
ROUTER_INTERFACE_OWNERS = frozenset({DEVICE_OWNER_ROUTER_INTF, DEVICE_OWNER_DVR_INTERFACE,
                                     DEVICE_OWNER_HA_REPLICATED_INT})
#: Ports that never get a host entry (no VM behind them asks for DHCP):
#: the DHCP ports themselves, HA heartbeat ports, floating IPs, OVN
#: metadata ports -- the same list Neutron uses.
NO_HOST_ENTRY_OWNERS = frozenset({DEVICE_OWNER_DHCP, DEVICE_OWNER_ROUTER_HA_INTF,
                                  DEVICE_OWNER_FLOATINGIP, DEVICE_OWNER_DISTRIBUTED})

IPV6_SLAAC = 'slaac'
DHCPV6_STATEFUL = 'dhcpv6-stateful'
DHCPV6_STATELESS = 'dhcpv6-stateless'
IPV6_MODES = frozenset({IPV6_SLAAC, DHCPV6_STATEFUL, DHCPV6_STATELESS})

CLIENT_ID_OPTS = frozenset({'client-id', '61'})
# Neutron gives IPv6 subnets with a prefix shorter than /64 no DHCP range.
MIN_IPV6_RANGE_PREFIXLEN = 64

_OPT_NAME_RE = re.compile(r'(?:[0-9]{1,5}|[A-Za-z][A-Za-z0-9-]{0,63})')
_TAG_NAME_RE = re.compile(r'[A-Za-z0-9_.-]{1,64}')
# Printable ASCII only: a newline would start a new dnsmasq directive.
_OPT_VALUE_RE = re.compile(r'[ -~]{0,1024}')
_CLIENT_ID_RE = re.compile(r'[A-Za-z0-9:._*-]{1,255}')
DNS_LABEL_RE = re.compile(r'[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?')
_DEVICE_OWNER_RE = re.compile(r'[ -~]{0,255}')


def short(value: Any) -> str:
    """repr() bounded for log and error messages (payloads can be huge)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + '...'


@dataclasses.dataclass(frozen=True)
class Subnet:
    """A subnet as dnsmasq needs it; addresses are parsed, never raw strings."""

    id: str
    cidr: IPNetwork
    enable_dhcp: bool
    gateway_ip: IPAddress | None = None
    host_routes: tuple[tuple[IPNetwork, IPAddress], ...] = ()
    dns_nameservers: tuple[IPAddress, ...] = ()
    ipv6_ra_mode: str | None = None
    ipv6_address_mode: str | None = None

    @property
    def ip_version(self) -> int:
        return self.cidr.version

    @property
    def has_range(self) -> bool:
        """True if dnsmasq gets a ``--dhcp-range`` for this subnet.

        IPv4: always when DHCP is on. IPv6: DHCPv6 stateful *and* stateless
        (both ``static``, as Neutron does: stateless clients still send
        information requests), or no mode at all; SLAAC or an RA mode without
        an address mode means the router's RAs do the work.
        """
        if not self.enable_dhcp:
            return False
        if self.ip_version == 4:
            return True
        if self.cidr.prefixlen < MIN_IPV6_RANGE_PREFIXLEN:
            return False
        mode = self.ipv6_address_mode
        return mode in (DHCPV6_STATEFUL, DHCPV6_STATELESS) or (
            mode is None and self.ipv6_ra_mode is None)

    @property
    def has_options(self) -> bool:
        """True if the ``opts`` file carries options for this subnet."""
        if not self.enable_dhcp:
            return False
        return self.ip_version == 4 or self.ipv6_address_mode in (DHCPV6_STATEFUL,
                                                                  DHCPV6_STATELESS)

    @property
    def assigns_addresses(self) -> bool:
        """True if dnsmasq hands out addresses (host entries with an IP)."""
        return self.enable_dhcp and not (
            self.ip_version == 6
            and self.ipv6_address_mode in (IPV6_SLAAC, DHCPV6_STATELESS))


@dataclasses.dataclass(frozen=True)
class FixedIp:
    """One address of a port, on a subnet of this network."""

    subnet_id: str
    address: IPAddress


@dataclasses.dataclass(frozen=True)
class ExtraOpt:
    """A port's extra DHCP option (``[tag:<t>,]<name or code>``, value)."""

    name: str
    value: str
    ip_version: int


@dataclasses.dataclass(frozen=True)
class Port:
    """A validated port; only what the host, addn_hosts and opts files use."""

    id: str
    mac_address: str
    device_owner: str
    device_id: str
    fixed_ips: tuple[FixedIp, ...]
    extra_opts: tuple[ExtraOpt, ...] = ()
    client_id: str | None = None
    # ip -> (hostname, fqdn) from the port's dns_assignment
    dns_names: tuple[tuple[IPAddress, str, str], ...] = ()

    @property
    def has_host_entry(self) -> bool:
        return self.device_owner not in NO_HOST_ENTRY_OWNERS

    def names_for(self, address: IPAddress, dns_domain: str) -> tuple[str, str]:
        """(hostname, fqdn): the port's DNS assignment, else ``host-<ip>``."""
        for ip, hostname, fqdn in self.dns_names:
            if ip == address:
                return hostname, fqdn
        hostname = 'host-' + str(address).replace('.', '-').replace(':', '-')
        return hostname, ('%s.%s' % (hostname, dns_domain) if dns_domain else hostname)


@dataclasses.dataclass(frozen=True)
class Network:
    """A validated network; subnets sorted so argv does not depend on server order."""

    id: str
    mtu: int | None
    subnets: tuple[Subnet, ...]
    ports: tuple[Port, ...]
    #: (port id or index, reason) of every port left out
    skipped_ports: tuple[tuple[str, str], ...] = ()

    @property
    def dhcp_enabled(self) -> bool:
        """Neutron's rule: a dnsmasq runs while any subnet has DHCP on."""
        return any(s.enable_dhcp for s in self.subnets)

    def subnet(self, subnet_id: str) -> Subnet | None:
        for s in self.subnets:
            if s.id == subnet_id:
                return s
        return None


class _BadPort(Exception):
    """Internal: why one port is left out."""


def invalid(network_id: Any, reason: str) -> exceptions.InvalidPayload:
    return exceptions.InvalidPayload('invalid network %s from the server: %s'
                                     % (short(network_id), reason))


def parse_ip(value: Any, what: str) -> IPAddress:
    """An IP address; scope ids ('fe80::1%eth0') and non-strings are refused."""
    if not isinstance(value, str) or '%' in value:
        raise ValueError('%s %s is not an IP address' % (what, short(value)))
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError('%s %s is not an IP address'
                         % (what, short(value))) from None


def parse_cidr(value: Any, what: str) -> IPNetwork:
    """A network in CIDR form without host bits."""
    if not isinstance(value, str) or '%' in value or '/' not in value:
        raise ValueError('%s %s is not a CIDR' % (what, short(value)))
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError('%s %s: %s' % (what, short(value), exc)) from None


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise ValueError('%s must be a list, got %s' % (what, type(value).__name__))
    return list(value)


def _parse_subnet(raw: Any, network_id: str) -> Subnet:
    if not isinstance(raw, dict):
        raise ValueError('subnet must be a dict, got %s' % type(raw).__name__)
    subnet_id = naming.validate_id(raw.get('id'), 'subnet')
    if raw.get('network_id', network_id) != network_id:
        raise ValueError('subnet %s belongs to network %s'
                         % (subnet_id, short(raw.get('network_id'))))
    cidr = parse_cidr(raw.get('cidr'), 'subnet %s cidr' % subnet_id)
    if raw.get('ip_version', cidr.version) != cidr.version:
        raise ValueError('subnet %s: ip_version %s does not match cidr %s'
                         % (subnet_id, short(raw.get('ip_version')), cidr))
    enable_dhcp = raw.get('enable_dhcp')
    if not isinstance(enable_dhcp, bool):
        raise ValueError('subnet %s: enable_dhcp must be a boolean' % subnet_id)
    gateway = raw.get('gateway_ip')
    gateway_ip = None if gateway is None else parse_ip(gateway, 'subnet %s gateway_ip' % subnet_id)
    if gateway_ip is not None and gateway_ip.version != cidr.version:
        raise ValueError('subnet %s: gateway %s is not IPv%d' % (subnet_id, gateway_ip,
                                                                 cidr.version))
    routes = []
    for route in _list(raw.get('host_routes'), 'host_routes'):
        if not isinstance(route, dict):
            raise ValueError('subnet %s: host route must be a dict' % subnet_id)
        dest = parse_cidr(route.get('destination'), 'subnet %s route destination' % subnet_id)
        nexthop = parse_ip(route.get('nexthop'), 'subnet %s route nexthop' % subnet_id)
        if dest.version != cidr.version or nexthop.version != cidr.version:
            raise ValueError('subnet %s: route %s via %s is not IPv%d'
                             % (subnet_id, dest, nexthop, cidr.version))
        routes.append((dest, nexthop))
    servers = []
    for server in _list(raw.get('dns_nameservers'), 'dns_nameservers'):
        address = parse_ip(server, 'subnet %s dns_nameserver' % subnet_id)
        if address.version != cidr.version:
            # DHCPv4 cannot carry an IPv6 server and vice versa.
            LOG.warning('Ignoring DNS server %s of IPv%d subnet %s', address, cidr.version,
                        subnet_id)
            continue
        servers.append(address)
    modes = {}
    for key in ('ipv6_ra_mode', 'ipv6_address_mode'):
        mode = raw.get(key)
        if mode is not None and (cidr.version != 6 or mode not in IPV6_MODES):
            raise ValueError('subnet %s: invalid %s %s' % (subnet_id, key,
                                                           short(mode)))
        modes[key] = mode
    return Subnet(subnet_id, cidr, enable_dhcp, gateway_ip, tuple(routes), tuple(servers),
                  modes['ipv6_ra_mode'], modes['ipv6_address_mode'])


def _parse_extra_opt(raw: Any) -> ExtraOpt | None:
    if not isinstance(raw, dict):
        raise _BadPort('extra_dhcp_opt must be a dict')
    name = raw.get('opt_name')
    value = raw.get('opt_value')
    if value is None:
        return None  # Neutron's way of deleting an option
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    version = raw.get('ip_version', 4)
    if version is None:
        version = 4
    if version not in (4, 6) or isinstance(version, bool):
        raise _BadPort('extra_dhcp_opt ip_version %s' % short(version))
    if not isinstance(name, str):
        raise _BadPort('extra_dhcp_opt name %s' % short(name))
    tag, _, option = name.rpartition(',')
    if tag and not (tag.startswith('tag:') and _TAG_NAME_RE.fullmatch(tag[4:])):
        raise _BadPort('extra_dhcp_opt name %s' % short(name))
    if not _OPT_NAME_RE.fullmatch(option):
        raise _BadPort('extra_dhcp_opt name %s' % short(name))
    if not isinstance(value, str) or not _OPT_VALUE_RE.fullmatch(value):
        raise _BadPort('extra_dhcp_opt %s has an invalid value %s'
                       % (name, short(value)))
    return ExtraOpt(name, value, version)


def _parse_dns_assignment(raw: Any, addresses: set[IPAddress]
                          ) -> tuple[tuple[IPAddress, str, str], ...]:
    names = []
    for entry in _list(raw, 'dns_assignment'):
        if not isinstance(entry, dict):
            raise _BadPort('dns_assignment entry must be a dict')
        address = parse_ip(entry.get('ip_address'), 'dns_assignment ip_address')
        hostname = entry.get('hostname')
        fqdn = entry.get('fqdn')
        fqdn = fqdn.rstrip('.') if isinstance(fqdn, str) else fqdn
        if not (isinstance(hostname, str) and DNS_LABEL_RE.fullmatch(hostname)):
            raise _BadPort('invalid hostname %s' % short(hostname))
        if not (isinstance(fqdn, str) and len(fqdn) <= 253
                and all(DNS_LABEL_RE.fullmatch(label) for label in fqdn.split('.'))):
            raise _BadPort('invalid fqdn %s' % short(fqdn))
        if address in addresses:
            names.append((address, hostname, fqdn))
    return tuple(names)


def _parse_port(raw: Any, network_id: str, subnets: dict[str, Subnet]) -> Port:
    if not isinstance(raw, dict):
        raise _BadPort('port must be a dict, got %s' % type(raw).__name__)
    try:
        port_id = naming.validate_id(raw.get('id'), 'port')
        if raw.get('network_id', network_id) != network_id:
            raise _BadPort('port belongs to network %s'
                           % short(raw.get('network_id')))
        mac = ip_lib.validate_mac(raw.get('mac_address'))
        owner = raw.get('device_owner') or ''
        device_id = raw.get('device_id') or ''
        for what, value in (('device_owner', owner), ('device_id', device_id)):
            if not isinstance(value, str) or not _DEVICE_OWNER_RE.fullmatch(value):
                raise _BadPort('invalid %s %s' % (what, short(value)))
        fixed_ips = []
        for entry in _list(raw.get('fixed_ips'), 'fixed_ips'):
            if not isinstance(entry, dict):
                raise _BadPort('fixed_ips entry must be a dict')
            subnet_id = naming.validate_id(entry.get('subnet_id'), 'subnet')
            address = parse_ip(entry.get('ip_address'), 'fixed ip')
            subnet = subnets.get(subnet_id)
            if subnet is None:
                # A subnet of another segment, not served here.
                LOG.debug('Port %s: ignoring %s on unknown subnet %s', port_id, address,
                          subnet_id)
                continue
            if address not in subnet.cidr:
                raise _BadPort('fixed ip %s is outside subnet %s (%s)'
                               % (address, subnet_id, subnet.cidr))
            fixed_ips.append(FixedIp(subnet_id, address))
        opts = []
        client_id = None
        for raw_opt in _list(raw.get('extra_dhcp_opts'), 'extra_dhcp_opts'):
            opt = _parse_extra_opt(raw_opt)
            if opt is None:
                continue
            if opt.name in CLIENT_ID_OPTS:
                if not _CLIENT_ID_RE.fullmatch(opt.value):
                    raise _BadPort('invalid client-id %s' % short(opt.value))
                client_id = opt.value
                continue
            opts.append(opt)
        dns_names = _parse_dns_assignment(raw.get('dns_assignment'),
                                          {f.address for f in fixed_ips})
    except (ValueError, exceptions.InvalidIdentifier) as exc:
        raise _BadPort(str(exc)) from None
    return Port(port_id, mac, owner, device_id, tuple(fixed_ips), tuple(opts), client_id,
                dns_names)


def parse_network(raw: Any) -> Network:
    """Validate a ``get_network_info`` network dict into a :class:`Network`.

    Ports that fail validation (or collide with an earlier port's MAC or
    address) are left out and logged, so one corrupt port cannot take the
    DHCP service of a whole network down.

    :raises InvalidPayload: the network itself or one of its subnets is bad.
    """
    if not isinstance(raw, dict):
        raise invalid(None, 'expected a dict, got %s' % type(raw).__name__)
    network_id = raw.get('id')
    try:
        naming.validate_id(network_id, 'network')
        mtu = raw.get('mtu')
        if mtu in (None, 0):
            mtu = None
        else:
            ip_lib.validate_mtu(mtu)
        subnets: dict[str, Subnet] = {}
        for raw_subnet in _list(raw.get('subnets'), 'subnets'):
            subnet = _parse_subnet(raw_subnet, network_id)
            if subnet.id in subnets:
                raise ValueError('subnet %s listed twice' % subnet.id)
            subnets[subnet.id] = subnet
        raw_ports = _list(raw.get('ports'), 'ports')
    except (ValueError, exceptions.InvalidIdentifier) as exc:
        raise invalid(network_id, str(exc)) from None

    ports: list[Port] = []
    skipped: list[tuple[str, str]] = []
    seen_ids: set[str] = set()
    seen_macs: dict[str, str] = {}
    seen_ips: dict[IPAddress, str] = {}
    for index, raw_port in enumerate(raw_ports):
        label = (raw_port.get('id') if isinstance(raw_port, dict)
                 and isinstance(raw_port.get('id'), str) else '#%d' % index)
        try:
            port = _parse_port(raw_port, network_id, subnets)
            if port.id in seen_ids:
                raise _BadPort('port listed twice')
            if port.has_host_entry:
                if port.mac_address in seen_macs:
                    raise _BadPort('MAC %s is also used by port %s'
                                   % (port.mac_address, seen_macs[port.mac_address]))
                for fixed_ip in port.fixed_ips:
                    if fixed_ip.address in seen_ips:
                        raise _BadPort('address %s is also used by port %s'
                                       % (fixed_ip.address, seen_ips[fixed_ip.address]))
        except _BadPort as exc:
            LOG.warning('Network %s: skipping port %s: %s', network_id,
                        short(label), exc)
            skipped.append((label[:60], str(exc)))
            continue
        seen_ids.add(port.id)
        if port.has_host_entry:
            seen_macs[port.mac_address] = port.id
            for fixed_ip in port.fixed_ips:
                seen_ips[fixed_ip.address] = port.id
        ports.append(port)
    ordered_subnets = sorted(subnets.values(), key=lambda s: (
        s.ip_version, int(s.cidr.network_address), s.cidr.prefixlen, s.id))
    return Network(network_id, mtu, tuple(ordered_subnets), tuple(ports), tuple(skipped))


def host_entries(network: Network) -> list[tuple[Port, FixedIp, Subnet]]:
    """(port, fixed ip, subnet) of every host entry, ordered by address."""
    subnets = {s.id: s for s in network.subnets}
    entries = [(port, fixed_ip, subnets[fixed_ip.subnet_id])
               for port in network.ports if port.has_host_entry
               for fixed_ip in port.fixed_ips]
    entries.sort(key=lambda e: (e[1].address.version, int(e[1].address), e[0].id))
    return entries
