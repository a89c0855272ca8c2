"""neutron-server's DHCP network dicts into :mod:`agentkit.api.dhcp`'s types.

The DHCP agent calls :func:`parse_network` once per payload, at its edge.
Every value from the server may end up in files a DHCP server parses line
by line (dnsmasq's host, opts files), so each is parsed into a typed value
and checked against what such files can safely hold: a hostile value can
neither inject a directive nor escape a state directory. A bad port is
left out (logged) so the other VMs of the network keep their DHCP; a bad
network or subnet is refused with :class:`~agentkit.exceptions.InvalidPayload`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from oslo_log import log as logging

from agentkit import exceptions
from agentkit.api.dhcp import (IPV6_MODES, NO_HOST_ENTRY_OWNERS, ExtraOpt, FixedIp, IPAddress,
                               IPNetwork, Network, Port, Subnet)
from agentkit.lib import ip_lib
from agentkit.lib import naming

LOG = logging.getLogger(__name__)

CLIENT_ID_OPTS = frozenset({'client-id', '61'})

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
        unserved = []
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
                unserved.append(FixedIp(subnet_id, address))
                continue
            if address not in subnet.cidr:
                raise _BadPort('fixed ip %s is outside subnet %s (%s)'
                               % (address, subnet_id, subnet.cidr))
            fixed_ips.append(FixedIp(subnet_id, address))
        opts: list[ExtraOpt] = []
        client_id = None
        if owner in NO_HOST_ENTRY_OWNERS:
            # No host entry is written for these (the DHCP ports among them):
            # options and DNS names that would only go there cannot refuse them.
            return Port(port_id, mac, owner, device_id, tuple(fixed_ips), (), None, (),
                        tuple(unserved))
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
                dns_names, tuple(unserved))


def parse_network(raw: Any) -> Network:
    """Validate a ``get_network_info`` network dict into a :class:`Network`.

    Ports that fail validation (or collide with an earlier port's MAC or
    address) are left out and logged, so one corrupt port cannot take the
    DHCP service of a whole network down.

    :raises InvalidPayload: the network itself or one of its subnets is bad.
    """
    if not isinstance(raw, dict):
        raise invalid(None, 'expected a dict, got %s' % type(raw).__name__)
    try:
        network_id = naming.validate_id(raw.get('id'), 'network')
    except exceptions.InvalidIdentifier as exc:
        raise invalid(raw.get('id'), str(exc)) from None
    try:
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
        admin_state_up = raw.get('admin_state_up', True)
        if not isinstance(admin_state_up, bool):
            raise ValueError('admin_state_up must be a boolean')
        project_id = raw.get('project_id', raw.get('tenant_id'))
        if project_id is not None and not isinstance(project_id, str):
            raise ValueError('project_id %s is not a string' % short(project_id))
    except (ValueError, exceptions.InvalidIdentifier) as exc:
        raise invalid(network_id, str(exc)) from None

    ports: list[Port] = []
    skipped: list[tuple[str, str]] = []
    skipped_device_ids: set[str] = set()
    seen_ids: set[str] = set()
    seen_macs: dict[str, str] = {}
    seen_ips: dict[IPAddress, str] = {}
    for index, raw_port in enumerate(raw_ports):
        label: str = (raw_port['id'] if isinstance(raw_port, dict)
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
            device_id = raw_port.get('device_id') if isinstance(raw_port, dict) else None
            if isinstance(device_id, str):
                skipped_device_ids.add(device_id)
            continue
        seen_ids.add(port.id)
        if port.has_host_entry:
            seen_macs[port.mac_address] = port.id
            for fixed_ip in port.fixed_ips:
                seen_ips[fixed_ip.address] = port.id
        ports.append(port)
    ordered_subnets = sorted(subnets.values(), key=lambda s: (
        s.ip_version, int(s.cidr.network_address), s.cidr.prefixlen, s.id))
    return Network(network_id, mtu, tuple(ordered_subnets), tuple(ports), tuple(skipped),
                   admin_state_up, project_id, frozenset(skipped_device_ids))


def parse_port(raw: Any, network: Network) -> Port:
    """Validate one port of ``network`` (e.g. the DHCP port the server just
    created or updated for this agent).

    :raises InvalidPayload: the port is not usable.
    """
    try:
        return _parse_port(raw, network.id, {s.id: s for s in network.subnets})
    except _BadPort as exc:
        raise invalid(network.id, 'port: %s' % exc) from None
